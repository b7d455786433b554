"""Where the networks run: ``runtime.device`` and ``runtime.amp`` for every stage that runs them.

- :func:`resolve_device`: ``auto`` is CUDA when present, else the CPU.
- :func:`to_device`: a host tensor to the device; on CUDA through pinned (page-locked)
  memory with a non-blocking copy, so the copy overlaps the GPU's work. On the CPU it is
  the tensor itself (nothing copied: the CPU path is unchanged).
- :func:`autocast`: ``amp: bf16`` runs the forward passes in bfloat16 mixed precision
  (``torch.autocast``: matmuls and convolutions in bf16, reductions and losses in fp32; no
  gradient scaler needed, bf16 has fp32's range); ``fp32`` is a no-op. On CPUs it exists too
  (what the tests use to check the code path); it pays off on GPUs with bf16 units (Ampere
  and later).
- :func:`channels_last`: training on the CPU in the channels-last (NHWC) memory format, in
  which oneDNN runs unet_ae's narrow convolutions faster than in NCHW (the restorer does the
  same: :meth:`aerestore.tracks.images.restore.ConvRestorer._networks`).

Here, in ``models/``, because every stage that runs a network depends on this package.
"""

from __future__ import annotations

import contextlib

import torch

AMP = ("fp32", "bf16")


def resolve_device(name: str = "auto") -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("runtime.device is 'cuda' but no CUDA device is available")
    return torch.device(name)


def module_device(module: torch.nn.Module) -> torch.device:
    p = next(module.parameters(), None)
    return p.device if p is not None else torch.device("cpu")


def to_device(t: torch.Tensor, device: torch.device | str) -> torch.Tensor:
    """``t`` (on the host) on ``device``: pinned + non-blocking on CUDA, as is on the CPU."""
    device = torch.device(device)
    if device.type != "cuda" or t.device.type == "cuda":
        return t.to(device)
    return t.pin_memory().to(device, non_blocking=True)


def autocast(device: torch.device | str, amp: str = "fp32"):
    """``torch.autocast`` in bfloat16 for ``amp='bf16'``; a no-op for ``'fp32'``."""
    if amp not in AMP:
        raise ValueError(f"amp must be one of {AMP}, got {amp!r}")
    if amp == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(torch.device(device).type, dtype=torch.bfloat16)


@contextlib.contextmanager
def channels_last(modules, device: torch.device | str):
    """Within the block, ``modules`` (None skipped) hold their 4-D weights in the channels-last
    (NHWC) memory format when ``device`` is the CPU; contiguous (NCHW) again on leaving, so
    what is saved or restored afterwards is laid out as before. Elsewhere a no-op.

    The same function, another memory layout: oneDNN picks NHWC kernels, whose sums run in
    another order, so the weights after training differ in the last bits (as on another CPU),
    not in what is learned. ``train@unet_ae``'s step is 1.26x faster so on a 2-core AVX-512
    Xeon (``benchmarks/bench_train_step.py``, variant ``cl``; docs/benchmarks.md). Enter it
    before the optimisers are made: the parameters keep their identity, their strides change,
    and Adam's state takes the parameters' layout when it is created."""
    mods = [m for m in modules if m is not None]
    if torch.device(device).type != "cpu":
        yield
        return
    for m in mods:
        m.to(memory_format=torch.channels_last)
    try:
        yield
    finally:
        for m in mods:
            m.to(memory_format=torch.contiguous_format)
