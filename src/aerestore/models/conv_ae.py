"""``conv_ae``: the CelebA block study's basic convolutional autoencoder.

Source: the CelebA block-restoration study (Keras). Encoder: five 3x3 conv layers with
16, 32, 48, 72 and 128 filters, the 2nd and 4th with stride 2, each followed by batch
norm and ReLU; flatten; dense 96 (ReLU); dense ``latent`` (linear: the code). Decoder:
dense to the last feature map, reshape, six transposed convs (the five mirrored, with
batch norm and ReLU, then one to the image channels), sigmoid. The study's L1 and L2
kernel regularisers are ``train.l1`` and ``train.l2`` (applied by the base class, to
every model).

Adapted: sizes follow the block instead of being fixed (the transposed convs' padding
and output padding are computed from the encoder's sides, so any block >= 4 px comes
back at exactly its size); the output is a sigmoid for [0, 1] targets.

``latent``: the length of the code (``encode`` gives ``(N, latent)``).
Options: ``filters``, ``strides`` (same length), ``dense``.
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import nn

from aerestore.losses import LossConfig
from aerestore.models.base import DenseConvDecoder, RestorationModel, conv_stack, int_tuple, positive
from aerestore.models.registry import register_model


class ConvAE(RestorationModel):
    def __init__(
        self,
        latent: int = 64,
        block: int = 18,
        channels: int = 3,
        loss: LossConfig | None = None,
        *,
        filters: Sequence[int] = (16, 32, 48, 72, 128),
        strides: Sequence[int] = (1, 2, 1, 2, 1),
        dense: int = 96,
    ) -> None:
        super().__init__(latent, block, channels, loss)
        filters = int_tuple("filters", filters)
        strides = int_tuple("strides", strides, len(filters))
        dense = positive("dense", dense, integer=True)
        convs, sides = conv_stack(channels, filters, strides, block)
        self.encoder = nn.Sequential(
            convs,
            nn.Flatten(),
            nn.Linear(filters[-1] * sides[-1] ** 2, dense),
            nn.ReLU(inplace=True),
            nn.Linear(dense, latent),
        )
        self.decoder = DenseConvDecoder(latent, channels, filters, strides, sides)
        self._finish()


register_model("conv_ae", ConvAE)
