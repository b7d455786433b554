"""Writing the seed comparison of :mod:`aerestore.studies.seeds`: its Markdown (the
per-region verdict table, the per-metric spread, the targets, the headline figures' spread
over seeds), its JSON and, through :mod:`aerestore.studies.seeds_plot`, its figure."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from .. import metrics as M
from .seeds import HEADLINE


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
