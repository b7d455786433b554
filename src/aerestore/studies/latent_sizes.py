"""The blur study's latent-size comparison, built from the outputs of DVC experiments.

Each experiment (one latent size of one architecture, e.g. ``dvc exp run --queue -S
'arch.vae_lfw.latent=16,128,512'``) wrote ``metrics/explore/<arch>.json`` and
``metrics/explore/<arch>/interpolation.png`` (git-tracked: ``cache: false``); they are read
at the experiment's commit with :func:`dvc.api.read`. :func:`figure` cuts the same tiles out
of each experiment's interpolation grid (rows: the pairs' first test images; one column per
latent size: that image's reconstruction, or the interpolation's mid-point frame) and
:func:`markdown` tabulates the plausibility and colourfulness metrics per latent size.
"""

from __future__ import annotations

import io
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .revisions import read_revision

FRAMES = ("reconstruction", "midpoint")


@dataclass
class ExploreRun:
    """One experiment's ``explore@<arch>`` outputs."""

    label: str
    metrics: dict
    interpolation: np.ndarray  # uint8 (H, W, 3): the interpolation grid

    @property
    def latent(self) -> int:
        return int(self.metrics["latent_dim"])


def load_run(rev: str, arch: str, repo: str | Path = ".") -> ExploreRun:
    """``explore@<arch>``'s metrics and interpolation grid at ``rev`` (an experiment name or
    git revision of the DVC repository ``repo``,
    :func:`aerestore.studies.revisions.read_revision`); errors name the revision and the file."""
    from PIL import Image

    files = (f"metrics/explore/{arch}.json", f"metrics/explore/{arch}/interpolation.png")
    _, found = read_revision(rev, files, repo, binary=files[1:], hint=f" (did explore@{arch} run in it?)")
    text, png = found[files[0]], found[files[1]]
    try:
        metrics = json.loads(text)
        picture = np.asarray(Image.open(io.BytesIO(png)).convert("RGB"))
    except (json.JSONDecodeError, OSError) as exc:
        raise ValueError(f"{rev}: unreadable explore output ({exc})") from None
    for key in ("latent_dim", "pairs", "steps"):
        if key not in metrics:
            raise ValueError(f"{rev}: {files[0]} has no {key!r}")
    return ExploreRun(label=rev, metrics=metrics, interpolation=picture)


def tiles(picture: np.ndarray, rows: int, cols: int, gap: int = 2) -> np.ndarray:
    """The ``(rows, cols, th, tw, 3)`` tiles of a grid made by :func:`aerestore.explore.grid`."""
    h, w = picture.shape[:2]
    th, tw = (h - gap) / rows - gap, (w - gap) / cols - gap
    if th != int(th) or tw != int(tw) or th < 1 or tw < 1:
        raise ValueError(f"a {w}x{h} picture is not a grid of {rows} x {cols} tiles")
    th, tw = int(th), int(tw)
    return np.stack([np.stack([picture[gap + r * (th + gap) : gap + r * (th + gap) + th,
                                       gap + c * (tw + gap) : gap + c * (tw + gap) + tw] for c in range(cols)])
                     for r in range(rows)])


def _run_tiles(run: ExploreRun) -> np.ndarray:
    return tiles(run.interpolation, int(run.metrics["pairs"]), int(run.metrics["steps"]) + 2)


def figure(runs: list[ExploreRun], frame: str = "reconstruction") -> np.ndarray:
    """Rows: the first image of each interpolated pair; columns: the test image, then per
    run (sorted by latent size) its reconstruction (``frame='reconstruction'``, the first
    frame) or the interpolation's mid-point (``'midpoint'``). A label row names the sizes."""
    from PIL import Image, ImageDraw

    from ..explore import grid

    if frame not in FRAMES:
        raise ValueError(f"frame must be one of {FRAMES}, got {frame!r}")
    if not runs:
        raise ValueError("no experiments to compare")
    runs = sorted(runs, key=lambda r: r.latent)
    cut = [_run_tiles(r) for r in runs]
    first = cut[0]
    for r, t in zip(runs[1:], cut[1:]):
        if t.shape[0] != first.shape[0] or t.shape[2:] != first.shape[2:] or not np.array_equal(t[:, 0], first[:, 0]):
            raise ValueError(f"{r.label} interpolated other test images than {runs[0].label} "
                             "(same data, seed and explore.pairs needed)")
    col = 1 + (int(runs[0].metrics["steps"]) - 1) // 2 if frame == "midpoint" else 1
    rows = [np.stack([first[i, 0]] + [t[i, col] for t in cut]) for i in range(first.shape[0])]
    body = grid(rows, min_tile=first.shape[2])
    tile = first.shape[3] + 2
    label = Image.new("RGB", (body.shape[1], 14), "white")
    draw = ImageDraw.Draw(label)
    for c, text in enumerate(["test image"] + [f"latent {r.latent}" for r in runs]):
        draw.text((2 + c * tile + 2, 1), text, fill="black")
    return np.concatenate([np.asarray(label), body])


def _fmt(v, spec: str) -> str:
    return "n/a" if v is None else format(v, spec)


def markdown(runs: list[ExploreRun]) -> str:
    """A table, one row per run (by latent size): the frames' nearest-training-image MSE at
    the endpoints and mid-points and their ratio, the samples', and the colourfulness of the
    reconstructions and samples (clean test images' in the caption)."""
    runs = sorted(runs, key=lambda r: r.latent)
    lines = ["| experiment | latent | endpoints MSE | mid-points MSE | mid / end | samples MSE | "
             "colourfulness (reconstructions) | colourfulness (samples) |",
             "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for r in runs:
        m = r.metrics
        p = m.get("plausibility_clean", {})
        c = m.get("colourfulness", {})
        lines.append(f"| {r.label} | {r.latent} | {_fmt(p.get('endpoints_mse'), '.4f')} | "
                     f"{_fmt(p.get('midpoints_mse'), '.4f')} | {_fmt(p.get('midpoint_to_endpoint_ratio'), '.2f')} | "
                     f"{_fmt(m.get('samples_nearest_train_mse'), '.4f')} | {_fmt(c.get('reconstructed'), '.1f')} | "
                     f"{_fmt(c.get('samples'), '.1f')} |")
    clean = runs[0].metrics.get("colourfulness", {}).get("clean") if runs else None
    lines.append("")
    lines.append(f"MSE: pixel MSE of the interpolation frames (samples) to their nearest training image; "
                 f"colourfulness of the clean test images: {_fmt(clean, '.1f')}.")
    return "\n".join(lines) + "\n"
