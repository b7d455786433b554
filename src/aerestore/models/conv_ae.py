"""``conv_ae``: the CelebA block study's basic convolutional autoencoder.

Source: the CelebA block study, section 2.1, Figure 2 (encoder) and Figure 3 (decoder),
Keras summaries at 18 x 18 x 3 blocks with a latent of 60:

* encoder: five 3x3 convs with 16, 32, 48, 72 and 128 filters, the 2nd and 4th with
  stride 2 ("same" padding: 18 -> 18 -> 9 -> 9 -> 5 -> 5), ONE batch norm after the last
  conv, flatten (3200), dense 96, dense ``latent`` (60 in the study: the code);
* decoder: dense 1296, reshape to 3 x 3 x 144, six transposed 3x3 convs: 128 (stride 1,
  3 px), 72 (stride 2, 6 px), 48 (stride 1, 6 px), 32 (stride 3, 18 px), 16 (stride 1,
  18 px) and the image channels (stride 1). No batch norm in the decoder.

Parameters at 18 px, 3 channels, latent 60: encoder 446,580 (Figure 2 lists 446,836:
Keras counts the batch norm's 256 running statistics, torch keeps them as buffers),
decoder 378,155 (Figure 3), 824,735 in all. Our ``latent`` is the pipeline's
(``params.yaml`` ``latent``, 64 by default): the dense layers around the code follow it.

Not in the figures, assumed: the activations (Keras folds them into the layers): ReLU
after every conv and hidden dense layer, the batch norm after the last conv's ReLU, a
linear code, a sigmoid output (targets in [0, 1]). The study's L1 and L2 kernel
regularisers are ``train.loss.l1`` and ``train.loss.l2`` (applied by the base class, to every model).

Adapted: the decoder's sides are computed back from the block (``ceil(side / stride)``
per stage: 18 -> 3 x 3 x 144 exactly as the study; 16 -> 3, 6, 16; 32 -> 6, 11, 32) and
each transposed conv lands on its side exactly (padding and output padding from
:func:`~aerestore.models.base.transpose_to`); the encoder's convs pad by 1, which is
Keras' "same" for these sides.

``latent``: the length of the code (``encode`` gives ``(N, latent)``).
Options: ``filters``, ``strides`` (encoder, same length), ``dense`` (the hidden dense
layer), ``batch_norm`` (``'last'``, the study's single batch norm; ``'all'``, one after
every encoder conv, this project's earlier version), ``dec_filters`` (the reshaped map's
channels then each transposed conv's, before the one to the image), ``dec_strides`` (one
per pair of consecutive ``dec_filters``; the conv to the image has stride 1).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from torch import Tensor, nn

from aerestore.losses import LossConfig
from aerestore.models.base import RestorationModel
from aerestore.models.layers import choice, conv_out, int_tuple, positive, transpose_to
from aerestore.models.registry import register_model

STUDY_FILTERS = (16, 32, 48, 72, 128)
STUDY_STRIDES = (1, 2, 1, 2, 1)
STUDY_DENSE = 96
STUDY_DEC_FILTERS = (144, 128, 72, 48, 32, 16)
STUDY_DEC_STRIDES = (1, 2, 1, 3, 1)


def study_encoder_convs(
    channels: int, filters: Sequence[int], strides: Sequence[int], block: int, batch_norm: str
) -> tuple[nn.Sequential, int]:
    """3x3 convs (padding 1) + ReLU, batch norm after the last (``'last'``) or every one
    (``'all'``); returns ``(layers, side of the last map)``."""
    layers: list[nn.Module] = []
    side, cin = block, channels
    for i, (f, s) in enumerate(zip(filters, strides, strict=True)):
        layers += [nn.Conv2d(cin, f, 3, s, 1), nn.ReLU(inplace=True)]
        if batch_norm == "all" or i == len(filters) - 1:
            layers.append(nn.BatchNorm2d(f))
        side, cin = conv_out(side, 3, s, 1), f
    return nn.Sequential(*layers), side


class StudyDecoder(nn.Module):
    """The studies' dense + transposed-conv decoder: dense (+ ReLU when ``dense_relu``) to
    ``filters[0] x h x h``, a transposed 3x3 conv + ReLU (+ batch norm when ``bn``) from
    ``filters[i]`` to ``filters[i + 1]`` channels with stride ``strides[i]`` for each i,
    a stride-1 one to the image, sigmoid.

    ``h`` and the sides in between are computed back from ``block``: the side before a
    stride-s conv is ``ceil(side / s)``; each transposed conv lands on its side exactly
    (:func:`~aerestore.models.base.transpose_to`).
    """

    def __init__(
        self,
        latent: int,
        channels: int,
        block: int,
        filters: Sequence[int],
        strides: Sequence[int],
        bn: bool = False,
        dense_relu: bool = True,
    ) -> None:
        super().__init__()
        sides = [block]  # sides[i]: the side entering transposed conv i
        for s in reversed(strides):
            sides.insert(0, math.ceil(sides[0] / s))
        self.shape = (filters[0], sides[0], sides[0])
        dense: list[nn.Module] = [nn.Linear(latent, filters[0] * sides[0] ** 2)]
        self.dense = nn.Sequential(*dense, *([nn.ReLU(inplace=True)] if dense_relu else []))
        layers: list[nn.Module] = []
        for i, s in enumerate(strides):
            layers += [transpose_to(filters[i], filters[i + 1], sides[i], sides[i + 1], 3, s), nn.ReLU(inplace=True)]
            if bn:
                layers.append(nn.BatchNorm2d(filters[i + 1]))
        layers += [transpose_to(filters[-1], channels, block, block, 3, 1), nn.Sigmoid()]
        self.convs = nn.Sequential(*layers)

    def forward(self, z: Tensor) -> Tensor:
        return self.convs(self.dense(z).view(z.shape[0], *self.shape))


class ConvAE(RestorationModel):
    def __init__(
        self,
        latent: int = 64,
        block: int = 18,
        channels: int = 3,
        loss: LossConfig | None = None,
        *,
        filters: Sequence[int] = STUDY_FILTERS,
        strides: Sequence[int] = STUDY_STRIDES,
        dense: int = STUDY_DENSE,
        batch_norm: str = "last",
        dec_filters: Sequence[int] = STUDY_DEC_FILTERS,
        dec_strides: Sequence[int] = STUDY_DEC_STRIDES,
    ) -> None:
        super().__init__(latent, block, channels, loss)
        filters = int_tuple("filters", filters)
        strides = int_tuple("strides", strides, len(filters))
        dense = positive("dense", dense, integer=True)
        batch_norm = choice("batch_norm", batch_norm, ("last", "all"))
        dec_filters = int_tuple("dec_filters", dec_filters)
        if len(dec_filters) < 2:
            raise ValueError(f"dec_filters needs at least 2 entries, got {dec_filters!r}")
        dec_strides = int_tuple("dec_strides", dec_strides, len(dec_filters) - 1)
        convs, side = study_encoder_convs(channels, filters, strides, block, batch_norm)
        self.encoder = nn.Sequential(
            convs,
            nn.Flatten(),
            nn.Linear(filters[-1] * side**2, dense),
            nn.ReLU(inplace=True),
            nn.Linear(dense, latent),
        )
        self.decoder = StudyDecoder(latent, channels, block, dec_filters, dec_strides)
        self._finish()


register_model("conv_ae", ConvAE)
