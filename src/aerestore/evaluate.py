"""The ``evaluate`` stage: every restorer on the test split's degraded images, scored on
whole images against the clean ones.

Rows: the degraded input itself, for each architecture its ``base`` (shared decoder as
trained), ``single`` (the control decoder), ``ensemble`` (the ensemble control, where
``decoders.pt`` has one: as many decoders as ``multi``, the same budget and mixing,
damage-blind routes) and ``multi`` (per-cluster decoders), and the classical restorers of
:mod:`aerestore.classical`. ``multi`` is compared with ``single`` and with ``ensemble``
(:func:`network_comparisons`); the idea is supported only where it beats the ensemble
control, and not applicable where fewer than two clusters have a decoder of their own. Per metric: the mean over images, the
share of images on which ``multi`` beats ``single`` (the CelebA study's "Percentage"
column; ties count half) and a paired two-sided Wilcoxon test. With damage masks (one
channel per kind of local damage, :data:`aerestore.damage.DAMAGE_KINDS`), PSNR and SSIM
are also reported per region (:data:`aerestore.metrics.REGIONS`): inside each kind's damage
(``psnr_blur``, ``psnr_noise``) and in the clean pixels (``psnr_clean``).

The slow classical restorers (``Restorer.slow``: bm3d) run only on a fixed subset of the test
images, ``evaluate.anchor_images`` of them evenly spaced (:func:`anchor_indices`; 0 = all).
Every row is also scored on that subset (the per-image metrics of the rows that ran on all
images, taken at the subset's indices: the same images), so the "anchor subset" table compares
like for like; ``best_classical`` is the classical row with the best PSNR there and
``<arch>.<mode>.margin_db`` each network's PSNR minus it. A classical restorer whose optional
package is missing (bm3d, non-commercial licence) is skipped with a note.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from tqdm import tqdm

from . import metrics as M
from . import stats as S
from .io import atomic_dir, atomic_path, open_array, write_json, write_text

# The columns of metrics/evaluate.json and of the summary table (means over images).
MAIN_METRICS = ("psnr", "ssim", "uqi", "blur_percent")
# Per region (each damage kind, then the clean pixels): psnr_blur, ssim_blur, ..., psnr_clean.
REGION_KEYS = tuple(M.region_keys(("psnr", "ssim")))
COMPARED = ("psnr", "ssim", "uqi", "blur_percent")  # multi vs single, per image
MODES = ("base", "single", "multi")
ENSEMBLE = "ensemble"  # the ensemble control's row, where decoders.pt has one (decoders.ensemble)
NOT_APPLICABLE = "not applicable: one cluster"  # the verdict where < 2 clusters have a decoder

RowFn = Callable[[np.ndarray], np.ndarray]  # float (N, H, W, C) degraded -> float restored


def load_test(prepared_dir: str | Path, max_images: int = 0):
    return load_split(prepared_dir, "test", max_images)


def load_split(prepared_dir: str | Path, split: str, max_images: int = 0):
    """``(clean, degraded, mask)`` of one prepared split (memory-mapped), the first
    ``max_images`` (0 = all)."""
    d = Path(prepared_dir) / split
    arrays = {}
    for name in ("clean", "degraded", "mask"):
        path = d / f"{name}.npy"
        if not path.exists():
            raise FileNotFoundError(f"{path}: missing (run the prepare stage)")
        arr = open_array(path)
        arrays[name] = arr[:max_images] if max_images else arr
    if len(arrays["clean"]) == 0:
        raise ValueError(f"{d}: the {split} split has no images (data.split.{split}, data.limit)")
    return arrays["clean"], arrays["degraded"], arrays["mask"]


def restorer_row(restorer, mode: str) -> RowFn:
    def fn(images: np.ndarray) -> np.ndarray:
        x = torch.from_numpy(np.ascontiguousarray(images, dtype=np.float32)).permute(0, 3, 1, 2)
        return restorer.restore_float(x, mode).permute(0, 2, 3, 1).numpy().astype(np.float64)

    return fn


def network_modes(restorer) -> tuple[str, ...]:
    """The rows of one architecture: :data:`MODES`, and the ensemble control where the
    restorer has one (a decoders.pt written with ``decoders.ensemble``)."""
    return MODES + ((ENSEMBLE,) if getattr(restorer, "ensemble_decoders", None) is not None else ())


def classical_row(name: str, restorer=None) -> RowFn:
    """The row of a classical restorer: ``restorer`` (e.g. with settings chosen on the
    validation split) or the registered one with its defaults."""
    from .classical import RESTORERS

    r = restorer if restorer is not None else RESTORERS[name]

    def fn(images: np.ndarray) -> np.ndarray:
        return np.stack([r(img) for img in images])

    return fn


def has_damage(masks) -> bool:
    """Whether any pixel of the masks records damage (then the region metrics are reported)."""
    return masks is not None and bool(np.asarray(masks).size) and bool(np.asarray(masks).max() > 0)


def anchor_indices(n: int, k: int) -> np.ndarray:
    """The fixed subset of ``n`` test images for the slow restorers: ``k`` evenly spaced
    indices ``round(linspace(0, n - 1, k))`` (first and last included), all ``n`` when
    ``k`` is 0 or at least ``n``. Deterministic."""
    if k <= 0 or k >= n:
        return np.arange(n)
    return np.unique(np.rint(np.linspace(0, n - 1, k)).astype(np.int64))


def on_subset(
    metrics: dict[str, dict[str, np.ndarray]],
    indices: np.ndarray,
    subset_metrics: dict[str, dict[str, np.ndarray]] | None = None,
) -> dict[str, dict[str, np.ndarray]]:
    """Every row's per-image metrics on the images ``indices``: those of ``metrics`` (scored on
    all images) taken at ``indices``, and ``subset_metrics`` (rows scored on exactly those
    images, in that order) as they are."""
    idx = np.asarray(indices)
    out = {r: {k: v[idx] for k, v in m.items()} for r, m in metrics.items()}
    for r, m in (subset_metrics or {}).items():
        bad = [k for k, v in m.items() if len(v) != len(idx)]
        if bad:
            raise ValueError(f"row {r!r}: {bad[0]} has {len(m[bad[0]])} images, the subset {len(idx)}")
        out[r] = dict(m)
    return out


def score_rows(
    clean: np.ndarray,
    degraded: np.ndarray,
    masks: np.ndarray | None,
    rows: dict[str, RowFn],
    chunk: int = 64,
    keep: int = 0,
    progress: bool = True,
    regions: bool | None = None,
    desc: str = "evaluate",
) -> tuple[dict[str, dict[str, np.ndarray]], dict[str, float], dict[str, np.ndarray]]:
    """Run each row's restorer over the images in chunks and score every image.

    Returns per-image metrics ``{row: {metric: (N,)}}``, seconds per row, and the first
    ``keep`` restored images of each row (uint8) for the grids. ``regions``: whether to add
    the region metrics (default: when ``masks`` has any damaged pixel).
    """
    n = len(clean)
    use_mask = has_damage(masks) if regions is None else bool(regions and masks is not None)
    per_image: dict[str, dict[str, list]] = {r: {} for r in rows}
    seconds = {r: 0.0 for r in rows}
    kept: dict[str, list] = {r: [] for r in rows}
    bar = tqdm(total=n * len(rows), desc=desc, unit="img", disable=not progress, mininterval=0.5)
    for start in range(0, n, chunk):
        c = np.asarray(clean[start : start + chunk], dtype=np.float64) / 255.0
        d = np.asarray(degraded[start : start + chunk], dtype=np.float64) / 255.0
        m = np.asarray(masks[start : start + chunk]) if use_mask else None
        for name, fn in rows.items():
            t0 = time.perf_counter()
            out = np.clip(fn(d), 0.0, 1.0)
            seconds[name] += time.perf_counter() - t0
            if out.shape != c.shape:
                raise ValueError(f"restorer {name!r} returned shape {out.shape}, expected {c.shape}")
            for k, v in M.batch_metrics(out, c, m).items():
                per_image[name].setdefault(k, []).append(v)
            if start < keep:
                kept[name].append(np.rint(out[: keep - start] * 255).astype(np.uint8))
            bar.update(len(c))
    bar.close()
    metrics = {r: {k: np.concatenate(v) for k, v in d.items()} for r, d in per_image.items()}
    images = {r: np.concatenate(v)[:keep] if v else np.zeros((0,)) for r, v in kept.items()}
    return metrics, seconds, images


def _mean(v: np.ndarray) -> float | None:
    m = S.mean_finite(v)
    return None if m is None or not np.isfinite(m) else float(m)


def _per_image(v: np.ndarray) -> list[float | None]:
    return [float(x) if np.isfinite(x) else None for x in np.asarray(v, dtype=np.float64)]


def _finite_or_none(v: float) -> float | None:
    return None if v is None or not np.isfinite(v) else float(v)


def row_summary(per: dict[str, np.ndarray]) -> dict[str, float | None]:
    out = {k: _mean(per[k]) for k in MAIN_METRICS}
    for k in REGION_KEYS:
        if k in per:
            out[k] = _mean(per[k])
    return out


def compare(multi: dict[str, np.ndarray], single: dict[str, np.ndarray]) -> dict[str, dict]:
    """Per metric (and per region metric present): share of images where multi beats single,
    and the paired Wilcoxon test's p-value (``None`` where no image has the value, e.g. a
    region without pixels)."""
    out = {}
    for k in COMPARED + tuple(key for key in REGION_KEYS if key in multi):
        base = _base_metric(k)
        a, b = multi[k], single[k]
        if base == "blur_percent":  # better = closer to the reference's sharpness
            a, b, higher = np.abs(a), np.abs(b), False
        else:
            higher = bool(M.HIGHER_IS_BETTER.get(base, True))
        w = S.wilcoxon_paired(a, b)
        out[k] = {"share": _finite_or_none(S.share_better(a, b, higher_is_better=higher)),
                  "p_value": _finite_or_none(w["p_value"])}
    return out


def _base_metric(key: str) -> str:
    for region in M.REGIONS:
        if key.endswith(f"_{region}") and key[: -len(region) - 1] in M.REGION_METRICS:
            return key[: -len(region) - 1]
    return key


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
    out["verdict"] = verdict(out.get("multi_vs_ensemble"), own_decoders)
    return out


def verdict(vs_ensemble: dict | None, own_decoders: int | None, alpha: float = 0.05) -> str:
    """Whether the per-cluster decoders support the idea: only where they beat the ensemble
    control (PSNR, share of images > 1/2 and Wilcoxon p < ``alpha``), per region (whole image,
    then each damage kind's pixels and the clean ones). With fewer than two clusters that have
    a decoder of their own the per-cluster restorer is an ensemble itself:
    :data:`NOT_APPLICABLE`."""
    if own_decoders is not None and own_decoders < 2:
        return NOT_APPLICABLE
    if vs_ensemble is None:
        return "no verdict: no ensemble control (decoders.ensemble false)"
    won, lost = [], []
    for key in ["psnr"] + [f"psnr_{r}" for r in M.REGIONS]:
        c = vs_ensemble.get(key)
        if not c or c["share"] is None or c["p_value"] is None or c["p_value"] >= alpha:
            continue
        (won if c["share"] > 0.5 else lost).append("whole image" if key == "psnr" else key[len("psnr_"):])
    text = f"supported in: {', '.join(won)}" if won else "not supported: beats the ensemble control nowhere"
    return text + (f"; worse than it in: {', '.join(lost)}" if lost else "")


def _rows_block(metrics, seconds, archs, classical, megapixels, with_compare: bool,
                own_decoders: dict[str, int] | None = None) -> dict:
    block: dict = {"degraded": row_summary(metrics["degraded"])}
    for arch in archs:
        entry = {mode: row_summary(metrics[f"{arch}.{mode}"]) for mode in (*MODES, ENSEMBLE)
                 if f"{arch}.{mode}" in metrics}
        if with_compare:
            entry.update(network_comparisons(metrics, arch, (own_decoders or {}).get(arch)))
            entry["megapixels_per_s"] = megapixels / max(seconds[f"{arch}.multi"], 1e-9)
        block[arch] = entry
    names = [c for c in classical if c in metrics]
    if names:
        block["classical"] = {}
        for name in names:
            block["classical"][name] = row_summary(metrics[name])
            if name in seconds:
                block["classical"][name]["megapixels_per_s"] = megapixels / max(seconds[name], 1e-9)
    return block


def best_classical(block: dict) -> dict | None:
    """``{"name", "psnr"}`` of the classical row with the highest mean PSNR in a results block
    (``None`` when no classical row has a PSNR)."""
    rows = [(r["psnr"], name) for name, r in block.get("classical", {}).items() if r.get("psnr") is not None]
    if not rows:
        return None
    psnr, name = max(rows, key=lambda t: t[0])
    return {"name": name, "psnr": psnr}


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


def classical_markdown(result: dict, archs: list[str], tuning: dict, tune_images: int) -> str:
    """The summary's lines on the classical side: the settings chosen on validation, and the
    oracle row (an upper bound) with each network's gap to it."""
    lines = []
    if tuning:
        chosen = "; ".join(f"{name}: " + ", ".join(f"{k} {v:g}" for k, v in rec["chosen"].items())
                           + f" ({rec['val_psnr']:.2f} dB)" for name, rec in tuning.items())
        lines += ["", f"Classical settings chosen on {tune_images} validation images (best mean PSNR over the "
                  f"grid `evaluate.classical_grid`; the test split is scored once, afterwards): {chosen}."]
    sub = result.get("anchor_subset", {})
    ssims = [(r["ssim"], name) for name, r in sub.get("classical", {}).items() if r.get("ssim") is not None]
    if ssims:
        best_ssim, name = max(ssims)
        diffs = "; ".join(f"{arch} {mode} {sub[arch][mode]['ssim'] - best_ssim:+.3f}" for arch in archs
                          for mode in ("single", "multi") if sub.get(arch, {}).get(mode, {}).get("ssim") is not None)
        lines += ["", f"Best classical SSIM on the {sub['images']} anchor images: **{_classical_label(name)}**, "
                  f"{best_ssim:.3f}. The networks against it (SSIM): {diffs or '–'}."]
    o = sub.get("oracle")
    if o is not None:
        regions = _shown_regions(sub)
        cells = " ".join(f"PSNR {r} {_fmt(o.get(f'psnr_{r}'), 2)};" for r in regions)
        gaps = "; ".join(f"{arch} {mode} {sub[arch][mode]['oracle_gap_db']:+.2f} dB" for arch in archs
                         for mode in ("single", "multi") if sub.get(arch, {}).get(mode, {}).get("oracle_gap_db") is not None)
        lines += ["", f"**Upper bound, not a competitor: oracle ({o['denoiser']} + Wiener told the true masks, "
                  f"noise levels and blur strength)** on the {sub['images']} anchor images: PSNR {_fmt(o['psnr'], 2)}, "
                  f"SSIM {_fmt(o['ssim'])}; {cells} {_speed(o.get('megapixels_per_s'))} Mpx/s. "
                  f"The networks against it (PSNR): {gaps or '–'}."]
    return "\n".join(lines) + "\n" if lines else ""


def summarise(
    metrics: dict[str, dict[str, np.ndarray]],
    seconds: dict[str, float],
    archs: list[str],
    classical: list[str],
    n_images: int,
    megapixels: float,
    anchor: dict[str, dict[str, np.ndarray]] | None = None,
    anchor_seconds: dict[str, float] | None = None,
    anchor_megapixels: float = 0.0,
    own_decoders: dict[str, int] | None = None,
) -> dict:
    """The content of metrics/evaluate.json.

    ``own_decoders``: per architecture the clusters with a decoder of their own (fewer than
    two: the per-cluster comparison is "not applicable", :func:`verdict`).

    ``metrics``: the rows scored on all ``n_images``; ``anchor``: every row on the anchor
    subset (:func:`on_subset`), with ``anchor_seconds`` / ``anchor_megapixels`` the timings of
    the rows that ran on the subset only. The subset block ``anchor_subset`` holds every row's
    means there, ``best_classical`` and, per architecture and mode, ``margin_db`` (PSNR minus
    the best classical PSNR; positive = the network beats every classical restorer).
    """
    result: dict = {"images": n_images}
    result.update(_rows_block(metrics, seconds, archs, classical, megapixels, with_compare=True,
                              own_decoders=own_decoders))
    if anchor is not None:
        n_sub = len(anchor["degraded"]["psnr"])
        sub = {"images": n_sub}
        sub_seconds = {r: t * n_sub / n_images for r, t in seconds.items()}  # a share of the full run
        sub_seconds.update(anchor_seconds or {})
        sub_mpx = anchor_megapixels or megapixels * n_sub / n_images
        sub.update(_rows_block(anchor, sub_seconds, archs, classical, sub_mpx, with_compare=False))
        best = best_classical(sub)
        if best is not None:
            sub["best_classical"] = best
            for arch in archs:
                for mode in (*MODES, ENSEMBLE):
                    r = sub[arch].get(mode)
                    if r is not None:
                        r["margin_db"] = None if r["psnr"] is None else r["psnr"] - best["psnr"]
        result["anchor_subset"] = sub
    return result


def _fmt(v, digits=3) -> str:
    if v is None:
        return "–"
    return f"{v:.{digits}f}"


def _speed(v: float | None) -> str:
    if not v:
        return "–"
    return f"{v:.2f}" if v >= 0.1 else f"{v:.2g}"  # bm3d on small images: 0.0061, not 0.00


def _shown_regions(block: dict) -> list[str]:
    """The regions with pixels in the test images (the degraded row has a PSNR there)."""
    return [r for r in M.REGIONS if block["degraded"].get(f"psnr_{r}") is not None]


def _table(block: dict, archs: list[str], classical: list[str], regions: list[str],
           margin_to: dict | None) -> list[str]:
    head = "| restorer | PSNR (dB) | SSIM | UQI | blur % |"
    sep = "|---|---:|---:|---:|---:|"
    for r in regions:
        head += f" PSNR {r} |"
        sep += "---:|"
    if margin_to is not None:
        head += f" vs {margin_to['name']} (dB) |"
        sep += "---:|"
    head += " Mpx/s |"
    sep += "---:|"
    lines = [head, sep]

    def row(label: str, r: dict, speed: float | None) -> str:
        s = (f"| {label} | {_fmt(r['psnr'], 2)} | {_fmt(r['ssim'])} | {_fmt(r['uqi'])} "
             f"| {_fmt(r['blur_percent'], 1)} |")
        for reg in regions:
            s += f" {_fmt(r.get(f'psnr_{reg}'), 2)} |"
        if margin_to is not None:
            s += " – |" if r["psnr"] is None else f" {r['psnr'] - margin_to['psnr']:+.2f} |"
        return s + f" {_speed(speed)} |"

    lines.append(row("degraded input", block["degraded"], None))
    for arch in archs:
        e = block[arch]
        lines.append(row(f"{arch} shared decoder (as trained)", e["base"], None))
        lines.append(row(f"{arch} single decoder (control)", e["single"], None))
        if ENSEMBLE in e:
            lines.append(row(f"{arch} ensemble control", e[ENSEMBLE], None))
        lines.append(row(f"**{arch} per-cluster decoders**", e["multi"], e.get("megapixels_per_s")))
    for name in classical:
        if name in block.get("classical", {}):
            r = block["classical"][name]
            lines.append(row(f"{_classical_label(name)} (classical)", r, r.get("megapixels_per_s")))
    return lines


def _classical_label(name: str) -> str:
    from .classical import RESTORERS

    return (RESTORERS[name].label or name) if name in RESTORERS else name


def summary_markdown(result: dict, archs: list[str], classical: list[str], settings: dict[str, str],
                     skipped: dict[str, str] | None = None) -> str:
    skipped = skipped or {}
    regions = _shown_regions(result)
    sub = result.get("anchor_subset")
    full_classical = [c for c in classical if c in result.get("classical", {})]
    subset_only = [c for c in classical if sub and c in sub.get("classical", {}) and c not in full_classical]
    lines = [f"## aerestore: {result['images']} test images, whole-image metrics", ""]
    lines += _table(result, archs, full_classical, regions, None)
    if sub is not None and subset_only:
        what = ", ".join(subset_only) if subset_only else "none"
        lines += ["", f"### Like for like on the anchor subset: {sub['images']} of the {result['images']} test "
                  f"images (evenly spaced, `evaluate.anchor_images`), every row on the same images",
                  "", f"Slow classical restorers that ran on these images only: {what}.", ""]
        lines += _table(sub, archs, classical, regions, sub.get("best_classical"))
    if sub is not None and sub.get("best_classical"):
        b = sub["best_classical"]
        margins = "; ".join(
            f"{arch} {mode} {sub[arch][mode]['margin_db']:+.2f} dB" for arch in archs for mode in ("single", "multi")
            if sub[arch].get(mode, {}).get("margin_db") is not None)
        lines += ["", f"Best classical restorer on the {sub['images']} anchor images: **{b['name']}**, "
                  f"{b['psnr']:.2f} dB. Margin of the networks over it (PSNR): {margins or '–'}."]
    for name, why in skipped.items():
        lines += ["", f"**{name} (classical): skipped**: {why}."]
    lines += comparison_lines(result, archs, regions)
    ran = [n for n in classical if n not in skipped]
    if ran:
        lines += ["", "Classical restorers' settings: " + "; ".join(f"{n}: {settings.get(n, '')}" for n in ran) + "."]
    lines += ["", "PSNR/SSIM/UQI: higher is better. blur %: 100·(Z1−Z2)/Z1 against the clean image, "
              "0 = as sharp as the clean image, > 0 blurrier, < 0 noisier/over-sharpened; the "
              "comparison uses |blur %|."]
    if regions:
        lines += ["PSNR <kind>: over the pixels whose damage mask marks that kind (weight > "
                  "127/255, the largest of the kinds); PSNR clean: over the pixels without any local "
                  "damage (every mask channel 0)."]
    return "\n".join(lines) + "\n"


COMPARISONS = (
    ("multi_vs_single", "the per-cluster decoders beat the single decoder (control)"),
    ("multi_vs_ensemble", "the per-cluster decoders beat the ensemble control (as many decoders, the same "
                          "budget and mixing, damage-blind routes and weights): the idea is supported only "
                          "where they do"),
    ("ensemble_vs_single", "the ensemble control beats the single decoder (what mixing decoders buys without "
                           "any damage information)"),
)


def comparison_lines(result: dict, archs: list[str], regions: list[str]) -> list[str]:
    """The summary's comparison tables: per image, share of test images (ties count half) and
    paired Wilcoxon p, for each of :data:`COMPARISONS` that ran; the per-cluster rows carry
    the verdict (:func:`verdict`), "not applicable: one cluster" where fewer than two clusters
    have a decoder of their own."""
    keys = list(COMPARED) + [f"psnr_{r}" for r in regions]
    lines: list[str] = []
    for name, what in COMPARISONS:
        ran = [a for a in archs if name in result[a]]
        if not ran:
            continue
        per_cluster = name.startswith("multi")
        lines += ["", f"Share of test images on which {what} (ties count half; p: paired two-sided Wilcoxon):", ""]
        lines.append("| architecture | " + " | ".join(keys) + (" | verdict |" if per_cluster else " |"))
        lines.append("|---|" + "---:|" * len(keys) + ("---|" if per_cluster else ""))
        for arch in ran:
            cmp_ = result[arch][name]
            cells = [f"{cmp_[k]['share']:.0%} (p={cmp_[k]['p_value']:.2g})"
                     if k in cmp_ and cmp_[k]["share"] is not None and cmp_[k]["p_value"] is not None else "–"
                     for k in keys]
            if per_cluster:
                own = result[arch].get("own_decoders")
                v = result[arch].get("verdict", "")
                cells.append(v if name == "multi_vs_ensemble" or v == NOT_APPLICABLE else "see the ensemble control")
                if own is not None:
                    cells[-1] += f" ({own} cluster decoder{'s' if own != 1 else ''})"
            lines.append(f"| {arch} | " + " | ".join(cells) + " |")
    return lines


def grid_png(rows: list[tuple[str, np.ndarray]], path: str | Path, title: str) -> None:
    """Images side by side: one column per row label (degraded | single | multi | clean)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = min(len(imgs) for _, imgs in rows)
    fig, axes = plt.subplots(n, len(rows), figsize=(1.6 * len(rows), 1.6 * n + 0.4), dpi=100, squeeze=False)
    for j, (label, imgs) in enumerate(rows):
        for i in range(n):
            ax = axes[i, j]
            img = imgs[i]
            ax.imshow(img[..., 0] if img.shape[-1] == 1 else img, cmap="gray", vmin=0, vmax=255,
                      interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if i == 0:
                ax.set_title(label, fontsize=8)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)


def bars_png(result: dict, archs: list[str], classical: list[str], path: str | Path, title: str = "") -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = ["degraded"]
    rows = [result["degraded"]]
    for a in archs:
        for mode in ("single", "multi"):
            labels.append(f"{a} {mode}")
            rows.append(result[a][mode])
    for c in classical:
        if c in result.get("classical", {}):
            labels.append(c)
            rows.append(result["classical"][c])
    fig, axes = plt.subplots(1, 3, figsize=(12, 0.35 * len(labels) + 1.2), dpi=100)
    for ax, key, name in zip(axes, ("psnr", "ssim", "uqi"), ("PSNR (dB)", "SSIM", "UQI")):
        vals = [r[key] if r[key] is not None else np.nan for r in rows]
        colors = ["0.6"] + ["C0" if "single" in lab else "C1" if "multi" in lab else "C2" for lab in labels[1:]]
        ax.barh(range(len(labels)), vals, color=colors)
        ax.set_yticks(range(len(labels)), labels if key == "psnr" else [""] * len(labels), fontsize=8)
        ax.invert_yaxis()
        ax.set_title(name, fontsize=10)
        finite = [v for v in vals if np.isfinite(v)]
        if finite:
            lo, hi = min(finite), max(finite)
            ax.set_xlim(lo - 0.1 * (hi - lo + 1e-9), hi + 0.05 * (hi - lo + 1e-9))
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)


def run_evaluate(params, prepared_dir: Path, models_dir: Path, json_path: Path, details_path: Path,
                 summary_path: Path, plots_dir: Path, progress: bool = True) -> tuple[dict, str]:
    from .classical import RESTORERS
    from .restore import Restorer
    from .models.device import resolve_device

    ep = params.evaluate
    clean, degraded, masks = load_test(prepared_dir, ep.max_images)
    n, h, w = clean.shape[:3]
    archs = list(params.architectures)
    rows: dict[str, RowFn] = {"degraded": lambda d: d}
    own_decoders: dict[str, int] = {}
    for arch in archs:
        restorer = Restorer.load(models_dir / arch, routing=ep.routing, batch_size=ep.batch_size)
        rt = params.runtime  # where and how the networks run
        restorer.to(resolve_device(rt.device), rt.amp)
        if not getattr(restorer.model, "fully_conv", False) and (
                restorer.overlap != params.blocks.overlap or restorer.block != params.blocks.size):
            raise ValueError(f"{models_dir / arch}: trained on {restorer.block} px blocks, overlap "
                             f"{restorer.overlap}; params say {params.blocks.size}/{params.blocks.overlap}")
        if getattr(restorer.model, "fully_conv", False):
            restorer.runtime = ep.runtime  # unet_ae on the CPU: OpenVINO or PyTorch (evaluate.runtime)
        own_decoders[arch] = restorer.own_decoders
        for mode in network_modes(restorer):
            restorer.prepare(mode)  # compiled (OpenVINO) before the timed restoring, not during it
            rows[f"{arch}.{mode}"] = restorer_row(restorer, mode)
    classical = list(ep.classical)
    skipped = {name: why for name in classical if (why := RESTORERS[name].missing()) is not None}
    ran = [name for name in classical if name not in skipped]
    # the classical settings, chosen on the validation split before the test split is read
    if any(ep.classical_grid.get(name) for name in ran):
        val_clean, val_degraded, _ = load_split(prepared_dir, "val")
        val_idx = anchor_indices(len(val_clean), ep.tune_images)
        val_clean, val_degraded = np.asarray(val_clean[val_idx]), np.asarray(val_degraded[val_idx])
    else:  # nothing to choose: the validation split is not read
        val_idx, val_clean, val_degraded = np.arange(0), np.zeros((0, h, w, 3), np.uint8), np.zeros((0, h, w, 3), np.uint8)
    tuned, tuning, tune_seconds = tune_on_validation(ran, ep.classical_grid, val_clean, val_degraded, progress)
    indices = anchor_indices(n, ep.anchor_images)
    whole = len(indices) == n  # the subset is the whole split: every row runs on every image
    slow_rows: dict[str, RowFn] = {}
    for name in ran:
        if RESTORERS[name].slow and not whole:
            slow_rows[name] = classical_row(name, tuned[name])
        else:
            rows[name] = classical_row(name, tuned[name])
    regions = has_damage(masks)
    metrics, seconds, images = score_rows(clean, degraded, masks, rows, keep=ep.grid_images,
                                          progress=progress, regions=regions)
    sub_metrics, sub_seconds = {}, {}
    if slow_rows:
        sub_metrics, sub_seconds, _ = score_rows(
            np.asarray(clean[indices]), np.asarray(degraded[indices]),
            None if masks is None else np.asarray(masks[indices]), slow_rows,
            progress=progress, regions=regions, desc="evaluate (anchor subset)")
    # the upper bound (told the true damage), on the anchor subset: never a classical competitor
    oracle_metrics, oracle_seconds, told = {}, {}, []
    denoiser = "bm3d" if RESTORERS["bm3d"].missing() is None else "nlmeans"
    if ep.oracle and regions:
        oracle_metrics, oracle_seconds, _ = score_rows(
            np.asarray(clean[indices]), np.asarray(degraded[indices]), np.asarray(masks[indices]),
            {"oracle": oracle_row(np.asarray(clean[indices]), np.asarray(masks[indices]), denoiser, told)},
            progress=progress, regions=regions, desc="evaluate (oracle, anchor subset)")
    anchor = on_subset(metrics, indices, {**sub_metrics, **oracle_metrics})
    result = summarise(metrics, seconds, archs, classical, n, n * h * w / 1e6,
                       anchor=anchor, anchor_seconds=sub_seconds, anchor_megapixels=len(indices) * h * w / 1e6,
                       own_decoders=own_decoders)
    if oracle_metrics:
        add_oracle(result, anchor, oracle_seconds["oracle"], len(indices) * h * w / 1e6, denoiser, archs)
    result["classical_tuning"] = {name: {"chosen": rec["chosen"], "val_psnr": rec["val_psnr"]}
                                  for name, rec in tuning.items()}
    result["classical_tuning_images"] = len(val_idx)
    settings = {name: ", ".join(f"{k} {v}" for k, v in tuned[name].settings.items()) for name in ran}
    summary = summary_markdown(result, archs, classical, settings, skipped)
    summary += classical_markdown(result, archs, tuning, len(val_idx))
    network_rows = ["degraded"] + [f"{a}.{mode}" for a in archs for mode in (*MODES, ENSEMBLE) if f"{a}.{mode}" in metrics]
    details = {
        "rows": {r: {k: _mean(v) for k, v in m.items()} for r, m in metrics.items()},
        # per test image, for the multi-vs-single comparison over seeds (aerestore seeds)
        "per_image": {r: {k: _per_image(v) for k, v in metrics[r].items() if k in MAIN_METRICS + REGION_KEYS}
                      for r in network_rows},
        "seconds": seconds,
        "anchor_subset": {
            "images": indices.tolist(),
            "rows": {r: {k: _mean(v) for k, v in m.items()} for r, m in anchor.items()},
            "seconds": sub_seconds,
            "slow_rows": list(slow_rows),
        },
        "skipped": skipped,
        "classical_settings": {name: tuned[name].settings for name in ran},
        "classical_tuning": {"records": tuning, "seconds": tune_seconds, "images": val_idx.tolist()},
        "oracle": {"told": told, "seconds": oracle_seconds.get("oracle"), "denoiser": denoiser} if told else None,
        "routing": ep.routing,
    }
    clean_u8 = np.asarray(clean[: ep.grid_images])
    with atomic_dir(plots_dir) as tmp:  # the whole folder at once: no grid of a removed architecture lingers
        for arch in archs:
            grid_png([("degraded", images["degraded"]), ("single", images[f"{arch}.single"]),
                      ("multi", images[f"{arch}.multi"]), ("clean", clean_u8)],
                     tmp / f"grid_{arch}.png", f"{arch}: degraded | single decoder | per-cluster | clean")
        bars_png(result, archs, classical, tmp / "bars.png")
        if slow_rows:
            bars_png(result["anchor_subset"], archs, classical, tmp / "bars_anchor.png",
                     f"anchor subset: {len(indices)} of {n} test images, every row on the same images")
    write_json(json_path, result)
    write_json(details_path, details)
    write_text(summary_path, summary)
    return result, summary
