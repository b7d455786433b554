"""One seed's run for ``aerestore seeds`` (:mod:`aerestore.studies.seeds`): its per-image
metrics and test-set figures, read from a file, a folder or a DVC experiment.

Input: what the ``evaluate`` stage leaves in ``metrics/evaluate_details.json`` under
``"per_image"``: ``{row: {metric: [value per test image]}}``, rows such as ``conv_ae.multi``
and ``conv_ae.single``, metrics such as ``psnr``, ``ssim``, ``psnr_blur``, ``psnr_noise``,
``psnr_clean`` (``null``/``NaN`` where an image has no such region). A source is such a JSON
file, a folder holding it (``<folder>/metrics/evaluate_details.json`` or
``<folder>/evaluate_details.json``), or a DVC experiment name / git revision of a repository.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .revisions import read_revision

DETAILS = "metrics/evaluate_details.json"
EVALUATE = "metrics/evaluate.json"  # optional: each architecture's own_decoders
PARAMS = "params.yaml"


@dataclass
class SeedRun:
    """The per-image results of one run: ``per_image[row][metric]`` float arrays."""

    label: str
    per_image: dict[str, dict[str, np.ndarray]]
    seed: int | None = None
    source: str = ""
    meta: dict[str, Any] = field(default_factory=dict)
    rows: dict[str, dict[str, float]] = field(default_factory=dict)  # test-set figures per row (parse_rows)


def parse_per_image(details: dict, source: str = "details") -> dict[str, dict[str, np.ndarray]]:
    """``details["per_image"]`` as float arrays (``null`` -> ``nan``)."""
    if not isinstance(details, dict) or "per_image" not in details:
        raise ValueError(f"{source}: no 'per_image' key (an evaluate_details.json written before "
                         "evaluate kept per-image metrics? rerun the evaluate stage)")
    out: dict[str, dict[str, np.ndarray]] = {}
    for row, metrics in details["per_image"].items():
        if not isinstance(metrics, dict):
            raise ValueError(f"{source}: per_image[{row!r}] is not a {{metric: [values]}} object")
        out[row] = {}
        for k, v in metrics.items():
            arr = np.asarray([math.nan if x is None else x for x in v], dtype=np.float64)
            if arr.ndim != 1:
                raise ValueError(f"{source}: per_image[{row!r}][{k!r}] is not a list of numbers")
            out[row][k] = arr
    return out


def parse_rows(details: dict, per_image: dict[str, dict[str, np.ndarray]]) -> dict[str, dict[str, float]]:
    """Each row's test-set figures: ``details["rows"]`` (what ``evaluate.json`` and the
    summary table show, the classical restorers included) where the file has it, else the
    mean of each per-image metric over the images that have it. A slow classical restorer
    that ran on the anchor subset only (``bm3d`` on a test split larger than
    ``evaluate.anchor_images``) comes from the subset's rows."""
    def numbers(m: dict) -> dict[str, float]:
        return {str(k): float(v) for k, v in m.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}

    rows = details.get("rows") if isinstance(details, dict) else None
    if isinstance(rows, dict) and rows:
        out = {str(r): numbers(m) for r, m in rows.items() if isinstance(m, dict)}
        anchor = details.get("anchor_subset") if isinstance(details.get("anchor_subset"), dict) else {}
        for r in anchor.get("slow_rows") or []:
            if r not in out and isinstance((anchor.get("rows") or {}).get(r), dict):
                out[r] = numbers(anchor["rows"][r])
        return out
    return {r: {k: float(v[np.isfinite(v)].mean()) for k, v in m.items() if np.isfinite(v).any()}
            for r, m in per_image.items()}


def own_decoders(evaluate_text: str | None) -> dict[str, int]:
    """``{arch: own_decoders}`` from an ``evaluate.json`` text (how many clusters have a decoder
    of their own; below 2 the per-cluster restorer is an ensemble); ``{}`` when absent."""
    if not evaluate_text:
        return {}
    try:
        data = json.loads(evaluate_text)
    except json.JSONDecodeError:
        return {}
    return {str(a): int(v["own_decoders"]) for a, v in data.items()
            if isinstance(v, dict) and isinstance(v.get("own_decoders"), int)}


def _seed_of(params_text: str | None) -> int | None:
    if not params_text:
        return None
    import yaml

    try:
        seed = (yaml.safe_load(params_text) or {}).get("seed")
    except yaml.YAMLError:
        return None
    return int(seed) if isinstance(seed, (int, float)) else None


def load_file(path: str | Path, label: str | None = None) -> SeedRun:
    """A run from an evaluate_details.json file, or a folder holding one (the folder's
    ``params.yaml``, if any, gives the seed; else a top-level ``"seed"`` key of the JSON)."""
    path = Path(path)
    folder = None
    if path.is_dir():
        folder = path
        for candidate in (path / DETAILS, path / Path(DETAILS).name):
            if candidate.is_file():
                path = candidate
                break
        else:
            raise FileNotFoundError(f"{folder}: holds neither {DETAILS} nor {Path(DETAILS).name}")
    try:
        details = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path}: not JSON ({exc})") from None
    seed = details.get("seed") if isinstance(details, dict) else None
    if seed is None and folder is not None and (folder / PARAMS).is_file():
        seed = _seed_of((folder / PARAMS).read_text())
    per_image = parse_per_image(details, str(path))
    beside = path.parent / Path(EVALUATE).name  # evaluate.json sits beside evaluate_details.json
    own = own_decoders(beside.read_text()) if beside.is_file() else {}
    return SeedRun(label=label or str(folder or path), per_image=per_image,
                   seed=None if seed is None else int(seed), source=str(path), rows=parse_rows(details, per_image),
                   meta={"own_decoders": own})



def load_rev(rev: str, repo: str | Path = ".") -> SeedRun:
    """A run from a DVC experiment (name, e.g. ``moody-lahs``) or git revision of ``repo``:
    its ``metrics/evaluate_details.json`` and the seed of its ``params.yaml``
    (:func:`aerestore.studies.revisions.read_revision`)."""
    sha, files = read_revision(rev, (DETAILS, PARAMS, EVALUATE), repo, optional=(PARAMS, EVALUATE),
                               what="a file, folder, experiment or git revision",
                               hint=" (did its evaluate stage run?)")
    details = json.loads(files[DETAILS])
    per_image = parse_per_image(details, f"{rev}:{DETAILS}")
    return SeedRun(label=rev, per_image=per_image, seed=_seed_of(files[PARAMS]), source=f"{rev} ({sha[:7]})",
                   meta={"rev": sha, "own_decoders": own_decoders(files.get(EVALUATE))},
                   rows=parse_rows(details, per_image))
