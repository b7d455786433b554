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

import json
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


# ------------------------------------------------------------------------ outputs
def _num(v: Any, fmt: str) -> str:
    if v is None or (isinstance(v, float) and not np.isfinite(v)):
        return "–"
    return format(v, fmt)


def _pm(s: dict, fmt: str) -> str:
    if not s["n"]:
        return "–"
    text = _num(s["mean"], fmt)
    return text + (f" ± {_num(s['std'], fmt)}" if s["n"] > 1 else "")


def _range(s: dict, fmt: str) -> str:
    return "–" if not s["n"] else f"[{_num(s['min'], fmt)}, {_num(s['max'], fmt)}]"


def _check(v: bool | None) -> str:
    return "–" if v is None else ("yes" if v else "**no**")


def markdown(report: dict) -> str:
    """The report as markdown: the aggregate table, then the targets seed by seed."""
    runs = report["runs"]
    t = report["targets"]
    seeds = ", ".join(f"{r['label']} (seed {r['seed']})" if r["seed"] is not None else r["label"] for r in runs)
    against = report.get("against", "single")
    control = {"single": "control", "ensemble": "ensemble control"}[against]
    lines = [f"## Per-cluster vs {control} decoders over {len(runs)} seed(s)", "", f"Runs: {seeds}.", ""]
    lines += regions_markdown(report.get("regions") or {}, against)
    lines += ["Per metric, over the seeds: mean ± standard deviation [min, max] of the mean per-image "
             f"difference multi − {against}, of the share of test images won by multi (ties half) and "
             "of the paired Wilcoxon p-value. Δ in dB for PSNR; for blur_percent the difference of "
             "|blur %| (negative: multi sharper, closer to the clean image).", "",
             "| architecture | metric | Δ mean | Δ [min, max] | share won | share [min, max] | p | p max |",
             "|---|---|---:|---:|---:|---:|---:|---:|"]
    for arch, metrics in report["aggregate"].items():
        for k, s in metrics.items():
            fmt = {"psnr": ".3f", "blur_percent": ".2f"}.get(M.base_metric(k), ".4f")
            lines.append(
                f"| {arch} | {k} | {_pm(s['mean_diff'], fmt)} | {_range(s['mean_diff'], fmt)} "
                f"| {_pm(s['share'], '.1%')} | {_range(s['share'], '.1%')} "
                f"| {_pm(s['p_value'], '.2g')} | {_num(s['p_value']['max'], '.2g')} |")
    lines += ["", f"Targets, seed by seed: {t['blur_metric']} won on ≥ {t['min_share']:.0%} of the images "
              f"with p < {t['max_p']:g}; {t['clean_metric']} mean difference ≥ {t['min_clean_diff']:g} dB.", "",
              f"| architecture | run | seed | {t['blur_metric']} share | p | {t['clean_metric']} Δ | holds |",
              "|---|---|---:|---:|---:|---:|---|"]
    for arch, entries in report["per_seed"].items():
        for label, e in entries.items():
            b = e["metrics"].get(t["blur_metric"], {})
            c = e["metrics"].get(t["clean_metric"], {})
            ch = e["targets"]
            lines.append(
                f"| {arch} | {label} | {_num(e['seed'], 'd')} "
                f"| {_num(b.get('share'), '.1%')} ({_check(ch['blur_share'])}) "
                f"| {_num(b.get('p_value'), '.2g')} ({_check(ch['blur_p'])}) "
                f"| {_num(c.get('mean_diff'), '+.3f')} ({_check(ch['clean_diff'])}) "
                f"| {'yes' if ch['holds'] else '**no**'} |")
    lines.append("")
    for arch, ok in report["holds"].items():
        n = len(report["per_seed"][arch])
        met = sum(e["targets"]["holds"] for e in report["per_seed"][arch].values())
        verdict = "hold in every run" if ok else "do **not** hold in every run"
        lines.append(f"- **{arch}**: the targets {verdict} ({met} of {n}).")
    for w in report["warnings"]:
        lines.append(f"- warning: {w}")
    lines += levels_markdown(report.get("levels") or {}, len(runs))
    return "\n".join(lines) + "\n"


LEVEL_FORMAT = {"psnr": ".2f", "ssim": ".3f", "uqi": ".3f", "blur_percent": ".1f"}


def regions_markdown(regions: dict[str, dict[str, dict]], against: str) -> list[str]:
    """The verdict per architecture and region (:func:`region_verdicts`) as markdown lines."""
    if not regions:
        return []
    lines = [f"The verdict per region, with the seeds as the units: the mean over seeds of each seed's mean "
             f"per-image PSNR difference multi − {against} (dB), its 95 % Student-t interval over the seeds, "
             "the seeds multi won, and **better** / **worse** where the interval excludes 0.", "",
             "| architecture | region | seeds | Δ PSNR mean | 95 % interval | seeds won | verdict |",
             "|---|---|---:|---:|---:|---:|---|"]
    for arch, by_region in regions.items():
        for k, v in by_region.items():
            region = "whole image" if k == "psnr" else k[len("psnr_"):]
            lo, hi = v["ci"]
            ci = "–" if not (np.isfinite(lo) and np.isfinite(hi)) else f"[{lo:+.3f}, {hi:+.3f}]"
            word = f"**{v['verdict']}**" if v["verdict"] in ("better", "worse") else v["verdict"]
            lines.append(f"| {arch} | {region} | {v['seeds']} | {v['mean']:+.3f} | {ci} "
                         f"| {v['seeds_won']} of {v['seeds']} | {word} |")
    return lines + [""]


def levels_markdown(lv: dict[str, dict[str, dict]], n_runs: int) -> list[str]:
    """The headline figures as mean ± standard deviation over the seeds, one row per restorer
    and one column per :data:`HEADLINE` metric the rows have (lines of markdown)."""
    if not lv:
        return []
    cols = [k for k in HEADLINE if any(k in m for m in lv.values())]
    lines = ["", f"## The headline figures over {n_runs} seed(s)", "",
             "Each row's test-set figure (as in metrics/summary.md): mean ± standard deviation [min, max] over "
             "the seeds. The seed also draws the split and the damage, so this is the spread of the whole "
             "experiment (the classical rows vary for that reason alone). A slow restorer that ran on the "
             "anchor subset only (bm3d, on a test split larger than evaluate.anchor_images) counts with "
             "that subset's figure.", "",
             "| restorer | " + " | ".join(cols) + " |", "|---|" + "---:|" * len(cols)]
    for row, figures in lv.items():
        cells = []
        for k in cols:
            s = figures.get(k)
            fmt = LEVEL_FORMAT.get(M.base_metric(k), ".3f")
            cells.append("–" if not s else f"{_pm(s, fmt)} {_range(s, fmt)}")
        lines.append(f"| {row} | " + " | ".join(cells) + " |")
    return lines


def _clean(obj: Any) -> Any:
    """JSON-ready: numpy scalars as Python numbers, nan/inf as null."""
    if isinstance(obj, dict):
        return {str(k): _clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_clean(v) for v in obj]
    if isinstance(obj, (bool, np.bool_)):
        return bool(obj)
    if isinstance(obj, (int, np.integer)):
        return int(obj)
    if isinstance(obj, (float, np.floating)):
        return float(obj) if np.isfinite(obj) else None
    return obj


def write_report(report: dict, markdown_path: str | Path | None = None, json_path: str | Path | None = None,
                 png_path: str | Path | None = None) -> list[Path]:
    """Write whichever of the markdown, JSON and PNG paths are given; returns the written paths."""
    from ..io import write_text
    from .seeds_plot import plot_png

    written = []
    if markdown_path:
        write_text(markdown_path, markdown(report))
        written.append(Path(markdown_path))
    if json_path:
        write_text(json_path, json.dumps(_clean(report), indent=2) + "\n")
        written.append(Path(json_path))
    if png_path:
        plot_png(report, png_path)
        written.append(Path(png_path))
    return written
