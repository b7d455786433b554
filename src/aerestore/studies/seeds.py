"""The per-cluster vs control comparison over several seeds (``aerestore seeds``).

One run's noise must not flip the verdict: the pipeline is run once per seed (a DVC
experiment each, ``dvc exp run --queue -S 'seed=1,2,3'``), and for every seed and
architecture the per-image metrics of the per-cluster decoders (``<arch>.multi``) are compared
with those of the equal-budget control decoder (``<arch>.single``) on that seed's test images:

* ``mean_diff``: mean over images of ``multi - single`` (pairs with a ``nan`` or ``inf`` left
  out; for ``blur_percent`` the difference of ``|blur %|``, so negative is better);
* ``share``: share of images on which multi wins, ties half;
* ``p_value``: paired two-sided Wilcoxon test;

all three from :func:`aerestore.stats.paired_comparison`, with each metric's direction of
"better" from :mod:`aerestore.metrics` (:func:`aerestore.metrics.direction`).

Then, per architecture and metric, the mean, standard deviation (``ddof=1``), min and max of
each over the seeds, and whether the targets (:class:`Targets`) hold in every seed.

Beside the comparison, the spread of the headline figures themselves (``levels``): for every
row of the results table (``degraded``, ``<arch>.base|single|multi``, the classical restorers)
and every column of ``metrics/summary.md`` (:data:`HEADLINE`), the value per seed and their
mean, standard deviation, min and max: the "± over seeds" beside each figure of the README.
The seed draws the split and the damage too, so this spread is that of the whole experiment
(the classical rows vary for that reason alone), not of the training alone.

The runs are read by :mod:`aerestore.studies.seed_runs` (a file, a folder or a DVC experiment);
the figure is drawn by :mod:`aerestore.studies.seeds_plot`.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Iterable

import numpy as np

from .. import metrics as M
from .. import stats as S
from .seed_runs import SeedRun, load_file, load_rev, parse_rows


# the columns of the results table (metrics/summary.md), whose spread over the seeds is reported
HEADLINE = ("psnr", "ssim", "uqi", "blur_percent", "psnr_blur", "psnr_noise", "psnr_clean")


@dataclass(frozen=True)
class Targets:
    """The issue's verdict, checked seed by seed: inside the blurred regions the per-cluster
    decoders win on at least ``min_share`` of the images with ``p < max_p`` (paired Wilcoxon),
    and in the clean regions the mean difference is at least ``min_clean_diff`` (dB)."""

    blur_metric: str = "psnr_blur"
    min_share: float = 0.75
    max_p: float = 0.01
    clean_metric: str = "psnr_clean"
    min_clean_diff: float = -0.05

    def describe(self) -> str:
        return (f"{self.blur_metric}: share won >= {self.min_share:g} and p < {self.max_p:g}; "
                f"{self.clean_metric}: mean difference >= {self.min_clean_diff:g}")


# ------------------------------------------------------------------------ loading
def load_source(source: str, repo: str | Path = ".") -> SeedRun:
    """A file or folder if ``source`` exists as a path, else an experiment/revision of ``repo``."""
    if Path(source).exists():
        return load_file(source)
    return load_rev(source, repo)


def baseline_experiments(repo: str | Path = ".") -> list[str]:
    """Names of the finished experiments of ``repo``'s baseline (HEAD), as ``dvc exp list``."""
    from dvc.repo import Repo

    with Repo(str(repo)) as r:
        found = r.experiments.ls()
    names = []
    for entries in found.values():
        for entry in entries:
            name, sha = entry if isinstance(entry, tuple) else (entry, True)
            if sha:  # queued or running ones have no commit yet
                names.append(name)
    return names


# ---------------------------------------------------------------------- comparing
CONTROLS = ("single", "ensemble")  # what the per-cluster decoders are compared with (``against``)
# the whole image, then each region: the rows of the per-region verdict over the seeds
REGION_VERDICT_METRICS = ("psnr", "psnr_blur", "psnr_noise", "psnr_clean")


def architectures(per_image: dict[str, dict[str, np.ndarray]], against: str = "single") -> list[str]:
    """The architectures with both a ``.multi`` and a ``.<against>`` row, in row order."""
    return [r[: -len(".multi")] for r in per_image
            if r.endswith(".multi") and r[: -len(".multi")] + f".{against}" in per_image]


def compared_metrics(multi: dict[str, np.ndarray], single: dict[str, np.ndarray]) -> list[str]:
    """The metrics both rows have that have a direction of "better", in the rows' order."""
    return [k for k in multi if k in single and M.direction(k) is not None]


def compare_metric(metric: str, multi: Any, single: Any) -> dict[str, float | int]:
    """``mean_diff`` (multi - single over the finite pairs), ``median_diff``, ``share`` (multi
    wins, ties half, pairs with ``nan`` dropped), ``p_value`` (Wilcoxon), ``n`` (finite pairs)."""
    a, b = np.asarray(multi, dtype=np.float64), np.asarray(single, dtype=np.float64)
    if a.shape != b.shape:
        raise ValueError(f"{metric}: multi has {a.size} images, single {b.size}")
    higher = M.direction(metric)  # a metric with no direction, asked for by name, compares as higher-better
    c = S.paired_comparison(M.compared_values(metric, a), M.compared_values(metric, b),
                            higher_is_better=True if higher is None else higher)
    return {
        "mean_diff": c["mean_difference"],
        "median_diff": c["median_difference"],
        "share": c["share_better"],
        "p_value": float(c["p_value"]),
        "n": int(c["n"]),
    }


def compare_run(per_image: dict[str, dict[str, np.ndarray]], arch: str,
                metrics: Iterable[str] | None = None, against: str = "single") -> dict[str, dict[str, float | int]]:
    """:func:`compare_metric` for each metric of ``arch``'s multi vs ``against`` (single or
    ensemble) rows."""
    multi, single = per_image[f"{arch}.multi"], per_image[f"{arch}.{against}"]
    keys = compared_metrics(multi, single) if metrics is None else [k for k in metrics if k in multi and k in single]
    return {k: compare_metric(k, multi[k], single[k]) for k in keys}


def check_targets(cmp: dict[str, dict], targets: Targets = Targets()) -> dict[str, Any]:
    """Whether one seed's comparison meets the targets. Each check is True/False, or None when
    its metric is missing or undefined (no image with that region): then ``holds`` is False."""
    blur, clean = cmp.get(targets.blur_metric), cmp.get(targets.clean_metric)

    def ok(value: float | None, test) -> bool | None:
        return None if value is None or not np.isfinite(value) else bool(test(value))

    out: dict[str, Any] = {
        "blur_share": ok(blur and blur["share"], lambda s: s >= targets.min_share),
        "blur_p": ok(blur and blur["p_value"], lambda p: p < targets.max_p),
        "clean_diff": ok(clean and clean["mean_diff"], lambda d: d >= targets.min_clean_diff),
    }
    out["holds"] = all(v is True for v in out.values())
    return out


def spread(values: Iterable[float]) -> dict[str, float | int]:
    """``mean``, ``std`` (ddof 1; ``nan`` for fewer than 2), ``min``, ``max`` of the finite
    values and ``n`` (how many)."""
    arr = np.asarray([v for v in values if v is not None], dtype=np.float64)
    arr = arr[np.isfinite(arr)]
    if not arr.size:
        return {"mean": math.nan, "std": math.nan, "min": math.nan, "max": math.nan, "n": 0}
    return {
        "mean": float(arr.mean()),
        "std": float(arr.std(ddof=1)) if arr.size > 1 else math.nan,
        "min": float(arr.min()),
        "max": float(arr.max()),
        "n": int(arr.size),
    }


def levels(runs: list[SeedRun], metrics: Iterable[str] = HEADLINE) -> dict[str, dict[str, dict]]:
    """``levels[row][metric]``: the figure of each run (``values``, by label; a run without
    that row or metric is left out) and their :func:`spread`, for the rows of the runs in
    order of appearance and the ``metrics`` they have."""
    out: dict[str, dict[str, dict]] = {}
    for r in runs:
        rows = r.rows or parse_rows({}, r.per_image)
        for row, figures in rows.items():
            for k in metrics:
                if k in figures:
                    out.setdefault(row, {}).setdefault(k, {"values": {}})["values"][r.label] = figures[k]
    for row in out.values():
        for k, entry in row.items():
            entry.update(spread(entry["values"].values()))
    return out


def region_verdicts(runs: list[SeedRun], arch: str, against: str = "single",
                    level: float = 0.95) -> dict[str, dict[str, Any]]:
    """Per whole image and region (:data:`REGION_VERDICT_METRICS`), the verdict over the seeds
    with the seeds as the independent units: each seed's mean per-image difference multi −
    ``against`` (dB), their mean, the Student-t ``level`` interval over the seeds
    (:func:`aerestore.stats.t_interval`, its error rate calibrated by simulation in ``tests/test_report.py``),
    how many seeds multi won, and ``verdict``: ``"better"`` (interval above 0), ``"worse"``
    (below 0), ``"undecided"`` (it holds 0) or ``"one seed: no interval"``.

    Where a run's per-cluster restorer has fewer than two decoders of its own (its
    ``own_decoders``, from ``metrics/evaluate.json``), it is an ensemble itself: every
    region's verdict is :data:`aerestore.evaluate_compare.NOT_APPLICABLE`."""
    from ..evaluate_compare import NOT_APPLICABLE

    used = [r for r in runs if f"{arch}.multi" in r.per_image and f"{arch}.{against}" in r.per_image]
    single_cluster = [r.label for r in used if (r.meta.get("own_decoders") or {}).get(arch, 2) < 2]
    out: dict[str, dict[str, Any]] = {}
    for k in REGION_VERDICT_METRICS:
        diffs = [r.per_image[f"{arch}.multi"][k] - r.per_image[f"{arch}.{against}"][k]
                 for r in used if k in r.per_image[f"{arch}.multi"] and k in r.per_image[f"{arch}.{against}"]]
        means = S.seed_means(diffs)
        if not means.size:
            continue
        lo, hi = S.t_interval(diffs, level)
        if single_cluster:
            verdict = NOT_APPLICABLE
        elif means.size < 2:
            verdict = "one seed: no interval"
        else:
            verdict = "better" if lo > 0 else ("worse" if hi < 0 else "undecided")
        out[k] = {"mean": float(means.mean()), "ci": [lo, hi], "level": level, "seeds": int(means.size),
                  "seeds_won": int((means > 0).sum()), "verdict": verdict,
                  "not_applicable_runs": single_cluster}
    return out


def analyse(runs: list[SeedRun], metrics: Iterable[str] | None = None,
            targets: Targets = Targets(), against: str = "single") -> dict[str, Any]:
    """Every run compared, then aggregated over the runs, per architecture and metric.

    Returns (JSON-ready) ``runs`` (label, seed, source), ``targets``, ``per_seed[arch][label]``
    = ``{"metrics": {metric: compare_metric(...)}, "targets": check_targets(...)}``,
    ``aggregate[arch][metric][stat]`` = :func:`spread` of ``stat`` in ``mean_diff``, ``share``,
    ``p_value`` over the runs, ``holds[arch]`` (targets met in every run of ``arch``),
    ``levels`` (the headline figures per run and their spread: :func:`levels`), ``regions[arch]``
    (:func:`region_verdicts`), ``against`` and ``warnings``. ``against``: the control the
    per-cluster decoders (``multi``) are compared with, ``single`` (the equal-budget single
    decoder) or ``ensemble`` (the ensemble control: the idea holds only where it wins there).
    """
    if against not in CONTROLS:
        raise ValueError(f"against must be one of {list(CONTROLS)}, got {against!r}")
    if not runs:
        raise ValueError("no runs to compare")
    metrics = None if metrics is None else list(metrics)
    warnings: list[str] = []
    labels = [r.label for r in runs]
    if len(set(labels)) != len(labels):
        raise ValueError(f"the same source twice: {labels}")
    seeds = [r.seed for r in runs if r.seed is not None]
    if len(set(seeds)) != len(seeds):
        warnings.append(f"some runs share a seed ({sorted(seeds)}): they are not independent")
    if len(runs) < 2:
        warnings.append("one run only: no spread over seeds")
    archs: list[str] = []
    for r in runs:
        for a in architectures(r.per_image, against):
            if a not in archs:
                archs.append(a)
    if not archs:
        raise ValueError(f"no architecture has both a <arch>.multi and a <arch>.{against} row"
                         + (" (was the ensemble control trained? decoders.ensemble)" if against == "ensemble" else ""))
    per_seed: dict[str, dict[str, Any]] = {}
    aggregate: dict[str, dict[str, Any]] = {}
    holds: dict[str, bool] = {}
    for arch in archs:
        per_seed[arch] = {}
        for r in runs:
            if f"{arch}.multi" not in r.per_image or f"{arch}.{against}" not in r.per_image:
                warnings.append(f"{r.label}: no {arch}.multi/{arch}.{against} rows")
                continue
            cmp = compare_run(r.per_image, arch, metrics, against)
            per_seed[arch][r.label] = {"seed": r.seed, "metrics": cmp, "targets": check_targets(cmp, targets)}
        keys: list[str] = []
        for entry in per_seed[arch].values():
            keys += [k for k in entry["metrics"] if k not in keys]
        aggregate[arch] = {
            k: {stat: spread(e["metrics"][k][stat] for e in per_seed[arch].values() if k in e["metrics"])
                for stat in ("mean_diff", "share", "p_value")}
            for k in keys
        }
        holds[arch] = bool(per_seed[arch]) and all(e["targets"]["holds"] for e in per_seed[arch].values())
    return {
        "runs": [{"label": r.label, "seed": r.seed, "source": r.source} for r in runs],
        "targets": asdict(targets),
        "per_seed": per_seed,
        "aggregate": aggregate,
        "holds": holds,
        "levels": levels(runs),
        "regions": {arch: region_verdicts(runs, arch, against) for arch in archs},
        "against": against,
        "warnings": warnings,
    }

# the Markdown, JSON and figure of a report: aerestore.studies.seeds_report
