"""A restoration-grade autoencoder: a residual U-Net that runs on whole images.

``unet_ae`` keeps the autoencoder interface the pipeline needs (an encoder whose code
the cluster stage clusters, a decoder the per-cluster stage copies) and borrows three
well-known restoration designs:

- **residual learning** (DnCNN, Zhang et al. 2017, "Beyond a Gaussian Denoiser"): the
  decoder predicts a *correction* that is added to its input, so a zero correction is the
  identity and the network only has to learn the damage;
- **skip connections** from each encoder level to the decoder level of the same
  resolution (U-Net, Ronneberger et al. 2015), added rather than concatenated, as NAFNet
  (Chen et al. 2022) does to keep the decoder cheap; and no normalisation layer at all
  (NAFNet and EDSR drop batch norm for restoration), so per-cluster decoder copies
  fine-tune without batch statistics;
- optional **downsampled sub-images** (FFDNet, Zhang et al. 2018): with ``unshuffle=2``
  the input is pixel-unshuffled into 4 sub-images stacked as channels, the network runs
  at a quarter of the resolution, and the correction is pixel-shuffled back.

It is fully convolutional (``track = "images"``, :mod:`aerestore.tracks`): any image size (reflect-padded to a
multiple of ``unshuffle * 2 ** levels``, cropped back), trained on random crops
(:mod:`aerestore.tracks.images.train`) and restored on whole images, so there is no block grid.

Interface: ``features(x)`` runs the encoder and returns :class:`UNetFeatures` (the code,
the skips and the input); ``decoder(features)`` gives the restored image, so
``copy.deepcopy(model.decoder)`` is a complete per-cluster decoder (it takes the skips
too). ``encode(x)`` is the code, the bottleneck map ``(N, latent, h, w)``;
``latent_vector(x)`` its spatial mean ``(N, latent)`` (block-wise clustering).
With ``damage_channels > 0`` (the default, 8) the code also holds a **damage embedding**:
the maps of a small conv tower of its own on the input (:class:`DamageTower`), appended
to the content code; the decoder reads both, the damage head only the embedding, so the
damage loss shapes the embedding and leaves the content code to the reconstruction
(clustering "on a damage embedding beside the content latent"). ``damage_channels=0``
puts the head on the content code itself (measured: at ``damage_weight`` 0.1 that cost
about 4 dB of restoration).
``damage_head`` is a 1x1 conv on the code predicting, per bottleneck location, the
damage class (``aerestore.damage.DAMAGE_CLASSES``: clean, then each damage kind);
it is trained with weight ``train.loss.damage_weight`` (``loss_config.damage_weight``) against the masks' damage classes area-pooled to the
bottleneck resolution, and can route the per-cluster decoders (``cluster.method:
damage_head``).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from aerestore.damage import DAMAGE_CLASSES
from aerestore.losses import LossConfig
from aerestore.models.base import ForwardOut, RestorationModel
from aerestore.models.layers import positive
from aerestore.models.registry import register_model


@dataclass
class UNetFeatures:
    """What the encoder gives the decoder: everything a decoder copy needs."""

    code: Tensor  # (N, latent, h, w): the bottleneck map (the latent)
    skips: list[Tensor]  # encoder features per level, finest first
    x: Tensor  # the (padded) input, for the residual output
    size: tuple[int, int]  # the input's (H, W) before padding


def _conv_block(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1), nn.ReLU(inplace=True),
                         nn.Conv2d(cout, cout, 3, padding=1), nn.ReLU(inplace=True))


def pad_to_multiple(x: Tensor, multiple: int) -> Tensor:
    """Reflect-pad the bottom and right of ``x`` to a multiple of ``multiple`` (replicate
    where the image is too small to reflect)."""
    h, w = x.shape[-2:]
    ph, pw = (-h) % multiple, (-w) % multiple
    if not ph and not pw:
        return x
    mode = "reflect" if ph < h and pw < w else "replicate"
    return F.pad(x, (0, pw, 0, ph), mode=mode)


def straight_through_clamp(y: Tensor) -> Tensor:
    """``y.clamp(0, 1)`` in value, identity in gradient (an output past 1 whose target is
    0.95 is still pulled back, which a plain clamp's zero gradient would not do)."""
    return y + (y.clamp(0.0, 1.0) - y).detach()


class DamageTower(nn.Module):
    """A small conv net on the input giving ``channels`` maps at the code's resolution: the
    damage embedding. Its own parameters, so the damage head's loss shapes this embedding
    and not the content code (a heavy damage weight on the shared code cost 4 dB of
    restoration: measured), while the decoder still reads it beside the code."""

    def __init__(self, cin: int, channels: int, levels: int, width: int = 16) -> None:
        super().__init__()
        layers: list[nn.Module] = [nn.Conv2d(cin, width, 3, padding=1), nn.ReLU(inplace=True)]
        for _ in range(levels):
            layers += [nn.Conv2d(width, width, 3, stride=2, padding=1), nn.ReLU(inplace=True)]
        layers += [nn.Conv2d(width, width, 3, padding=1), nn.ReLU(inplace=True), nn.Conv2d(width, channels, 1)]
        self.net = nn.Sequential(*layers)

    def forward(self, h: Tensor) -> Tensor:
        return self.net(h)


class UNetEncoder(nn.Module):
    def __init__(self, channels: int, latent: int, width: int, levels: int, unshuffle: int,
                 damage_channels: int = 0) -> None:
        super().__init__()
        self.unshuffle = unshuffle
        self.multiple = unshuffle * 2**levels
        cin = channels * unshuffle**2
        widths = [width * 2**i for i in range(levels + 1)]
        self.head = nn.Sequential(nn.Conv2d(cin, widths[0], 3, padding=1), nn.ReLU(inplace=True))
        self.levels = nn.ModuleList(_conv_block(widths[i], widths[i]) for i in range(levels))
        self.down = nn.ModuleList(nn.Conv2d(widths[i], widths[i + 1], 2, stride=2) for i in range(levels))
        self.bottleneck = nn.Sequential(_conv_block(widths[-1], widths[-1]),
                                        nn.Conv2d(widths[-1], latent, 1), nn.ReLU(inplace=True))
        self.damage = DamageTower(cin, damage_channels, levels) if damage_channels else None

    def forward(self, x: Tensor) -> UNetFeatures:
        size = (int(x.shape[-2]), int(x.shape[-1]))
        x = pad_to_multiple(x, self.multiple)
        inp = F.pixel_unshuffle(x, self.unshuffle) if self.unshuffle > 1 else x
        h = self.head(inp)
        skips = []
        for level, down in zip(self.levels, self.down):
            h = level(h)
            skips.append(h)
            h = down(h)
        code = self.bottleneck(h)
        if self.damage is not None:  # the damage embedding's channels follow the content's
            code = torch.cat([code, self.damage(inp)], dim=1)
        return UNetFeatures(code=code, skips=skips, x=x, size=size)


class UNetDecoder(nn.Module):
    """Features -> restored image: ``x + correction``, the correction from the code and
    the skips (added after each up-sampling), clamped to [0, 1] (straight-through)."""

    def __init__(self, channels: int, latent: int, width: int, levels: int, unshuffle: int) -> None:
        super().__init__()
        self.unshuffle = unshuffle
        widths = [width * 2**i for i in range(levels + 1)]
        self.entry = nn.Sequential(nn.Conv2d(latent, widths[-1], 3, padding=1), nn.ReLU(inplace=True))
        self.up = nn.ModuleList(nn.ConvTranspose2d(widths[i + 1], widths[i], 2, stride=2)
                                for i in reversed(range(levels)))
        self.levels = nn.ModuleList(_conv_block(widths[i], widths[i]) for i in reversed(range(levels)))
        self.tail = nn.Conv2d(widths[0], channels * unshuffle**2, 3, padding=1)

    def correction(self, f: UNetFeatures) -> Tensor:
        h = self.entry(f.code)
        for up, level, skip in zip(self.up, self.levels, reversed(f.skips)):
            h = level(up(h) + skip)
        r = self.tail(h)
        return F.pixel_shuffle(r, self.unshuffle) if self.unshuffle > 1 else r

    def forward(self, f: UNetFeatures) -> Tensor:
        y = f.x + self.correction(f)
        return straight_through_clamp(y[..., : f.size[0], : f.size[1]])


class UNetAE(RestorationModel):
    """Residual U-Net autoencoder (DnCNN residual, U-Net skips, FFDNet unshuffle); see the
    module docstring. ``latent`` = channels of the bottleneck code."""

    track = "images"

    def __init__(
        self,
        latent: int,
        block: int,
        channels: int,
        loss: LossConfig | None = None,
        *,
        width: int = 32,
        levels: int = 2,
        unshuffle: int = 1,
        damage_channels: int = 8,
    ) -> None:
        super().__init__(latent, block, channels, loss)
        if not isinstance(damage_channels, int) or isinstance(damage_channels, bool) or damage_channels < 0:
            raise ValueError(f"damage_channels must be an int >= 0, got {damage_channels!r}")
        positive("width", width, integer=True)
        if not isinstance(levels, int) or isinstance(levels, bool) or levels < 0:
            raise ValueError(f"levels must be an int >= 0, got {levels!r}")
        positive("unshuffle", unshuffle, integer=True)
        self.width, self.levels, self.unshuffle = width, levels, unshuffle
        self.damage_channels = damage_channels
        self.multiple = unshuffle * 2**levels  # the code is 1 / multiple of the image side
        code_channels = latent + damage_channels
        self.encoder = UNetEncoder(channels, latent, width, levels, unshuffle, damage_channels)
        self.decoder = UNetDecoder(channels, code_channels, width, levels, unshuffle)
        # on the damage embedding when there is one, else on the whole code
        self.damage_head = nn.Conv2d(damage_channels or latent, len(DAMAGE_CLASSES), 1)  # always built (tiny)
        self._finish()

    def _finish(self) -> None:
        was_training = self.training
        self.eval()
        with torch.no_grad():
            x = torch.zeros(2, self.channels, self.block, self.block)
            f = self.features(x)
            out = self.decoder(f)
        self.train(was_training)
        if out.shape != x.shape:
            raise RuntimeError(f"unet_ae: decoder gives {tuple(out.shape[1:])} for {tuple(x.shape[1:])}")
        self.latent_shape = tuple(f.code.shape[1:])
        self.latent_dim = int(f.code.shape[1])
        if self.loss_config.ncut_weight > 0:
            from aerestore.models.base import CLUSTER_HEAD_HIDDEN

            self.cluster_head = nn.Sequential(
                nn.Linear(self.latent_dim, CLUSTER_HEAD_HIDDEN), nn.ReLU(),
                nn.Linear(CLUSTER_HEAD_HIDDEN, self.loss_config.ncut_k), nn.Softmax(dim=1),
            )

    # ------------------------------------------------------------------ the interface
    def features(self, x: Tensor) -> UNetFeatures:
        return self.encoder(x)

    def encode(self, x: Tensor) -> Tensor:
        """The bottleneck map ``(N, latent, ceil(H / m), ceil(W / m))``, m = ``multiple``."""
        return self.encoder(x).code

    def decode(self, f: UNetFeatures) -> Tensor:  # type: ignore[override]
        """Features from :meth:`features` (not a bare code: the decoder needs the skips)."""
        return self.decoder(f)

    def latent_vector(self, x: Tensor) -> Tensor:
        """Spatial mean of the code, ``(N, latent)``: one vector per block."""
        return self.encode(x).mean((2, 3))

    def damage_logits(self, code: Tensor) -> Tensor:
        """``(N, len(DAMAGE_CLASSES), h, w)`` logits per bottleneck location, from the damage
        embedding (the code's last ``damage_channels`` channels) when there is one."""
        if self.damage_channels:
            code = code[:, -self.damage_channels :]
        return self.damage_head(code)

    def run(self, x: Tensor) -> ForwardOut:
        f = self.features(x)
        return ForwardOut(x_hat=self.decoder(f), z=f.code.mean((2, 3)), mu=None, logvar=None)

    def loss(self, batch) -> dict[str, Tensor]:  # type: ignore[override]
        """``(degraded, clean)`` or ``(degraded, clean, damage)``; ``damage`` is per pixel
        the probability of each damage class ``(N, len(DAMAGE_CLASSES), H, W)`` (one-hot
        from the masks), area-pooled here to the code's resolution. With
        ``loss_config.damage_weight > 0`` (``train.loss.damage_weight``) the term ``'damage'`` (cross entropy of the damage
        head against it) is added with that weight."""
        degraded, clean = batch[0], batch[1]
        damage = batch[2] if len(batch) > 2 else None
        f = self.features(degraded)
        out = ForwardOut(x_hat=self.decoder(f), z=f.code.mean((2, 3)))
        terms = self.assemble(out, clean)
        weight = getattr(self.loss_config, "damage_weight", 0.0)
        if damage is not None and weight > 0:
            target = pool_damage(damage, f.code.shape[-2:], self.multiple)
            # class-balanced: blurred pixels are few (16 % on the default task) and hard to
            # see; plain cross entropy let the head call them all clean (blur recall 1 %,
            # measured), weights 1 / (K * share in the batch), at most 10, find 73 %
            share = target.mean((0, 2, 3)).clamp_min(1e-3)
            balance = (1.0 / (share * len(share))).clamp(max=10.0).detach()
            terms["damage"] = F.cross_entropy(self.damage_logits(f.code), target, weight=balance)
            terms["loss"] = terms["loss"] + weight * terms["damage"]
        return terms


def pool_damage(damage: Tensor, size, multiple: int) -> Tensor:
    """Per-pixel class probabilities -> their shares over each code location's pixels
    (area pooling; the padded border repeats the edge as the input padding does)."""
    damage = pad_to_multiple(damage, multiple)
    pooled = F.avg_pool2d(damage, multiple) if multiple > 1 else damage
    return pooled[..., : size[0], : size[1]]


register_model("unet_ae", UNetAE)
