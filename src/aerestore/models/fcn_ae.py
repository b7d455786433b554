"""``fcn_ae``: the Animal Faces study's fully convolutional autoencoder (no dense layer).

Source: the Animal Faces study's FCN autoencoder. Encoder: 3x3 stride-2 convs with 32,
48 and 64 filters (batch norm, ReLU); decoder: 3x3 stride-2 transposed convs with 32,
16 and 8 filters (batch norm, ReLU), then a 1x1 conv to the image and a sigmoid.

Adapted, and how ``latent`` maps: a fully convolutional code is a map of
``c x h x h`` (h = the block side after the three halvings, ceil: 18 -> 9 -> 5 -> 3).
So that the code has about ``latent`` numbers, a linear 1x1 conv ends the encoder with
``c = max(1, round(latent / h**2))`` channels (block 18, latent 64: c = 7, a 7x3x3 code
of 63 numbers; block 16: 16x2x2 = 64; block 32: 4x4x4 = 64; block 64: 1x8x8 = 64).
``encode`` returns that map ``(N, c, h, h)``; ``latent_vector`` flattens it. The
decoder's transposed convs land on the encoder's exact sides.

Options: ``filters`` (encoder), ``dec_filters`` (decoder; same length).
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import nn

from aerestore.losses import LossConfig
from aerestore.models.base import RestorationModel, conv_stack, int_tuple, transpose_to
from aerestore.models.registry import register_model


def bottleneck_channels(latent: int, side: int) -> int:
    """Channels of a ``side x side`` code holding about ``latent`` numbers (at least 1)."""
    return max(1, round(latent / side**2))


class FCNAE(RestorationModel):
    def __init__(
        self,
        latent: int = 64,
        block: int = 18,
        channels: int = 3,
        loss: LossConfig | None = None,
        *,
        filters: Sequence[int] = (32, 48, 64),
        dec_filters: Sequence[int] = (32, 16, 8),
    ) -> None:
        super().__init__(latent, block, channels, loss)
        filters = int_tuple("filters", filters)
        dec_filters = int_tuple("dec_filters", dec_filters, len(filters))
        convs, sides = conv_stack(channels, filters, [2] * len(filters), block)
        code = bottleneck_channels(latent, sides[-1])
        self.encoder = nn.Sequential(convs, nn.Conv2d(filters[-1], code, 1))
        layers: list[nn.Module] = []
        cin = code
        for j, cout in enumerate(dec_filters):
            i = len(filters) - 1 - j  # the encoder stage mirrored: sides[i + 1] -> sides[i]
            up = transpose_to(cin, cout, sides[i + 1], sides[i], 3, 2)
            layers += [up, nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]
            cin = cout
        layers += [nn.Conv2d(cin, channels, 1), nn.Sigmoid()]
        self.decoder = nn.Sequential(*layers)
        self._finish()


register_model("fcn_ae", FCNAE)
