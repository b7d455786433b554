"""The figure of ``aerestore seeds`` (:mod:`aerestore.studies.seeds`): per architecture, the
per-cluster decoders against the control, seed by seed."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from ..io import atomic_path
from ..metrics import base_metric


def _target(ax, column: int, value: float) -> None:
    """A target: a dashed line at ``value`` over one metric's column, labelled."""
    ax.hlines(value, column - 0.4, column + 0.4, colors="C3", linestyles="--")
    ax.annotate(f"target ≥ {value:g}", (column - 0.4, value),
                xytext=(0, -10), textcoords="offset points", fontsize=7, color="C3")


def plot_png(report: dict, path: str | Path) -> None:
    """Per architecture (columns): the mean PSNR difference multi − single (top) and the share
    of images won (bottom) per whole-image / region PSNR, one dot per seed, with the mean over
    seeds ± standard deviation; dashed lines at the targets."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt


    t = report["targets"]
    against = report.get("against", "single")
    archs = list(report["aggregate"])
    width = max([5.5] + [3.5 + 0.7 * len(m) for m in report["aggregate"].values()])
    fig, axes = plt.subplots(2, len(archs), figsize=(width * len(archs), 6.4), dpi=100, squeeze=False)
    labels = [r["label"] for r in report["runs"]]
    colours = {lab: f"C{i % 10}" for i, lab in enumerate(labels)}
    for j, arch in enumerate(archs):
        keys = [k for k in report["aggregate"][arch] if base_metric(k) == "psnr"]
        if not keys:
            keys = list(report["aggregate"][arch])
        for i, (stat, title) in enumerate((("mean_diff", f"mean PSNR difference multi − {against} (dB)"),
                                            ("share", "share of images won by multi"))):
            ax = axes[i, j]
            x = np.arange(len(keys))
            for s, (label, e) in enumerate(report["per_seed"][arch].items()):
                off = (s - (len(labels) - 1) / 2) * 0.08 - 0.1
                ys = [e["metrics"].get(k, {}).get(stat, math.nan) for k in keys]
                seed = e["seed"]
                ax.scatter(x + off, ys, s=22, color=colours.get(label, "0.5"), zorder=3,
                           label=f"{label}" + (f" (seed {seed})" if seed is not None else ""))
            agg = [report["aggregate"][arch][k][stat] for k in keys]
            mean = np.array([a["mean"] for a in agg], dtype=float)
            sd = np.nan_to_num(np.array([a["std"] for a in agg], dtype=float))
            ax.errorbar(x + 0.22, mean, yerr=sd, fmt="D", color="k", ms=5, capsize=4, zorder=4,
                        label="mean ± sd over seeds")
            if stat == "mean_diff":
                ax.axhline(0.0, color="0.5", lw=0.8)
                if t["clean_metric"] in keys:
                    _target(ax, keys.index(t["clean_metric"]), t["min_clean_diff"])
                    lo, hi = ax.get_ylim()
                    ax.set_ylim(min(lo, t["min_clean_diff"] - 0.15 * (hi - lo)), hi)
            else:
                ax.axhline(0.5, color="0.5", lw=0.8)
                if t["blur_metric"] in keys:
                    _target(ax, keys.index(t["blur_metric"]), t["min_share"])
                ax.set_ylim(-0.02, 1.02)
            ax.set_xticks(x, keys, fontsize=8)
            ax.set_xlim(-0.6, len(keys) - 0.4)
            ax.set_title(f"{arch}: {title}", fontsize=9)
            ax.grid(axis="y", alpha=0.3)
            if i == 0 and j == 0:
                ax.legend(fontsize=7, loc="best")
    verdict = "; ".join(f"{a}: {'holds' if ok else 'does not hold'}" for a, ok in report["holds"].items())
    fig.suptitle(f"per-cluster vs {against} over {len(labels)} seed(s) — targets {verdict}", fontsize=10)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)

