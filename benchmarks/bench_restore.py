"""Restoring one image: split -> encode -> route -> decode -> merge, in megapixels per second
on 2 cores, beside the classical restorers on the same image (bm3d too when its optional
package is installed; otherwise its row is skipped with a note).

    python benchmarks/bench_restore.py [--arch conv_ae] [--size 256] [--repeats 5]

Uses the trained restorer in models/<arch>/ when the pipeline has made one; otherwise an
untrained one of the same architecture with random centroids (the speed is the same).
"""

from __future__ import annotations

import argparse
import copy
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from aerestore.classical import RESTORERS  # noqa: E402
from aerestore.restore import Restorer  # noqa: E402


def make_restorer(arch: str, k: int, routing: str) -> tuple[Restorer, str]:
    model_dir = ROOT / "models" / arch
    if (model_dir / "decoders.pt").exists():
        return Restorer.load(model_dir, routing=routing), f"trained ({model_dir.relative_to(ROOT)})"
    from aerestore.losses import LossConfig
    from aerestore.models import create_model

    torch.manual_seed(0)
    model = create_model(arch, latent=64, block=18, channels=3, loss=LossConfig()).eval()
    d = model.latent_vector(torch.zeros(1, 3, 18, 18)).shape[1]
    decs = [copy.deepcopy(model.decoder) for _ in range(k)]
    return (Restorer(model, arch=arch, overlap=4, centroids=np.random.default_rng(0).normal(size=(k, d)),
                     scale=float(d), beta=5.0, control=copy.deepcopy(model.decoder), cluster_decoders=decs,
                     routing=routing), "untrained (no models/ yet)")


def best_time(fn, repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--arch", default="conv_ae")
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    from skimage import data

    img = data.astronaut()[: args.size, : args.size].copy()
    mpx = img.shape[0] * img.shape[1] / 1e6
    rows = []
    for routing in ("hard", "soft"):
        restorer, what = make_restorer(args.arch, 2, routing)
        for mode in (("multi", "single") if routing == "hard" else ("multi",)):
            t = best_time(lambda: restorer.restore(img, mode), args.repeats)
            rows.append((f"{args.arch} {mode}" + (f" ({routing} routing)" if mode == "multi" else ""), t))
    x = img.astype(np.float64) / 255
    skipped = []
    for name, r in RESTORERS.items():
        why = r.missing()  # bm3d: an optional package (non-commercial licence)
        if why is not None:
            skipped.append(f"{name}: skipped, {why}")
            continue
        rows.append((f"{name} (classical)", best_time(lambda: r(x), max(1, args.repeats // 2))))
    print(f"Restoring one {img.shape[1]}x{img.shape[0]} RGB image, {args.threads} threads; restorer: {what}\n")
    print("| restorer | ms | Mpx/s |\n|---|--:|--:|")
    for name, t in rows:
        print(f"| {name} | {t * 1000:.1f} | {mpx / t:.3g} |")
    for line in skipped:
        print(f"\n{line}")


if __name__ == "__main__":
    main()
