"""Training throughput of every architecture, against what this machine can attain.

For each registered architecture at its default options (block 18, 3 channels, latent
64, batch 128, ``torch.set_num_threads(--threads)``, 2 by default), plus ``vgg_vae`` and
``vae_gan`` at ``width=0.25`` (their defaults are the papers' widths):

* ``blocks/s``: training steps (``model.train_step``: forward, backward, optimiser step;
  vae_gan: its three updates) timed after warm-up steps, times the batch size;
* ``MFLOP/block``: floating-point operations of one train step counted by
  ``torch.utils.flop_counter.FlopCounterMode`` (matmuls and convolutions, forward and
  backward; element-wise ops are not counted), over the batch size;
* ``GFLOP/s``: the two multiplied;
* ``its GFLOP/s alone``: the attainable rate of the architecture's own most expensive
  conv (or dense) layer in a train step, timed alone (forward + backward, same input
  shape, same threads), and ``% of layer`` / ``% of matmul``: the achieved rate over that
  and over a large fp32 matmul (``--matmul`` square: the machine's attainable dense rate).

Then a data-feeding comparison at the same batch size: a ``torch.utils.data.DataLoader``
over a ``Dataset`` of per-block float tensors (``__getitem__`` per sample, default
collate) against slicing batches of shuffled indices from a uint8 numpy array and
converting in bulk (``torch.from_numpy(arr[idx]).float().div_(255)``).

    python benchmarks/bench_train.py [--quick] [--threads 2] [--only 'vae*']
"""

from __future__ import annotations

import argparse
import copy
import os
import platform
import time

import numpy as np
import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from aerestore.models import create_model, list_models


def _timed(fn, warmup: int, repeats: int) -> float:
    """Fastest of ``repeats`` timed calls of ``fn()`` after ``warmup`` calls (the minimum:
    on a shared machine, the run least slowed by other processes)."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def _flops(fn) -> int:
    with FlopCounterMode(display=False) as counter:
        fn()
    return counter.get_total_flops()


def matmul_rate(n: int, repeats: int) -> float:
    """Attainable fp32 FLOP/s of an ``n x n`` matmul (2 n^3 FLOPs)."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    seconds = _timed(lambda: a @ b, 1, repeats)
    return 2 * n**3 / seconds


def layer_inputs(model: nn.Module, fn) -> dict[nn.Module, torch.Size]:
    """The input shape of every conv / dense layer that ``fn()`` runs (the first call's)."""
    shapes: dict[nn.Module, torch.Size] = {}

    def record(m: nn.Module, inp: tuple, out: torch.Tensor) -> None:  # returns None: output kept
        shapes.setdefault(m, inp[0].shape)

    hooks = [
        m.register_forward_hook(record)
        for m in model.modules()
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear))
    ]
    try:
        fn()
    finally:
        for h in hooks:
            h.remove()
    return shapes


def heaviest_layer(shapes: dict[nn.Module, torch.Size]) -> tuple[nn.Module, torch.Size, int]:
    """The layer with the most forward + backward FLOPs, alone at its input shape."""
    best: tuple = (None, None, -1)
    for layer, shape in shapes.items():
        flops = _flops(lambda layer=layer, shape=shape: _layer_step(layer, torch.randn(shape, requires_grad=True)))
        if flops > best[2]:
            best = (layer, shape, flops)
    return best


def _layer_step(layer: nn.Module, x: torch.Tensor) -> None:
    layer(x).sum().backward()


def layer_rate(layer: nn.Module, shape: torch.Size, flops: int, repeats: int) -> float:
    """Attainable FLOP/s of ``layer`` alone, forward + backward at input ``shape``."""
    layer = copy.deepcopy(layer)
    x = torch.randn(shape, requires_grad=True)
    return flops / _timed(lambda: _layer_step(layer, x), 2, repeats)


# Narrower variants of the two widest architectures (their defaults are the papers' widths).
VARIANTS: list[tuple[str, dict]] = [("vgg_vae", {"width": 0.25}), ("vae_gan", {"width": 0.25})]


def bench_model(name: str, batch: int, block: int, latent: int, warmup: int, repeats: int, **overrides):
    torch.manual_seed(0)
    model = create_model(name, latent=latent, block=block, channels=3, **overrides)
    model.train()
    g = torch.Generator().manual_seed(1)
    clean = torch.rand(batch, 3, block, block, generator=g)
    data = ((clean + 0.05 * torch.randn(clean.shape, generator=g)).clamp(0, 1), clean)
    optimizers = model.configure_optimizers(1e-4)
    seconds = _timed(lambda: model.train_step(data, optimizers), warmup, repeats)
    shapes: dict = {}
    flops = _flops(lambda: shapes.update(layer_inputs(model, lambda: model.train_step(data, optimizers))))
    layer, shape, layer_flops = heaviest_layer(shapes)
    rate = layer_rate(layer, shape, layer_flops, repeats)
    params = sum(p.numel() for p in model.parameters())
    desc = f"{type(layer).__name__}({'x'.join(map(str, shape[1:]))})"
    return {
        "name": name,
        "params": params,
        "blocks_s": batch / seconds,
        "flops_block": flops / batch,
        "achieved": flops / seconds,
        "layer": desc,
        "layer_rate": rate,
    }


class _FloatBlocks(torch.utils.data.Dataset):
    def __init__(self, degraded: torch.Tensor, clean: torch.Tensor) -> None:
        self.degraded, self.clean = degraded, clean

    def __len__(self) -> int:
        return len(self.clean)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.degraded[i], self.clean[i]


def bench_loading(n: int, batch: int, block: int) -> tuple[float, float]:
    """Blocks/s of (DataLoader over float tensors, bulk uint8 slicing), one pass each."""
    rng = np.random.default_rng(0)
    deg8 = rng.integers(0, 256, (n, 3, block, block), dtype=np.uint8)
    clean8 = rng.integers(0, 256, (n, 3, block, block), dtype=np.uint8)
    ds = _FloatBlocks(torch.from_numpy(deg8).float().div_(255), torch.from_numpy(clean8).float().div_(255))
    loader = torch.utils.data.DataLoader(ds, batch_size=batch, shuffle=True, generator=torch.Generator().manual_seed(0))

    def via_loader() -> None:
        for _deg, _clean in loader:
            pass

    def via_slices() -> None:
        order = rng.permutation(n)
        for s in range(0, n, batch):
            idx = np.sort(order[s : s + batch])
            torch.from_numpy(deg8[idx]).float().div_(255)
            torch.from_numpy(clean8[idx]).float().div_(255)

    return n / _timed(via_loader, 1, 3), n / _timed(via_slices, 1, 3)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="fewer timed steps (2 warm-up, 3 timed)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--block", type=int, default=18)
    ap.add_argument("--latent", type=int, default=64)
    ap.add_argument("--matmul", type=int, default=2048, help="side of the square fp32 matmul")
    ap.add_argument("--only", default=None, help="fnmatch pattern of architectures, e.g. 'vae*'")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    warmup, repeats = (2, 3) if args.quick else (3, 10)

    peak = matmul_rate(args.matmul, repeats)
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"torch {torch.__version__}, {platform.processor() or platform.machine()}, "
          f"{args.threads} threads, load average {load:.1f} at start")
    print(f"fp32 matmul {args.matmul}^2: {peak / 1e9:.1f} GFLOP/s attainable\n")
    print(f"Training step, batch {args.batch}, {args.block} px, 3 channels, latent {args.latent}:\n")
    print("| architecture | params | blocks/s | MFLOP/block | GFLOP/s | heaviest layer (input) "
          "| its GFLOP/s alone | % of layer | % of matmul |")
    print("|---|--:|--:|--:|--:|---|--:|--:|--:|")
    names = list_models(args.only)
    runs = [(n, {}) for n in names] + [(n, kw) for n, kw in VARIANTS if n in names]
    for name, overrides in runs:
        r = bench_model(name, args.batch, args.block, args.latent, warmup, repeats, **overrides)
        label = name + "".join(f" ({k} {v})" for k, v in overrides.items())
        print(
            f"| {label} | {r['params'] / 1e6:.2f} M | {r['blocks_s']:,.0f} | {r['flops_block'] / 1e6:.1f} "
            f"| {r['achieved'] / 1e9:.1f} | {r['layer']} | {r['layer_rate'] / 1e9:.1f} "
            f"| {100 * r['achieved'] / r['layer_rate']:.0f} % | {100 * r['achieved'] / peak:.0f} % |",
            flush=True,
        )

    n = 8192 if args.quick else 32768
    loader_rate, slice_rate = bench_loading(n, args.batch, args.block)
    print(f"\nFeeding {n} blocks ({args.block} px, 3 channels, degraded + clean), batch {args.batch}:\n")
    print("| method | blocks/s |")
    print("|---|--:|")
    print(f"| DataLoader over a Dataset of float tensors (per-sample, default collate) | {loader_rate:,.0f} |")
    print(f"| uint8 numpy slices, bulk `from_numpy(...).float().div_(255)` | {slice_rate:,.0f} |")
    print(f"| ratio (slices / DataLoader) | {slice_rate / loader_rate:.1f}x |")


if __name__ == "__main__":
    main()
