"""The ``evaluate`` stage: every restorer on the test split's degraded images, scored on
whole images against the clean ones.

Rows: the degraded input itself, for each architecture its ``base`` (shared decoder as
trained), ``single`` (the control decoder), ``ensemble`` (the ensemble control, where
``decoders.pt`` has one: as many decoders as ``multi``, the same budget and mixing,
damage-blind routes) and ``multi`` (per-cluster decoders), and the classical restorers of
:mod:`aerestore.classical`. ``multi`` is compared with ``single`` and with ``ensemble``
(:func:`aerestore.evaluate_compare.network_comparisons`); the idea is supported only where it
beats both the ensemble control and the single decoder, and not applicable where fewer than
two clusters have a decoder of their own. The deep peers (``peers.names``, trained by ``peer@<name>``
with unet_ae's settings) are rows ``peer: <name>`` (:data:`PEER_PREFIX`), each scored as
the networks are and compared image by image with every architecture's per-cluster restorer
(``peers.<name>.vs``: ``<arch>.base``, the network as trained, at the peer's budget, and
``<arch>.multi``, with the decoders stage's fine-tuning on top). Per metric: the mean over images, the share of images on which ``multi`` beats ``single`` (the CelebA study's "Percentage"
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
from .evaluate_compare import (  # noqa: F401  (compare, verdict: the module's API, tests use E.*)
    COMPARED, ENSEMBLE, NOT_APPLICABLE, REGION_KEYS, compare, network_comparisons, verdict,
)
from .io import atomic_dir, open_array, write_json, write_text
from .params import PEER_REFERENCE

# The columns of metrics/evaluate.json and of the summary table (means over images).
MAIN_METRICS = ("psnr", "ssim", "uqi", "blur_percent")
MODES = ("base", "single", "multi")
PEER_PREFIX = "peer: "  # the row key of a deep peer: "peer: nafnet"

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


def peer_path(models_dir: str | Path, name: str) -> Path:
    """Where ``peer@<name>`` writes the peer: ``<models>/peers/<name>`` (its ``model.pt``)."""
    return Path(models_dir) / "peers" / name


def classical_row(name: str, restorer=None) -> RowFn:
    """The row of a classical restorer: ``restorer`` (e.g. with settings chosen on the
    validation split) or the registered one with its defaults."""
    from .classical import RESTORERS

    r = restorer if restorer is not None else RESTORERS[name]

    def fn(images: np.ndarray) -> np.ndarray:
        return r.batch(images)  # the slow rows (BM3D) one image per worker process, same numbers

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


def row_summary(per: dict[str, np.ndarray]) -> dict[str, float | None]:
    out = {k: _mean(per[k]) for k in MAIN_METRICS}
    for k in REGION_KEYS:
        if k in per:
            out[k] = _mean(per[k])
    return out


def _rows_block(metrics, seconds, archs, classical, megapixels, with_compare: bool,
                own_decoders: dict[str, int] | None = None, peers: list[str] = ()) -> dict:
    block: dict = {"degraded": row_summary(metrics["degraded"])}
    for arch in archs:
        entry = {mode: row_summary(metrics[f"{arch}.{mode}"]) for mode in (*MODES, ENSEMBLE)
                 if f"{arch}.{mode}" in metrics}
        if with_compare:
            entry.update(network_comparisons(metrics, arch, (own_decoders or {}).get(arch)))
            entry["megapixels_per_s"] = megapixels / max(seconds[f"{arch}.multi"], 1e-9)
        block[arch] = entry
    if peers:
        block["peers"] = {}
        for name in peers:
            key = PEER_PREFIX + name
            entry = row_summary(metrics[key])
            entry["megapixels_per_s"] = megapixels / max(seconds[key], 1e-9)
            if with_compare:  # each architecture as trained (the peer's budget: the same train settings and
                # steps) and with its per-cluster decoders (+ the decoders stage's fine-tuning) against the peer
                entry["vs"] = {f"{arch}.{mode}": compare(metrics[f"{arch}.{mode}"], metrics[key])
                               for arch in archs for mode in ("base", "multi")}
            block["peers"][name] = entry
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
    peers: list[str] = (),
) -> dict:
    """The content of metrics/evaluate.json.

    ``peers``: the deep peers' rows (``peers.<name>``: the row's means, its speed and ``vs``:
    each architecture as trained and with its per-cluster decoders compared with it, image by image).

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
                              own_decoders=own_decoders, peers=peers))
    if anchor is not None:
        n_sub = len(anchor["degraded"]["psnr"])
        sub = {"images": n_sub}
        sub_seconds = {r: t * n_sub / n_images for r, t in seconds.items()}  # a share of the full run
        sub_seconds.update(anchor_seconds or {})
        sub_mpx = anchor_megapixels or megapixels * n_sub / n_images
        sub.update(_rows_block(anchor, sub_seconds, archs, classical, sub_mpx, with_compare=False, peers=peers))
        best = best_classical(sub)
        if best is not None:
            sub["best_classical"] = best
            rows = [sub[arch].get(mode) for arch in archs for mode in (*MODES, ENSEMBLE)]
            for r in rows + list(sub.get("peers", {}).values()):
                if r is not None:
                    r["margin_db"] = None if r["psnr"] is None else r["psnr"] - best["psnr"]
        result["anchor_subset"] = sub
    return result


def run_evaluate(params, prepared_dir: Path, models_dir: Path, json_path: Path, details_path: Path,
                 summary_path: Path, plots_dir: Path, progress: bool = True) -> tuple[dict, str]:
    from .classical import RESTORERS
    from .evaluate_classical import add_oracle, oracle_row, tune_on_validation
    from .evaluate_summary import bars_png, classical_markdown, grid_png, summary_markdown
    from .restore import Restorer
    from .models.device import resolve_device

    ep = params.evaluate
    clean, degraded, masks = load_test(prepared_dir, ep.max_images)
    if ep.draws > 1:  # the same test images under other draws of the damage, draw after draw
        from .evaluate_inputs import redegrade

        more = [redegrade(clean, params.prepare.degrade, params.seed, d) for d in range(1, ep.draws)]
        degraded = np.concatenate([np.asarray(degraded), *(d for d, _ in more)])
        masks = np.concatenate([np.asarray(masks), *(m for _, m in more)])
        clean = np.concatenate([np.asarray(clean)] * ep.draws)
    n, h, w = clean.shape[:3]
    archs = list(params.architectures)
    rows: dict[str, RowFn] = {"degraded": lambda d: d}
    own_decoders: dict[str, int] = {}
    for arch in archs:
        restorer = Restorer.load(models_dir / arch, routing=ep.routing, batch_size=ep.batch_size)
        rt = params.runtime  # where and how the networks run
        restorer.to(resolve_device(rt.device), rt.amp)
        restorer.check_blocks(params.blocks.size, params.blocks.overlap, models_dir / arch)
        restorer.use_runtime(ep.runtime)  # unet_ae on the CPU: OpenVINO or PyTorch (evaluate.runtime)
        own_decoders[arch] = restorer.own_decoders
        for mode in network_modes(restorer):
            restorer.prepare(mode)  # compiled (OpenVINO) before the timed restoring, not during it
            rows[f"{arch}.{mode}"] = restorer_row(restorer, mode)
    peers = list(params.peers.names)
    for name in peers:  # the deep peers (peer@<name>): one network each, restored as the networks are
        peer = Restorer.load(peer_path(models_dir, name), batch_size=ep.batch_size)
        peer.to(resolve_device(params.runtime.device), params.runtime.amp)
        rows[PEER_PREFIX + name] = restorer_row(peer, "base")
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
                       own_decoders=own_decoders, peers=peers)
    if ep.draws > 1:
        result["draws"] = ep.draws
    if oracle_metrics:
        add_oracle(result, anchor, oracle_seconds["oracle"], len(indices) * h * w / 1e6, denoiser, archs)
    if ep.speed_size:  # every row on one image of one size: the speeds side by side
        from .evaluate_inputs import row_speeds, speed_image

        sp_clean, sp_degraded, sp_mask = speed_image(ep.speed_size, clean.shape[3], params.prepare.degrade, params.seed)
        timed = {name: fn for name, fn in {**rows, **slow_rows}.items() if name != "degraded"}
        if oracle_metrics:  # a fresh oracle row per call (it walks through its images)
            timed["oracle"] = lambda d: oracle_row(sp_clean[None], sp_mask[None], denoiser, [])(d)
        result["speed"] = {"size": ep.speed_size, "threads": torch.get_num_threads(),
                           "megapixels_per_s": row_speeds(timed, sp_degraded, progress)}
    result["classical_tuning"] = {name: {"chosen": rec["chosen"], "val_psnr": rec["val_psnr"]}
                                  for name, rec in tuning.items()}
    result["classical_tuning_images"] = len(val_idx)
    settings = {name: ", ".join(f"{k} {v}" for k, v in tuned[name].settings.items()) for name in ran}
    summary = summary_markdown(result, archs, classical, settings, skipped, peers)
    summary += classical_markdown(result, archs, tuning, len(val_idx))
    network_rows = (["degraded"] + [f"{a}.{mode}" for a in archs for mode in (*MODES, ENSEMBLE) if f"{a}.{mode}" in metrics]
                    + [PEER_PREFIX + name for name in peers])
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
        "draws": ep.draws,  # per-image rows: draw after draw, each over the test images in order
    }
    clean_u8 = np.asarray(clean[: ep.grid_images])
    with atomic_dir(plots_dir) as tmp:  # the whole folder at once: no grid of a removed architecture lingers
        for arch in archs:
            grid_png([("degraded", images["degraded"]), ("single", images[f"{arch}.single"]),
                      ("multi", images[f"{arch}.multi"]), ("clean", clean_u8)],
                     tmp / f"grid_{arch}.png", f"{arch}: degraded | single decoder | per-cluster | clean")
        bars_png(result, archs, classical, tmp / "bars.png", peers=peers)
        if slow_rows:
            bars_png(result["anchor_subset"], archs, classical, tmp / "bars_anchor.png",
                     f"anchor subset: {len(indices)} of {n} test images, every row on the same images", peers=peers)
        ref = PEER_REFERENCE if PEER_REFERENCE in archs else archs[-1]
        for name in peers:  # the peer beside unet_ae's per-cluster restorer, on the same images
            grid_png([("degraded", images["degraded"]), (f"{ref} per-cluster", images[f"{ref}.multi"]),
                      (f"peer: {name}", images[PEER_PREFIX + name]), ("clean", clean_u8)],
                     tmp / f"grid_peer_{name}.png", f"peer {name}: degraded | {ref} per-cluster | {name} | clean")
    write_json(json_path, result)
    write_json(details_path, details)
    write_text(summary_path, summary)
    return result, summary
