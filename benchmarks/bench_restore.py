"""Restoring one image, in megapixels per second, beside the classical restorers on the same
image (bm3d too when its optional package is installed; otherwise its row is skipped with a
note): the single decoder and the per-cluster restorer (every cluster decoder, blended per
pixel by the routing maps for unet_ae, per block for the block networks).

    python benchmarks/bench_restore.py [--arch unet_ae] [--size 256] [--repeats 7] [--threads 2] [--reference] [--bf16]

unet_ae's restorer runs as ``aerestore restore`` runs it: compiled by OpenVINO
(:mod:`aerestore.ovruntime`) when it is installed; the same restorer in PyTorch (its
channels-last path) is timed beside it, and both are checked equal to 1e-5 first.

The variants are timed interleaved (one call of each per round, ``--repeats`` rounds after
a warm-up) and each row gives the median, so a load that comes and goes touches them alike.
``--reference`` adds unet_ae's restorer as it ran before the channels-last copies (the same
networks in NCHW), timed in the same rounds; ``--bf16`` adds the per-cluster restorer under
bfloat16 autocast (``aerestore restore --amp bf16``: an approximation, fast on CPUs with
AVX512-BF16 or AMX, slow on others) and its largest difference from fp32. The last line states the per-cluster figure
against the 2 Mpx/s target.

Uses the trained restorer in models/<arch>/ when the pipeline has made one; otherwise an
untrained one of the same architecture with random routing (the speed is the same).
"""

from __future__ import annotations

import argparse
import copy
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from aerestore.classical import RESTORERS  # noqa: E402
from aerestore.restore import Restorer  # noqa: E402
from aerestore.tracks.images.restore import ConvRestorer  # noqa: E402

TARGET_MPX_S = 2.0  # issue 10: the per-cluster restorer at >= 2 Mpx/s on 2 cores


def make_restorer(arch: str, k: int, routing: str) -> tuple[Restorer, str]:
    model_dir = ROOT / "models" / arch
    if (model_dir / "decoders.pt").exists():
        return Restorer.load(model_dir, routing=routing), f"trained ({model_dir.relative_to(ROOT)})"
    from aerestore.losses import LossConfig
    from aerestore.models import create_model

    torch.manual_seed(0)
    untrained = "untrained (no models/ yet)"
    if arch == "unet_ae":  # the default params' sizes (arch.unet_ae.model), routed by its damage head
        model = create_model(arch, latent=64, block=48, channels=3, loss=LossConfig(), width=16).eval()
        decs = [copy.deepcopy(model.decoder) for _ in range(k)]
        return (ConvRestorer(model, arch=arch, method="damage_head", control=copy.deepcopy(model.decoder),
                             cluster_decoders=decs, routing=routing), untrained)
    model = create_model(arch, latent=64, block=18, channels=3, loss=LossConfig()).eval()
    d = model.latent_vector(torch.zeros(1, 3, 18, 18)).shape[1]
    decs = [copy.deepcopy(model.decoder) for _ in range(k)]
    return (Restorer(model, arch=arch, overlap=4, centroids=np.random.default_rng(0).normal(size=(k, d)),
                     scale=float(d), beta=5.0, control=copy.deepcopy(model.decoder), cluster_decoders=decs,
                     routing=routing), untrained)


def median_times(fns: dict, repeats: int) -> dict[str, float]:
    """Median seconds per call of each function, timed interleaved after one warm-up call each."""
    for fn in fns.values():
        fn()
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            t = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t)
    return {name: statistics.median(ts) for name, ts in times.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--arch", default="unet_ae")
    ap.add_argument("--size", type=int, default=256, help="side of the test image (at most 512)")
    ap.add_argument("--repeats", type=int, default=7, help="timed rounds (the median is reported)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--reference", action="store_true",
                    help="also time unet_ae's restorer without the channels-last copies (NCHW, as before)")
    ap.add_argument("--bf16", action="store_true", help="also time the per-cluster restorer under bf16 autocast")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    from skimage import data

    img = data.astronaut()[: args.size, : args.size].copy()
    mpx = img.shape[0] * img.shape[1] / 1e6
    fns, what = {}, ""
    for routing in ("soft", "hard"):
        restorer, what = make_restorer(args.arch, 3, routing)
        k = len(restorer.cluster_decoders)
        variants = [(restorer, "")]
        if isinstance(restorer, ConvRestorer):
            restorer.runtime = "auto"
            runtime = restorer.runtime_for("multi")
            variants = [(restorer, f", {'OpenVINO' if runtime == 'openvino' else 'PyTorch'}")]
            if runtime == "openvino":
                in_torch = copy.copy(restorer)
                in_torch.runtime = "torch"
                variants.append((in_torch, ", PyTorch"))
                x = torch.from_numpy(img).permute(2, 0, 1)[None] / 255.0
                for mode in ("multi", "single"):
                    diff = float((restorer.restore_float(x, mode) - in_torch.restore_float(x, mode)).abs().max())
                    if diff > 1e-5:
                        raise SystemExit(f"OpenVINO and PyTorch differ by {diff:g} ({mode}, {routing})")
        if args.reference and isinstance(restorer, ConvRestorer):
            plain = copy.copy(restorer)
            plain.channels_last, plain.runtime = False, "torch"
            variants.append((plain, ", PyTorch NCHW as before"))
        if args.bf16 and routing == "soft":
            half = make_restorer(args.arch, 3, routing)[0].to("cpu", "bf16")
            variants.append((half, ", PyTorch bf16 autocast"))
            bf16_diff = float(np.abs(half.restore(img, "multi").astype(int) - restorer.restore(img, "multi")).max())
        for r, note in variants:
            if routing == "soft":
                if "bf16" not in note:
                    fns[f"{args.arch} single decoder (control{note})"] = lambda r=r: r.restore(img, "single")
            fns[f"{args.arch} per-cluster ({k} decoders, {routing} routing{note})"] = lambda r=r: r.restore(img, "multi")
    rows = list(median_times(fns, args.repeats).items())
    x = img.astype(np.float64) / 255
    skipped = []
    for name, r in RESTORERS.items():
        why = r.missing()  # bm3d: an optional package (non-commercial licence)
        if why is not None:
            skipped.append(f"{name}: skipped, {why}")
            continue
        rows.append((f"{name} (classical)", median_times({name: lambda r=r: r(x)}, max(1, args.repeats // 2))[name]))
    print(f"Restoring one {img.shape[1]}x{img.shape[0]} RGB image, {args.threads} threads, median of "
          f"{args.repeats} interleaved rounds; restorer: {what}\n")
    print("| restorer | ms | Mpx/s |\n|---|--:|--:|")
    for name, t in rows:
        print(f"| {name} | {t * 1000:.1f} | {mpx / t:.3g} |")
    for line in skipped:
        print(f"\n{line}")
    if args.bf16:
        print(f"\nbf16 autocast: largest difference from fp32 {bf16_diff:.0f} / 255 (per-cluster, soft routing)")
    per_cluster = next(t for name, t in rows if name.startswith(f"{args.arch} per-cluster ({k} decoders, soft routing"))
    verdict = "meets" if mpx / per_cluster >= TARGET_MPX_S else "misses"
    print(f"\nper-cluster restorer (soft routing): {mpx / per_cluster:.2f} Mpx/s, {verdict} the "
          f"{TARGET_MPX_S:g} Mpx/s target ({args.threads} threads)")


if __name__ == "__main__":
    main()
