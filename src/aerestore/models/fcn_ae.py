"""``fcn_ae``: the Animal Faces study's fully convolutional autoencoder (no dense layer).

Source: the bottleneck study (Animal Faces, 64 x 64 x 3), section 4 (Figure 8, whose
drawing the text lost): ``ccp_ae``'s "network 1" with the dense and reshaping layers
removed, the encoder's widths reduced to 32, 48, 64 (a code of 8 x 8 x 64 = 4096) and
the decoder's to 32, 16, 8, the last conv 1x1 instead of 3x3. So: three conv-conv-pool
blocks (two 3x3 convs, each + ReLU then batch norm, 2x2 max pooling; 64 -> 32 -> 16 ->
8), the code is the last pooled map; three stride-2 3x3 transposed convs, each + ReLU
then batch norm (8 -> 16 -> 32 -> 64), a 1x1 conv + sigmoid to the image. The study gives
no parameter count; from the layers, 134,403 at 64 px (``tests/test_study_networks.py``
has the sum). Taken from network 1 (the text says only "removing the dense and reshaping
layers"): the ReLU and batch norm after every layer.

``latent``: about how many numbers the code holds. The code is a ``c x h x h`` map (h the
encoder's last side) with ``c = max(1, round(latent / h**2))``; when ``c`` is the last
encoder width (the study: 64 px, latent 4096, c = 64) the code is the last pooled map
itself, the study's network; otherwise (adapted) a linear 1x1 conv to ``c`` channels ends
the encoder (block 18, latent 64: 18 -> 9 -> 5 -> 3, c = 7, a 7x3x3 code of 63 numbers).
``encode`` returns that map ``(N, c, h, h)``; ``latent_vector`` flattens it.

Adapted, as ``ccp_ae``, for sides that are not multiples of 8: the pools round up and
the transposed convs land on the encoder's exact sides. This project's earlier version
(changed to the study's): stride-2 convs instead of conv-conv-pool blocks, batch norm
before the ReLU, and always a 1x1 code conv.

Options: ``filters`` (the CCP blocks' widths), ``dec_filters`` (the decoder's; same length).
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import nn

from aerestore.losses import LossConfig
from aerestore.models.base import RestorationModel
from aerestore.models.layers import int_tuple
from aerestore.models.ccp_ae import ccp_decoder_convs, ccp_encoder_convs
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
        convs, sides = ccp_encoder_convs(channels, filters, block)
        code = bottleneck_channels(latent, sides[-1])
        self.encoder = convs if code == filters[-1] else nn.Sequential(*convs, nn.Conv2d(filters[-1], code, 1))
        self.decoder = ccp_decoder_convs(code, dec_filters, sides, "convt", channels, out_kernel=1)
        self._finish()


register_model("fcn_ae", FCNAE)
