"""``resnet_vae`` and ``resnet_ncut``: the CelebA block study's residual-encoder networks.

Source: the CelebA block study, section 3.2.3, Figure 5 (16 x 16 x 3 blocks): one
residual block — a path of conv 32 (3x3, stride 2, 8 px), batch norm, conv 32 (3x3,
stride 1), and a shortcut conv 32 (3x3, stride 2) from the input, added — then flatten
(2048), dense 16, ``z_mean`` / ``z_log_var`` of 2. Parameters at 16 px, latent 2: 43,956
(Figure 5 lists 44,020: Keras counts the batch norm's 64 running statistics, torch keeps
them as buffers).

* ``resnet_vae`` (the conclusion table's "VAE + ResNet"): Figure 5 and, as Figure 5 has no
  decoder and shares Figure 6's 16 px input, dense 16 and latent 2, the ``vae``'s decoder
  (the Keras VAE example's: dense to 64 maps, transposed convs 64 and 32 with stride 2, one
  to the image, sigmoid; 59,331 parameters at 16 px, latent 2). Loss as ``vae``.
* ``resnet_ncut`` (the conclusion table's "ResNet + N Cut Loss", not variational): "the
  encoder that presented in section 2.1 was replaced by a simple residual network", so the
  basic network with Figure 5's encoder: the residual block, flatten, dense 16, then a
  dense ``latent`` as the code (where Figure 5 has ``z_mean``), and ``conv_ae``'s decoder
  (Figure 3). The n-cut term is the loss's, not the network's: set
  ``train.loss.ncut_weight > 0`` (the row's "N Cut Loss") to reproduce the row.

Not in the figure, assumed: ReLU after the first conv (before the batch norm, as in
Figure 6) and after the dense 16; the second conv, the shortcut and the sum are linear
(Figure 5 has no activation layer after the add). Changed from the study, deliberately:
the pipeline's block (18 px by default: 18 -> 9, flatten 2592) and latent (64, not 2).
This replaces the project's earlier three-stage residual encoder / decoder, which was not
the study's.

``latent``: the length of mu (``resnet_vae``) or of the code (``resnet_ncut``).
Options: ``width`` (the block's filters, 32), ``dense`` (16), ``dec_filters`` (decoder
widths, as ``vae``'s / ``conv_ae``'s).
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor, nn

from aerestore.losses import LossConfig
from aerestore.models.base import GaussianHead, RestorationModel, VAEEncoder, VariationalModel
from aerestore.models.layers import conv_out, int_tuple, positive
from aerestore.models.conv_ae import STUDY_DEC_FILTERS, STUDY_DEC_STRIDES, StudyDecoder
from aerestore.models.registry import register_model
from aerestore.models.vae import FORMS


class ResidualBlock(nn.Module):
    """Figure 5's block: ``conv_b(bn(relu(conv_a(x)))) + shortcut(x)``, all 3x3, stride 2
    on ``conv_a`` and ``shortcut``."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.path = nn.Sequential(
            nn.Conv2d(cin, cout, 3, 2, 1), nn.ReLU(inplace=True), nn.BatchNorm2d(cout), nn.Conv2d(cout, cout, 3, 1, 1)
        )
        self.shortcut = nn.Conv2d(cin, cout, 3, 2, 1)

    def forward(self, x: Tensor) -> Tensor:
        return self.path(x) + self.shortcut(x)


def residual_body(channels: int, block: int, width: int, dense: int) -> nn.Sequential:
    """Residual block, flatten, dense ``dense`` + ReLU."""
    side = conv_out(block, 3, 2, 1)
    return nn.Sequential(
        ResidualBlock(channels, width), nn.Flatten(), nn.Linear(width * side**2, dense), nn.ReLU(inplace=True)
    )


class ResNetVAE(VariationalModel):
    def __init__(
        self,
        latent: int = 64,
        block: int = 18,
        channels: int = 3,
        loss: LossConfig | None = None,
        *,
        width: int = 32,
        dense: int = 16,
        dec_filters: Sequence[int] = FORMS["celeba"]["dec_filters"],
    ) -> None:
        super().__init__(latent, block, channels, loss)
        width = positive("width", width, integer=True)
        dense = positive("dense", dense, integer=True)
        dec_filters = int_tuple("dec_filters", dec_filters, len(FORMS["celeba"]["dec_filters"]))
        self.encoder = VAEEncoder(residual_body(channels, block, width, dense), GaussianHead(dense, latent))
        self.decoder = StudyDecoder(latent, channels, block, dec_filters, FORMS["celeba"]["dec_strides"])
        self._finish()


class ResNetAE(RestorationModel):
    def __init__(
        self,
        latent: int = 64,
        block: int = 18,
        channels: int = 3,
        loss: LossConfig | None = None,
        *,
        width: int = 32,
        dense: int = 16,
        dec_filters: Sequence[int] = STUDY_DEC_FILTERS,
    ) -> None:
        super().__init__(latent, block, channels, loss)
        width = positive("width", width, integer=True)
        dense = positive("dense", dense, integer=True)
        dec_filters = int_tuple("dec_filters", dec_filters, len(STUDY_DEC_FILTERS))
        self.encoder = nn.Sequential(residual_body(channels, block, width, dense), nn.Linear(dense, latent))
        self.decoder = StudyDecoder(latent, channels, block, dec_filters, STUDY_DEC_STRIDES)
        self._finish()


register_model("resnet_vae", ResNetVAE)
register_model("resnet_ncut", ResNetAE)
