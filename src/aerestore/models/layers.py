"""Size helpers, argument checks and layers shared by the model families.

Split out of :mod:`aerestore.models.base` (which keeps the model classes) so that no module
holds both; every family imports what it builds with from here.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from torch import Tensor, nn


# ----------------------------------------------------------------------- size helpers
def conv_out(size: int, kernel: int, stride: int = 1, padding: int = 0) -> int:
    """Output side of a convolution or pooling: ``floor((size + 2p - k) / s) + 1``."""
    return (size + 2 * padding - kernel) // stride + 1


def transpose_to(cin: int, cout: int, size_in: int, size_out: int, kernel: int, stride: int) -> nn.Module:
    """A transposed conv that maps side ``size_in`` to exactly ``size_out``.

    Its output side is ``(size_in - 1) * stride - 2 * padding + kernel + output_padding``;
    this picks the smallest padding (then output padding < stride) that solves it.

    A stride-1 transposed conv that keeps the side is the same function class as a plain
    "same" convolution (its kernel flipped and transposed), so that one is built as
    ``nn.Conv2d``: identical expressiveness, and about 25 % faster training on CPU, where
    oneDNN has a fast path for convolutions but not for transposed ones.
    """
    if stride == 1 and size_in == size_out and kernel % 2 == 1:
        return nn.Conv2d(cin, cout, kernel, 1, (kernel - 1) // 2)
    for padding in range(kernel):
        for output_padding in range(stride):
            if (size_in - 1) * stride - 2 * padding + kernel + output_padding == size_out:
                return nn.ConvTranspose2d(cin, cout, kernel, stride, padding, output_padding)
    raise ValueError(
        f"no transposed conv (kernel {kernel}, stride {stride}) maps {size_in} px to {size_out} px"
    )


def halvings(size: int, stages: int, min_size: int, ceil: bool = False) -> int:
    """How many of ``stages`` halvings keep the side >= ``min_size`` (at least 0)."""
    n = 0
    while n < stages:
        nxt = (size + 1) // 2 if ceil else size // 2
        if nxt < min_size:
            break
        size, n = nxt, n + 1
    return n


def conv_bn_relu(cin: int, cout: int, kernel: int = 3, stride: int = 1, bn: bool = True) -> list[nn.Module]:
    """``[Conv2d (padding k // 2), BatchNorm2d, ReLU]`` (no batch norm when ``bn`` is False)."""
    layers: list[nn.Module] = [nn.Conv2d(cin, cout, kernel, stride, kernel // 2, bias=not bn)]
    if bn:
        layers.append(nn.BatchNorm2d(cout))
    layers.append(nn.ReLU(inplace=True))
    return layers


def int_tuple(key: str, value: Any, length: int | None = None) -> tuple[int, ...]:
    """Validate an override that is a sequence of positive ints."""
    if isinstance(value, (str, bytes)) or not isinstance(value, Sequence):
        raise ValueError(f"{key} must be a list of ints, got {value!r}")
    if not value or any(not isinstance(v, int) or isinstance(v, bool) or v < 1 for v in value):
        raise ValueError(f"{key} must be a non-empty list of ints >= 1, got {value!r}")
    if length is not None and len(value) != length:
        raise ValueError(f"{key} must have {length} entries, got {len(value)}: {value!r}")
    return tuple(value)


def choice(key: str, value: Any, options: Sequence[Any]) -> Any:
    if value not in options:
        raise ValueError(f"{key} must be one of {list(options)}, got {value!r}")
    return value


def positive(key: str, value: Any, integer: bool = False) -> Any:
    kinds = (int,) if integer else (int, float)
    if not isinstance(value, kinds) or isinstance(value, bool) or value <= 0:
        raise ValueError(f"{key} must be {'an int' if integer else 'a number'} > 0, got {value!r}")
    return value


def _plain(obj: Any) -> Any:
    """Tuples to lists, recursively (so the config is JSON- and weights_only-safe)."""
    if isinstance(obj, dict):
        return {str(k): _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    return obj


# ------------------------------------------------------------------ shared building blocks
def conv_stack(
    channels: int, filters: Sequence[int], strides: Sequence[int], block: int, kernel: int = 3, bn: bool = True
) -> tuple[nn.Sequential, list[int]]:
    """Conv (padding k // 2) + batch norm + ReLU layers; returns ``(layers, sides)``.

    ``sides[0]`` is the block side and ``sides[i + 1]`` the side after layer i
    (``ceil(side / stride)`` for odd kernels).
    """
    layers: list[nn.Module] = []
    sides = [block]
    cin = channels
    for f, s in zip(filters, strides, strict=True):
        layers += conv_bn_relu(cin, f, kernel, s, bn)
        sides.append(conv_out(sides[-1], kernel, s, kernel // 2))
        cin = f
    return nn.Sequential(*layers), sides


class DenseConvDecoder(nn.Module):
    """Latent ``(N, latent)`` -> block: dense + ReLU, reshape, transposed convs, sigmoid.

    Mirrors a :func:`conv_stack` encoder with ``filters``, ``strides`` and ``sides``:
    transposed conv i maps ``filters[i]`` channels at ``sides[i + 1]`` px to
    ``filters[i - 1]`` (``filters[0]`` for i = 0) at exactly ``sides[i]`` px (padding and
    output padding from :func:`transpose_to`), each followed by batch norm and ReLU; a
    last stride-1 transposed conv gives ``channels`` outputs and the sigmoid. So
    ``len(filters) + 1`` transposed convs in all.
    """

    def __init__(
        self,
        latent: int,
        channels: int,
        filters: Sequence[int],
        strides: Sequence[int],
        sides: Sequence[int],
        kernel: int = 3,
        dense_bn: bool = False,
    ) -> None:
        super().__init__()
        top, side = filters[-1], sides[-1]
        self.shape = (top, side, side)
        self.dense = nn.Sequential(
            nn.Linear(latent, top * side * side),
            *([nn.BatchNorm1d(top * side * side)] if dense_bn else []),
            nn.ReLU(inplace=True),
        )
        layers: list[nn.Module] = []
        for i in reversed(range(len(filters))):
            cout = filters[i - 1] if i > 0 else filters[0]
            layers += [
                transpose_to(filters[i], cout, sides[i + 1], sides[i], kernel, strides[i]),
                nn.BatchNorm2d(cout),
                nn.ReLU(inplace=True),
            ]
        layers += [transpose_to(filters[0], channels, sides[0], sides[0], kernel, 1), nn.Sigmoid()]
        self.convs = nn.Sequential(*layers)

    def forward(self, z: Tensor) -> Tensor:
        return self.convs(self.dense(z).view(z.shape[0], *self.shape))
