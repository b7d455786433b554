"""Speed of the classical restorers and of the metrics, printed as Markdown tables.

Each restorer runs on RGB images degraded the way it is meant for (Gaussian noise std 0.1 for
nlmeans / bm3d / tv / bilateral, Gaussian blur sigma 1 for wiener / richardson_lucy, three black squares
covering ~6 % of the image for biharmonic), at 64x64 and 256x256 (the astronaut test image, area
resized). Reported: median milliseconds per image over ``--repeats`` runs (after one warm-up) and
megapixels per second, and for the denoisers the PSNR before -> after (bm3d is an optional
package: skipped with a note when it is not installed). The metrics table times
``batch_metrics`` (every metric, with damage masks: one channel per damage kind) on 64x64 RGB
batches.

    python benchmarks/bench_classical.py [--repeats 5] [--metrics-images 256]
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time

import cv2
import numpy as np
from scipy import ndimage
from skimage import data
from skimage.transform import resize

from aerestore.classical import RESTORERS
from aerestore.damage import DAMAGE_KINDS
from aerestore.metrics import batch_metrics, psnr


DENOISERS = ("nlmeans", "bm3d", "tv", "bilateral")


def _degraded(name: str, clean: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    if name in DENOISERS:
        return np.clip(clean + rng.normal(0, 0.1, clean.shape), 0, 1)
    if name in ("wiener", "richardson_lucy"):
        return ndimage.gaussian_filter(clean, (1.0, 1.0, 0), mode="reflect")
    holed = clean.copy()
    side = max(2, clean.shape[0] // 7)
    for k in range(3):
        y = x = (k * 2 + 1) * clean.shape[0] // 7
        holed[y : y + side, x : x + side] = 0.0
    return holed


def _time(fn, arg, repeats: int) -> float:
    fn(arg)  # warm-up (imports, caches)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn(arg)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--metrics-images", type=int, default=256)
    args = ap.parse_args()

    astro = data.astronaut().astype(np.float64) / 255.0
    images = {s: resize(astro, (s, s), anti_aliasing=True) for s in (64, 256)}
    rng = np.random.default_rng(0)

    print(
        f"CPU cores visible: {os.cpu_count()}, OpenCV threads: {cv2.getNumThreads()}, "
        f"Python {platform.python_version()}, NumPy {np.__version__}\n"
    )
    print("| restorer | settings | 64x64 ms/img | 64x64 MP/s | 64x64 PSNR dB | 256x256 ms/img "
          "| 256x256 MP/s | 256x256 PSNR dB |")
    print("|---|---|---:|---:|---|---:|---:|---|")
    skipped = []
    for name, restorer in RESTORERS.items():
        why = restorer.missing()
        if why is not None:
            skipped.append(f"{name}: skipped, {why}")
            continue
        cells = []
        for size, clean in images.items():
            deg = _degraded(name, clean, rng)
            sec = _time(restorer, deg, args.repeats)
            gain = f"{psnr(deg, clean):.2f} -> {psnr(restorer(deg), clean):.2f}"
            cells += [f"{sec * 1e3:.1f}", f"{size * size / sec / 1e6:.3g}", gain]
        settings = ", ".join(f"{k}={v}" for k, v in restorer.settings.items())
        print(f"| {name} | {settings} | " + " | ".join(cells) + " |")
    for line in skipped:
        print(f"\n{line}")

    n = args.metrics_images
    clean = np.stack([resize(astro[i * 8 : i * 8 + 256, :256], (64, 64)) for i in range(n % 32 or 32)])
    clean = np.concatenate([clean] * (n // len(clean) + 1))[:n]
    noisy = np.clip(clean + rng.normal(0, 0.05, clean.shape), 0, 1)
    masks = np.zeros((n, 64, 64, len(DAMAGE_KINDS)), np.uint8)  # a blurred and a noisy square
    masks[:, 8:32, 8:40, 0] = 255
    masks[:, 36:60, 20:52, len(DAMAGE_KINDS) - 1] = 255
    print(f"\n| metrics ({n} RGB images 64x64) | seconds | ms/img | img/s |")
    print("|---|---:|---:|---:|")
    for label, m in (("batch_metrics", None), ("batch_metrics + mask", masks)):
        sec = _time(lambda x, m=m: batch_metrics(x, clean, m), noisy, max(1, args.repeats // 2))
        print(f"| {label} | {sec:.2f} | {sec / n * 1e3:.2f} | {n / sec:.0f} |")


if __name__ == "__main__":
    main()
