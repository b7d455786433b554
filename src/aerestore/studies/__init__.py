"""The study tools: what the studies claimed, re-tested, and the comparisons over DVC experiments.

* the claims report (``aerestore report``): :mod:`~aerestore.studies.claims` (the claims and
  their arms), :mod:`~aerestore.studies.runner` (the runs and their cache),
  :mod:`~aerestore.studies.analysis` (effects, intervals, verdicts) and
  :mod:`~aerestore.studies.report` (the report's files and its staleness check);
* the seed sweep (``aerestore seeds``): :mod:`~aerestore.studies.seeds`, reading runs with
  :mod:`~aerestore.studies.seed_runs` and drawing with :mod:`~aerestore.studies.seeds_plot`;
* the latent-size comparison (``aerestore latent-sizes``): :mod:`~aerestore.studies.latent_sizes`;
* the study presets (``aerestore preset``): :mod:`~aerestore.studies.presets`;
* :mod:`~aerestore.studies.revisions`: files of a DVC experiment or git revision, for the
  comparisons over experiments.

None of them is a pipeline stage: no stage imports this package.
"""
