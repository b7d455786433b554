"""The complete restorer of one architecture: split -> encode -> route -> decode -> merge.

Built from the three files the pipeline writes in ``models/<arch>/``:
``model.pt`` (encoder + shared decoder, ``train@<arch>``), ``clusters.npz`` (centroids,
``cluster@<arch>``) and ``decoders.pt`` (the control decoder and one decoder per cluster,
``decoders@<arch>``).

Modes:
- ``multi``: each block goes to its cluster's decoder (``routing='hard'``: nearest
  centroid; ``'soft'``: the decoders' outputs mixed by the soft k-means responsibilities,
  or by the n-cut head's probabilities when the clusters came from it).
- ``single``: every block through the control decoder (the shared decoder trained further
  with the same budget as all cluster decoders together).
- ``base``: the shared decoder exactly as ``train@<arch>`` left it.
"""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import torch

from .blocks import merge_blocks, split_blocks

MODES = ("multi", "single", "base")


class Restorer:
    def __init__(
        self,
        model,
        *,
        arch: str,
        overlap: int,
        centroids: np.ndarray | None = None,
        scale: float = 1.0,
        beta: float = 1.0,
        method: str = "soft_kmeans",
        control: torch.nn.Module | None = None,
        cluster_decoders: list[torch.nn.Module | None] | None = None,
        routing: str = "hard",
        batch_size: int = 2048,
        files: list[Path] | None = None,
    ):
        if routing not in ("hard", "soft"):
            raise ValueError(f"routing must be 'hard' or 'soft', got {routing!r}")
        self.model = model.eval()
        self.arch = arch
        self.block = int(model.block)
        self.channels = int(model.channels)
        self.overlap = int(overlap)
        self.centroids = None if centroids is None else torch.as_tensor(centroids, dtype=torch.float32)
        self.scale = float(scale)
        self.beta = float(beta)
        self.method = method
        self.control = (control if control is not None else model.decoder).eval()
        self.cluster_decoders = [
            (d.eval() if d is not None else self.control) for d in (cluster_decoders or [])
        ]
        self.routing = routing
        self.batch_size = batch_size
        self._files = files or []

    # ------------------------------------------------------------------ loading
    @classmethod
    def load(cls, model_dir: str | Path, routing: str | None = None, batch_size: int = 2048,
             decoders: bool = True) -> "Restorer":
        """The restorer in ``model_dir``; ``decoders=False`` ignores ``decoders.pt`` (the
        decoders stage, which is about to replace it, routes with the model and clusters)."""
        from .models import load_model

        model_dir = Path(model_dir)
        model_path = model_dir / "model.pt"
        if not model_path.exists():
            raise FileNotFoundError(f"{model_path}: missing (run `dvc repro` first)")
        model, extra = load_model(model_path)
        extra = extra or {}
        files = [model_path]
        kwargs: dict = {"arch": extra.get("arch", model.name), "overlap": int(extra.get("overlap", 0))}
        clusters_path = model_dir / "clusters.npz"
        if clusters_path.exists():
            with np.load(clusters_path, allow_pickle=False) as c:
                kwargs.update(
                    centroids=c["centroids"], scale=float(c["scale"]), beta=float(c["beta"]),
                    method=str(c["method"]),
                )
            files.append(clusters_path)
        decoders_path = model_dir / "decoders.pt"
        if decoders and decoders_path.exists():
            state = torch.load(decoders_path, map_location="cpu", weights_only=True)
            control = copy.deepcopy(model.decoder)
            control.load_state_dict(state["control"])
            decs = []
            for sd in state["clusters"]:
                if sd is None:
                    decs.append(None)
                else:
                    d = copy.deepcopy(model.decoder)
                    d.load_state_dict(sd)
                    decs.append(d)
            kwargs.update(control=control, cluster_decoders=decs)
            files.append(decoders_path)
        return cls(model, routing=routing or "hard", batch_size=batch_size, files=files, **kwargs)

    def files(self) -> list[Path]:
        return list(self._files)

    # ------------------------------------------------------------------ routing
    @torch.no_grad()
    def route(self, z: torch.Tensor) -> torch.Tensor:
        """Cluster responsibilities (N, K) of latents ``z``."""
        flat = z.flatten(1)
        if self.method == "ncut_head" and getattr(self.model, "cluster_head", None) is not None:
            return self.model.cluster_head(flat)
        d2 = torch.cdist(flat.double(), self.centroids.double()) ** 2
        return torch.softmax(-self.beta * d2 / self.scale, dim=1).float()

    @torch.no_grad()
    def decode(self, z: torch.Tensor, mode: str = "multi") -> torch.Tensor:
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
        if mode == "base":
            return self.model.decode(z)
        if mode == "single" or not self.cluster_decoders or self.centroids is None and self.method != "ncut_head":
            return self.control(z)
        r = self.route(z)
        if self.routing == "hard":
            labels = r.argmax(1)
            out = None
            for k, dec in enumerate(self.cluster_decoders):
                sel = labels == k
                if sel.any():
                    part = dec(z[sel])
                    if out is None:
                        out = part.new_empty((len(z),) + part.shape[1:])
                    out[sel] = part
            return out
        out = 0
        for k, dec in enumerate(self.cluster_decoders):
            out = out + r[:, k].view(-1, 1, 1, 1) * dec(z)
        return out

    # ------------------------------------------------------------------ restoring
    @torch.no_grad()
    def restore_float(self, images: torch.Tensor, mode: str = "multi") -> torch.Tensor:
        """Restore float images (N, C, H, W) in [0, 1] of any size."""
        n, c, h, w = images.shape
        if c != self.channels:
            raise ValueError(f"the {self.arch} restorer takes {self.channels} channel(s), got {c}")
        blocks = split_blocks(images.float(), self.block, self.overlap)
        out = torch.empty_like(blocks)
        for start in range(0, len(blocks), self.batch_size):
            x = blocks[start : start + self.batch_size]
            out[start : start + len(x)] = self.decode(self.model.encode(x), mode)
        return merge_blocks(out, h, w, self.block, self.overlap).clamp_(0.0, 1.0)

    def to_model_channels(self, image: np.ndarray) -> np.ndarray:
        """uint8 (H, W), (H, W, 1|3|4) -> uint8 (H, W, channels)."""
        img = np.asarray(image)
        if img.dtype != np.uint8:
            raise ValueError(f"expected a uint8 image, got {img.dtype}")
        if img.ndim == 2:
            img = img[:, :, None]
        if img.ndim != 3 or img.shape[2] not in (1, 3, 4):
            raise ValueError(f"expected an image (H, W[, 1|3|4]), got shape {img.shape}")
        if img.shape[2] == 4:
            img = img[:, :, :3]
        if self.channels == 3 and img.shape[2] == 1:
            img = np.repeat(img, 3, axis=2)
        if self.channels == 1 and img.shape[2] == 3:
            lum = img.astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32)
            img = np.clip(np.rint(lum), 0, 255).astype(np.uint8)[:, :, None]
        return img

    def restore(self, image: np.ndarray, mode: str = "multi") -> np.ndarray:
        """Restore one uint8 image (H, W[, C]) of any size; returns uint8 (H, W, channels)."""
        img = self.to_model_channels(image)
        x = torch.from_numpy(np.array(img, copy=True)).permute(2, 0, 1)[None].float().div_(255.0)
        y = self.restore_float(x, mode)[0].permute(1, 2, 0).numpy()
        return np.clip(np.rint(y * 255.0), 0, 255).astype(np.uint8)
