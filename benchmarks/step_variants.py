"""The variants of ``train@unet_ae``'s step that ``bench_train_step.py`` times: their set-up
(model, optimiser, batches as :func:`aerestore.tracks.images.train.fit_crops` draws them), interleaved
timing, numerics against today's step, and FLOPs. See ``bench_train_step.py``."""

from __future__ import annotations

import statistics
import time
from pathlib import Path

import numpy as np
import torch
from torch.utils.flop_counter import FlopCounterMode

from aerestore.tracks.images.dataset import ImageData, sample_crops
from aerestore.data.degrade import degrader
from aerestore.losses import LossConfig
from aerestore.models import create_model
from aerestore.models.device import autocast
from aerestore.params import load_params

ROOT = Path(__file__).resolve().parents[1]
ARCH = "unet_ae"
# name -> (channels_last, amp, compile mode or None, model overrides); "nomkldnn": oneDNN
# off (torch.backends.mkldnn), ATen's own convolutions
VARIANTS: dict[str, tuple[bool, str, str | None, dict]] = {
    "a": (False, "fp32", None, {}),
    "nomkldnn": (False, "fp32", None, {}),
    "cl": (True, "fp32", None, {}),
    "bf16": (False, "bf16", None, {}),
    "bf16_cl": (True, "bf16", None, {}),
    "compile": (False, "fp32", "default", {}),
    "compile_cl": (True, "fp32", "default", {}),
    "compile_bf16": (False, "bf16", "default", {}),
    "compile_max": (False, "fp32", "max-autotune-no-cudagraphs", {}),
    "w12": (False, "fp32", None, {"width": 12}),
    "w8": (False, "fp32", None, {"width": 8}),
    "us2": (False, "fp32", None, {"unshuffle": 2}),
    "us2_w32": (False, "fp32", None, {"unshuffle": 2, "width": 32}),
    "sep": (False, "fp32", None, {"separable": True}),
}
DEFAULT_VARIANTS = "a,cl,bf16,bf16_cl,nomkldnn,compile,compile_bf16,compile_max,w12,w8,us2,us2_w32"


# ------------------------------------------------------------------ set-up
def load_data(params, prepared: Path | None):
    """(train with fresh damage, val) as ``train@unet_ae`` loads them; synthetic images
    (smooth random fields, degraded by ``prepare.degrade``) when ``prepared`` is missing."""
    degrade = degrader(params.prepare.degrade)
    if prepared is not None and (prepared / "train" / "clean.npy").exists():
        return ImageData.load(prepared, "train").fresh(degrade), ImageData.load(prepared, "val"), str(prepared)
    rng = np.random.default_rng(0)
    size = params.data.image_size

    def images(n):
        low = rng.random((n, size // 8, size // 8, 3)).astype(np.float32)
        clean = (np.kron(low, np.ones((1, 8, 8, 1), np.float32)) * 255).astype(np.uint8)
        pairs = [degrade(c, np.random.default_rng(i)) for i, c in enumerate(clean)]
        return ImageData.from_arrays(np.stack([p[0] for p in pairs]), clean, np.stack([p[1] for p in pairs]))

    return images(366).fresh(degrade), images(34), "synthetic"


def _separable_block(cin: int, cout: int) -> torch.nn.Sequential:
    nn = torch.nn
    return nn.Sequential(nn.Conv2d(cin, cin, 3, padding=1, groups=cin), nn.Conv2d(cin, cout, 1), nn.ReLU(inplace=True),
                         nn.Conv2d(cout, cout, 3, padding=1, groups=cout), nn.Conv2d(cout, cout, 1),
                         nn.ReLU(inplace=True))


def build(params, cfg, channels: int, overrides: dict, seed: int):
    from aerestore.models import unet_ae

    torch.manual_seed(seed)
    overrides = dict(overrides)
    separable = overrides.pop("separable", False)
    model_kw = {**params.arch_params(ARCH).model, **overrides}
    block, unet_ae._conv_block = unet_ae._conv_block, (_separable_block if separable else unet_ae._conv_block)
    try:
        return create_model(ARCH, latent=params.latent_for(ARCH), block=cfg.crops.size, channels=channels,
                            loss=LossConfig.from_train(cfg), **model_kw)
    finally:
        unet_ae._conv_block = block


def compile_loss(model, mode: str) -> None:
    """``model.loss`` compiled for training; evaluation (whole images, no grad) stays eager."""
    eager = model.loss
    compiled = torch.compile(eager, mode=mode, dynamic=False)
    model.loss = lambda batch: compiled(batch) if model.training else eager(batch)


class Runner:
    """One variant's model, optimiser and step."""

    def __init__(self, name: str, params, cfg, channels: int, seed: int, state: dict | None = None):
        self.name = name
        self.cl, self.amp, self.mode, overrides = VARIANTS[name]
        self.model = build(params, cfg, channels, overrides, seed)
        if state is not None and not overrides:
            self.model.load_state_dict(state)
        if self.cl:
            self.model.to(memory_format=torch.channels_last)
        self.model.train()
        self.opts = self.model.configure_optimizers(cfg.lr)
        if self.mode:
            compile_loss(self.model, self.mode)
        self.compile_s = 0.0

    def step(self, batch) -> dict[str, float]:
        if self.cl:
            batch = tuple(t.contiguous(memory_format=torch.channels_last) for t in batch)
        with autocast("cpu", self.amp), torch.backends.mkldnn.flags(enabled=self.name != "nomkldnn"):
            return self.model.train_step(batch, self.opts)


def draw_batches(train: ImageData, cfg, n: int, seed: int) -> list:
    rng = np.random.default_rng(seed)
    return [tuple(t for t in sample_crops(train, cfg.batch_size, cfg.crops.size, rng) if t is not None) for _ in range(n)]


def timed(fn, n: int) -> tuple[float, float]:
    """(wall, process CPU) seconds per call over ``n`` calls."""
    w, c = time.perf_counter(), time.process_time()
    for _ in range(n):
        fn()
    return (time.perf_counter() - w) / n, (time.process_time() - c) / n


def interleaved(fns: dict, n: int, rounds: int) -> dict[str, dict]:
    """Each of ``fns`` timed ``rounds`` times, A B C A B C ..., ``n`` calls per round:
    medians (and all rounds) of wall and CPU seconds per call."""
    runs: dict[str, list] = {k: [] for k in fns}
    for _ in range(rounds):
        for k, fn in fns.items():
            runs[k].append(timed(fn, n))
    return {k: {"wall": statistics.median(r[0] for r in v), "cpu": statistics.median(r[1] for r in v),
                "walls": [round(r[0], 5) for r in v]} for k, v in runs.items()}


def cycler(runner: Runner, batches: list):
    it = [0]

    def fn():
        runner.step(batches[it[0] % len(batches)])
        it[0] += 1
    return fn


# ------------------------------------------------------------------ parts
def numerics(runners: dict, params, cfg, channels, seed, batches, steps) -> dict[str, dict]:
    """Each variant of the default network from the same weights (a fresh Adam) on the same
    batches: its losses against a's over ``steps`` steps (the compiled ones are not recompiled)."""
    state = build(params, cfg, channels, {}, seed).state_dict()
    losses = {}
    for name, r in runners.items():
        if VARIANTS[name][3]:
            continue  # another network: not comparable step by step
        r.model.load_state_dict(state)
        r.opts = r.model.configure_optimizers(cfg.lr)
        losses[name] = [r.step(batches[i % len(batches)])["loss"] for i in range(steps)]
    ref = np.array(losses["a"])
    return {k: {"max_abs_diff": float(np.abs(np.array(v) - ref).max()),
                "final_loss": v[-1], "final_abs_diff": abs(v[-1] - ref[-1])} for k, v in losses.items()}


def flops_and_params(names, params, cfg, channels, seed, batch) -> dict[str, dict]:
    out = {}
    for name in names:
        if VARIANTS[name][2] or VARIANTS[name][0] or VARIANTS[name][1] != "fp32":
            continue  # the same network as a
        r = Runner(name, params, cfg, channels, seed)
        with FlopCounterMode(display=False) as counter:
            r.step(batch)
        # by module from a forward pass alone (the backward's attribution to modules is unreliable)
        with torch.no_grad(), FlopCounterMode(display=False) as forward:
            r.model.loss(batch)
        by_module = {k: v for k, v in forward.get_flop_counts().items() if k.count(".") == 2 and "Global" not in k}
        out[name] = {"mflop_per_step": counter.get_total_flops() / 1e6,
                     "params": sum(p.numel() for p in r.model.parameters()),
                     "forward_mflop_by_module": {k: sum(d.values()) / 1e6 for k, d in by_module.items()}}
    return out


def setup(args):
    params = load_params(args.params)
    cfg = params.train_for(ARCH)
    torch.set_num_threads(args.threads or params.runtime.threads)
    train, val, source = load_data(params, Path(args.prepared) if args.prepared else None)
    args.source = source
    return params, cfg, train, val
