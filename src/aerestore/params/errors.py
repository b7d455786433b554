"""Validation errors named by params.yaml's dotted keys, e.g. ``train.loss.beta: must be >= 0 (got -1)``."""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError

from .data import DEGRADE_OPS


def _get(source: Any, loc: tuple) -> Any:
    cur = source
    for part in loc:
        try:
            cur = cur[part]
        except (KeyError, IndexError, TypeError):
            return None
    return cur


def _format(exc: ValidationError, prefix: str = "", source: Any = None) -> str:
    lines = []
    for err in exc.errors():
        # drop pydantic's union-tag segments (e.g. 'gaussian_blur' inside a list item)
        loc = []
        for i, part in enumerate(err["loc"]):
            if isinstance(part, int):
                loc[-1:] = [f"{loc[-1]}[{part}]"] if loc else [f"[{part}]"]
            elif i > 0 and isinstance(err["loc"][i - 1], int) and part in DEGRADE_OPS:
                continue  # pydantic's union tag, not a key of params.yaml
            else:
                loc.append(str(part))
        key = ".".join(([prefix] if prefix else []) + loc)
        msg = err["msg"]
        if err["type"] == "extra_forbidden":
            msg = "unknown key"
        value = err.get("input")
        if err["type"] == "missing":
            lines.append(f"{key}: missing")
        elif err["type"] in ("value_error", "assertion_error") and not loc:
            lines.append(f"{prefix + ': ' if prefix else ''}{msg.removeprefix('Value error, ')}")
        else:
            lines.append(f"{key}: {msg.removeprefix('Value error, ')} (got {value!r})")
    return "\n".join(lines)
