"""``ccp_ae`` (and presets ``ccp_ae_upsample``, ``ccp_ae_convt2``): the Animal Faces study's AE.

Source: the bottleneck study (Animal Faces, 64 x 64 x 3), section 2.1, the Keras code
of the encoder, the bottleneck and "decoder type" 1, 2 and 3; Table 1 gives the
trainable parameters at a bottleneck of 4096 (section 3.1):

* encoder: three conv-conv-pool (CCP) blocks of 32, 64 and 128 filters: per block two
  3x3 convs ("same"), each + ReLU then batch norm, then 2x2 max pooling (64 -> 32 -> 16
  -> 8); flatten (8 x 8 x 128 = 8192), dense ``latent`` (linear), batch norm: the code;
* decoder: dense 4096 (linear) + batch norm, reshape to 8 x 8 x 64, then per stage (each
  layer + ReLU then batch norm), widths halving towards the output, and a 3x3 conv +
  sigmoid to the image:

  - ``decoder='convt'`` (type 1, "network 1"): a stride-2 3x3 transposed conv, widths
    64, 32, 16;
  - ``decoder='upsample'`` (type 2): a stride-1 3x3 transposed conv, then 2x nearest
    upsampling, widths 64, 32, 16;
  - ``decoder='convt2'`` (type 3): a stride-2 then a stride-1 3x3 transposed conv, both
    of the same width, 32, 16, 8 ("halved to balance the number of trainable parameters").

Parameters at 64 px, latent 4096: 50,704,803 (types 1 and 2) and 50,680,971 (type 3),
Table 1's figures (Keras' trainable count: torch keeps the batch norms' running
statistics as buffers, as Keras keeps them out of it). The study's final model is type 1
at latent 1000 (section 3.1.2).

Adapted for blocks whose side is not a multiple of 8: the pools round up (``ceil_mode``;
Keras' floor would drop the last row and column: 18 -> 9 -> 5 -> 3 here, not 9 -> 4 -> 2),
the decoder's dense layer gives ``64 x h x h`` (h the encoder's last side: 3 at 18 px,
576 units) and every upsampling lands on the exact side of the matching encoder stage
(transposed-conv padding from :func:`~aerestore.models.base.transpose_to`, or
``Upsample(size=...)``). At 64 px (and 16, 32) the sides are the study's. A stride-2
transposed conv is torch's padding 1 + output padding 1, which doubles the side as
Keras' "same" does (its 3x3 footprint sits one pixel earlier than TensorFlow's: the
same widths and counts). This project's earlier version (changed to the study's):
batch norm before the ReLU, convs without bias, no batch norm on the code or after the
decoder's dense layer, a ReLU after that dense layer, and decoder stages as wide as the
mirrored encoder stages (128 -> 64 -> 32 -> 32).

``latent``: the length of the code, the dense bottleneck after its batch norm (the
study's "bottleneck size", swept in section 3.1.1; ``encode`` gives ``(N, latent)``).
Options: ``decoder``; ``filters`` (the CCP blocks' widths); ``dec_filters`` (one width per
decoder stage, as many as ``filters``; ``None``: the study's rule, half the mirrored
encoder width, a quarter for ``convt2``). The reshaped map has ``filters[-1] // 2``
channels (64).
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor, nn

from aerestore.losses import LossConfig
from aerestore.models.base import RestorationModel
from aerestore.models.layers import choice, int_tuple, transpose_to
from aerestore.models.conv_ae import study_encoder_convs
from aerestore.models.registry import register_model

DECODERS = ("convt", "upsample", "convt2")
STUDY_FILTERS = (32, 64, 128)
# each decoder stage's width is the mirrored encoder stage's divided by this (section 2.1)
WIDTH_DIVISOR = {"convt": 2, "upsample": 2, "convt2": 4}


def ccp_encoder_convs(channels: int, filters: Sequence[int], block: int) -> tuple[nn.Sequential, list[int]]:
    """Conv-conv-pool blocks: per width, two 3x3 convs (padding 1) each + ReLU + batch
    norm, then 2x2 max pooling rounding up. Returns ``(layers, sides)``: ``sides[0]`` is
    the block side, ``sides[i + 1]`` the side after block i."""
    layers: list[nn.Module] = []
    sides, cin = [block], channels
    for f in filters:
        convs, _ = study_encoder_convs(cin, (f, f), (1, 1), sides[-1], "all")
        layers += [*convs, nn.MaxPool2d(2, ceil_mode=True)]
        sides.append(-(-sides[-1] // 2))
        cin = f
    return nn.Sequential(*layers), sides


def ccp_decoder_convs(
    cin: int, widths: Sequence[int], sides: Sequence[int], kind: str, channels: int, out_kernel: int = 3
) -> nn.Sequential:
    """The study's decoder after its reshape: ``cin`` maps at ``sides[-1]`` px back up
    through ``sides[-2], ..., sides[0]`` (one stage per width, of type ``kind``, each
    layer + ReLU + batch norm), then a conv of ``out_kernel`` to ``channels`` + sigmoid."""
    layers: list[nn.Module] = []
    for j, w in enumerate(widths):
        small, big = sides[len(widths) - j], sides[len(widths) - j - 1]
        if kind == "upsample":
            layers += [transpose_to(cin, w, small, small, 3, 1), nn.ReLU(inplace=True), nn.BatchNorm2d(w),
                       nn.Upsample(size=(big, big), mode="nearest")]
        else:
            layers += [transpose_to(cin, w, small, big, 3, 2), nn.ReLU(inplace=True), nn.BatchNorm2d(w)]
            if kind == "convt2":
                layers += [transpose_to(w, w, big, big, 3, 1), nn.ReLU(inplace=True), nn.BatchNorm2d(w)]
        cin = w
    layers += [nn.Conv2d(cin, channels, out_kernel, 1, out_kernel // 2), nn.Sigmoid()]
    return nn.Sequential(*layers)


class CCPDecoder(nn.Module):
    """Code -> block: dense (linear) + batch norm to ``maps x h x h``, then
    :func:`ccp_decoder_convs`."""

    def __init__(
        self, latent: int, channels: int, maps: int, widths: Sequence[int], sides: Sequence[int], kind: str
    ) -> None:
        super().__init__()
        self.shape = (maps, sides[-1], sides[-1])
        units = maps * sides[-1] ** 2
        self.dense = nn.Sequential(nn.Linear(latent, units), nn.BatchNorm1d(units))
        self.convs = ccp_decoder_convs(maps, widths, sides, kind, channels)

    def forward(self, z: Tensor) -> Tensor:
        return self.convs(self.dense(z).view(z.shape[0], *self.shape))


class CCPAE(RestorationModel):
    def __init__(
        self,
        latent: int = 64,
        block: int = 18,
        channels: int = 3,
        loss: LossConfig | None = None,
        *,
        decoder: str = "convt",
        filters: Sequence[int] = STUDY_FILTERS,
        dec_filters: Sequence[int] | None = None,
    ) -> None:
        super().__init__(latent, block, channels, loss)
        kind = choice("decoder", decoder, DECODERS)
        filters = int_tuple("filters", filters)
        if dec_filters is None:
            dec_filters = tuple(max(1, f // WIDTH_DIVISOR[kind]) for f in reversed(filters))
        dec_filters = int_tuple("dec_filters", dec_filters, len(filters))
        convs, sides = ccp_encoder_convs(channels, filters, block)
        self.encoder = nn.Sequential(
            convs, nn.Flatten(), nn.Linear(filters[-1] * sides[-1] ** 2, latent), nn.BatchNorm1d(latent)
        )
        self.decoder = CCPDecoder(latent, channels, max(1, filters[-1] // 2), dec_filters, sides, kind)
        self._finish()


register_model("ccp_ae", CCPAE)
register_model("ccp_ae_upsample", CCPAE, decoder="upsample")
register_model("ccp_ae_convt2", CCPAE, decoder="convt2")
