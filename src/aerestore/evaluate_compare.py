"""The per-cluster decoders against their controls, image by image (the ``evaluate`` stage's
comparisons): multi vs the equal-budget single decoder, multi vs the ensemble control, and
what mixing alone buys (ensemble vs single), with the verdict read from them.

Split out of :mod:`aerestore.evaluate` (which scores the rows) so that the comparison, the
part a rigged setup would change, is in one short module (``tests/test_comparison_guards.py``).
"""

from __future__ import annotations

import numpy as np

from . import metrics as M
from . import stats as S

# per region (each damage kind, then the clean pixels): psnr_blur, ssim_blur, ..., psnr_clean
REGION_KEYS = tuple(M.region_keys(("psnr", "ssim")))
COMPARED = ("psnr", "ssim", "uqi", "blur_percent")  # multi vs single, per image
ENSEMBLE = "ensemble"  # the ensemble control's row, where decoders.pt has one (decoders.ensemble)
NOT_APPLICABLE = "not applicable: one cluster"  # the verdict where < 2 clusters have a decoder


def _finite_or_none(v: float) -> float | None:
    return None if v is None or not np.isfinite(v) else float(v)


def compare(multi: dict[str, np.ndarray], single: dict[str, np.ndarray]) -> dict[str, dict]:
    """Per metric (and per region metric present): share of images where multi beats single,
    and the paired Wilcoxon test's p-value (``None`` where no image has the value, e.g. a
    region without pixels)."""
    out = {}
    for k in COMPARED + tuple(key for key in REGION_KEYS if key in multi):
        c = S.paired_comparison(M.compared_values(k, multi[k]), M.compared_values(k, single[k]),
                                higher_is_better=bool(M.direction(k)))
        out[k] = {"share": _finite_or_none(c["share_better"]), "p_value": _finite_or_none(c["p_value"])}
    return out


def network_comparisons(metrics: dict, arch: str, own_decoders: int | None) -> dict:
    """The per-cluster decoders against both controls, per image: ``multi_vs_single`` (the
    equal-budget single decoder), and where the ensemble control ran, ``multi_vs_ensemble``
    (as many decoders, the same budget and mixing, damage-blind routes) and
    ``ensemble_vs_single`` (what mixing alone buys); ``own_decoders`` and the ``verdict``
    (:func:`verdict`)."""
    out = {"multi_vs_single": compare(metrics[f"{arch}.multi"], metrics[f"{arch}.single"])}
    if f"{arch}.{ENSEMBLE}" in metrics:
        out["multi_vs_ensemble"] = compare(metrics[f"{arch}.multi"], metrics[f"{arch}.{ENSEMBLE}"])
        out["ensemble_vs_single"] = compare(metrics[f"{arch}.{ENSEMBLE}"], metrics[f"{arch}.single"])
    if own_decoders is not None:
        out["own_decoders"] = int(own_decoders)
    out["verdict"] = verdict(out.get("multi_vs_ensemble"), own_decoders, vs_single=out["multi_vs_single"])
    return out


def verdict(vs_ensemble: dict | None, own_decoders: int | None, alpha: float = 0.05,
            vs_single: dict | None = None) -> str:
    """Whether the per-cluster decoders support the idea: only where they beat the ensemble
    control **and**, where ``vs_single`` is given, the equal-budget single decoder (PSNR, share
    of images > 1/2 and Wilcoxon p < ``alpha`` against each), per region (whole image, then
    each damage kind's pixels and the clean ones); a region where they lose to either control
    (share < 1/2, p < ``alpha``) is named as worse. Beating the ensemble alone is not enough:
    where the ensemble's decoders are each too weak (e.g. a short fine-tune on a fraction of the
    blocks), per-cluster decoders can beat it and still restore worse than one decoder. With
    fewer than two clusters that have a decoder of their own the per-cluster restorer is an
    ensemble itself: :data:`NOT_APPLICABLE`."""
    if own_decoders is not None and own_decoders < 2:
        return NOT_APPLICABLE
    if vs_ensemble is None:
        return "no verdict: no ensemble control (decoders.ensemble false)"
    controls = [vs_ensemble] + ([vs_single] if vs_single is not None else [])
    won, lost = [], []
    for key in ["psnr"] + [f"psnr_{r}" for r in M.REGIONS]:
        region = "whole image" if key == "psnr" else key[len("psnr_"):]
        signs = []
        for control in controls:
            c = control.get(key)
            significant = c and c["share"] is not None and c["p_value"] is not None and c["p_value"] < alpha
            signs.append(0 if not significant else (1 if c["share"] > 0.5 else -1))
        if -1 in signs:
            lost.append(region)
        elif all(sg == 1 for sg in signs):
            won.append(region)
    rivals = "the ensemble control" if vs_single is None else "both controls"
    text = f"supported in: {', '.join(won)}" if won else f"not supported: beats {rivals} nowhere"
    worse = "it" if vs_single is None else "a control"
    return text + (f"; worse than {worse} in: {', '.join(lost)}" if lost else "")
