"""``conv_ae_v1``, ``conv_ae_v2`` and ``accordion``: the blur study's autoencoders.

Source: the deblurring study's three Keras autoencoders.

* ``conv_ae_v1`` — max-pool / upsample AE: 3x3 conv (32) + ReLU, 2x2 max pool, 3x3 conv
  (64) + ReLU, 2x2 max pool; decoder 3x3 conv (64) + ReLU, 2x upsampling, 3x3 conv (32) +
  ReLU, 2x upsampling, 3x3 conv + sigmoid. No batch norm, no dense layer.
  Adapted, and how ``latent`` maps: a linear 1x1 conv ends the encoder with
  ``c = max(1, round(latent / h**2))`` channels, h the side after the pools (ceil:
  18 -> 9 -> 5, so c = 3: a 3x5x5 code of 75 numbers for latent 64; 16 -> 4x4x4 = 64),
  as in ``fcn_ae``; ``encode`` returns the ``(N, c, h, h)`` map. Upsampling is nearest to
  the exact side of the matching encoder stage.
* ``conv_ae_v2`` — strided conv + batch norm AE (after the Keras deblurring autoencoder
  example): 3x3 stride-2 convs with 64, 128, 256 filters, batch norm, ReLU; flatten;
  dense ``latent``; decoder dense + ReLU, reshape, the mirrored stride-2 transposed convs
  (batch norm, ReLU), a stride-1 transposed conv to the image, sigmoid.
  ``latent``: the code length.
* ``accordion`` — two ``conv_ae_v2`` networks end to end: encode, decode, encode,
  decode (the first stage's output is a restored block, in [0, 1], that the second
  stage restores again; only the final output is compared with the clean block).
  For clustering, ``encode`` is the FIRST encoder (its code is the one computed from the
  degraded input, where the degradation shows), and ``decoder`` is
  :class:`AccordionDecoder` = first decoder -> second encoder -> second decoder, so
  ``decode(encode(x)) == forward(x)`` and a per-cluster decoder copies all three.
  ``latent``: the code length of both stages.

Options: ``filters`` (each model).
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor, nn

from aerestore.losses import LossConfig
from aerestore.models.base import DenseConvDecoder, RestorationModel, conv_bn_relu, conv_stack, int_tuple
from aerestore.models.fcn_ae import bottleneck_channels
from aerestore.models.registry import register_model


class ConvAEv1(RestorationModel):
    def __init__(
        self,
        latent: int = 64,
        block: int = 18,
        channels: int = 3,
        loss: LossConfig | None = None,
        *,
        filters: Sequence[int] = (32, 64),
    ) -> None:
        super().__init__(latent, block, channels, loss)
        filters = int_tuple("filters", filters)
        enc: list[nn.Module] = []
        sides = [block]
        cin = channels
        for f in filters:
            enc += [*conv_bn_relu(cin, f, bn=False), nn.MaxPool2d(2, ceil_mode=True)]
            sides.append(-(-sides[-1] // 2))
            cin = f
        code = bottleneck_channels(latent, sides[-1])
        self.encoder = nn.Sequential(*enc, nn.Conv2d(cin, code, 1))
        dec: list[nn.Module] = []
        cin = code
        for i in reversed(range(len(filters))):
            dec += [*conv_bn_relu(cin, filters[i], bn=False), nn.Upsample(size=(sides[i], sides[i]), mode="nearest")]
            cin = filters[i]
        dec += [nn.Conv2d(cin, channels, 3, 1, 1), nn.Sigmoid()]
        self.decoder = nn.Sequential(*dec)
        self._finish()


def _v2_pair(latent: int, block: int, channels: int, filters: tuple[int, ...]) -> tuple[nn.Module, nn.Module]:
    """The encoder and decoder of one ``conv_ae_v2``."""
    strides = [2] * len(filters)
    convs, sides = conv_stack(channels, filters, strides, block)
    encoder = nn.Sequential(convs, nn.Flatten(), nn.Linear(filters[-1] * sides[-1] ** 2, latent))
    return encoder, DenseConvDecoder(latent, channels, filters, strides, sides)


class ConvAEv2(RestorationModel):
    def __init__(
        self,
        latent: int = 64,
        block: int = 18,
        channels: int = 3,
        loss: LossConfig | None = None,
        *,
        filters: Sequence[int] = (64, 128, 256),
    ) -> None:
        super().__init__(latent, block, channels, loss)
        self.encoder, self.decoder = _v2_pair(latent, block, channels, int_tuple("filters", filters))
        self._finish()


class AccordionDecoder(nn.Module):
    """``decoder2(encoder2(decoder1(z)))``: the accordion after its first encoder."""

    def __init__(self, decoder1: nn.Module, encoder2: nn.Module, decoder2: nn.Module) -> None:
        super().__init__()
        self.decoder1 = decoder1
        self.encoder2 = encoder2
        self.decoder2 = decoder2

    def forward(self, z: Tensor) -> Tensor:
        return self.decoder2(self.encoder2(self.decoder1(z)))


class Accordion(RestorationModel):
    def __init__(
        self,
        latent: int = 64,
        block: int = 18,
        channels: int = 3,
        loss: LossConfig | None = None,
        *,
        filters: Sequence[int] = (64, 128, 256),
    ) -> None:
        super().__init__(latent, block, channels, loss)
        filters = int_tuple("filters", filters)
        self.encoder, decoder1 = _v2_pair(latent, block, channels, filters)
        encoder2, decoder2 = _v2_pair(latent, block, channels, filters)
        self.decoder = AccordionDecoder(decoder1, encoder2, decoder2)
        self._finish()


register_model("conv_ae_v1", ConvAEv1)
register_model("conv_ae_v2", ConvAEv2)
register_model("accordion", Accordion)
