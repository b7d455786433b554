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

from aerestore.io import atomic_path
from aerestore.losses import LossConfig
from aerestore.models.base import RestorationModel, _plain


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
    """The class behind a registered name (e.g. to read ``fully_conv`` before building)."""
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


# --------------------------------------------------------------------------- save/load
def save_model(model: RestorationModel, path: str | Path, extra: dict[str, Any] | None = None) -> None:
    """Write ``{'config', 'state_dict', 'extra'}`` to ``path`` atomically (temp file + rename).

    ``extra`` must hold plain values only (dict, list, str, int, float, bool, None,
    tensors), since :func:`load_model` reads with ``torch.load(weights_only=True)``.
    """
    extra = _plain(extra or {})
    _check_plain(extra, "extra")
    checkpoint = {
        "config": model.config(),
        "state_dict": {k: v.detach().cpu().clone() for k, v in model.state_dict().items()},
        "extra": extra,
    }
    with atomic_path(path) as tmp:
        torch.save(checkpoint, tmp)


def load_model(path: str | Path, map_location: str | torch.device = "cpu") -> tuple[RestorationModel, dict[str, Any]]:
    """Rebuild a model saved by :func:`save_model`; returns ``(model in eval mode, extra)``."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: model file not found")
    try:
        checkpoint = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # a truncated / foreign file
        raise ValueError(f"{path}: not a model saved by aerestore ({exc})") from exc
    if not isinstance(checkpoint, dict) or not {"config", "state_dict"} <= set(checkpoint):
        raise ValueError(f"{path}: not a model saved by aerestore (no 'config' / 'state_dict')")
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
    except (KeyError, TypeError, ValueError, RuntimeError) as exc:
        raise ValueError(f"{path}: cannot rebuild the saved model: {exc}") from exc
    model.to(map_location)
    model.eval()
    return model, checkpoint.get("extra", {})


def _check_plain(obj: Any, where: str) -> None:
    if isinstance(obj, dict):
        for k, v in obj.items():
            _check_plain(v, f"{where}.{k}")
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            _check_plain(v, f"{where}[{i}]")
    elif not (obj is None or isinstance(obj, (str, int, float, bool, torch.Tensor))):
        raise TypeError(f"{where}: {type(obj).__name__} cannot be saved (plain values only)")
