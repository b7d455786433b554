"""What every section of the schema shares: the error, the strict base model, ranges."""

from __future__ import annotations

from typing import Any, Union

from pydantic import BaseModel, ConfigDict


class ParamsError(ValueError):
    """A bad value in params.yaml; the message names the key and the value."""


class _Strict(BaseModel):
    # strict: YAML already gives typed values, so "1" is not silently an int.
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


# A value drawn per image from [lo, hi]; a single number means a fixed value.
Range = Union[float, list[float]]
IntRange = Union[int, list[int]]


def _check_range(value: Any, lo: float | None = None, hi: float | None = None) -> Any:
    vals = value if isinstance(value, list) else [value]
    if isinstance(value, list) and len(value) != 2:
        raise ValueError(f"a range is [low, high], got {value!r}")
    if isinstance(value, list) and value[0] > value[1]:
        raise ValueError(f"range low > high: {value!r}")
    for v in vals:
        if lo is not None and v < lo:
            raise ValueError(f"must be >= {lo}, got {value!r}")
        if hi is not None and v > hi:
            raise ValueError(f"must be <= {hi}, got {value!r}")
    return value


def as_range(value: float | list[float]) -> tuple[float, float]:
    """Normalise a param that is a number or ``[lo, hi]`` to ``(lo, hi)``."""
    if isinstance(value, list):
        return float(value[0]), float(value[1])
    return float(value), float(value)
