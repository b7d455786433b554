"""Blocks of one split (``data/blocks/<split>/``) in memory, and their float conversion.

Shared by the stages that read blocks (train, cluster, decoders), in a module of its own
so that editing the training loop does not rerun the clustering.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ...io import open_split


@dataclass
class BlockData:
    """Degraded input and clean target blocks of one split, uint8 (N, C, s, s)."""

    degraded: np.ndarray
    clean: np.ndarray
    mask: np.ndarray | None = None

    @classmethod
    def load(cls, blocks_dir: str | Path, split: str, in_memory: bool = True) -> "BlockData":
        arrays = open_split(Path(blocks_dir) / split, "blocks")
        if in_memory:  # a training set of 18 px blocks is small: reading it once beats random memmap reads
            arrays = {k: None if v is None else np.ascontiguousarray(v) for k, v in arrays.items()}
        return cls(**arrays)

    def __len__(self) -> int:
        return len(self.degraded)

    def subset(self, idx: np.ndarray) -> "BlockData":
        return BlockData(self.degraded[idx], self.clean[idx], None if self.mask is None else self.mask[idx])


def to_float(arr: np.ndarray, device: torch.device | str = "cpu") -> torch.Tensor:
    """uint8 array -> float32 tensor in [0, 1], converted in one bulk operation (on CUDA:
    the uint8 batch copied through pinned memory without blocking, converted on the GPU)."""
    arr = np.ascontiguousarray(arr)
    if not arr.flags.writeable:  # a slice of a read-only memory map: torch wants its own copy
        arr = arr.copy()
    t = torch.from_numpy(arr)
    if torch.device(device).type == "cuda":  # the uint8 bytes through pinned memory, converted there
        return t.pin_memory().to(device, non_blocking=True).to(torch.float32).div_(255.0)
    return t.to(device=device, dtype=torch.float32).div_(255.0)
