"""``resnet_vae``: a VAE with a residual encoder (and a residual decoder).

Source: the residual-encoder VAE of the block studies: each encoder stage adds two paths,
a conv path (3x3 stride-2 conv, batch norm, ReLU, 3x3 conv, batch norm) and a shortcut
path (1x1 stride-2 conv, batch norm), then applies ReLU (He et al. 2016's projection
shortcut); the flattened map feeds the VAE head (``z_mean``, ``z_log_var``). Loss as
:mod:`aerestore.models.vae` (per-sample ``alpha * n * recon + beta * KL``).

Adapted: the decoder mirrors the encoder with residual up-stages (path: 3x3 stride-2
transposed conv to the exact side of the matching encoder stage, batch norm, ReLU, 3x3
conv, batch norm; shortcut: nearest upsampling to that side, 1x1 conv, batch norm), then a
3x3 conv and a sigmoid. The number of stages follows the block: up to ``stages``
halvings (ceil) that keep the map >= 2 px (18 px: 3 stages, 18 -> 9 -> 5 -> 3).
Stage i has ``width * 2**i`` channels, after a 3x3 stem conv of ``width`` channels.

``latent``: the length of mu. Options: ``width`` (32), ``stages`` (3, the most).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from aerestore.losses import LossConfig
from aerestore.models.base import (
    GaussianHead,
    VAEEncoder,
    VariationalModel,
    conv_bn_relu,
    conv_out,
    halvings,
    positive,
    transpose_to,
)
from aerestore.models.registry import register_model


class ResidualDown(nn.Module):
    """``relu(conv path(x) + shortcut(x))``, halving the side (ceil)."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.path = nn.Sequential(
            *conv_bn_relu(cin, cout, 3, 2),
            nn.Conv2d(cout, cout, 3, 1, 1, bias=False),
            nn.BatchNorm2d(cout),
        )
        self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, 2, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x: Tensor) -> Tensor:
        return torch.relu(self.path(x) + self.shortcut(x))


class ResidualUp(nn.Module):
    """``relu(transposed-conv path(x) + upsampled shortcut(x))``, side ``side_in -> side_out``."""

    def __init__(self, cin: int, cout: int, side_in: int, side_out: int) -> None:
        super().__init__()
        self.path = nn.Sequential(
            transpose_to(cin, cout, side_in, side_out, 3, 2),
            nn.BatchNorm2d(cout),
            nn.ReLU(inplace=True),
            nn.Conv2d(cout, cout, 3, 1, 1, bias=False),
            nn.BatchNorm2d(cout),
        )
        self.shortcut = nn.Sequential(
            nn.Upsample(size=(side_out, side_out), mode="nearest"),
            nn.Conv2d(cin, cout, 1, bias=False),
            nn.BatchNorm2d(cout),
        )

    def forward(self, x: Tensor) -> Tensor:
        return torch.relu(self.path(x) + self.shortcut(x))


class ResNetDecoder(nn.Module):
    def __init__(self, latent: int, channels: int, widths: list[int], sides: list[int]) -> None:
        super().__init__()
        self.shape = (widths[-1], sides[-1], sides[-1])
        self.dense = nn.Sequential(nn.Linear(latent, widths[-1] * sides[-1] ** 2), nn.ReLU(inplace=True))
        ups = [ResidualUp(widths[i + 1], widths[i], sides[i + 1], sides[i]) for i in reversed(range(len(widths) - 1))]
        self.ups = nn.Sequential(*ups)
        self.out = nn.Sequential(nn.Conv2d(widths[0], channels, 3, 1, 1), nn.Sigmoid())

    def forward(self, z: Tensor) -> Tensor:
        return self.out(self.ups(self.dense(z).view(z.shape[0], *self.shape)))


class ResNetVAE(VariationalModel):
    def __init__(
        self,
        latent: int = 64,
        block: int = 18,
        channels: int = 3,
        loss: LossConfig | None = None,
        *,
        width: int = 32,
        stages: int = 3,
    ) -> None:
        super().__init__(latent, block, channels, loss)
        width = positive("width", width, integer=True)
        stages = positive("stages", stages, integer=True)
        n = halvings(block, stages, min_size=2, ceil=True)
        # widths[0] is the stem's; sides[i] the side entering stage i
        widths = [width] + [width * 2**i for i in range(n)]
        sides = [block]
        for _ in range(n):
            sides.append(conv_out(sides[-1], 3, 2, 1))
        body = nn.Sequential(
            *conv_bn_relu(channels, width, 3, 1),
            *[ResidualDown(widths[i], widths[i + 1]) for i in range(n)],
            nn.Flatten(),
        )
        self.encoder = VAEEncoder(body, GaussianHead(widths[-1] * sides[-1] ** 2, latent))
        self.decoder = ResNetDecoder(latent, channels, widths, sides)
        self._finish()


register_model("resnet_vae", ResNetVAE)
