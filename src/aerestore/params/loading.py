"""Reading ``params.yaml``: :func:`load_params` (a file), :func:`parse_params` (a mapping),
:func:`load_base` (a file, not validated), :func:`flatten` (dotted keys, as MLflow logs them)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from .base import ParamsError
from .errors import _format
from .model import Params, check_moved

PARAMS_FILE = "params.yaml"


def parse_params(raw: Any, source: str = PARAMS_FILE) -> Params:
    if not isinstance(raw, dict):
        raise ParamsError(f"{source}: expected a mapping at the top level, got {type(raw).__name__}")
    moved = check_moved(raw)
    if moved:  # before the schema, which would call them unknown keys
        raise ParamsError(f"{source}: keys that moved (docs/parameters.md)\n" + "\n".join(moved))
    try:
        params = Params.model_validate(raw)
    except ValidationError as exc:
        raise ParamsError(f"{source}: invalid params\n" + _format(exc, source=raw)) from None
    # resolve per-arch train overrides now so a bad one fails before any stage writes
    for name in params.architectures:
        params.train_for(name)
    return params


def _read(path: Path) -> Any:
    try:
        return yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise ParamsError(f"{path}: not found (run from the repository root)") from None


def load_params(path: str | Path = PARAMS_FILE) -> Params:
    """Read and validate params.yaml (raises ParamsError naming the key and the value)."""
    path = Path(path)
    try:
        raw = _read(path)
    except yaml.YAMLError as exc:
        raise ParamsError(f"{path}: not valid YAML: {exc}") from None
    return parse_params(raw, source=str(path))


def load_base(path: str | Path = PARAMS_FILE) -> dict:
    """params.yaml as a plain mapping, not validated: the base that
    :func:`~aerestore.params.deep_update` applies overrides to (a study preset, a claims-report
    arm) before :func:`parse_params`."""
    path = Path(path)
    raw = _read(path)
    if not isinstance(raw, dict):
        raise ParamsError(f"{path}: expected a mapping at the top level")
    return raw


def flatten(obj: Any, prefix: str = "") -> dict[str, Any]:
    """``{'train': {'lr': 1e-3}}`` -> ``{'train.lr': 1e-3}`` (lists stay values)."""
    if isinstance(obj, BaseModel):
        obj = obj.model_dump()
    out: dict[str, Any] = {}
    if isinstance(obj, dict):
        for k, v in obj.items():
            key = f"{prefix}.{k}" if prefix else str(k)
            if isinstance(v, dict) and v:
                out.update(flatten(v, key))
            else:
                out[key] = v
    else:
        out[prefix] = obj
    return out
