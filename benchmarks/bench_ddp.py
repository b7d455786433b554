"""Data-parallel training throughput: blocks/s of :func:`aerestore.tracks.blocks.train.fit` with 1 process
and with N processes under torchrun (gloo on CPU), one thread each, the same global batch.

Each run trains an architecture for ``--epochs`` epochs of ``--blocks`` blocks (batch
``--batch``) on 18 px blocks of scikit-image's photographs with Gaussian noise; blocks/s
counts training steps only (as ``metrics/train/<arch>.json``), and the final validation
loss shows that the processes train the same network. ``blocks per CPU-second`` (blocks
trained over the CPU time of every process during ``fit``, validation included) does not
depend on what else the machine runs: its ratio between N processes and 1 is the parallel
efficiency, and N times it the speed-up N free cores would give.

Fully convolutional networks (``unet_ae``, the default pipeline's restorer) train with
:func:`aerestore.tracks.images.train.fit_crops` instead: ``--steps`` updates of ``--crop-batch`` random
``--crop`` px crops (its defaults: 16 crops of 32 px) from 64 px tiles of the same
photographs; "blocks" are then crops.

    python benchmarks/bench_ddp.py [--arch conv_ae vae unet_ae] [--nproc 2] [--epochs 3] [--blocks 8192]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np


def block_data(n_blocks: int, block: int = 18, seed: int = 0):
    from skimage import data as skdata

    from aerestore.tracks.blocks.dataset import BlockData

    rng = np.random.default_rng(seed)
    photos = [skdata.astronaut(), skdata.coffee(), skdata.chelsea(), skdata.rocket()]
    clean = np.empty((n_blocks, 3, block, block), np.uint8)
    for i in range(n_blocks):
        p = photos[i % len(photos)]
        y, x = rng.integers(0, p.shape[0] - block), rng.integers(0, p.shape[1] - block)
        clean[i] = p[y : y + block, x : x + block, :3].transpose(2, 0, 1)
    noisy = np.clip(clean + rng.normal(0, 20, clean.shape), 0, 255).astype(np.uint8)
    return BlockData(noisy, clean)


def image_data(n_images: int, side: int = 64, seed: int = 0):
    """``n_images`` noisy/clean ``side`` px tiles of the same photographs (crop training)."""
    from aerestore.tracks.images.dataset import ImageData

    blocks = block_data(n_images, side, seed)
    return ImageData.from_arrays(blocks.degraded.transpose(0, 2, 3, 1), blocks.clean.transpose(0, 2, 3, 1))


def crop_worker(args, rank: int, world: int) -> None:
    """``fit_crops`` of a fully convolutional network: crops/s, rank 0 writes the result."""
    import time

    import torch

    from aerestore import distributed
    from aerestore.tracks.images.train import fit_crops
    from aerestore.losses import LossConfig
    from aerestore.models import create_model
    from aerestore.params import RuntimeParams, TrainParams

    cfg = TrainParams(batch_size=args.crop_batch, blocks={"patience": 0}, loss={"damage_weight": 0, "beta": 1.0},
                      crops={"steps": args.steps, "size": args.crop, "eval_every": args.steps, "warmup": 0})
    runtime = RuntimeParams(threads=1, device="cpu")
    train, val = image_data(512, seed=0), image_data(32, seed=1)
    torch.manual_seed(0)
    model = create_model(args.arch, latent=64, block=args.crop, channels=3, loss=LossConfig.from_train(cfg))
    cpu0 = time.process_time()
    result = fit_crops(model, train, val, cfg, seed=0, progress=False, runtime=runtime)
    cpu = distributed.all_sum([time.process_time() - cpu0], "cpu")[0]
    if rank == 0:
        Path(args.out).write_text(json.dumps({
            "processes": world, "blocks_per_second": result.blocks_per_second,
            "val_loss": result.history[-1]["val_loss"], "seconds": result.seconds,
            "blocks_per_cpu_second": args.steps * args.crop_batch / cpu}))


def worker(args) -> None:
    """One process (plain, or one rank under torchrun): train, rank 0 writes the result."""
    from aerestore import distributed
    from aerestore.losses import LossConfig
    from aerestore.models import create_model, model_class
    from aerestore.params import RuntimeParams, TrainParams
    from aerestore.tracks.blocks.train import fit

    distributed.init("cpu")
    rank, world = distributed.rank_and_world()
    if model_class(args.arch).track == "images":
        crop_worker(args, rank, world)
        distributed.shutdown()
        return
    cfg = TrainParams(batch_size=args.batch, blocks={"epochs": args.epochs, "per_epoch": args.blocks, "patience": 0},
                      loss={"damage_weight": 0, "beta": 0.001})
    train, val = block_data(args.blocks, seed=0), block_data(2048, seed=1)
    import torch

    torch.manual_seed(0)
    model = create_model(args.arch, latent=64, block=18, channels=3, loss=LossConfig.from_train(cfg))
    import time

    cpu0 = time.process_time()
    result = fit(model, train, val, cfg, seed=0, progress=False, runtime=RuntimeParams(threads=1, device="cpu"))
    cpu = distributed.all_sum([time.process_time() - cpu0], "cpu")[0]  # every rank's CPU time
    if rank == 0:
        Path(args.out).write_text(json.dumps({
            "processes": world, "blocks_per_second": result.blocks_per_second,
            "val_loss": result.history[-1]["val_loss"], "seconds": result.seconds,
            "blocks_per_cpu_second": args.epochs * args.blocks / cpu}))
    distributed.shutdown()


def run(arch: str, nproc: int, args) -> dict:
    out = Path(tempfile.mkdtemp()) / "result.json"
    script = [str(Path(__file__).resolve()), "--worker", "--arch", arch, "--out", str(out),
              "--epochs", str(args.epochs), "--blocks", str(args.blocks), "--batch", str(args.batch),
              "--steps", str(args.steps), "--crop", str(args.crop), "--crop-batch", str(args.crop_batch)]
    cmd = [sys.executable, *script] if nproc == 1 else [
        sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}", *script]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    subprocess.run(cmd, check=True, env=env, stdout=subprocess.DEVNULL)
    return json.loads(out.read_text())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--arch", nargs="+", default=["conv_ae", "vae"])
    ap.add_argument("--nproc", type=int, default=2)
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--blocks", type=int, default=8192)
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--steps", type=int, default=300, help="updates (fully convolutional networks)")
    ap.add_argument("--crop", type=int, default=32, help="crop side (fully convolutional networks)")
    ap.add_argument("--crop-batch", type=int, default=16, help="crops per update (fully convolutional networks)")
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--out", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        args.arch = args.arch[0]
        return worker(args)
    print(f"{os.cpu_count()} CPUs; {args.epochs} epochs of {args.blocks} blocks, batch {args.batch}, 1 thread per process")
    print("| architecture | processes | blocks/s | speed-up | blocks per CPU-second | final val loss |")
    print("|---|--:|--:|--:|--:|--:|")
    for arch in args.arch:
        base = run(arch, 1, args)
        two = run(arch, args.nproc, args)
        for r in (base, two):
            print(f"| {arch} | {r['processes']} | {r['blocks_per_second']:,.0f} | "
                  f"{r['blocks_per_second'] / base['blocks_per_second']:.2f}x | "
                  f"{r['blocks_per_cpu_second']:,.0f} | {r['val_loss']:.5f} |")


if __name__ == "__main__":
    main()
