"""The files the stages hand on after ``model.pt``: each format's writer beside its reader.

``models/<arch>/clusters.npz`` (``cluster@<arch>`` writes it, the restorer and the decoders
stage read it) and ``models/<arch>/decoders.pt`` (``decoders@<arch>`` writes it, the
restorer reads it). ``model.pt`` and the block geometry it carries are
:func:`aerestore.models.registry.save_model` / :func:`~aerestore.models.registry.read_model`.

Both files record the network they were made for (:class:`ModelKey`: architecture, block
side, channels, latent length) and a format ``version``; the readers check the key against
the ``model.pt`` beside them, so a file of another architecture, block size or latent size
is refused with one line that names it instead of failing deep inside torch. Files written
before the version field (version 1) are still read, checked on their shapes only.

clusters.npz (``np.savez``, read with ``allow_pickle=False``)::

    format "aerestore.clusters", version, arch, block, channels, latent_dim,
    centroids (K, latent_dim) float32, scale, beta, method, labels (K,) str, sizes (K,) int

decoders.pt (``torch.save`` of plain values, read with ``weights_only=True``)::

    {"format": "aerestore.decoders", "version", "made_for": ModelKey as a dict,
     "control": state dict, "clusters": [state dict or None (the control stands in)],
     "sizes", "fallback", "gate": aerestore.gate.Gate.state() or None, "extra": {...},
     "ensemble": [state dict or None] or None (version 3: the ensemble control's decoders,
     one per cluster, None where the cluster has none; None when not trained)}

Version 3 added ``ensemble``; version 2 files are read without it (no ensemble control).
"""

from __future__ import annotations

import copy
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .io import atomic_path, write_torch
from .models.registry import archive_problem, check_format, load_archive, one_line

CLUSTERS_FORMAT, CLUSTERS_VERSION = "aerestore.clusters", 2
DECODERS_FORMAT, DECODERS_VERSION = "aerestore.decoders", 3


class ArtifactError(ValueError):
    """A saved file that is damaged, of another kind, or made for another network."""


@dataclass(frozen=True)
class ModelKey:
    """The network a clusters or decoders file was made for."""

    arch: str
    block: int
    channels: int
    latent_dim: int

    @classmethod
    def of(cls, model) -> "ModelKey":
        return cls(str(model.name), int(model.block), int(model.channels), int(model.latent_dim))

    def check(self, model, path: Path) -> None:
        """``ArtifactError`` naming ``path`` unless ``model`` is the network of this key."""
        got = ModelKey.of(model)
        if got == self:
            return
        if got.arch != self.arch:
            raise ArtifactError(f"{path}: made for {self.arch}, but the model.pt beside it holds {got.arch} "
                                "(files of two architectures in one folder?)")
        if got.block != self.block:
            why = f"on {self.block} px blocks, but model.pt was trained on {got.block} px"
        elif got.channels != self.channels:
            why = f"on {self.channels}-channel images, but model.pt takes {got.channels}"
        else:
            why = f"with latent vectors of {self.latent_dim}, but model.pt's have {got.latent_dim}"
        raise ArtifactError(f"{path}: made for {self.arch} {why} (a model.pt retrained since: "
                            f"`dvc repro decoders@{got.arch}` remakes the files after it)")


def _version(path: Path, kind: str, fmt: Any, version: Any, expected: str, newest: int) -> int:
    """The file's format version (1 for files older than the field), checked."""
    return check_format(path, fmt, version, expected, newest, kind=kind, error=ArtifactError)


# ----------------------------------------------------------------------- clusters.npz
@dataclass
class Clusters:
    """The clustering of ``cluster@<arch>``: K centroids in the latent space and how the
    restorer routes with them (``method``: soft_kmeans, ncut_head or damage_head)."""

    made_for: ModelKey | None  # None: a version-1 file, which did not record it
    centroids: np.ndarray  # (K, latent_dim) float32
    scale: float
    beta: float
    method: str
    labels: list[str] = field(default_factory=list)  # per cluster: its damage label
    sizes: list[int] = field(default_factory=list)  # per cluster: training samples

    def __len__(self) -> int:
        return len(self.centroids)


def write_clusters(path: str | Path, clusters: Clusters) -> None:
    """Write ``clusters`` atomically (temp file + rename)."""
    if clusters.made_for is None:
        raise ValueError("write_clusters: made_for (the model's key) is required")
    centroids = np.asarray(clusters.centroids, np.float32)
    if centroids.ndim != 2 or centroids.shape[1] != clusters.made_for.latent_dim:
        raise ValueError(f"centroids of shape {centroids.shape} for latent vectors of {clusters.made_for.latent_dim}")
    key = clusters.made_for
    with atomic_path(Path(path)) as tmp, open(tmp, "wb") as f:
        np.savez(f, format=np.str_(CLUSTERS_FORMAT), version=np.int64(CLUSTERS_VERSION),
                 arch=np.str_(key.arch), block=np.int64(key.block), channels=np.int64(key.channels),
                 latent_dim=np.int64(key.latent_dim), centroids=centroids, scale=np.float64(clusters.scale),
                 beta=np.float64(clusters.beta), method=np.str_(clusters.method),
                 labels=np.array([str(x) for x in clusters.labels], dtype=np.str_),
                 sizes=np.array(clusters.sizes, dtype=np.int64))


def read_clusters(path: str | Path, model=None) -> Clusters:
    """What :func:`write_clusters` wrote (or a version-1 file); with ``model``, checked to
    be made for it. One-line ``ArtifactError`` naming the file otherwise."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: clusters file not found")
    problem = archive_problem(path)
    if problem is not None:
        raise ArtifactError(f"{path}: not a clusters file saved by aerestore: {problem}")
    try:
        with np.load(path, allow_pickle=False) as npz:
            data = {name: npz[name] for name in npz.files}
    except Exception as exc:  # a damaged member, or object arrays
        raise ArtifactError(f"{path}: not a clusters file saved by aerestore: unreadable ({one_line(exc)})") from None
    item = {k: v.item() if v.ndim == 0 else v for k, v in data.items()}
    version = _version(path, "clusters (clusters.npz)", item.get("format"), item.get("version"),
                       CLUSTERS_FORMAT, CLUSTERS_VERSION)
    try:
        key = None if version == 1 else ModelKey(str(item["arch"]), int(item["block"]), int(item["channels"]),
                                                  int(item["latent_dim"]))
        clusters = Clusters(key, np.asarray(data["centroids"], np.float32), float(item["scale"]),
                            float(item["beta"]), str(item["method"]),
                            [str(x) for x in data.get("labels", [])], [int(x) for x in data.get("sizes", [])])
    except KeyError as exc:
        raise ArtifactError(f"{path}: not a clusters file saved by aerestore: no {exc.args[0]!r}") from None
    except (TypeError, ValueError) as exc:
        raise ArtifactError(f"{path}: a damaged clusters file ({one_line(exc)})") from None
    if clusters.centroids.ndim != 2 or len(clusters.centroids) == 0:
        raise ArtifactError(f"{path}: centroids of shape {clusters.centroids.shape}, expected (K >= 1, latent)")
    if model is not None:
        if key is not None:
            key.check(model, path)
        if clusters.centroids.shape[1] != int(model.latent_dim):
            raise ArtifactError(f"{path}: centroids of dimension {clusters.centroids.shape[1]}, but the "
                                f"{model.name} model's latent vectors have {int(model.latent_dim)} "
                                f"(`dvc repro cluster@{model.name}` remakes it)")
    return clusters


# ----------------------------------------------------------------------- decoders.pt
@dataclass
class Decoders:
    """The decoders of ``decoders@<arch>``: the control, one per cluster (None: too few
    samples, the control stands in) and, for ``decoders.method: gate``, the gate."""

    made_for: ModelKey | None  # None: a version-1 file
    control: dict[str, torch.Tensor]  # state dicts of copies of the model's decoder
    clusters: list[dict[str, torch.Tensor] | None]
    sizes: list[int] = field(default_factory=list)
    fallback: list[bool] = field(default_factory=list)
    gate: dict | None = None  # aerestore.gate.Gate.state()
    extra: dict = field(default_factory=dict)
    # the ensemble control (aerestore.tracks.blocks.decoders, decoders.ensemble): one per cluster, None where
    # that cluster has no decoder (the control stands in); None: not trained (or version < 3)
    ensemble: list[dict[str, torch.Tensor] | None] | None = None

    def modules(self, model, path: Path) -> tuple[torch.nn.Module, list[torch.nn.Module | None]]:
        """``(control, cluster decoders)`` as copies of ``model.decoder`` holding the saved
        weights; ``ArtifactError`` naming ``path`` when they do not fit that decoder."""
        return _decoder(model, self.control, path, "control"), [
            None if s is None else _decoder(model, s, path, f"cluster {c}") for c, s in enumerate(self.clusters)]

    def ensemble_modules(self, model, path: Path) -> list[torch.nn.Module | None] | None:
        """The ensemble control's decoders as copies of ``model.decoder`` (None where the
        control stands in), or None when the file has none; checked like :meth:`modules`."""
        if self.ensemble is None:
            return None
        if len(self.ensemble) != len(self.clusters):
            raise ArtifactError(f"{path}: {len(self.ensemble)} ensemble decoders for {len(self.clusters)} clusters")
        return [None if s is None else _decoder(model, s, path, f"ensemble {c}") for c, s in enumerate(self.ensemble)]


def _decoder(model, state: dict, path: Path, name: str) -> torch.nn.Module:
    """A copy of ``model.decoder`` holding ``state``; ``ArtifactError`` naming ``path`` and
    the decoder when the weights do not fit it."""
    decoder = copy.deepcopy(model.decoder)
    try:
        decoder.load_state_dict(state)
    except (RuntimeError, TypeError, AttributeError) as exc:
        raise ArtifactError(f"{path}: the {name} decoder's weights do not fit the {model.name} model in "
                            f"model.pt ({one_line(exc)})") from None
    return decoder


def write_decoders(path: str | Path, model, result, extra: dict | None = None) -> None:
    """Write the decoders ``result`` (an :class:`aerestore.tracks.blocks.decoders.DecodersResult`:
    ``control``, ``clusters``, ``sizes``, ``fallback``, ``gate``, ``ensemble``) trained on ``model``'s
    latents, atomically, as CPU tensors whatever device trained them."""
    def host(module):
        return {k: v.detach().cpu() for k, v in module.state_dict().items()}

    gate = getattr(result, "gate", None)
    ensemble = getattr(result, "ensemble", None)
    state = {
        "format": DECODERS_FORMAT,
        "version": DECODERS_VERSION,
        "made_for": asdict(ModelKey.of(model)),
        "control": host(result.control),
        "clusters": [None if d is None else host(d) for d in result.clusters],
        "sizes": [int(n) for n in result.sizes],
        "fallback": [bool(b) for b in result.fallback],
        "gate": None if gate is None else gate.state(),  # read back by aerestore.gate.Gate.from_state
        "extra": extra or {},
        "ensemble": None if ensemble is None else [None if d is None else host(d) for d in ensemble],
    }
    write_torch(path, state)


def read_decoders(path: str | Path, model=None) -> Decoders:
    """What :func:`write_decoders` wrote (or a version-1 file); with ``model``, checked to
    be made for it (:meth:`Decoders.modules` then checks that the weights fit its decoder).
    One-line ``ArtifactError`` naming the file otherwise."""
    path = Path(path)
    try:
        state = load_archive(path, "decoders")
    except ValueError as exc:  # (FileNotFoundError passes through)
        raise ArtifactError(str(exc)) from None
    version = _version(path, "decoders (decoders.pt)", state.get("format"), state.get("version"),
                       DECODERS_FORMAT, DECODERS_VERSION)
    try:
        key = None if version == 1 else ModelKey(**state["made_for"])
        decoders = Decoders(key, state["control"], list(state["clusters"]), list(state.get("sizes", [])),
                            list(state.get("fallback", [])), state.get("gate"), dict(state.get("extra") or {}),
                            None if version < 3 or state.get("ensemble") is None else list(state["ensemble"]))
    except KeyError as exc:
        raise ArtifactError(f"{path}: not a decoders file saved by aerestore: no {exc.args[0]!r}") from None
    except TypeError as exc:
        raise ArtifactError(f"{path}: a damaged decoders file ({one_line(exc)})") from None
    if model is not None and key is not None:
        key.check(model, path)
    return decoders
