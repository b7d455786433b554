"""The ``evaluate`` stage: every restorer on the test split's degraded images, scored on
whole images against the clean ones.

Rows: the degraded input itself, for each architecture its ``base`` (shared decoder as
trained), ``single`` (the control decoder) and ``multi`` (per-cluster decoders), and the
classical restorers of :mod:`aerestore.classical`. Per metric: the mean over images, the
share of images on which ``multi`` beats ``single`` (the CelebA study's "Percentage"
column; ties count half) and a paired two-sided Wilcoxon test. With local-blur masks,
PSNR, SSIM and blur are also reported inside (mask > 0.5) and outside (mask == 0) the
blurred regions.
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
REGION_KEYS = ("psnr_inside", "psnr_outside", "ssim_inside", "ssim_outside")
COMPARED = ("psnr", "ssim", "uqi", "blur_percent")  # multi vs single, per image
MODES = ("base", "single", "multi")

RowFn = Callable[[np.ndarray], np.ndarray]  # float (N, H, W, C) degraded -> float restored


def load_test(prepared_dir: str | Path, max_images: int = 0):
    d = Path(prepared_dir) / "test"
    arrays = {}
    for name in ("clean", "degraded", "mask"):
        path = d / f"{name}.npy"
        if not path.exists():
            raise FileNotFoundError(f"{path}: missing (run the prepare stage)")
        arr = open_array(path)
        arrays[name] = arr[:max_images] if max_images else arr
    if len(arrays["clean"]) == 0:
        raise ValueError(f"{d}: the test split has no images (data.split.test, data.limit)")
    return arrays["clean"], arrays["degraded"], arrays["mask"]


def restorer_row(restorer, mode: str) -> RowFn:
    def fn(images: np.ndarray) -> np.ndarray:
        x = torch.from_numpy(np.ascontiguousarray(images, dtype=np.float32)).permute(0, 3, 1, 2)
        return restorer.restore_float(x, mode).permute(0, 2, 3, 1).numpy().astype(np.float64)

    return fn


def classical_row(name: str) -> RowFn:
    from .classical import RESTORERS

    r = RESTORERS[name]

    def fn(images: np.ndarray) -> np.ndarray:
        return np.stack([r(img) for img in images])

    return fn


def score_rows(
    clean: np.ndarray,
    degraded: np.ndarray,
    masks: np.ndarray | None,
    rows: dict[str, RowFn],
    chunk: int = 64,
    keep: int = 0,
    progress: bool = True,
) -> tuple[dict[str, dict[str, np.ndarray]], dict[str, float], dict[str, np.ndarray]]:
    """Run each row's restorer over the images in chunks and score every image.

    Returns per-image metrics ``{row: {metric: (N,)}}``, seconds per row, and the first
    ``keep`` restored images of each row (uint8) for the grids.
    """
    n = len(clean)
    use_mask = masks is not None and masks.size and bool(np.asarray(masks).max() > 0)
    per_image: dict[str, dict[str, list]] = {r: {} for r in rows}
    seconds = {r: 0.0 for r in rows}
    kept: dict[str, list] = {r: [] for r in rows}
    bar = tqdm(total=n * len(rows), desc="evaluate", unit="img", disable=not progress, mininterval=0.5)
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


def row_summary(per: dict[str, np.ndarray]) -> dict[str, float | None]:
    out = {k: _mean(per[k]) for k in MAIN_METRICS}
    for k in REGION_KEYS:
        if k in per:
            out[k] = _mean(per[k])
    return out


def compare(multi: dict[str, np.ndarray], single: dict[str, np.ndarray]) -> dict[str, dict]:
    """Per metric: share of images where multi beats single, and the paired Wilcoxon test."""
    out = {}
    for k in COMPARED + tuple(key for key in ("psnr_inside", "psnr_outside") if key in multi):
        base = k.split("_inside")[0].split("_outside")[0]
        a, b = multi[k], single[k]
        if base == "blur_percent":  # better = closer to the reference's sharpness
            a, b, higher = np.abs(a), np.abs(b), False
        else:
            higher = bool(M.HIGHER_IS_BETTER.get(base, True))
        w = S.wilcoxon_paired(a, b)
        out[k] = {"share": S.share_better(a, b, higher_is_better=higher), "p_value": w["p_value"]}
    return out


def summarise(
    metrics: dict[str, dict[str, np.ndarray]],
    seconds: dict[str, float],
    archs: list[str],
    classical: list[str],
    n_images: int,
    megapixels: float,
) -> dict:
    """The content of metrics/evaluate.json."""
    result: dict = {"images": n_images, "degraded": row_summary(metrics["degraded"])}
    for arch in archs:
        entry = {mode: row_summary(metrics[f"{arch}.{mode}"]) for mode in MODES if f"{arch}.{mode}" in metrics}
        entry["multi_vs_single"] = compare(metrics[f"{arch}.multi"], metrics[f"{arch}.single"])
        entry["megapixels_per_s"] = megapixels / max(seconds[f"{arch}.multi"], 1e-9)
        result[arch] = entry
    if classical:
        result["classical"] = {}
        for name in classical:
            result["classical"][name] = row_summary(metrics[name])
            result["classical"][name]["megapixels_per_s"] = megapixels / max(seconds[name], 1e-9)
    return result


def _fmt(v, digits=3) -> str:
    if v is None:
        return "–"
    return f"{v:.{digits}f}"


def summary_markdown(result: dict, archs: list[str], classical: list[str], settings: dict[str, str]) -> str:
    has_region = "psnr_inside" in result["degraded"]
    head = "| restorer | PSNR (dB) | SSIM | UQI | blur % |"
    sep = "|---|---:|---:|---:|---:|"
    if has_region:
        head += " PSNR in blur | PSNR outside |"
        sep += "---:|---:|"
    head += " Mpx/s |"
    sep += "---:|"
    lines = [f"## aerestore: {result['images']} test images, whole-image metrics", "", head, sep]

    def row(label: str, r: dict, speed: float | None) -> str:
        s = (f"| {label} | {_fmt(r['psnr'], 2)} | {_fmt(r['ssim'])} | {_fmt(r['uqi'])} "
             f"| {_fmt(r['blur_percent'], 1)} |")
        if has_region:
            s += f" {_fmt(r.get('psnr_inside'), 2)} | {_fmt(r.get('psnr_outside'), 2)} |"
        return s + f" {_fmt(speed, 2) if speed else '–'} |"

    lines.append(row("degraded input", result["degraded"], None))
    for arch in archs:
        e = result[arch]
        lines.append(row(f"{arch} shared decoder (as trained)", e["base"], None))
        lines.append(row(f"{arch} single decoder (control)", e["single"], None))
        lines.append(row(f"**{arch} per-cluster decoders**", e["multi"], e["megapixels_per_s"]))
    for name in classical:
        r = result["classical"][name]
        lines.append(row(f"{name} (classical)", r, r["megapixels_per_s"]))
    lines += ["", "Share of test images on which the per-cluster decoders beat the single "
              "decoder (ties count half; p: paired two-sided Wilcoxon):", ""]
    keys = list(COMPARED) + (["psnr_inside", "psnr_outside"] if has_region else [])
    lines.append("| architecture | " + " | ".join(keys) + " |")
    lines.append("|---|" + "---:|" * len(keys))
    for arch in archs:
        cmp_ = result[arch]["multi_vs_single"]
        cells = [f"{cmp_[k]['share']:.0%} (p={cmp_[k]['p_value']:.2g})" if k in cmp_ else "–" for k in keys]
        lines.append(f"| {arch} | " + " | ".join(cells) + " |")
    if classical:
        lines += ["", "Classical restorers' settings: " + "; ".join(f"{n}: {settings.get(n, '')}" for n in classical) + "."]
    lines += ["", "PSNR/SSIM/UQI: higher is better. blur %: 100·(Z1−Z2)/Z1 against the clean image, "
              "0 = as sharp as the clean image, > 0 blurrier, < 0 noisier/over-sharpened; the "
              "comparison uses |blur %|."]
    return "\n".join(lines) + "\n"


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


def bars_png(result: dict, archs: list[str], classical: list[str], path: str | Path) -> None:
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
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)


def run_evaluate(params, prepared_dir: Path, models_dir: Path, json_path: Path, details_path: Path,
                 summary_path: Path, plots_dir: Path, progress: bool = True) -> tuple[dict, str]:
    from .classical import RESTORERS
    from .restore import Restorer

    ep = params.evaluate
    clean, degraded, masks = load_test(prepared_dir, ep.max_images)
    archs = list(params.architectures)
    rows: dict[str, RowFn] = {"degraded": lambda d: d}
    for arch in archs:
        restorer = Restorer.load(models_dir / arch, routing=ep.routing, batch_size=ep.batch_size)
        if not getattr(restorer.model, "fully_conv", False) and (
                restorer.overlap != params.blocks.overlap or restorer.block != params.blocks.size):
            raise ValueError(f"{models_dir / arch}: trained on {restorer.block} px blocks, overlap "
                             f"{restorer.overlap}; params say {params.blocks.size}/{params.blocks.overlap}")
        for mode in MODES:
            rows[f"{arch}.{mode}"] = restorer_row(restorer, mode)
    classical = list(ep.classical)
    for name in classical:
        rows[name] = classical_row(name)
    metrics, seconds, images = score_rows(clean, degraded, masks, rows, keep=ep.grid_images, progress=progress)
    n, h, w = clean.shape[:3]
    result = summarise(metrics, seconds, archs, classical, n, n * h * w / 1e6)
    settings = {name: ", ".join(f"{k} {v}" for k, v in RESTORERS[name].settings.items()) for name in classical}
    summary = summary_markdown(result, archs, classical, settings)
    details = {
        "rows": {r: {k: _mean(v) for k, v in m.items()} for r, m in metrics.items()},
        "seconds": seconds,
        "classical_settings": {name: RESTORERS[name].settings for name in classical},
        "routing": ep.routing,
    }
    clean_u8 = np.asarray(clean[: ep.grid_images])
    with atomic_dir(plots_dir) as tmp:  # the whole folder at once: no grid of a removed architecture lingers
        for arch in archs:
            grid_png([("degraded", images["degraded"]), ("single", images[f"{arch}.single"]),
                      ("multi", images[f"{arch}.multi"]), ("clean", clean_u8)],
                     tmp / f"grid_{arch}.png", f"{arch}: degraded | single decoder | per-cluster | clean")
        bars_png(result, archs, classical, tmp / "bars.png")
    write_json(json_path, result)
    write_json(details_path, details)
    write_text(summary_path, summary)
    return result, summary
