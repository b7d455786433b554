"""The architecture registry (timm-style), and saving / loading trained models.

Each family module registers its names with :func:`register_model`: a name is a class
plus preset keyword arguments (``vae_lfw`` is ``VAE`` with ``form='lfw'``). Adding an
architecture touches one module and the import list of ``models/__init__.py``.
"""

from __future__ import annotations

import fnmatch
import inspect
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from aerestore.io import write_torch
from aerestore.losses import LossConfig
from aerestore.models.base import RestorationModel
from aerestore.models.layers import _plain


class UnknownModelError(KeyError, ValueError):
    """An architecture name that is not registered; the message lists the known names."""

    def __str__(self) -> str:
        return str(self.args[0])


@dataclass(frozen=True)
class ModelEntry:
    name: str
    cls: type[RestorationModel]
    preset: dict[str, Any] = field(default_factory=dict)


_REGISTRY: dict[str, ModelEntry] = {}


def register_model(name: str, cls: type[RestorationModel], **preset: Any) -> None:
    """Register ``name`` as ``cls(**preset, **overrides)``."""
    if name in _REGISTRY:
        raise ValueError(f"architecture {name!r} is registered twice")
    unknown = set(preset) - set(model_options(cls))
    if unknown:
        raise TypeError(f"{name}: preset option(s) {sorted(unknown)} are not options of {cls.__name__}")
    _REGISTRY[name] = ModelEntry(name, cls, dict(preset))


def model_options(cls_or_name: type[RestorationModel] | str) -> dict[str, Any]:
    """The keyword options (overrides) an architecture takes, with their defaults."""
    if isinstance(cls_or_name, str):
        entry = _entry(cls_or_name)
        cls, preset = entry.cls, entry.preset
    else:
        cls, preset = cls_or_name, {}
    params = inspect.signature(cls.__init__).parameters
    options = {p.name: p.default for p in params.values() if p.kind is inspect.Parameter.KEYWORD_ONLY}
    return {**options, **preset}


def model_class(name: str) -> type[RestorationModel]:
    """The class behind a registered name (e.g. to read its ``track`` before building)."""
    return _entry(name).cls


def list_models(pattern: str | None = None) -> list[str]:
    """Registered names, sorted; ``pattern`` is an fnmatch pattern such as ``'vae*'``."""
    names = sorted(_REGISTRY)
    return names if pattern is None else [n for n in names if fnmatch.fnmatchcase(n, pattern)]


def _entry(name: str) -> ModelEntry:
    try:
        return _REGISTRY[name]
    except (KeyError, TypeError):
        raise UnknownModelError(
            f"unknown architecture {name!r}; known: {', '.join(list_models())}"
        ) from None


def create_model(
    name: str,
    latent: int = 64,
    block: int = 18,
    channels: int = 3,
    loss: LossConfig | None = None,
    **overrides: Any,
) -> RestorationModel:
    """Build a registered architecture (weights from the global torch RNG: seed it first).

    Raises :class:`UnknownModelError` (a ``KeyError`` and ``ValueError``) listing the known
    names for an unknown ``name``, ``TypeError`` naming the key for an unknown override,
    ``ValueError`` naming the key for a bad value.
    """
    entry = _entry(name)
    options = model_options(entry.cls)
    unknown = [k for k in overrides if k not in options]
    if unknown:
        raise TypeError(
            f"{name}: unknown option(s) {unknown}; options: {', '.join(sorted(options)) or 'none'}"
        )
    kwargs = {**entry.preset, **overrides}
    model = entry.cls(latent=latent, block=block, channels=channels, loss=loss, **kwargs)
    model.name = name
    model.overrides = dict(overrides)
    return model


# --------------------------------------------------------------------------- model.pt
# The one writer (save_model) and reader (read_model) of ``models/<arch>/model.pt``:
# ``torch.save`` of a dict of plain values, read back with ``torch.load(weights_only=True)``:
#   format     "aerestore.model"
#   version    MODEL_VERSION (files without it, version 1, are still read: their overlap and
#              image size sat in ``extra``)
#   config     what create_model needs to rebuild the network (RestorationModel.config())
#   state_dict the weights, on the host
#   geometry   Geometry as a dict: how the restorer cuts images for this network
#   extra      anything else plain the writer wants kept (the train stage: best_epoch)
MODEL_FORMAT = "aerestore.model"
MODEL_VERSION = 2


@dataclass(frozen=True)
class Geometry:
    """How images are cut for a network: square blocks of ``block`` px, neighbours sharing
    ``overlap`` px (fully convolutional models take whole images: overlap 0, ``block`` the
    training crop); ``image_size``: the side of the training images, what ``aerestore
    interpolate`` resizes to (None when not recorded)."""

    block: int
    overlap: int = 0
    image_size: int | None = None

    def __post_init__(self) -> None:
        if not 0 <= self.overlap < self.block:
            raise ValueError(f"block overlap must be in [0, {self.block}) for {self.block} px blocks, "
                             f"got {self.overlap}")
        if self.image_size is not None and self.image_size < 1:
            raise ValueError(f"image_size must be >= 1 or None, got {self.image_size}")


@dataclass
class SavedModel:
    """What ``model.pt`` holds: the network (eval mode), its block geometry, the writer's
    ``extra`` values; ``path`` and the file's format ``version`` for messages."""

    model: RestorationModel
    geometry: Geometry
    extra: dict[str, Any]
    path: Path
    version: int = MODEL_VERSION


def check_model(model: RestorationModel, path: str | Path, *, arch: str | None = None, block: int | None = None,
                where: str = "the data") -> None:
    """Check a loaded model against what the caller is about to use it for: the
    architecture ``path`` should hold, the side of the blocks it will get (the blocks track
    passes it; fully convolutional models take any size); a one-line ``ValueError`` naming ``path``."""
    if arch is not None and model.name != arch:
        raise ValueError(f"{path}: holds a {model.name} model, not {arch} (a file of another architecture?)")
    if block is not None and model.block != block:
        raise ValueError(f"{path}: a model for {model.block} px blocks, but {where} has {block} px blocks "
                         f"(rerun train@{model.name} after changing blocks.size)")


def save_model(
    model: RestorationModel,
    path: str | Path,
    *,
    overlap: int = 0,
    image_size: int | None = None,
    extra: dict[str, Any] | None = None,
) -> None:
    """Write ``model`` and its geometry (``overlap`` of its blocks, ``image_size`` of its
    training images) to ``path`` atomically (temp file + rename).

    ``extra`` must hold plain values only (dict, list, str, int, float, bool, None,
    tensors), since :func:`read_model` reads with ``torch.load(weights_only=True)``.
    """
    extra = _plain(extra or {})
    for key in ("overlap", "image_size"):
        if key in extra:
            raise TypeError(f"extra[{key!r}]: the geometry is save_model's {key}= argument, not an extra value")
    _check_plain(extra, "extra")
    if model.track != "blocks" and overlap:
        raise ValueError(f"{model.name} is fully convolutional (whole images, no blocks): overlap must be 0")
    geometry = Geometry(int(model.block), int(overlap), None if image_size is None else int(image_size))
    checkpoint = {
        "format": MODEL_FORMAT,
        "version": MODEL_VERSION,
        "config": model.config(),
        "state_dict": {k: v.detach().cpu().clone() for k, v in model.state_dict().items()},
        "geometry": {"block": geometry.block, "overlap": geometry.overlap, "image_size": geometry.image_size},
        "extra": extra,
    }
    write_torch(path, checkpoint)


def check_format(path: Path, fmt: Any, version: Any, expected: str, newest: int, *, kind: str,
                 what: str | None = None, error: type[ValueError] = ValueError) -> int:
    """The format version of the file at ``path`` (1 for files older than the field), checked:
    its ``fmt`` must be ``expected`` (when present) and its version at most ``newest``; else
    ``error`` naming the file. Every aerestore file format (model.pt here, clusters.npz and
    decoders.pt in :mod:`aerestore.artifacts`) is checked with it."""
    if fmt is not None and fmt != expected:
        raise error(f"{path}: is {fmt!r}, not {what or kind}")
    version = 1 if version is None else version
    if not isinstance(version, int) or version > newest:
        raise error(f"{path}: {kind} format version {version!r}, this aerestore reads up to {newest} "
                    "(written by a newer aerestore?)")
    return version


def read_model(path: str | Path, map_location: str | torch.device = "cpu") -> SavedModel:
    """Rebuild what :func:`save_model` wrote; ``FileNotFoundError`` if missing, else a
    one-line ``ValueError`` naming the file and what is wrong (truncated, not a model,
    written by a newer aerestore, weights that do not fit the saved config)."""
    path = Path(path)
    checkpoint = load_archive(path, "model", map_location)
    version = check_format(path, checkpoint.get("format"), checkpoint.get("version"), MODEL_FORMAT, MODEL_VERSION,
                           kind="model", what="a model file")
    if not {"config", "state_dict"} <= set(checkpoint):
        raise ValueError(f"{path}: not a model saved by aerestore (no 'config' / 'state_dict')")
    extra = dict(checkpoint.get("extra") or {})
    cfg = checkpoint["config"]
    try:
        cls = _entry(cfg["name"]).cls
        overrides = {k: v for k, v in cfg.get("overrides", {}).items() if k not in cls.rebuild_ignore}
        model = create_model(
            cfg["name"],
            latent=cfg["latent"],
            block=cfg["block"],
            channels=cfg["channels"],
            loss=LossConfig.from_dict(cfg["loss"]),
            **overrides,
        )
        model.overrides = dict(cfg.get("overrides", {}))
        model.load_state_dict(checkpoint["state_dict"])
        if version == 1:  # the overlap and image size were extra values
            geo = {"block": model.block, "overlap": extra.pop("overlap", 0),
                   "image_size": extra.pop("image_size", None)}
        else:
            geo = checkpoint["geometry"]
        geometry = Geometry(int(geo["block"]), int(geo["overlap"]),
                            None if geo["image_size"] is None else int(geo["image_size"]))
    except (KeyError, TypeError, ValueError, RuntimeError) as exc:
        raise ValueError(f"{path}: cannot rebuild the saved model: {one_line(exc)}") from exc
    if geometry.block != model.block:
        raise ValueError(f"{path}: geometry of {geometry.block} px blocks for a network built for {model.block} px")
    model.to(map_location)
    model.eval()
    return SavedModel(model, geometry, extra, path, version)


def load_model(path: str | Path, map_location: str | torch.device = "cpu") -> tuple[RestorationModel, dict[str, Any]]:
    """``(network in eval mode, extra)`` of a ``model.pt``: :func:`read_model` for callers
    that need neither the geometry nor the checks of :func:`check_model`."""
    saved = read_model(path, map_location)
    return saved.model, saved.extra


def load_archive(path: Path, what: str, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """The dict in a ``torch.save`` file (``model.pt``, ``decoders.pt``), read with
    ``weights_only=True``; a one-line error naming the file when it is missing, empty,
    truncated or not such a file (:func:`archive_problem`)."""
    if not path.is_file():
        raise FileNotFoundError(f"{path}: {what} file not found")
    problem = archive_problem(path)
    if problem is None:
        try:
            checkpoint = torch.load(path, map_location=map_location, weights_only=True)
        except Exception as exc:  # a damaged member, or pickled objects that are not plain values
            problem = f"unreadable ({one_line(exc)})"
        else:
            if isinstance(checkpoint, dict):
                return checkpoint
            problem = f"holds a {type(checkpoint).__name__}, not the dict aerestore writes"
    raise ValueError(f"{path}: not a {what} file saved by aerestore: {problem}")


def archive_problem(path: Path) -> str | None:
    """Why ``path`` is not a whole zip archive (what ``torch.save`` and ``np.savez``
    write), or None: empty, cut short (no central directory at its end), or another kind
    of file."""
    import zipfile

    size = path.stat().st_size
    if size == 0:
        return "empty file (0 bytes)"
    if zipfile.is_zipfile(path):
        return None
    with open(path, "rb") as f:
        head = f.read(4)
    if head == b"PK\x03\x04":
        return f"truncated ({size:,} bytes, the end of the archive is missing)"
    return f"not a zip archive (starts with {head!r})"


def one_line(exc: BaseException, limit: int = 240) -> str:
    """An exception's message on one line: the first line or sentence, at most ``limit``
    characters (torch's messages run over several lines of advice)."""
    text = " ".join(str(exc).split()) or type(exc).__name__
    first = text.split(". ")[0].rstrip(".")
    return first if len(first) <= limit else first[: limit - 3] + "..."


def _check_plain(obj: Any, where: str) -> None:
    if isinstance(obj, dict):
        for k, v in obj.items():
            _check_plain(v, f"{where}.{k}")
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            _check_plain(v, f"{where}[{i}]")
    elif not (obj is None or isinstance(obj, (str, int, float, bool, torch.Tensor))):
        raise TypeError(f"{where}: {type(obj).__name__} cannot be saved (plain values only)")
