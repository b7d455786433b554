"""The restorer of the whole-image track (fully convolutional models, ``unet_ae``):
whole images, no blocks, per-pixel routing maps (:class:`ConvRestorer`, :func:`route_maps`,
:func:`upsample_maps`); a deep peer's one network (:class:`PeerNetworkRestorer`)."""

from __future__ import annotations

import copy
import os

import numpy as np
import torch

from ...gate import Gate
from ...models.device import autocast, to_device
from ...restore import MODES, Restorer, blind_maps


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

    def check_blocks(self, size: int, overlap: int, where) -> None:
        """Whole images: no blocks to check."""

    def use_runtime(self, runtime: str) -> None:
        """On the CPU: OpenVINO or PyTorch (``evaluate.runtime``; see ``runtime``)."""
        self.runtime = runtime

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
        from ... import ovruntime

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
        from ... import ovruntime

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
    def _forward(self, x: torch.Tensor, mode: str) -> torch.Tensor:
        """The PyTorch pass over ``x`` (on the device): encode, decode by ``mode``."""
        return self.decode(self._networks()[0].features(x), mode)

    def _restore_whole(self, x: torch.Tensor, mode: str) -> torch.Tensor:
        device = self.device
        if self.runtime_for(mode) == "openvino":
            return self._compiled_mode(mode)(x)
        with autocast(device, self.amp):
            y = self._forward(to_device(x, device), mode)
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


class PeerNetworkRestorer(ConvRestorer):
    """The restorer of a deep peer (:mod:`aerestore.models.peers`: DnCNN, DRUNet, NAFNet, as
    ``peer@<name>`` writes them to ``models/peers/<name>``): one network maps the image to
    its restoration. It has no code, no clusters and no decoders, so every mode restores with
    that network (evaluate's row ``peer: <name>`` is its ``base``). Whole images and tiles as
    :class:`ConvRestorer` (the network pads to its own multiple), in PyTorch (channels-last
    copies on the CPU); the OpenVINO graphs are built for unet_ae's decoders, not for a peer."""

    def __init__(self, model, *, arch: str, routing: str = "hard", batch_size: int = 2048, files=None):
        # the identity stands in for the control decoder the base class keeps: never used
        super().__init__(model, arch=arch, control=torch.nn.Identity(), routing=routing, batch_size=batch_size,
                         files=files)

    def runtime_for(self, mode: str) -> str:
        if self.runtime == "openvino":
            raise ValueError(f"the OpenVINO runtime is built for unet_ae's restorer, not the peer {self.arch}: "
                             f"use runtime 'auto' or 'torch'")
        return "torch"

    @torch.no_grad()
    def _forward(self, x: torch.Tensor, mode: str) -> torch.Tensor:
        return self._networks()[0].run(x).x_hat  # the one network, whatever the mode


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
