"""``conv_ae_v1``, ``conv_ae_v2`` and ``accordion``: the blur study's autoencoders.

Source: the blur study's three Keras summaries ("Version 1", "Version 2", "Accordion V1"),
at 128 x 128 x 3 images. None has a dense layer: the code is the encoder's last map.

* ``conv_ae_v1`` ("Version 1"): conv 64 (3x3, stride 2, 64 px), 2x2 max pool (32 px),
  conv 32 (3x3, stride 2, 16 px), 2x2 max pool (8 px: the code, 32 x 8 x 8); transposed
  conv 32 (stride 2, 16 px), 2x upsampling (32 px), transposed conv 64 (stride 2, 64 px),
  2x upsampling (128 px), conv to the image. No batch norm. 49,731 parameters
  (1,792 + 18,464 + 9,248 + 18,496 + 1,731), as the summary.
* ``conv_ae_v2`` ("Version 2"): convs 128, 128, 256 (3x3, stride 2: 64, 32, 16 px), one
  batch norm after the last (the code, 256 x 16 x 16); transposed convs 128, 64 and the
  image channels (3x3, stride 2: 32, 64, 128 px). 817,411 parameters (3,584 + 147,584 +
  295,168 + 512 + 295,040 + 73,792 + 1,731: the summary's trainable count; its 512
  non-trainable are the batch norm's running statistics, buffers in torch).
* ``accordion`` ("Accordion V1"): two ``conv_ae_v2`` end to end (the summary's 1,634,822
  trainable parameters): encode, decode, encode, decode (the first stage's output is a
  restored block, in [0, 1], that the second stage restores again; only the final output
  is compared with the clean block). For clustering, ``encode`` is the FIRST encoder (its
  code is the one computed from the degraded input, where the degradation shows), and
  ``decoder`` is :class:`AccordionDecoder` = first decoder -> second encoder -> second
  decoder, so ``decode(encode(x)) == forward(x)`` and a per-cluster decoder copies all three.

Not in the summaries, assumed: ReLU after every conv and transposed conv but the last,
which has a sigmoid (targets in [0, 1]); ``conv_ae_v2``'s batch norm after its conv's ReLU.
Changed from the study, deliberately: the pipeline's block (18 px by default): the convs
pad by 1 and the pools round up (``ceil_mode``), so sides are ``ceil(side / 2)``
(``conv_ae_v1``: 18 -> 9 -> 5 -> 3 -> 2, a 32 x 2 x 2 code; ``conv_ae_v2``: 18 -> 9 -> 5 ->
3, a 256 x 3 x 3 code), and every transposed conv and upsampling lands on the exact side
of the matching encoder stage.

``latent``: not used by default (the code is the study's last map, whatever ``latent``).
With ``code=True`` (this project's earlier versions) ``latent`` sets the code:
``conv_ae_v1`` ends its encoder with a linear 1x1 conv of ``c = max(1, round(latent /
h**2))`` channels (as ``fcn_ae``); ``conv_ae_v2`` / ``accordion`` flatten to a dense
``latent`` and start the decoder with a dense layer + ReLU back to the map.

Options: ``filters`` (encoder), ``dec_filters`` (``conv_ae_v2`` / ``accordion``: the
transposed convs before the one to the image; ``conv_ae_v1``'s decoder mirrors
``filters``), ``code``.
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor, nn

from aerestore.losses import LossConfig
from aerestore.models.base import RestorationModel
from aerestore.models.layers import choice, conv_out, int_tuple, transpose_to
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
        filters: Sequence[int] = (64, 32),
        code: bool = False,
    ) -> None:
        super().__init__(latent, block, channels, loss)
        filters = int_tuple("filters", filters)
        code = choice("code", code, (False, True))
        enc: list[nn.Module] = []
        sides = [block]  # conv (stride 2), pool, conv, pool, ...: every side halves (ceil)
        cin = channels
        for f in filters:
            enc += [nn.Conv2d(cin, f, 3, 2, 1), nn.ReLU(inplace=True), nn.MaxPool2d(2, ceil_mode=True)]
            sides += [conv_out(sides[-1], 3, 2, 1), -(-conv_out(sides[-1], 3, 2, 1) // 2)]
            cin = f
        if code:
            enc.append(nn.Conv2d(cin, bottleneck_channels(latent, sides[-1]), 1))
            cin = bottleneck_channels(latent, sides[-1])
        self.encoder = nn.Sequential(*enc)
        dec: list[nn.Module] = []
        for j, f in enumerate(reversed(filters)):
            i = len(sides) - 1 - 2 * j  # sides[i]: this stage's input side
            dec += [
                transpose_to(cin, f, sides[i], sides[i - 1], 3, 2),
                nn.ReLU(inplace=True),
                nn.Upsample(size=(sides[i - 2], sides[i - 2]), mode="nearest"),
            ]
            cin = f
        dec += [nn.Conv2d(cin, channels, 3, 1, 1), nn.Sigmoid()]
        self.decoder = nn.Sequential(*dec)
        self._finish()


class V2Decoder(nn.Module):
    """(dense + ReLU + reshape when the code is dense,) transposed 3x3 stride-2 convs
    mirroring the encoder, ReLU between them, sigmoid at the end."""

    def __init__(
        self, latent: int, channels: int, filters: tuple[int, ...], dec_filters: tuple[int, ...], sides: list[int], code: bool
    ) -> None:
        super().__init__()
        top, side = filters[-1], sides[-1]
        self.shape = (top, side, side)
        self.dense = nn.Sequential(nn.Linear(latent, top * side * side), nn.ReLU(inplace=True)) if code else None
        layers: list[nn.Module] = []
        outs = [*dec_filters, channels]
        cin = top
        for j, cout in enumerate(outs):
            i = len(sides) - 1 - j
            layers.append(transpose_to(cin, cout, sides[i], sides[i - 1], 3, 2))
            layers.append(nn.ReLU(inplace=True) if j < len(outs) - 1 else nn.Sigmoid())
            cin = cout
        self.convs = nn.Sequential(*layers)

    def forward(self, z: Tensor) -> Tensor:
        if self.dense is not None:
            z = self.dense(z).view(z.shape[0], *self.shape)
        return self.convs(z)


def _v2_pair(
    latent: int, block: int, channels: int, filters: tuple[int, ...], dec_filters: tuple[int, ...], code: bool = False
) -> tuple[nn.Module, nn.Module]:
    """The encoder and decoder of one ``conv_ae_v2``."""
    layers: list[nn.Module] = []
    sides, cin = [block], channels
    for f in filters:
        layers += [nn.Conv2d(cin, f, 3, 2, 1), nn.ReLU(inplace=True)]
        sides.append(conv_out(sides[-1], 3, 2, 1))
        cin = f
    layers.append(nn.BatchNorm2d(filters[-1]))
    if code:
        layers += [nn.Flatten(), nn.Linear(filters[-1] * sides[-1] ** 2, latent)]
    return nn.Sequential(*layers), V2Decoder(latent, channels, filters, dec_filters, sides, code)


class ConvAEv2(RestorationModel):
    def __init__(
        self,
        latent: int = 64,
        block: int = 18,
        channels: int = 3,
        loss: LossConfig | None = None,
        *,
        filters: Sequence[int] = (128, 128, 256),
        dec_filters: Sequence[int] = (128, 64),
        code: bool = False,
    ) -> None:
        super().__init__(latent, block, channels, loss)
        code = choice("code", code, (False, True))
        filters = int_tuple("filters", filters)
        dec_filters = int_tuple("dec_filters", dec_filters, len(filters) - 1)
        self.encoder, self.decoder = _v2_pair(latent, block, channels, filters, dec_filters, code)
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
        filters: Sequence[int] = (128, 128, 256),
        dec_filters: Sequence[int] = (128, 64),
        code: bool = False,
    ) -> None:
        super().__init__(latent, block, channels, loss)
        filters = int_tuple("filters", filters)
        dec_filters = int_tuple("dec_filters", dec_filters, len(filters) - 1)
        code = choice("code", code, (False, True))
        self.encoder, decoder1 = _v2_pair(latent, block, channels, filters, dec_filters, code)
        encoder2, decoder2 = _v2_pair(latent, block, channels, filters, dec_filters, code)
        self.decoder = AccordionDecoder(decoder1, encoder2, decoder2)
        self._finish()


register_model("conv_ae_v1", ConvAEv1)
register_model("conv_ae_v2", ConvAEv2)
register_model("accordion", Accordion)
