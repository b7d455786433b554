"""Training of fully convolutional models (``unet_ae``) on random crops of whole images.

Beside :func:`aerestore.tracks.blocks.train.fit` (blocks, epochs): ``train.crops.steps`` updates of
``train.batch_size`` random ``train.crops.size``-px crops with random flips drawn from
``data/prepared/train``; the learning rate follows a one-cycle-like schedule suited to a
short budget (linear warm-up over ``train.crops.warmup`` of the steps to ``train.lr``, then a
cosine decay to 0; Smith & Topin 2017, Loshchilov & Hutter 2017); every
``train.crops.eval_every`` steps (and at the end) the loss on whole validation images; the best
weights are restored at the end. ``train.loss.damage_weight`` weights the damage head's
cross entropy against the masks (semi-supervised). Seeded: the same params give the same
weights on CPU.
"""

from __future__ import annotations

import contextlib
import copy
import math
import time
from collections import defaultdict
from typing import Callable, Literal

import numpy as np
import torch

from .dataset import ImageData, image_batches, sample_crops
from ...distributed import all_sum, ddp_step, process_threads, rank_and_world, share, wrap
from ...params import RuntimeParams, TrainParams
from ...stage import cpu_count, set_threads
from ...losses import check_finite
from ...models.device import autocast, channels_last
from ..blocks.train import TrainResult, finish, lr_hint, resolve_device


def lr_at(step: int, total: int, lr: float, warmup: float) -> float:
    """Linear warm-up over ``warmup * total`` steps, then cosine decay to 0 (step 0-based)."""
    n_warm = max(1, int(round(warmup * total))) if warmup > 0 else 0
    if step < n_warm:
        return lr * (step + 1) / n_warm
    span = max(1, total - n_warm)
    return 0.5 * lr * (1.0 + math.cos(math.pi * min(step - n_warm, span) / span))


@torch.no_grad()
def evaluate_images(model, data: ImageData, batch_size: int = 16, device="cpu") -> dict[str, float]:
    """Mean of each loss term over whole images (eval mode)."""
    model.eval()
    sums: dict[str, float] = defaultdict(float)
    count = 0
    for deg, cln, dmg in image_batches(data, batch_size, device):
        terms = model.loss((deg, cln, dmg) if dmg is not None else (deg, cln))
        for k, v in terms.items():
            sums[k] += float(v) * len(deg)
        count += len(deg)
    return {k: v / max(count, 1) for k, v in sums.items()}


def fit_crops(
    model,
    train: ImageData,
    val: ImageData,
    cfg: TrainParams,
    seed: int,
    progress: bool = True,
    on_eval: Callable[[dict[str, float]], None] | None = None,
    *,
    runtime: RuntimeParams,
    memory_format: Literal["channels_last", "contiguous"] = "channels_last",
) -> TrainResult:
    """Train a fully convolutional ``model`` on random crops (``cfg.crops``, ``cfg.lr``,
    ``cfg.batch_size``) on ``runtime``'s device and threads; restore its best weights.

    ``TrainResult.history`` has one row per evaluation (``epoch`` = its number, ``step``,
    ``lr``, train / val loss and terms); ``blocks_per_second`` counts crops.

    In a ``torch.distributed`` process group every rank draws the same global batch of
    crops and trains on its share through DistributedDataParallel (as
    :func:`aerestore.tracks.blocks.train.fit`); the training terms are all-reduced at each evaluation
    and every rank scores the whole validation set with the same weights.

    ``memory_format``: on the CPU the loop runs the network channels-last (NHWC, see
    :func:`aerestore.models.device.channels_last`: the pipeline's speed); ``"contiguous"``
    keeps it NCHW (``benchmarks/bench_train_step.py``'s variants without ``cl``). Either way
    the weights are handed back NCHW.
    """
    if len(train) == 0:
        raise ValueError("no training images: the train split is empty")
    from tqdm import tqdm

    rank, world = rank_and_world()
    set_threads(process_threads(runtime.threads, cpu_count()))
    device = resolve_device(runtime.device)
    model.to(device)
    if memory_format not in ("channels_last", "contiguous"):
        raise ValueError(f"fit_crops: memory_format must be 'channels_last' or 'contiguous', got {memory_format!r}")
    # NHWC on the CPU for the whole loop (before the optimisers are made); NCHW again after
    layout = channels_last([model], device) if memory_format == "channels_last" else contextlib.nullcontext()
    with layout:
        ddp = wrap(model, device, cfg.batch_size, find_unused=True) if world > 1 else None
        progress = progress and rank == 0
        rng = np.random.default_rng(seed)
        torch.manual_seed(seed)
        optimizers = model.configure_optimizers(cfg.lr)
        monitor = val if len(val) else train
        result = TrainResult()
        best_state = copy.deepcopy(model.state_dict())
        sums: dict[str, float] = defaultdict(float)
        count = 0
        t_start = time.perf_counter()
        train_seconds = 0.0
        t_seg = time.perf_counter()
        crops_seen = 0
        bar = tqdm(total=cfg.crops.steps, desc=f"train {model.name} (crops)", disable=not progress, leave=False,
                   mininterval=0.5)
        for step in range(cfg.crops.steps):
            lr = lr_at(step, cfg.crops.steps, cfg.lr, cfg.crops.warmup)
            for opt in optimizers:
                for group in opt.param_groups:
                    group["lr"] = lr
            model.train()
            # every rank draws the same global batch and cuts only its share of the crops
            part = share(np.arange(cfg.batch_size), rank, world) if ddp is not None else None
            deg, cln, dmg = sample_crops(train, cfg.batch_size, cfg.crops.size, rng, device, keep=part)
            batch = (deg, cln, dmg) if dmg is not None else (deg, cln)
            with autocast(device, runtime.amp):
                if ddp is None:
                    terms = model.train_step(batch, optimizers)
                    weight = 1.0
                else:
                    weight = len(part) / cfg.batch_size
                    ddp.train()
                    terms = ddp_step(ddp, batch, optimizers, weight=weight * world)
            check_finite(terms, f"{model.name} step {step + 1} of {cfg.crops.steps}", lr_hint(cfg))
            for k, v in terms.items():
                sums[k] += v * weight  # summed over the ranks: the global batch's mean
            count += 1
            crops_seen += cfg.batch_size  # the global batch
            bar.update(1)
            bar.set_postfix(loss=f"{sums['loss'] / count:.5f}", refresh=False)
            if (step + 1) % cfg.crops.eval_every == 0 or step + 1 == cfg.crops.steps:
                if ddp is not None:
                    keys = list(sums)  # the model's order, the same on every rank
                    sums = defaultdict(float, zip(keys, all_sum([sums[k] for k in keys], device)))
                seconds = time.perf_counter() - t_seg
                train_seconds += seconds
                with autocast(device, runtime.amp):
                    val_terms = evaluate_images(model, monitor, device=device)
                check_finite(val_terms, f"{model.name} step {step + 1} of {cfg.crops.steps}, validation", lr_hint(cfg))
                row = {"epoch": len(result.history) + 1, "step": step + 1, "lr": lr,
                       "train_loss": sums["loss"] / count, "val_loss": val_terms["loss"]}
                row.update({f"train_{k}": v / count for k, v in sums.items() if k != "loss"})
                row.update({f"val_{k}": v for k, v in val_terms.items() if k != "loss"})
                row["seconds"] = seconds
                result.history.append(row)
                if progress:
                    tqdm.write(f"  step {step + 1}: train {row['train_loss']:.5f}  val {row['val_loss']:.5f}")
                if on_eval is not None:
                    on_eval(row)
                # the best by pixel MSE: the damage term does not restore anything
                score = val_terms.get("mse", val_terms["loss"])
                if score < result.best_val_loss:
                    result.best_val_loss = score
                    result.best_epoch = row["epoch"]
                    best_state = copy.deepcopy(model.state_dict())
                sums, count = defaultdict(float), 0
                t_seg = time.perf_counter()
        bar.close()
        return finish(result, model, ddp, best_state, t_start, crops_seen / max(train_seconds, 1e-9))
