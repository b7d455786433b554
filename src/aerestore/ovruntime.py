"""The ``unet_ae`` restorer compiled by OpenVINO for the CPU.

The restorer's work on the CPU is a few dozen narrow convolutions (16-72 channels) per
decoder, three decoders for the per-cluster restorer. PyTorch runs them one operator at a
time through oneDNN; OpenVINO (Intel's inference runtime, Apache 2.0, pip ``openvino``)
compiles the whole function into one graph, fuses each convolution with its ReLU, bias and
residual add, and keeps the activations in its blocked layout between them. Measured on 2
cores, one 256 px RGB image (``benchmarks/bench_restore.py``): the per-cluster restorer at
1.4x the speed of PyTorch's channels-last path on a quiet machine (2.28 against 1.60 Mpx/s;
1.5-1.9x with other jobs on the machine), the same function to ~1e-6
(fp32 both; ``tests/test_ovruntime.py`` checks 1e-5 on images of odd sizes). ONNX Runtime
1.32 was measured no faster than PyTorch here (README, Benchmarks), which is why this is
OpenVINO and not the ONNX route.

What is compiled (:class:`RestoreGraph`): the encoder, the routing maps (the damage head's
softmax per code location, bilinearly upsampled; ``hard`` = the one-hot argmax of those
maps), every decoder's clamped output and their blend: exactly
:meth:`aerestore.tracks.images.restore.ConvRestorer.decode`, written once more as one traceable function
because the original splits the work across Python objects (features, routing, decoders) and
Python-level shape arithmetic that a trace would freeze to the example's size (the output's
crop). The image is padded (as the model pads) before the call and cropped after it, so one
compiled model serves every size (dynamic height and width). Routing by soft k-means
centroids or a learned gate is not compiled: those restorers run in PyTorch
(:func:`supports`).

Converting the PyTorch graph takes about 2 s, compiling the converted one 0.1 s: the
converted graph is kept in ``$AERESTORE_CACHE/openvino`` (default
``~/.cache/aerestore/openvino``), named by a digest of the weights, the mode and the
OpenVINO version, so a second ``aerestore restore`` with the same model starts at once. A
cache that cannot be written is skipped.
"""

from __future__ import annotations

import hashlib
import os
import threading
import warnings
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn


def missing() -> str | None:
    """None when OpenVINO can be used, else why not."""
    try:
        import openvino  # noqa: F401
    except ImportError:
        return "OpenVINO is not installed (pip install openvino)"
    return None


def supports(restorer, mode: str) -> bool:
    """Whether ``mode`` of this ``ConvRestorer`` can be compiled: fp32 on the CPU; its
    per-cluster mode only when routed by the damage head (no centroids, no gate); never the
    ensemble control (its blind weights, :func:`aerestore.restore.blind_maps`, are not in the
    graph: compiled, it would be the per-cluster mode)."""
    if restorer.device.type != "cpu" or restorer.amp != "fp32" or missing() is not None or mode == "ensemble":
        return False
    if mode != "multi" or not restorer.cluster_decoders:
        return True
    return restorer.method == "damage_head" and restorer.gate is None


class RestoreGraph(nn.Module):
    """One mode of a ``unet_ae`` restorer as a function of the padded image ``x`` (N, C, H,
    W), H and W multiples of ``model.multiple``: ``sum_k w_k * clamp(x + c_k(x), 0, 1)``
    over the decoders, ``w`` the upsampled routing maps (one decoder: ``w = 1``)."""

    def __init__(self, model, decoders: list[nn.Module], routing: str | None) -> None:
        super().__init__()
        self.model = model
        self.decoders = nn.ModuleList(decoders)
        self.routing = routing  # None: one decoder, no maps; 'soft' | 'hard'

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # x is already a multiple of model.multiple, so the encoder's padding (a shape check
        # the trace freezes) is a no-op at every size, and f.size (frozen too) is not used
        f = self.model.features(x)
        code = f.code
        outs = [(x + d.correction(f)).clamp(0.0, 1.0) for d in self.decoders]
        if self.routing is None:
            return outs[0]
        maps = torch.softmax(self.model.damage_logits(code), dim=1)
        maps = F.interpolate(maps, scale_factor=float(self.model.multiple), mode="bilinear", align_corners=False)
        if self.routing == "hard":
            # one-hot of the argmax (the first maximum, as torch.argmax), without a scatter
            top = (maps >= maps.amax(1, keepdim=True)).to(maps.dtype)
            maps = top * (top.cumsum(1) == 1).to(maps.dtype)
        out = maps[:, :1] * outs[0]
        for k in range(1, len(outs)):
            out = out + maps[:, k : k + 1] * outs[k]
        return out


def cache_dir() -> Path:
    """Where converted graphs are kept: ``$AERESTORE_CACHE/openvino``, else
    ``$XDG_CACHE_HOME/aerestore/openvino``, else ``~/.cache/aerestore/openvino``."""
    if os.environ.get("AERESTORE_CACHE"):
        return Path(os.environ["AERESTORE_CACHE"]) / "openvino"
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "aerestore" / "openvino"


def graph_digest(graph: RestoreGraph, channels: int) -> str:
    """A digest of everything the converted graph depends on: the OpenVINO version, the
    code of this module and the model's, the routing, the channels and every weight."""
    import inspect

    import openvino as ov

    from .models import unet_ae

    h = hashlib.sha256()
    for part in (ov.__version__, inspect.getsource(inspect.getmodule(RestoreGraph)), inspect.getsource(unet_ae),
                 str(graph.routing), str(channels), str(len(graph.decoders))):
        h.update(part.encode())
    for name, t in graph.state_dict().items():
        h.update(f"{name}{tuple(t.shape)}{t.dtype}".encode())
        h.update(t.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:32]


def converted_graph(graph: RestoreGraph, channels: int):
    """The OpenVINO model of ``graph``: read from the cache, else converted (and cached)."""
    import openvino as ov

    multiple = int(graph.model.multiple)
    folder = cache_dir()
    digest = graph_digest(graph, channels)
    xml = folder / f"{digest}.xml"
    if xml.exists() and xml.with_suffix(".bin").exists():
        try:
            return ov.Core().read_model(str(xml))
        except RuntimeError:  # a damaged entry: convert again and replace it
            pass
    example = torch.rand(1, channels, 2 * multiple, 2 * multiple)
    with torch.no_grad(), warnings.catch_warnings():
        # OpenVINO traces with torch.jit.trace, which warns that it is deprecated and that
        # Python-level shape checks are frozen: the graph above has none, and tests compare
        # the compiled graph with PyTorch on several sizes
        warnings.simplefilter("ignore")
        converted = ov.convert_model(graph.eval(), example_input=example,
                                     input=[ov.PartialShape([-1, channels, -1, -1])])
    try:  # temporary names, then renamed: a reader never sees half a file
        folder.mkdir(parents=True, exist_ok=True)
        tmp = folder / f"{digest}.tmp-{os.getpid()}.xml"
        ov.save_model(converted, str(tmp), compress_to_fp16=False)
        os.replace(tmp.with_suffix(".bin"), xml.with_suffix(".bin"))
        os.replace(tmp, xml)
    except OSError:  # read-only or full: restore without the cache
        pass
    return converted


class Compiled:
    """A compiled :class:`RestoreGraph`: ``compiled(x)`` takes the unpadded float image
    batch (N, C, H, W) and returns the restored one, as the PyTorch path does."""

    def __init__(self, graph: RestoreGraph, channels: int, threads: int) -> None:
        import openvino as ov

        self.multiple = int(graph.model.multiple)
        converted = converted_graph(graph, channels)
        config = {"INFERENCE_NUM_THREADS": max(1, int(threads)), "INFERENCE_PRECISION_HINT": "f32",
                  "PERFORMANCE_HINT": "LATENCY"}
        self.model = ov.Core().compile_model(converted, "CPU", config)
        self.request = self.model.create_infer_request()
        # One infer request, which is not to be run from two threads at once; a server runs
        # predict in concurrent threads (`mlflow models serve`: one per request). Inference
        # already takes every thread it was given, so waiting costs no throughput.
        self.lock = threading.Lock()

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return torch.from_numpy(self.run_array(x.numpy()))

    def run_array(self, x: np.ndarray) -> np.ndarray:
        """The same on a float32 NumPy batch (N, C, H, W), with no torch operation: the
        padding (reflect, or replicate where the image is too small to reflect, as
        :func:`aerestore.models.unet_ae.pad_to_multiple`) and the crop in NumPy. A torch
        operation on an image-sized tensor runs on torch's OpenMP threads, which then spin
        for a while and take the cores from OpenVINO's own threads (measured: ~4 ms of a
        ~25 ms 256 px restore)."""
        h, w = x.shape[-2:]
        ph, pw = (-h) % self.multiple, (-w) % self.multiple
        if ph or pw:
            mode = "reflect" if ph < h and pw < w else "edge"
            x = np.pad(x, ((0, 0), (0, 0), (0, ph), (0, pw)), mode=mode)
        with self.lock:
            out = self.request.infer([np.ascontiguousarray(x, dtype=np.float32)])[0]
            return np.array(out[..., :h, :w])  # a copy, before the request's next inference


def compile_mode(restorer, mode: str) -> Compiled:
    """Compile ``mode`` of a ``ConvRestorer`` (see :func:`supports`) with the torch thread
    count (the stages set it from ``runtime.threads``)."""
    if mode == "base":
        graph = RestoreGraph(restorer.model, [restorer.model.decoder], None)
    elif mode == "single" or not restorer.cluster_decoders:
        graph = RestoreGraph(restorer.model, [restorer.control], None)
    else:
        graph = RestoreGraph(restorer.model, list(restorer.cluster_decoders), restorer.routing)
    return Compiled(graph, restorer.channels, torch.get_num_threads())
