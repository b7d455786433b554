"""Data-parallel training over several processes and machines, on ``torch.distributed``.

``runtime.nproc`` processes per machine and ``runtime.nnodes`` machines train one network
together: :func:`launch_command` is the ``torchrun`` (``python -m torch.distributed.run``)
command that ``stages/train.py`` re-executes itself under when ``nproc * nnodes > 1``;
torchrun starts the processes and gives each its ``RANK``, ``LOCAL_RANK``, ``WORLD_SIZE``
and rendezvous address, and :func:`init` joins the process group (``gloo`` on CPU,
``nccl`` on CUDA). The training loops (:func:`aerestore.tracks.blocks.train.fit`,
:func:`aerestore.tracks.images.train.fit_crops`) then wrap the model in
:class:`~torch.nn.parallel.DistributedDataParallel` and give each rank its share of every
global batch (:func:`share`); rank 0 alone writes outputs and logs to MLflow.

One machine uses torchrun's ``--standalone`` rendezvous (a free local port, so that two
queued experiments never clash). Several machines use a static rendezvous at
``runtime.master_addr:runtime.master_port`` (machine 0's address, reachable from the others),
each machine with its own ``runtime.node_rank``; the environment variables
``AERESTORE_NNODES``, ``AERESTORE_NODE_RANK``, ``AERESTORE_MASTER_ADDR`` and
``AERESTORE_MASTER_PORT`` override these params, so every machine runs the same commit.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass

import numpy as np
import torch

ENV_OVERRIDES = ("nnodes", "node_rank", "master_addr", "master_port")


@dataclass(frozen=True)
class Rendezvous:
    nproc: int
    nnodes: int
    node_rank: int
    master_addr: str
    master_port: int

    @property
    def world_size(self) -> int:
        return self.nproc * self.nnodes


def rendezvous(runtime) -> Rendezvous:
    """``runtime``'s (a :class:`aerestore.params.RuntimeParams`) settings, overridden by
    ``AERESTORE_<KEY>`` environment variables (a machine's own rank and address)."""
    values = {}
    for key in ENV_OVERRIDES:
        env = os.environ.get(f"AERESTORE_{key.upper()}")
        value = getattr(runtime, key)
        values[key] = type(value)(env) if env not in (None, "") else value
    if not 0 <= values["node_rank"] < values["nnodes"]:
        raise ValueError(f"runtime.node_rank ({values['node_rank']}) must be in [0, runtime.nnodes = {values['nnodes']})")
    return Rendezvous(nproc=runtime.nproc, **values)


def under_launcher() -> bool:
    """True in a process that torchrun started (it sets ``LOCAL_RANK``)."""
    return "LOCAL_RANK" in os.environ and "WORLD_SIZE" in os.environ


def launch_command(rdzv: Rendezvous, script: str, args: list[str]) -> list[str]:
    """The torchrun command line that runs ``script args`` in ``rdzv.nproc`` processes here."""
    cmd = [sys.executable, "-m", "torch.distributed.run", f"--nproc-per-node={rdzv.nproc}"]
    if rdzv.nnodes == 1:
        cmd += ["--standalone"]
    else:
        cmd += [f"--nnodes={rdzv.nnodes}", f"--node-rank={rdzv.node_rank}",
                f"--master-addr={rdzv.master_addr}", f"--master-port={rdzv.master_port}"]
    return cmd + [script, *args]


def init(device: str = "auto") -> None:
    """Join the process group torchrun prepared (no-op outside torchrun or when joined)."""
    import torch.distributed as dist

    if not under_launcher() or dist.is_initialized():
        return
    cuda = device == "cuda" or (device == "auto" and torch.cuda.is_available())
    if cuda:
        torch.cuda.set_device(int(os.environ["LOCAL_RANK"]))
    dist.init_process_group("nccl" if cuda else "gloo")


def shutdown() -> None:
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def rank_and_world() -> tuple[int, int]:
    """(rank, world size): (0, 1) outside a process group."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def is_main() -> bool:
    return rank_and_world()[0] == 0


def local_world() -> int:
    return int(os.environ.get("LOCAL_WORLD_SIZE", "1"))


def process_threads(threads: int, cores: int) -> int:
    """This process's CPU threads: ``threads`` (``runtime.threads``; 0 = the machine's
    ``cores``) shared among this machine's processes, at least 1 each. With 2 threads and
    ``runtime.nproc: 2`` each process gets 1: two processes of 2 threads on 2 cores would run
    2.6-3.3x slower (README, Reproducibility)."""
    return max(1, (threads or cores) // local_world())


def share(idx: np.ndarray, rank: int, world: int) -> np.ndarray:
    """This rank's contiguous part of a global batch ``idx`` (sizes differ by at most 1)."""
    n = len(idx)
    lo, hi = rank * n // world, (rank + 1) * n // world
    return idx[lo:hi]


def all_sum(values: list[float], device) -> list[float]:
    """Element-wise sum of ``values`` over the ranks (the same list everywhere)."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()):
        return list(values)
    t = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(t)
    return t.tolist()


class LossModule(torch.nn.Module):
    """``model.loss(batch)`` as a forward pass, so that DistributedDataParallel (which
    hooks the forward and the backward of the module it wraps) sees the whole step."""

    def __init__(self, model: torch.nn.Module):
        super().__init__()
        self.model = model

    def forward(self, *batch):
        return self.model.loss(batch)


def wrap(model: torch.nn.Module, device: torch.device, batch_size: int | None = None, find_unused: bool = False):
    """``DistributedDataParallel`` over :class:`LossModule` ``(model)``; batch norm layers
    become :class:`~torch.nn.SyncBatchNorm` on CUDA (statistics of the global batch; on
    CPU, which SyncBatchNorm does not support, each rank normalises by its share's).
    ``find_unused``: DDP looks for parameters without a gradient at each step (the images
    track's loop asks for it, see below)."""
    from torch.nn.parallel import DistributedDataParallel

    if batch_size is not None and batch_size < rank_and_world()[1]:
        raise ValueError(f"train.batch_size ({batch_size}) is smaller than the number of processes "
                         f"({rank_and_world()[1]}): each needs a share of every batch")
    if type(model).train_step is not _base_train_step():
        raise ValueError(f"{model.name} has its own training step (several optimizers): "
                         "train it with runtime.nproc = 1 and runtime.nnodes = 1")
    if device.type == "cuda":
        _original_bn[id(model)] = {name: type(m) for name, m in model.named_modules()
                                   if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)}
        model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
    ids = [device.index] if device.type == "cuda" else None
    # a head the loss may not use gets no gradient, and DDP must then look for such
    # parameters at each step: only the images track (unet_ae) builds one whatever its weight
    # (its damage head, unused without masks or at weight 0); the block models build their heads only
    # when their loss uses them. The walk costs: 2 processes trained conv_ae 1.37x as fast
    # as 1 with it, and without it as measured in the README
    return DistributedDataParallel(LossModule(model), device_ids=ids, find_unused_parameters=find_unused,
                                   gradient_as_bucket_view=True)


def unwrap(ddp, model: torch.nn.Module) -> None:
    """After training: put plain batch norm layers (of ``model``'s original classes, with
    the trained state) back where :func:`wrap` put SyncBatchNorm."""
    synced = {name: m for name, m in ddp.module.model.named_modules() if isinstance(m, torch.nn.SyncBatchNorm)}
    for name, sync in synced.items():
        original = _original_bn[id(model)][name]
        plain = original(sync.num_features, sync.eps, sync.momentum, sync.affine, sync.track_running_stats)
        plain.load_state_dict(sync.state_dict())
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        setattr(parent, child, plain.to(next(sync.parameters(), sync.running_mean).device))
    _original_bn.pop(id(model), None)


_original_bn: dict[int, dict[str, type]] = {}


def _base_train_step():
    from .models.base import RestorationModel

    return RestorationModel.train_step


def ddp_step(ddp, batch: tuple[torch.Tensor, ...], optimizers, weight: float) -> dict[str, float]:
    """One synchronous update: each rank's loss on its share, scaled by ``weight`` (its
    share of the global batch times the world size, so that DDP's mean of the gradients
    is the gradient of the global batch's mean loss), back-propagated (DDP all-reduces the
    gradients), then every optimizer steps. Returns this rank's (unscaled) terms."""
    for opt in optimizers:
        opt.zero_grad(set_to_none=True)
    terms = ddp(*batch)
    (terms["loss"] * weight).backward()
    for opt in optimizers:
        opt.step()
    return {k: float(v.detach()) for k, v in terms.items()}
