"""The training loop of ``train@<arch>``.

Batches are sliced from the memory-mapped uint8 block arrays and converted to float in
bulk (no per-sample ``__getitem__``). Adam (from the model's ``configure_optimizers``),
learning rate ``lr * lr_decay ** epoch`` (the study's 0.001 * 0.9^epoch), early stopping
on the validation loss with ``patience``, and the best weights restored at the end.

A late-start sharpness loss (``sharpness_weight > 0``, ``sharpness_start_epoch = e > 0``,
the sharpness study's variant (d)) changes the objective at epoch e, so validation losses
before and after e measure different things and must not be compared: before e, patience
does not stop the run (it must reach the objective it is meant to end with); at e, the
best-so-far is reset, so the weights restored at the end are the best epoch under the full
objective. (Comparing every epoch on a fixed metric, such as the pixel MSE, would instead
tend to pick a pre-sharpness epoch, undoing the term that variant adds.)
"""

from __future__ import annotations

import copy
import math
import time
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Callable, Iterator

import numpy as np
import torch
from tqdm import tqdm

from .dataset import BlockData, to_float
from ...data.layout import damage_shares
from ...models.device import autocast, resolve_device  # noqa: F401  (resolve_device: re-exported)
from ...distributed import all_sum, ddp_step, process_threads, rank_and_world, share, unwrap, wrap
from ...losses import check_finite
from ...params import RuntimeParams, TrainParams
from ...stage import cpu_count, set_threads


def batch_indices(n: int, batch_size: int, rng: np.random.Generator | None = None,
                  limit: int = 0) -> Iterator[np.ndarray]:
    """Sorted block indices of each batch; shuffled when ``rng`` is given."""
    order = rng.permutation(n) if rng is not None else np.arange(n)
    if limit:
        order = order[:limit]
    for start in range(0, len(order), batch_size):
        yield np.sort(order[start : start + batch_size])


def load_batch(data: BlockData, idx: np.ndarray, device: torch.device | str = "cpu",
               damage: bool = False) -> tuple[torch.Tensor, ...]:
    """(degraded, clean[, damage shares]) float tensors of the blocks ``idx``."""
    batch = (to_float(data.degraded[idx], device), to_float(data.clean[idx], device))
    if damage and data.mask is not None:
        shares = torch.from_numpy(damage_shares(data.mask[idx])).to(device=device, dtype=torch.float32)
        batch = batch + (shares,)
    return batch


def iterate_batches(
    data: BlockData,
    batch_size: int,
    rng: np.random.Generator | None = None,
    limit: int = 0,
    device: torch.device | str = "cpu",
    damage: bool = False,
) -> Iterator[tuple[torch.Tensor, ...]]:
    """Yield (degraded, clean) float batches; shuffled when ``rng`` is given. With
    ``damage`` (and masks in ``data``), a third element: each block's share of pixels of
    each damage class (:func:`aerestore.data.layout.damage_shares`), the damage head's target."""
    for idx in batch_indices(len(data), batch_size, rng, limit):
        yield load_batch(data, idx, device, damage)


def _wants_damage(model) -> bool:
    return getattr(model, "damage_head", None) is not None


@torch.no_grad()
def evaluate_loss(model, data: BlockData, batch_size: int, device) -> dict[str, float]:
    """Mean of each loss term over ``data`` (eval mode, no gradient). In a process group
    each rank scores its part of ``data`` and the sums are all-reduced (same result on
    every rank)."""
    model.eval()
    rank, world = rank_and_world()
    sums: dict[str, float] = defaultdict(float)
    count = 0
    part = share(np.arange(len(data)), rank, world)
    for start in range(0, len(part), batch_size):
        batch = load_batch(data, part[start : start + batch_size], device, _wants_damage(model))
        xb = batch[0]
        terms = model.loss(batch)
        for k, v in terms.items():
            sums[k] += float(v) * len(xb)
        count += len(xb)
    if world > 1:
        keys = list(sums) if sums else _loss_keys(model, data, device)  # the same order on every rank
        total = all_sum([sums.get(k, 0.0) for k in keys] + [count], device)
        sums, count = dict(zip(keys, total[:-1])), int(total[-1])
    return {k: v / max(count, 1) for k, v in sums.items()}


@torch.no_grad()
def _loss_keys(model, data: BlockData, device) -> list[str]:
    """The loss terms' names (a rank with no validation block of its own still needs them)."""
    return list(model.loss(load_batch(data, np.arange(min(2, len(data))), device, _wants_damage(model))))


@dataclass
class TrainResult:
    history: list[dict[str, float]] = field(default_factory=list)
    best_val_loss: float = math.inf
    best_epoch: int = 0
    epochs_run: int = 0
    seconds: float = 0.0
    blocks_per_second: float = 0.0
    stopped_early: bool = False
    # the first epoch (1-based) whose validation loss competed for best_epoch: 1, or the
    # epoch a late-start sharpness loss switched on (earlier epochs had another objective)
    compared_from: int = 1


def lr_hint(cfg: TrainParams) -> str:
    """What to try when the training loss diverges."""
    return f"lower train.lr ({cfg.lr:g}) or the weight of that term"


def objective_switch_epoch(model, cfg: TrainParams) -> int:
    """The 0-based epoch at which the training objective changes, or 0 if it never does.

    That is ``sharpness_start_epoch`` when the sharpness loss is on (weight > 0) and
    starts after the first epoch and before the last; read from the model's loss config
    (what its loss uses), else from ``cfg.loss``.
    """
    loss_cfg = getattr(model, "loss_config", None) or cfg.loss
    start = loss_cfg.sharpness_start_epoch
    if loss_cfg.sharpness_weight > 0 and 0 < start < cfg.blocks.epochs:
        return start
    return 0


def fit(
    model,
    train: BlockData,
    val: BlockData,
    cfg: TrainParams,
    seed: int,
    progress: bool = True,
    on_epoch: Callable[[dict[str, float]], None] | None = None,
    *,
    runtime: RuntimeParams,
) -> TrainResult:
    """Train ``model`` (degraded -> clean) and restore its best weights: ``cfg.blocks``'
    schedule, ``cfg.lr`` and ``cfg.batch_size``, on ``runtime``'s device and threads.

    In a ``torch.distributed`` process group (``runtime.nproc`` > 1, launched by torchrun:
    :mod:`aerestore.distributed`), every rank draws the same global batches and trains on
    its contiguous share of each through DistributedDataParallel, with the gradient of the
    global batch's mean loss: the same updates as one process, up to float rounding (and,
    on CPU, batch norm statistics per share). Losses are all-reduced, so every rank
    returns the same result.
    """
    if len(train) == 0:
        raise ValueError("no training blocks: the train split is empty")
    rank, world = rank_and_world()
    # one process per core by default: the cores are shared by this machine's processes
    set_threads(process_threads(runtime.threads, cpu_count()))
    device = resolve_device(runtime.device)
    model.to(device)
    ddp = wrap(model, device, cfg.batch_size) if world > 1 else None
    progress = progress and rank == 0
    rng = np.random.default_rng(seed)
    torch.manual_seed(seed)
    optimizers = model.configure_optimizers(cfg.lr)
    monitor = val if len(val) else train  # no validation blocks: stop on the training loss
    result = TrainResult()
    best_state = copy.deepcopy(model.state_dict())
    bad_epochs = 0
    n_per_epoch = min(cfg.blocks.per_epoch or len(train), len(train))
    n_batches = math.ceil(n_per_epoch / cfg.batch_size)
    t_start = time.perf_counter()
    train_seconds = 0.0
    blocks_seen = 0
    switch = objective_switch_epoch(model, cfg)
    for epoch in range(cfg.blocks.epochs):
        if switch and epoch == switch:  # a new objective: compare only the epochs under it
            result.best_val_loss = math.inf
            result.compared_from = epoch + 1
            bad_epochs = 0
        lr = cfg.lr * cfg.blocks.lr_decay**epoch
        for opt in optimizers:
            for group in opt.param_groups:
                group["lr"] = lr
        model.epoch = epoch
        model.train()
        sums: dict[str, float] = defaultdict(float)
        count = 0
        t0 = time.perf_counter()
        bar = tqdm(total=n_batches, desc=f"train {model.name} {epoch + 1}/{cfg.blocks.epochs}",
                   disable=not progress, leave=False, mininterval=0.5)
        local = 0  # this rank's blocks (count: the global batches')
        for b, idx in enumerate(batch_indices(len(train), cfg.batch_size, rng, n_per_epoch)):
            if len(idx) < max(2, world) and count:  # batch norm cannot train on one block: skip a last singleton
                continue
            part = share(idx, rank, world) if ddp is not None else idx
            batch = load_batch(train, part, device, _wants_damage(model))
            with autocast(device, runtime.amp):
                if ddp is None:
                    terms = model.train_step(batch, optimizers)
                else:
                    ddp.train()
                    terms = ddp_step(ddp, batch, optimizers, weight=len(part) * world / len(idx))
            check_finite(terms, f"{model.name} epoch {epoch + 1}, batch {b + 1} of {n_batches}", lr_hint(cfg))
            for k, v in terms.items():
                sums[k] += float(v) * len(part)
            local += len(part)
            count += len(idx)
            bar.update(1)
            bar.set_postfix(loss=f"{sums['loss'] / max(local, 1):.5f}", refresh=False)
        bar.close()
        if ddp is not None:  # the epoch's sums over every rank's share
            keys = list(sums)  # the model's order, the same on every rank
            sums = dict(zip(keys, all_sum([sums[k] for k in keys], device)))
        epoch_seconds = time.perf_counter() - t0
        train_seconds += epoch_seconds
        blocks_seen += count
        with autocast(device, runtime.amp):
            val_terms = evaluate_loss(model, monitor, 2048, device)
        check_finite(val_terms, f"{model.name} epoch {epoch + 1}, validation", lr_hint(cfg))
        row = {"epoch": epoch + 1, "lr": lr}
        row["train_loss"] = sums["loss"] / count
        row["val_loss"] = val_terms["loss"]
        for k, v in sums.items():
            if k != "loss":
                row[f"train_{k}"] = v / count
        for k, v in val_terms.items():
            if k != "loss":
                row[f"val_{k}"] = v
        row["seconds"] = epoch_seconds
        result.history.append(row)
        if progress:
            tqdm.write(f"  epoch {epoch + 1}: train {row['train_loss']:.5f}  val {row['val_loss']:.5f}"
                       f"  ({count / max(epoch_seconds, 1e-9):.0f} blocks/s)")
        if on_epoch is not None:
            on_epoch(row)
        if row["val_loss"] < result.best_val_loss:
            result.best_val_loss = row["val_loss"]
            result.best_epoch = epoch + 1
            best_state = copy.deepcopy(model.state_dict())
            bad_epochs = 0
        else:
            bad_epochs += 1
            if cfg.blocks.patience and bad_epochs >= cfg.blocks.patience and epoch >= switch:
                result.stopped_early = True
                break
    return finish(result, model, ddp, best_state, t_start, blocks_seen / max(train_seconds, 1e-9))


def finish(result: TrainResult, model, ddp, best_state: dict, t_start: float, per_second: float) -> TrainResult:
    """The end of a training loop (blocks and crops alike): plain modules back from DDP, the
    best weights restored, eval mode, the run's figures in ``result``."""
    if ddp is not None:
        unwrap(ddp, model)
    model.load_state_dict(best_state)
    model.eval()
    result.epochs_run = len(result.history)
    result.seconds = time.perf_counter() - t_start
    result.blocks_per_second = per_second
    return result
