"""``ccp_ae`` (and presets ``ccp_ae_upsample``, ``ccp_ae_convt2``): the Animal Faces study's AE.

Source: the Animal Faces study's convolutional autoencoder. Encoder: three
conv-conv-pool blocks (3x3 conv + batch norm + ReLU, twice, then 2x2 max pooling) with
32, 64 and 128 filters; flatten; a dense bottleneck of ``latent`` units. Decoder: dense +
ReLU back to the last map, then one of the study's three decoder types, each stage with
batch norm and ReLU, and a 3x3 conv + sigmoid to the image:

* ``decoder='convt'``: a stride-2 3x3 transposed conv per stage;
* ``decoder='upsample'``: a stride-1 3x3 transposed conv, then nearest upsampling;
* ``decoder='convt2'``: a stride-2 3x3 transposed conv, then a stride-1 one.

Stage widths mirror the encoder (128 -> 64 -> 32 -> 32).

Adapted: the pools round up (``ceil_mode``) so that any block >= 1 px survives three of
them (18 -> 9 -> 5 -> 3); every upsampling lands on the exact side of the matching
encoder stage (transposed-conv padding computed, or ``Upsample(size=...)``).

``latent``: the length of the dense bottleneck. Options: ``decoder``, ``filters``.
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor, nn

from aerestore.losses import LossConfig
from aerestore.models.base import RestorationModel, choice, conv_bn_relu, int_tuple, transpose_to
from aerestore.models.registry import register_model

DECODERS = ("convt", "upsample", "convt2")


class CCPDecoder(nn.Module):
    def __init__(self, latent: int, channels: int, filters: Sequence[int], sides: Sequence[int], kind: str) -> None:
        super().__init__()
        self.shape = (filters[-1], sides[-1], sides[-1])
        self.dense = nn.Sequential(nn.Linear(latent, filters[-1] * sides[-1] ** 2), nn.ReLU(inplace=True))
        layers: list[nn.Module] = []
        for i in reversed(range(len(filters))):
            cin, cout = filters[i], filters[i - 1] if i > 0 else filters[0]
            small, big = sides[i + 1], sides[i]
            if kind == "convt":
                layers += [transpose_to(cin, cout, small, big, 3, 2), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]
            elif kind == "upsample":
                layers += [
                    nn.ConvTranspose2d(cin, cout, 3, 1, 1),
                    nn.BatchNorm2d(cout),
                    nn.ReLU(inplace=True),
                    nn.Upsample(size=(big, big), mode="nearest"),
                ]
            else:  # convt2
                layers += [
                    transpose_to(cin, cout, small, big, 3, 2),
                    nn.BatchNorm2d(cout),
                    nn.ReLU(inplace=True),
                    nn.ConvTranspose2d(cout, cout, 3, 1, 1),
                    nn.BatchNorm2d(cout),
                    nn.ReLU(inplace=True),
                ]
        layers += [nn.Conv2d(filters[0], channels, 3, 1, 1), nn.Sigmoid()]
        self.convs = nn.Sequential(*layers)

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
        filters: Sequence[int] = (32, 64, 128),
    ) -> None:
        super().__init__(latent, block, channels, loss)
        kind = choice("decoder", decoder, DECODERS)
        filters = int_tuple("filters", filters)
        layers: list[nn.Module] = []
        sides = [block]
        cin = channels
        for f in filters:
            layers += [*conv_bn_relu(cin, f), *conv_bn_relu(f, f), nn.MaxPool2d(2, ceil_mode=True)]
            sides.append(-(-sides[-1] // 2))
            cin = f
        self.encoder = nn.Sequential(
            *layers, nn.Flatten(), nn.Linear(filters[-1] * sides[-1] ** 2, latent)
        )
        self.decoder = CCPDecoder(latent, channels, filters, sides, kind)
        self._finish()


register_model("ccp_ae", CCPAE)
register_model("ccp_ae_upsample", CCPAE, decoder="upsample")
register_model("ccp_ae_convt2", CCPAE, decoder="convt2")
