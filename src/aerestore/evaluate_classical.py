"""The classical side of the ``evaluate`` stage (:func:`aerestore.evaluate.run_evaluate`):
their settings chosen on the validation split (:func:`tune_on_validation`) and the oracle,
the upper bound told the true damage (:func:`oracle_row`, :func:`add_oracle`)."""

from __future__ import annotations

import time

import numpy as np
from tqdm import tqdm

from .evaluate import MODES, RowFn, row_summary


def tune_on_validation(names: list[str], grid: dict[str, dict[str, list[float]]], clean: np.ndarray,
                       degraded: np.ndarray, progress: bool = True) -> tuple[dict, dict, float]:
    """Choose the classical restorers' settings on the validation images (uint8 ``clean`` /
    ``degraded``): each restorer of ``names`` with a grid in ``grid`` gets the combination with
    the best mean PSNR (:func:`aerestore.classical.choose_settings`). Returns the restorers
    ``{name: Restorer}`` (every name; defaults where there is no grid), the records
    ``{name: {"chosen", "val_psnr", "grid", "images"}}`` and the seconds it took."""
    from itertools import product

    from .classical import RESTORERS, choose_settings

    c = np.asarray(clean, dtype=np.float64) / 255.0
    d = np.asarray(degraded, dtype=np.float64) / 255.0
    todo = [n for n in names if grid.get(n)]
    runs = sum(len(list(product(*grid[n].values()))) for n in todo) * len(c)
    restorers = {n: RESTORERS[n] for n in names}
    records = {}
    t0 = time.perf_counter()
    with tqdm(total=runs, desc="classical settings (validation)", unit="img", disable=not progress,
              mininterval=0.5) as bar:
        for n in todo:
            bar.set_postfix_str(n)
            restorers[n], records[n] = choose_settings(RESTORERS[n], grid[n], c, d, bar)
    return restorers, records, time.perf_counter() - t0


def oracle_row(clean: np.ndarray, masks: np.ndarray, denoiser: str, told: list) -> RowFn:
    """The oracle's row for :func:`score_rows` over exactly the images ``clean`` / ``masks``
    (uint8), in order: each chunk of degraded images is restored by
    :func:`aerestore.classical.oracle_restore` with the matching clean images and masks; what
    it was told (true sigmas, blur strength) is appended to ``told``."""
    from .classical import oracle_restore

    pos = [0]

    def fn(images: np.ndarray) -> np.ndarray:
        i, n = pos[0], len(images)
        if i + n > len(clean):
            raise ValueError(f"oracle row: called for images {i}..{i + n - 1} of {len(clean)}")
        out = np.empty_like(images)
        for j in range(n):
            out[j], info = oracle_restore(images[j], np.asarray(clean[i + j], dtype=np.float64) / 255.0,
                                          np.asarray(masks[i + j]), denoiser)
            told.append(info)
        pos[0] += n
        return out

    return fn


def add_oracle(result: dict, anchor: dict, seconds: float, megapixels: float, denoiser: str,
               archs: list[str]) -> None:
    """Put the oracle row (scored on the anchor subset) into ``result["anchor_subset"]["oracle"]``,
    apart from the classical rows (it is an upper bound, never the best classical restorer), and
    per architecture and mode ``oracle_gap_db``: the network's PSNR minus the oracle's."""
    sub = result["anchor_subset"]
    row = row_summary(anchor["oracle"])
    row["megapixels_per_s"] = megapixels / max(seconds, 1e-9)
    row["denoiser"] = denoiser
    sub["oracle"] = row
    for arch in archs:
        for mode in MODES:
            r = sub.get(arch, {}).get(mode)
            if r is not None:
                r["oracle_gap_db"] = None if r["psnr"] is None or row["psnr"] is None else r["psnr"] - row["psnr"]
