"""The complete restorer of one architecture: split -> encode -> route -> decode -> merge.

Built from the three files the pipeline writes in ``models/<arch>/``:
``model.pt`` (encoder + shared decoder, ``train@<arch>``), ``clusters.npz`` (centroids,
``cluster@<arch>``) and ``decoders.pt`` (the control decoder and one decoder per cluster,
``decoders@<arch>``), each read by its format's reader (:func:`aerestore.models.read_model`,
:mod:`aerestore.artifacts`), which refuses a damaged file or one made for another network.

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

import copy
import os
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
        if getattr(model, "fully_conv", False):  # whole images, no blocks
            return ConvRestorer(model, routing=routing or "hard", batch_size=batch_size, files=files, **kwargs)
        if kwargs.pop("gate", None) is not None:
            raise ValueError(f"{model_dir / 'decoders.pt'}: a learned gate, but the gate is built for fully "
                             f"convolutional models only, not {kwargs['arch']}")
        restorer = cls(model, overlap=saved.geometry.overlap, routing=routing or "hard", batch_size=batch_size,
                       files=files, **kwargs)
        restorer.image_size = saved.geometry.image_size
        return restorer

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
        runtime is fed without a torch operation (see :meth:`ConvRestorer._restore_array`)."""
        img = self.to_model_channels(image)
        x = (img.astype(np.float32) / np.float32(255.0)).transpose(2, 0, 1)[None]
        y = self._restore_array(x, mode)[0].transpose(1, 2, 0)
        return np.clip(np.rint(y * np.float32(255.0)), 0, 255).astype(np.uint8)

    def _restore_array(self, x: np.ndarray, mode: str) -> np.ndarray:
        """float32 (N, C, H, W) in [0, 1] -> the same restored: :meth:`restore_float`."""
        return self.restore_float(torch.from_numpy(np.ascontiguousarray(x)), mode).numpy()


class ConvRestorer(Restorer):
    """The restorer of a fully convolutional model (``unet_ae``): whole images, no blocks.

    The encoder runs once on the whole image (reflect-padded by the model to a multiple of
    its downsampling factor; tiled with a margin only above ``tile`` x ``tile`` pixels),
    every decoder decodes the same features, and their outputs are blended per pixel by
    the routing maps: per code location the damage head's softmax
    (``method='damage_head'``) or the soft k-means responsibilities of the code vector,
    upsampled bilinearly to the pixels (``routing='soft'``), or the one-hot argmax of
    those smooth maps (``'hard'``); with a learned gate (``decoders.method: gate``, saved in
    ``decoders.pt``) the gate's weights instead. No block grid, no seams. Same public API as
    :class:`Restorer`; ``block`` is the training crop size, ``overlap`` 0.
    """

    tile = 512  # larger images are restored in tiles of this side
    margin = 32  # context around each tile, cropped off after restoring
    channels_last = True  # on the CPU, restore with channels-last copies (see _networks)
    _copies: tuple | None = None  # (weights' key, [model, control, *cluster decoders, *ensemble])
    # runtime: 'auto' = OpenVINO where it applies (aerestore.ovruntime.supports: fp32 on the
    # CPU, not centroid or gate routing) and is installed, else PyTorch; 'torch'; 'openvino'
    # (an error where it does not apply). Default: $AERESTORE_RUNTIME, else 'auto'.
    _compiled: dict | None = None  # mode -> (weights' key, ovruntime.Compiled)

    def __init__(self, model, *, arch: str, method: str = "soft_kmeans", centroids=None,
                 scale: float = 1.0, beta: float = 1.0, control=None, cluster_decoders=None,
                 routing: str = "hard", batch_size: int = 2048, files=None, gate: Gate | None = None,
                 ensemble_decoders=None):
        super().__init__(model, arch=arch, overlap=0, centroids=centroids, scale=scale, beta=beta,
                         method=method, control=control, cluster_decoders=cluster_decoders,
                         ensemble_decoders=ensemble_decoders, routing=routing, batch_size=batch_size, files=files)
        self.images_per_batch = max(1, batch_size // 256)
        self.runtime = os.environ.get("AERESTORE_RUNTIME", "auto")
        self.gate = None if gate is None else gate.eval()  # decoders.method 'gate': it gives the routing maps

    def to(self, device: torch.device | str, amp: str = "fp32") -> "ConvRestorer":
        super().to(device, amp)
        if self.gate is not None:
            self.gate.to(device)
        return self

    # ------------------------------------------------------------------ routing
    @torch.no_grad()
    def route_maps(self, code: torch.Tensor) -> torch.Tensor:
        """Routing maps ``(N, K, h, w)`` at the code's resolution (each location sums to 1):
        the learned gate's weights when there is one."""
        if self.gate is not None:
            return self.gate(code)
        return route_maps(self.model, code, self.method, self.centroids, self.beta, self.scale)

    def pixel_maps(self, code: torch.Tensor, size: tuple[int, int], blind: bool = False) -> torch.Tensor:
        """The routing maps upsampled to the pixels ``(N, K, H, W)``: soft, or one-hot
        argmax of the smooth upsampled maps for ``routing='hard'``; ``blind``: the ensemble
        control's, the code-resolution maps moved by :func:`blind_maps` first."""
        maps = self.route_maps(code)
        maps = upsample_maps(blind_maps(maps) if blind else maps, self.model.multiple, size)
        if self.routing == "hard":
            maps = torch.nn.functional.one_hot(maps.argmax(1), maps.shape[1]).permute(0, 3, 1, 2).to(maps.dtype)
        return maps

    @torch.no_grad()
    def decode(self, f, mode: str = "multi") -> torch.Tensor:  # type: ignore[override]
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
        model, control, decoders, ensemble = self._networks()
        if mode == "base":
            return model.decoder(f)
        if not self._routed(mode):
            return control(f)
        if mode == "ensemble":
            decoders = ensemble
        maps = self.pixel_maps(f.code, f.size, blind=mode == "ensemble")
        out = 0
        for k, dec in enumerate(decoders):
            w = maps[:, k : k + 1]
            if self.routing == "hard" and not bool(w.any()):
                continue
            out = out + w * dec(f)
        return out

    # ------------------------------------------------------------------ restoring
    def _networks(self) -> tuple:
        """``(model, control, cluster_decoders, ensemble decoders or None)`` to restore with: on the CPU (and with
        ``channels_last``), copies in the channels-last (NHWC) memory format, in which
        oneDNN runs these narrow convolutions (16-72 channels) about 1.6x faster than in
        NCHW (``benchmarks/bench_restore.py --reference`` times both); the same function,
        outputs equal to ~1e-7. The copies are remade whenever a weight changes (the
        parameters' version counters), so a restorer whose networks are trained or loaded
        in place never restores with stale weights; the originals stay as they are."""
        nets = self._nets()
        k = len(self.cluster_decoders)
        if not self.channels_last or self.device.type != "cpu":
            copies = nets
        else:
            key = self._weights_key()  # the same key tells the OpenVINO graphs to recompile
            if self._copies is None or self._copies[0] != key:
                held = copy.deepcopy(nets)  # one deepcopy: a fallback decoder stays the control
                for net in held:
                    net.to(memory_format=torch.channels_last)
                self._copies = (key, held)
            copies = self._copies[1]
        return copies[0], copies[1], copies[2 : 2 + k], copies[2 + k :] if self.ensemble_decoders else None

    def _nets(self) -> list:
        """Every network: the model, the control, the cluster decoders, the ensemble's."""
        return [self.model, self.control, *self.cluster_decoders, *(self.ensemble_decoders or [])]

    def __getstate__(self) -> dict:
        # compiled OpenVINO models cannot be copied or pickled: a copy compiles its own
        return {**self.__dict__, "_compiled": None}

    def _weights_key(self) -> tuple:
        """Changes whenever a weight of any network changes (the parameters' version
        counters): the channels-last copies and the compiled graphs are remade then."""
        return tuple((id(p), p._version) for net in self._nets() for p in net.parameters())

    def runtime_for(self, mode: str) -> str:
        """'openvino' or 'torch': what restores ``mode`` (see ``runtime``)."""
        from . import ovruntime

        if self.runtime not in ("auto", "torch", "openvino"):
            raise ValueError(f"runtime must be 'auto', 'torch' or 'openvino', got {self.runtime!r}")
        if self.runtime == "torch":
            return "torch"
        if ovruntime.supports(self, mode):
            return "openvino"
        if self.runtime == "openvino":
            why = ovruntime.missing() or (
                "it runs fp32 on the CPU, and the per-cluster mode only when routed by the damage head "
                f"(this restorer: {self.device.type}, {self.amp}, {'a learned gate' if self.gate else self.method})")
            raise ValueError(f"the OpenVINO runtime does not apply to the {self.arch} restorer's {mode!r} mode: {why}")
        return "torch"

    def prepare(self, mode: str) -> None:
        """Compile ``mode`` now when OpenVINO runs it (about 1-2 s), so that a timed restore
        does not include it; it is otherwise compiled on first use and whenever a weight
        changes."""
        if self.runtime_for(mode) == "openvino":
            self._compiled_mode(mode)

    def _compiled_mode(self, mode: str):
        from . import ovruntime

        key = self._weights_key()
        if self._compiled is None:
            self._compiled = {}
        held = self._compiled.get(mode)
        if held is None or held[0] != key:
            held = (key, ovruntime.compile_mode(self, mode))
            self._compiled[mode] = held
        return held[1]

    def _restore_array(self, x: np.ndarray, mode: str) -> np.ndarray:
        """Where OpenVINO restores ``mode`` and the images are one tile, straight from NumPy
        (:meth:`ovruntime.Compiled.run_array`: the same numbers, without torch's threads
        spinning beside OpenVINO's); otherwise :meth:`restore_float` (tiles, PyTorch)."""
        h, w = x.shape[-2:]
        if (x.shape[1] != self.channels or mode not in MODES or h * w > self.tile * self.tile
                or self.runtime_for(mode) != "openvino"):
            return super()._restore_array(x, mode)
        return self._compiled_mode(mode).run_array(x)

    @torch.no_grad()
    def _restore_whole(self, x: torch.Tensor, mode: str) -> torch.Tensor:
        device = self.device
        if self.runtime_for(mode) == "openvino":
            return self._compiled_mode(mode)(x)
        with autocast(device, self.amp):
            y = self.decode(self._networks()[0].features(to_device(x, device)), mode)
        return y.float().cpu() if device.type != "cpu" else y.float()

    @torch.no_grad()
    def restore_float(self, images: torch.Tensor, mode: str = "multi") -> torch.Tensor:
        """Restore float images (N, C, H, W) in [0, 1] of any size."""
        n, c, h, w = images.shape
        if c != self.channels:
            raise ValueError(f"the {self.arch} restorer takes {self.channels} channel(s), got {c}")
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
        images = images.float()
        if h * w <= self.tile * self.tile:
            parts = [self._restore_whole(images[s : s + self.images_per_batch], mode)
                     for s in range(0, n, self.images_per_batch)]
            return torch.cat(parts).clamp_(0.0, 1.0)
        out = torch.empty_like(images)
        t, m = self.tile, self.margin
        for y0 in range(0, h, t):
            for x0 in range(0, w, t):
                y1, x1 = min(y0 + t, h), min(x0 + t, w)
                ya, xa = max(0, y0 - m), max(0, x0 - m)
                yb, xb = min(h, y1 + m), min(w, x1 + m)
                for s in range(0, n, self.images_per_batch):
                    part = self._restore_whole(images[s : s + self.images_per_batch, :, ya:yb, xa:xb], mode)
                    out[s : s + len(part), :, y0:y1, x0:x1] = part[:, :, y0 - ya : y1 - ya, x0 - xa : x1 - xa]
        return out.clamp_(0.0, 1.0)


def route_maps(model, code: torch.Tensor, method: str, centroids, beta: float, scale: float) -> torch.Tensor:
    """Per code location: the damage head's softmax or the soft k-means responsibilities,
    ``(N, K, h, w)``."""
    if method == "damage_head":
        return torch.softmax(model.damage_logits(code), dim=1)
    if method != "soft_kmeans" or centroids is None:
        raise ValueError(f"routing maps need method 'damage_head' or 'soft_kmeans' with centroids, got {method!r}")
    n, d, h, w = code.shape
    flat = code.permute(0, 2, 3, 1).reshape(-1, d)
    d2 = torch.cdist(flat.double(), torch.as_tensor(centroids).double()) ** 2
    r = torch.softmax(-beta * d2 / scale, dim=1).float()
    return r.view(n, h, w, -1).permute(0, 3, 1, 2)


def upsample_maps(maps: torch.Tensor, multiple: int, size: tuple[int, int]) -> torch.Tensor:
    """Bilinear upsampling of code-resolution maps to the padded image, cropped to ``size``."""
    h, w = maps.shape[-2:]
    up = torch.nn.functional.interpolate(maps, size=(h * multiple, w * multiple), mode="bilinear",
                                         align_corners=False)
    return up[..., : size[0], : size[1]]


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
