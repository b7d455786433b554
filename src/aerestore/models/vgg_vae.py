"""``vgg_vae``: a VAE with a VGG16-style encoder, optionally from pretrained VGG16 weights.

Source: the VGG16-encoder VAE of the block studies (Simonyan & Zisserman 2015,
configuration D): five blocks of 3x3 convs + ReLU with 64, 128, 256, 512 and 512 filters
(2, 2, 3, 3, 3 convs), max pooling between blocks; then flatten and the VAE head
(``z_mean``, ``z_log_var``). Loss as :mod:`aerestore.models.vae`.

Adapted to blocks:

* widths are ``round(c * width)`` (``width=1.0`` is VGG16's; a smaller width keeps it
  fast on a CPU);
* all 13 convs are kept, but a block is followed by a 2x2 max pool (floor) only while
  the map stays >= ``min_size`` px: 18 px pools three times (18 -> 9 -> 4 -> 2), 64 px
  five times;
* the input is normalised with ImageNet's mean and std, as VGG16 was trained (their
  channel means for a grey block);
* the decoder: dense + ReLU to the last map, then per block in reverse a nearest
  upsampling to the exact side where the encoder pooled and a 3x3 conv + batch norm +
  ReLU, then a 3x3 conv and a sigmoid.

Pretrained weights come from a LOCAL file (``weights='path/to/vgg16.pth'``), a
torchvision-format state dict (``features.N.weight`` / ``features.N.bias``, e.g.
``torchvision.models.vgg16(weights=...).state_dict()``); the i-th conv of the file (by
N) goes to the i-th conv here. Shapes must match (``width=1.0``), except that for one
input channel the first layer's RGB filters are summed. Nothing is downloaded. The file
is read once at construction; a saved model carries the weights in its state dict, so
``load_model`` does not need the file again.

``latent``: the length of mu. Options: ``width`` (1.0), ``weights`` (None),
``min_size`` (2).
"""

from __future__ import annotations

import re
from pathlib import Path

import torch
from torch import Tensor, nn

from aerestore.losses import LossConfig
from aerestore.models.base import GaussianHead, VAEEncoder, VariationalModel
from aerestore.models.layers import conv_bn_relu, positive
from aerestore.models.registry import register_model

VGG16_BLOCKS: tuple[tuple[int, ...], ...] = ((64, 64), (128, 128), (256, 256, 256), (512, 512, 512), (512, 512, 512))
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class Normalize(nn.Module):
    """``(x - mean) / std`` per channel, ImageNet's statistics (not saved in the state dict)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        if channels == 3:
            mean, std = torch.tensor(IMAGENET_MEAN), torch.tensor(IMAGENET_STD)
        else:
            mean = torch.full((channels,), sum(IMAGENET_MEAN) / 3)
            std = torch.full((channels,), sum(IMAGENET_STD) / 3)
        self.register_buffer("mean", mean.view(1, -1, 1, 1), persistent=False)
        self.register_buffer("std", std.view(1, -1, 1, 1), persistent=False)

    def forward(self, x: Tensor) -> Tensor:
        return (x - self.mean) / self.std


class VGGDecoder(nn.Module):
    def __init__(self, latent: int, channels: int, widths: list[int], pooled: list[bool], sides: list[int]) -> None:
        super().__init__()
        self.shape = (widths[-1], sides[-1], sides[-1])
        self.dense = nn.Sequential(nn.Linear(latent, widths[-1] * sides[-1] ** 2), nn.ReLU(inplace=True))
        layers: list[nn.Module] = []
        for i in reversed(range(len(widths))):
            if pooled[i]:
                layers.append(nn.Upsample(size=(sides[i], sides[i]), mode="nearest"))
            layers += conv_bn_relu(widths[i], widths[i - 1] if i > 0 else widths[0])
        layers += [nn.Conv2d(widths[0], channels, 3, 1, 1), nn.Sigmoid()]
        self.convs = nn.Sequential(*layers)

    def forward(self, z: Tensor) -> Tensor:
        return self.convs(self.dense(z).view(z.shape[0], *self.shape))


class VGGVAE(VariationalModel):
    rebuild_ignore = ("weights",)

    def __init__(
        self,
        latent: int = 64,
        block: int = 18,
        channels: int = 3,
        loss: LossConfig | None = None,
        *,
        width: float = 1.0,
        weights: str | None = None,
        min_size: int = 2,
    ) -> None:
        super().__init__(latent, block, channels, loss)
        width = positive("width", width)
        min_size = positive("min_size", min_size, integer=True)
        if weights is not None and not isinstance(weights, (str, Path)):
            raise ValueError(f"weights must be a file path, got {weights!r}")
        layers: list[nn.Module] = [Normalize(channels)]
        widths, pooled, sides = [], [], [block]  # sides[i]: side entering block i
        cin, side = channels, block
        for convs in VGG16_BLOCKS:
            cout = max(1, round(convs[0] * width))
            for _ in convs:
                layers += [nn.Conv2d(cin, cout, 3, 1, 1), nn.ReLU(inplace=True)]
                cin = cout
            widths.append(cout)
            pool = side // 2 >= min_size
            pooled.append(pool)
            if pool:
                layers.append(nn.MaxPool2d(2))
                side //= 2
            sides.append(side)
        features = nn.Sequential(*layers)
        body = nn.Sequential(features, nn.Flatten())
        self.encoder = VAEEncoder(body, GaussianHead(widths[-1] * side**2, latent))
        self.decoder = VGGDecoder(latent, channels, widths, pooled, sides)
        self._finish()
        if weights is not None:
            load_vgg16_features(features, Path(weights))

    @property
    def features(self) -> nn.Sequential:
        """The VGG16 part of the encoder (normalisation, convs, ReLUs, pools)."""
        return self.encoder.body[0]


def load_vgg16_features(features: nn.Sequential, path: Path) -> None:
    """Copy the convs of a torchvision VGG16 state dict at ``path`` into ``features``, in order."""
    if not path.is_file():
        raise FileNotFoundError(f"{path}: VGG16 weights file not found (vgg_vae option 'weights')")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise ValueError(f"{path}: cannot read VGG16 weights: {exc}") from exc
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise ValueError(f"{path}: expected a state dict, got {type(state).__name__}")
    indices = sorted(
        int(m.group(1))
        for k, v in state.items()
        if (m := re.fullmatch(r"features\.(\d+)\.weight", k)) and isinstance(v, torch.Tensor) and v.dim() == 4
    )
    convs = [m for m in features if isinstance(m, nn.Conv2d)]
    if len(indices) < len(convs):
        raise ValueError(
            f"{path}: has {len(indices)} conv weights 'features.N.weight', VGG16 needs {len(convs)}"
        )
    with torch.no_grad():
        for layer, (i, conv) in enumerate(zip(indices, convs, strict=False)):  # extra convs of the file unused
            w, b = state[f"features.{i}.weight"], state.get(f"features.{i}.bias")
            if layer == 0 and conv.weight.shape[1] == 1 and w.dim() == 4 and w.shape[1] == 3:
                w = w.sum(1, keepdim=True)  # grey input: x*r + x*g + x*b
            if w.shape != conv.weight.shape or (b is not None and b.shape != conv.bias.shape):
                raise ValueError(
                    f"{path}: features.{i}.weight has shape {tuple(w.shape)}, conv layer {layer} of "
                    f"vgg_vae needs {tuple(conv.weight.shape)} (pretrained weights need width=1.0)"
                )
            conv.weight.copy_(w)
            if b is not None:
                conv.bias.copy_(b)


register_model("vgg_vae", VGGVAE)
