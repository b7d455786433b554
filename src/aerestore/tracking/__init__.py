"""MLflow tracking for the DVC stages.

Every stage script wraps its work in :func:`~aerestore.tracking.run.stage_run`::

    with stage_run("train@conv_ae", params, arch="conv_ae") as run:
        ...
        run.log_metrics({"loss": 0.01, "val": {"psnr": 27.3}}, step=epoch)
        run.log_torch_model(model, "autoencoder", input_example=blocks[:4])

That opens one MLflow run named after the DVC stage, logs the params the stage
lists in ``dvc.yaml`` (as DVC's API resolves them, so MLflow and ``dvc params diff``
agree), logs the stage's data deps as MLflow datasets whose digest is DVC's md5,
describes the run, and tags it with the DVC experiment, the git commit, the process
(to find runs of killed stages) and a *pipeline id* shared by every stage of one
``dvc repro`` / ``dvc exp run`` execution. A store that is locked or corrupt stops the
stage with one line naming it (:class:`~aerestore.tracking.store.TrackingError`),
before the stage writes anything.

A stage that DVC restores from its run cache does not execute, so it logs no new
MLflow run; its earlier run is still in the store.

The modules, by job:

- :mod:`~aerestore.tracking.store`: where the runs go (``mlflow.db``, ``mlruns/``), the
  store's creation and migration, and its errors;
- :mod:`~aerestore.tracking.dvcinfo`: what DVC says about a stage: its params, its data
  with DVC's md5, its outputs, and those data as MLflow datasets;
- :mod:`~aerestore.tracking.notes`: the descriptions of the experiment and of the runs;
- :mod:`~aerestore.tracking.stale`: runs of killed stages, marked KILLED;
- :mod:`~aerestore.tracking.pipeline`: the pipeline id, the ``dvc`` command, the commit;
- :mod:`~aerestore.tracking.run`: the run itself (``stage_run``, ``StageRun``).
"""

from aerestore.tracking.dvcinfo import DvcInput, DvcStageIO, dvc_stage_io, dvc_stage_params, stage_params
from aerestore.tracking.pipeline import pipeline_id
from aerestore.tracking.run import StageRun, stage_run
from aerestore.tracking.store import (
    CREDENTIAL_VARS,
    DEFAULT_EXPERIMENT,
    TrackingError,
    artifact_location,
    init_store,
    repo_root,
    tracking_uri,
)
