"""The complete restorer of one architecture: split -> encode -> route -> decode -> merge.

Built from the three files the pipeline writes in ``models/<arch>/``:
``model.pt`` (encoder + shared decoder, ``train@<arch>``), ``clusters.npz`` (centroids,
``cluster@<arch>``) and ``decoders.pt`` (the control decoder and one decoder per cluster,
``decoders@<arch>``), each read by its format's reader (:func:`aerestore.models.read_model`,
:mod:`aerestore.artifacts`), which refuses a damaged file or one made for another network.
:class:`Restorer` restores block networks; fully convolutional ones (the images track) have
:class:`aerestore.tracks.images.restore.ConvRestorer`; :meth:`Restorer.load` gives the
restorer of the model's track (:mod:`aerestore.tracks.restoring`).

Modes:
- ``multi``: each block goes to its cluster's decoder (``routing='hard'``: nearest
  centroid; ``'soft'``: the decoders' outputs mixed by the soft k-means responsibilities,
  or by the n-cut head's probabilities when the clusters came from it).
- ``single``: every block through the control decoder (the shared decoder trained further
  with the same budget as all cluster decoders together).
- ``ensemble``: the ensemble control (``decoders.ensemble``): as many decoders as ``multi``
  has, trained on damage-blind routes with the same budget, mixed as ``multi`` mixes, by
  damage-blind weights (:func:`blind_maps`). ``multi`` supports the idea only where it beats
  this, not just ``single``.
- ``base``: the shared decoder exactly as ``train@<arch>`` left it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from .artifacts import ArtifactError, read_clusters, read_decoders
from .blocks import merge_blocks, split_blocks
from .gate import Gate
from .models.device import autocast, module_device, to_device
from .models.registry import one_line

MODES = ("multi", "single", "base", "ensemble")


def _saved_parts(model, model_dir: Path, decoders: bool = True) -> tuple[dict, list[Path]]:
    """Restorer keyword arguments from ``clusters.npz`` and ``decoders.pt`` in ``model_dir``
    (each only when present; ``decoders=False`` ignores ``decoders.pt``), and the files read.
    Both are checked to be made for ``model`` (:mod:`aerestore.artifacts`)."""
    kwargs: dict = {}
    files = [model_dir / "model.pt"]
    clusters_path = model_dir / "clusters.npz"
    clusters = None
    if clusters_path.exists():
        clusters = read_clusters(clusters_path, model)
        kwargs.update(centroids=clusters.centroids, scale=clusters.scale, beta=clusters.beta, method=clusters.method)
        files.append(clusters_path)
    decoders_path = model_dir / "decoders.pt"
    if decoders and decoders_path.exists():
        saved = read_decoders(decoders_path, model)
        control, cluster_decoders = saved.modules(model, decoders_path)
        if clusters is not None and saved.gate is None and len(cluster_decoders) != len(clusters):
            raise ArtifactError(f"{decoders_path}: {len(cluster_decoders)} cluster decoders, but {clusters_path} "
                                f"has {len(clusters)} clusters (`dvc repro decoders@{model.name}` remakes it)")
        kwargs.update(control=control, cluster_decoders=cluster_decoders)
        ensemble = saved.ensemble_modules(model, decoders_path)
        if ensemble is not None:
            kwargs["ensemble_decoders"] = ensemble
        if saved.gate is not None:  # decoders.method 'gate': routing maps from the learned gate
            try:
                kwargs["gate"] = Gate.from_state(saved.gate, str(decoders_path))
            except (KeyError, TypeError, RuntimeError) as exc:
                raise ArtifactError(f"{decoders_path}: a damaged gate ({one_line(exc)})") from None
        files.append(decoders_path)
    return kwargs, files


class Restorer:
    # the side of the images the model was trained on (model.pt's geometry, written by the
    # train stage); None for files saved before it was recorded
    image_size: int | None = None

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
        ensemble_decoders: list[torch.nn.Module | None] | None = None,
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
        # clusters with a decoder of their own (the others fall back to the control)
        self.own_decoders = sum(d is not None for d in (cluster_decoders or []))
        # the ensemble control (None: decoders.ensemble off, or a decoders.pt written before it)
        self.ensemble_decoders = None if ensemble_decoders is None else [
            (d.eval() if d is not None else self.control) for d in ensemble_decoders]
        self.routing = routing
        self.batch_size = batch_size
        self._files = files or []
        self.amp = "fp32"

    @property
    def device(self) -> torch.device:
        return module_device(self.model)

    def to(self, device: torch.device | str, amp: str = "fp32") -> "Restorer":
        """Run on ``device`` (the networks and centroids moved there; images in and out stay
        on the host, moved per batch), with ``amp='bf16'`` autocast; returns ``self``."""
        autocast(device, amp)  # checks amp
        self.model.to(device)
        self.control.to(device)
        for d in [*self.cluster_decoders, *(self.ensemble_decoders or [])]:
            d.to(device)
        if self.centroids is not None:
            self.centroids = self.centroids.to(device)
        self.amp = amp
        return self

    # ------------------------------------------------------------------ loading
    @classmethod
    def load(cls, model_dir: str | Path, routing: str | None = None, batch_size: int = 2048,
             decoders: bool = True) -> "Restorer":
        """The restorer in ``model_dir``; ``decoders=False`` ignores ``decoders.pt`` (the
        decoders stage, which is about to replace it, routes with the model and clusters)."""
        from .models import read_model

        model_dir = Path(model_dir)
        model_path = model_dir / "model.pt"
        if not model_path.exists():
            raise FileNotFoundError(f"{model_path}: missing (run `dvc repro` first)")
        saved = read_model(model_path)
        model = saved.model
        kwargs, files = _saved_parts(model, model_dir, decoders)
        kwargs["arch"] = model.name
        from .tracks.restoring import restorer

        return restorer(saved, kwargs, routing or "hard", batch_size, files, model_dir)

    def files(self) -> list[Path]:
        return list(self._files)

    def runtime_for(self, mode: str) -> str:
        """What restores ``mode``: PyTorch (a ``ConvRestorer`` may use OpenVINO)."""
        if getattr(self, "runtime", "auto") == "openvino":
            raise ValueError(f"the OpenVINO runtime is built for fully convolutional restorers (unet_ae), "
                             f"not {self.arch}'s blocks")
        return "torch"

    def prepare(self, mode: str) -> None:
        """Get ``mode`` ready before a timed restore (nothing to do here)."""

    def check_blocks(self, size: int, overlap: int, where) -> None:
        """Refuse a restorer whose blocks are not the ``size`` / ``overlap`` the params cut."""
        if self.overlap != overlap or self.block != size:
            raise ValueError(f"{where}: trained on {self.block} px blocks, overlap "
                             f"{self.overlap}; params say {size}/{overlap}")

    def use_runtime(self, runtime: str) -> None:
        """What restores the images (``evaluate.runtime``): PyTorch here, whatever it says
        (:class:`~aerestore.tracks.images.restore.ConvRestorer` may use OpenVINO)."""

    # ------------------------------------------------------------------ routing
    @torch.no_grad()
    def route(self, z: torch.Tensor) -> torch.Tensor:
        """Cluster responsibilities (N, K) of latents ``z``."""
        flat = z.flatten(1)
        if self.method == "ncut_head" and getattr(self.model, "cluster_head", None) is not None:
            return self.model.cluster_head(flat)
        if self.method == "damage_head" and getattr(self.model, "damage_head", None) is not None:
            return torch.softmax(self.model.damage_head(flat), dim=1)
        d2 = torch.cdist(flat.double(), self.centroids.double()) ** 2
        return torch.softmax(-self.beta * d2 / self.scale, dim=1).float()

    def _routed(self, mode: str) -> bool:
        """Whether ``mode`` mixes several decoders (``multi``, ``ensemble``) for this restorer;
        without cluster decoders (or routing) every mode but ``base`` is the control."""
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
        if mode in ("base", "single") or not self.cluster_decoders:
            return False
        if self.centroids is None and self.method not in ("ncut_head", "damage_head"):
            return False
        if mode == "ensemble" and self.ensemble_decoders is None:
            raise ValueError(f"the {self.arch} restorer has no ensemble control: its decoders.pt was written "
                             "with decoders.ensemble false (or before it existed); `dvc repro "
                             f"decoders@{self.arch}` with decoders.ensemble true makes it")
        return True

    @torch.no_grad()
    def decode(self, z: torch.Tensor, mode: str = "multi", weights: torch.Tensor | None = None) -> torch.Tensor:
        """Decode latents ``z`` in ``mode``. ``ensemble`` needs ``weights`` (N, K): the
        damage-blind responsibilities :meth:`restore_float` computes per image."""
        if mode == "base":
            return self.model.decode(z)
        if not self._routed(mode):
            return self.control(z)
        if mode == "ensemble":
            if weights is None:
                raise ValueError("mode 'ensemble' mixes by damage-blind weights of whole images: "
                                 "restore images (restore_float), not single latents")
            return self._mix(z, weights, self.ensemble_decoders)
        return self._mix(z, self.route(z), self.cluster_decoders)

    def _mix(self, z: torch.Tensor, r: torch.Tensor, decoders: list) -> torch.Tensor:
        """The decoders' outputs mixed by the responsibilities ``r`` (N, K): soft, or each
        block through its argmax's decoder (``routing='hard'``). ``multi`` and ``ensemble``
        both go through here: the same mixing, only the weights and decoders differ."""
        if self.routing == "hard":
            labels = r.argmax(1)
            out = None
            for k, dec in enumerate(decoders):
                sel = labels == k
                if sel.any():
                    part = dec(z[sel])
                    if out is None:
                        out = part.new_empty((len(z),) + part.shape[1:])
                    out[sel] = part
            return out
        out = 0
        for k, dec in enumerate(decoders):
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
        device = self.device
        blind = self._blind_weights(blocks, n, h, w) if self._routed(mode) and mode == "ensemble" else None
        for start in range(0, len(blocks), self.batch_size):
            x = to_device(blocks[start : start + self.batch_size], device)
            with autocast(device, self.amp):
                r = None if blind is None else blind[start : start + len(x)]
                y = self.decode(self.model.encode(x), mode, r)
            out[start : start + len(x)] = y.float().cpu() if device.type != "cpu" else y
        return merge_blocks(out, h, w, self.block, self.overlap).clamp_(0.0, 1.0)

    @torch.no_grad()
    def _blind_weights(self, blocks: torch.Tensor, n: int, h: int, w: int) -> torch.Tensor:
        """The ensemble control's weights of the ``n`` images' blocks (image-major, row-major):
        each image's own responsibilities moved to other blocks of it by the fixed cycle
        :func:`blind_maps` (same weights per image, none on the block they came from)."""
        from .blocks import block_grid

        device = self.device
        parts = []
        for start in range(0, len(blocks), self.batch_size):
            x = to_device(blocks[start : start + self.batch_size], device)
            with autocast(device, self.amp):
                parts.append(self.route(self.model.encode(x)).float())
        r = torch.cat(parts)
        grid = block_grid(h, w, self.block, self.overlap)
        maps = r.view(n, grid.ny, grid.nx, -1).permute(0, 3, 1, 2)
        return blind_maps(maps).permute(0, 2, 3, 1).reshape(len(r), -1)

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
        """Restore one uint8 image (H, W[, C]) of any size; returns uint8 (H, W, channels).
        The scaling to and from [0, 1] is NumPy's, so that a restorer compiled by another
        runtime is fed without a torch operation (see :meth:`aerestore.tracks.images.restore.ConvRestorer._restore_array`)."""
        img = self.to_model_channels(image)
        x = (img.astype(np.float32) / np.float32(255.0)).transpose(2, 0, 1)[None]
        y = self._restore_array(x, mode)[0].transpose(1, 2, 0)
        return np.clip(np.rint(y * np.float32(255.0)), 0, 255).astype(np.uint8)

    def _restore_array(self, x: np.ndarray, mode: str) -> np.ndarray:
        """float32 (N, C, H, W) in [0, 1] -> the same restored: :meth:`restore_float`."""
        return self.restore_float(torch.from_numpy(np.ascontiguousarray(x)), mode).numpy()


# ------------------------------------------------------------------ the ensemble control
BLIND_SEED = 20_231  # the fixed cycle of blind_order (any constant: no information about damage)


def blind_order(h: int, w: int) -> torch.Tensor:
    """A fixed cycle through the ``h * w`` locations of a grid (row-major): location ``i``
    takes the weights of location ``order[i]``, never its own (one cycle: no fixed point,
    for ``h * w >= 2``). Seeded by the grid's size only, so it is the same for every image,
    whatever its damage, and whatever the batch."""
    n = h * w
    p = np.random.default_rng([BLIND_SEED, h, w]).permutation(n)
    order = np.empty(n, np.int64)
    order[p] = np.roll(p, -1)  # p[j] -> p[j + 1]
    return torch.from_numpy(order)


def blind_maps(maps: torch.Tensor) -> torch.Tensor:
    """The ensemble control's weights: routing maps ``(N, K, h, w)`` (a block grid's or a
    code map's responsibilities, each location summing to 1) with every image's locations
    moved along :func:`blind_order`.

    Why this is a fair ensemble of the per-cluster decoders: every image keeps exactly its
    own weight vectors (the same decoders get the same total weight, with the same spread
    between soft and one-hot, image by image), but each location gets another location's
    weights, chosen by a fixed cycle that ignores the content. What is left is the image's
    overall mix of weights, not where its damage is; and the decoders those weights mix were
    trained on damage-blind routes too (a random partition of the blocks, or these maps), so
    none can have learned a damage. Whatever the per-cluster decoders gain over this comes
    from routing damage to the decoder trained on it, not from mixing several decoders."""
    n, k, h, w = maps.shape
    order = blind_order(h, w).to(maps.device)
    return maps.flatten(2)[:, :, order].view(n, k, h, w)
