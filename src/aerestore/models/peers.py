"""Deep peers of ``unet_ae``: what a restoration practitioner would train instead.

Three published restorers, written from their papers (DeepInverse has them, but its
``__init__`` imports torchvision, which does not import beside this torch build). Each
class's defaults are the paper's full configuration (:data:`FULL`: the parameter counts of
tests/test_peers.py); each registered name is a small one sized for two CPU cores
(:data:`SMALL`, what ``benchmarks/bench_peers.py`` trains):

- ``dncnn``: DnCNN, Zhang, Zuo, Chen, Meng & Zhang, "Beyond a Gaussian Denoiser: Residual
  Learning of Deep CNN for Image Denoising", IEEE TIP 2017;
- ``drunet``: DRUNet, Zhang, Li, Zuo, Zhang, Van Gool & Timofte, "Plug-and-Play Image
  Restoration with Deep Denoiser Prior", IEEE TPAMI 2021;
- ``nafnet``: NAFNet, Chen, Chu, Zhang & Sun, "Simple Baselines for Image Restoration",
  ECCV 2022.

They meet the contract of the crop trainer (:func:`aerestore.tracks.images.train.fit_crops`) with
the least code: ``track = "images"`` (any image size; the input is reflect-padded to the
network's multiple and cropped back), ``run`` gives ``x_hat`` in [0, 1] (a straight-through
clamp: the value is clamped, the gradient is the paper's unclamped one), and the loss is
the base class's :meth:`~aerestore.models.base.RestorationModel.assemble` (the configured
reconstruction loss, the same as unet_ae's), with one Adam (the base's
``configure_optimizers``). The peers have **no damage head** and no bottleneck: a
damage-class batch is accepted and its classes ignored; their "code" (``encode``) is the
restored image and ``latent_vector`` its mean colour, only so that the registry's generic
checks hold: clustering on it means nothing, and the benchmark restores with the one
network (the shared-decoder row of unet_ae, not its per-cluster decoders).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from aerestore.losses import LossConfig
from aerestore.models.base import CLUSTER_HEAD_HIDDEN, ForwardOut, RestorationModel
from aerestore.models.layers import int_tuple, positive
from aerestore.models.registry import register_model
from aerestore.models.unet_ae import pad_to_multiple, straight_through_clamp


class PeerRestorer(RestorationModel):
    """A fully convolutional image-to-image restorer without a code: ``self.net`` maps a
    (padded) image to its restoration; subclasses build it and set ``multiple``."""

    track = "images"
    multiple = 1

    net: nn.Module

    def _finish(self) -> None:
        was_training = self.training
        self.eval()
        x = torch.zeros(2, self.channels, self.block, self.block)
        with torch.no_grad():
            out = self(x)
        self.train(was_training)
        if out.shape != x.shape:
            raise RuntimeError(f"{type(self).__name__}: gives {tuple(out.shape[1:])} for {tuple(x.shape[1:])}")
        self.latent_shape = tuple(out.shape[1:])
        self.latent_dim = self.channels
        if self.loss_config.ncut_weight > 0:  # the registry's contract; meaningless on a mean colour
            self.cluster_head = nn.Sequential(
                nn.Linear(self.latent_dim, CLUSTER_HEAD_HIDDEN), nn.ReLU(),
                nn.Linear(CLUSTER_HEAD_HIDDEN, self.loss_config.ncut_k), nn.Softmax(dim=1))

    def run(self, x: Tensor) -> ForwardOut:
        h, w = x.shape[-2:]
        y = self.net(pad_to_multiple(x, self.multiple))[..., :h, :w]
        x_hat = straight_through_clamp(y)
        return ForwardOut(x_hat=x_hat, z=x_hat.mean((2, 3)))

    def encode(self, x: Tensor) -> Tensor:
        """No bottleneck: the "code" is the restored image (see the module docstring)."""
        return self.run(x).x_hat

    def decode(self, z: Tensor) -> Tensor:  # type: ignore[override]
        return z

    def latent_vector(self, x: Tensor) -> Tensor:
        return self.encode(x).mean((2, 3))


# ----------------------------------------------------------------------------- DnCNN
class _DnCNNNet(nn.Module):
    def __init__(self, channels: int, width: int, depth: int) -> None:
        super().__init__()
        layers: list[nn.Module] = [nn.Conv2d(channels, width, 3, padding=1), nn.ReLU(inplace=True)]
        for _ in range(depth - 2):
            layers += [nn.Conv2d(width, width, 3, padding=1, bias=False), nn.BatchNorm2d(width),
                       nn.ReLU(inplace=True)]
        layers.append(nn.Conv2d(width, channels, 3, padding=1, bias=False))
        self.body = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        return x - self.body(x)  # residual learning: the body predicts the damage v, x - v


class DnCNN(PeerRestorer):
    """DnCNN (Zhang et al., TIP 2017): ``depth`` 3x3 conv layers of ``width`` channels:
    Conv+ReLU, ``depth - 2`` x (Conv+BN+ReLU), Conv; residual learning (the network
    predicts the residual v and returns ``y - v``). The paper: depth 17 (DnCNN-S, one
    noise level) or 20 (DnCNN-B / CDnCNN-B / DnCNN-3, blind), width 64.

    Deliberate changes from the paper: batch norm at PyTorch's defaults (momentum 0.1,
    eps 1e-5; the paper's MatConvNet code and KAIR use eps 1e-4); PyTorch's default
    initialisation, not the paper's orthogonal one; the bias layout is KAIR's (the first
    conv has a bias, the BN'd convs and the last do not); trained with our loss (mean
    squared error of the image, i.e. of the residual up to the clamp) on our crops and
    schedule, not the paper's SGD with 40x40 patches; the output is clamped to [0, 1]
    (straight-through)."""

    def __init__(self, latent: int, block: int, channels: int, loss: LossConfig | None = None, *,
                 width: int = 64, depth: int = 17) -> None:
        super().__init__(latent, block, channels, loss)
        positive("width", width, integer=True)
        if not isinstance(depth, int) or isinstance(depth, bool) or depth < 3:
            raise ValueError(f"depth must be an int >= 3, got {depth!r}")
        self.net = _DnCNNNet(channels, width, depth)
        self._finish()


# ----------------------------------------------------------------------------- DRUNet
class _ResBlock(nn.Module):
    """KAIR's ``ResBlock`` mode 'CRC' without bias: ``x + conv(relu(conv(x)))``."""

    def __init__(self, c: int) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(c, c, 3, padding=1, bias=False), nn.ReLU(inplace=True),
                                  nn.Conv2d(c, c, 3, padding=1, bias=False))

    def forward(self, x: Tensor) -> Tensor:
        return x + self.body(x)


class _DRUNetNet(nn.Module):
    def __init__(self, cin: int, cout: int, widths: tuple[int, ...], blocks: int, noise_level: float | None) -> None:
        super().__init__()
        self.noise_level = noise_level
        self.head = nn.Conv2d(cin, widths[0], 3, padding=1, bias=False)
        self.down = nn.ModuleList(
            nn.Sequential(*[_ResBlock(widths[i]) for _ in range(blocks)],
                          nn.Conv2d(widths[i], widths[i + 1], 2, stride=2, bias=False))
            for i in range(len(widths) - 1))
        self.body = nn.Sequential(*[_ResBlock(widths[-1]) for _ in range(blocks)])
        self.up = nn.ModuleList(
            nn.Sequential(nn.ConvTranspose2d(widths[i + 1], widths[i], 2, stride=2, bias=False),
                          *[_ResBlock(widths[i]) for _ in range(blocks)])
            for i in reversed(range(len(widths) - 1)))
        self.tail = nn.Conv2d(widths[0], cout, 3, padding=1, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        if self.noise_level is not None:  # the paper's noise-level map: a constant here
            x = torch_cat_level(x, self.noise_level)
        h = self.head(x)
        skips = [h]
        for down in self.down:
            h = down(h)
            skips.append(h)
        h = self.body(h)
        for up, skip in zip(self.up, reversed(skips[1:])):
            h = up(h + skip)
        return self.tail(h + skips[0])


def torch_cat_level(x: Tensor, level: float) -> Tensor:
    return torch.cat([x, x.new_full((x.shape[0], 1, *x.shape[2:]), float(level))], dim=1)


class DRUNet(PeerRestorer):
    """DRUNet (Zhang et al., TPAMI 2021): a U-Net of ``len(widths)`` scales, each with
    ``blocks`` residual blocks (conv-ReLU-conv, no bias, no normalisation), 2x2 stride-2
    convs down, 2x2 stride-2 transposed convs up, skips *added* (as in the paper's
    Fig. 1 and KAIR's ``UNetRes``); the paper: widths (64, 128, 256, 512), 4 blocks,
    input = image + a noise-level map (one channel, sigma everywhere), output = the
    image (no global residual).

    The noise-level map. DRUNet is a non-blind denoiser: the map carries the known noise
    sigma. Our damage is blind and varies across the image (0.01-0.03 camera noise
    everywhere, 0.1-0.2 in unknown regions, blur elsewhere), and no restorer here is given
    the masks, so a true map would hand DRUNet an oracle the others lack. With
    ``noise_level=None`` (the default, the small configuration the benchmark trains) the
    channel is dropped: DRUNet restores blind from the image alone (the paper's own
    blind use is to set the map to an estimated level; a constant map is only a
    learned bias of the first conv, which has none). ``noise_level=<float>`` keeps the
    channel, filled with that constant (the full configuration, whose parameter count
    includes it).

    Other deliberate changes: the input is reflect-padded to a multiple of
    ``2 ** (len(widths) - 1)`` (KAIR replicate-pads); PyTorch's default initialisation;
    our loss (MSE; the paper trains with L1), crops, schedule and Adam lr (the paper:
    1e-4 halved every 100k iterations); the output is clamped to [0, 1]
    (straight-through)."""

    def __init__(self, latent: int, block: int, channels: int, loss: LossConfig | None = None, *,
                 widths: tuple[int, ...] = (64, 128, 256, 512), blocks: int = 4,
                 noise_level: float | None = None) -> None:
        super().__init__(latent, block, channels, loss)
        widths = int_tuple("widths", widths)
        if not isinstance(blocks, int) or isinstance(blocks, bool) or blocks < 1:
            raise ValueError(f"blocks must be an int >= 1, got {blocks!r}")
        if noise_level is not None and (isinstance(noise_level, bool) or not isinstance(noise_level, (int, float))):
            raise ValueError(f"noise_level must be a number or None, got {noise_level!r}")
        self.multiple = 2 ** (len(widths) - 1)
        cin = channels + (noise_level is not None)
        self.net = _DRUNetNet(cin, channels, widths, blocks, noise_level)
        self._finish()


# ----------------------------------------------------------------------------- NAFNet
class LayerNorm2d(nn.LayerNorm):
    """NAFNet's ``LayerNorm2d``: layer norm over the channels of each pixel (eps 1e-6),
    with a weight and a bias per channel; ``nn.LayerNorm`` on the channels-last view."""

    def __init__(self, c: int) -> None:
        super().__init__(c, eps=1e-6)

    def forward(self, x: Tensor) -> Tensor:
        return super().forward(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)


class SimpleGate(nn.Module):
    """NAFNet's gate: split the channels in two halves and multiply them."""

    def forward(self, x: Tensor) -> Tensor:
        a, b = x.chunk(2, dim=1)
        return a * b


class NAFBlock(nn.Module):
    """NAFNet's block (paper Fig. 3c / megvii ``NAFBlock``, DW_Expand = FFN_Expand = 2):
    LN, 1x1 conv to 2c, 3x3 depthwise conv, SimpleGate, simplified channel attention
    (global average pool, 1x1 conv, multiply), 1x1 conv, ``+ beta * .``; then LN, 1x1 conv
    to 2c, SimpleGate, 1x1 conv, ``+ gamma * .`` (beta, gamma zero-initialised)."""

    def __init__(self, c: int) -> None:
        super().__init__()
        self.norm1, self.norm2 = LayerNorm2d(c), LayerNorm2d(c)
        self.conv1 = nn.Conv2d(c, 2 * c, 1)
        self.conv2 = nn.Conv2d(2 * c, 2 * c, 3, padding=1, groups=2 * c)
        self.sg = SimpleGate()
        self.sca = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Conv2d(c, c, 1))
        self.conv3 = nn.Conv2d(c, c, 1)
        self.conv4 = nn.Conv2d(c, 2 * c, 1)
        self.conv5 = nn.Conv2d(c, c, 1)
        self.beta = nn.Parameter(torch.zeros(1, c, 1, 1))
        self.gamma = nn.Parameter(torch.zeros(1, c, 1, 1))

    def forward(self, inp: Tensor) -> Tensor:
        x = self.sg(self.conv2(self.conv1(self.norm1(inp))))
        x = self.conv3(x * self.sca(x))
        y = inp + x * self.beta
        x = self.conv5(self.sg(self.conv4(self.norm2(y))))
        return y + x * self.gamma


class _NAFNetNet(nn.Module):
    def __init__(self, channels: int, width: int, enc: tuple[int, ...], middle: int, dec: tuple[int, ...]) -> None:
        super().__init__()
        self.intro = nn.Conv2d(channels, width, 3, padding=1)
        self.ending = nn.Conv2d(width, channels, 3, padding=1)
        self.encoders, self.downs, self.ups, self.decoders = (nn.ModuleList() for _ in range(4))
        c = width
        for n in enc:
            self.encoders.append(nn.Sequential(*[NAFBlock(c) for _ in range(n)]))
            self.downs.append(nn.Conv2d(c, 2 * c, 2, stride=2))
            c *= 2
        self.middle = nn.Sequential(*[NAFBlock(c) for _ in range(middle)])
        for n in dec:
            self.ups.append(nn.Sequential(nn.Conv2d(c, 2 * c, 1, bias=False), nn.PixelShuffle(2)))
            c //= 2
            self.decoders.append(nn.Sequential(*[NAFBlock(c) for _ in range(n)]))

    def forward(self, inp: Tensor) -> Tensor:
        x = self.intro(inp)
        skips = []
        for encoder, down in zip(self.encoders, self.downs):
            x = encoder(x)
            skips.append(x)
            x = down(x)
        x = self.middle(x)
        for decoder, up, skip in zip(self.decoders, self.ups, reversed(skips)):
            x = decoder(up(x) + skip)
        return self.ending(x) + inp  # global residual


class NAFNet(PeerRestorer):
    """NAFNet (Chen et al., ECCV 2022): a U-Net of NAFBlocks (no nonlinear activation:
    SimpleGate and simplified channel attention, LayerNorm), 2x2 stride-2 convs down,
    1x1 conv + pixel shuffle up, skips added, a global residual. The paper's SIDD
    (denoising) model, NAFNet-SIDD-width32 in the authors' options: width 32,
    enc_blks [2, 2, 4, 8], middle 12, dec [2, 2, 2, 2]; its GoPro (deblurring) model:
    enc [1, 1, 1, 28], middle 1, dec [1, 1, 1, 1].

    Deliberate changes: the input is reflect-padded to a multiple of ``2 ** len(enc)``
    (the authors zero-pad); ``nn.LayerNorm`` on a channels-last view instead of their
    custom autograd LayerNorm (the same function); no dropout (their rate is 0 for
    these models); PyTorch's default initialisation; our loss (MSE; the paper's PSNR
    loss is its log), crops, schedule and plain Adam (the paper: AdamW, betas (0.9, 0.9),
    lr 1e-3, no weight decay); no test-time local converter (TLC); the output is clamped
    to [0, 1] (straight-through)."""

    def __init__(self, latent: int, block: int, channels: int, loss: LossConfig | None = None, *,
                 width: int = 32, enc: tuple[int, ...] = (2, 2, 4, 8), middle: int = 12,
                 dec: tuple[int, ...] = (2, 2, 2, 2)) -> None:
        super().__init__(latent, block, channels, loss)
        positive("width", width, integer=True)
        enc, dec = tuple(enc), tuple(dec)
        if any(not isinstance(n, int) or isinstance(n, bool) or n < 0 for n in (*enc, *dec, middle)):
            raise ValueError(f"enc, middle and dec must hold ints >= 0, got {enc}, {middle}, {dec}")
        if len(enc) != len(dec):
            raise ValueError(f"enc and dec must have as many scales, got {len(enc)} and {len(dec)}")
        self.multiple = 2 ** len(enc)
        self.net = _NAFNetNet(channels, width, enc, middle, dec)
        self._finish()


# ----------------------------------------------------------------------------- registry
# The registered names are the small configurations, sized for two CPU cores (FLOPs per
# pixel near unet_ae's: docs/peers.md); the classes' defaults are the papers' full ones
# (DnCNN: 17 layers, width 64; DRUNet: widths 64-512, 4 blocks; NAFNet: SIDD width 32),
# reached by overriding the preset: FULL[name].
SMALL = {
    "dncnn": {"width": 16, "depth": 17},
    "drunet": {"widths": (16, 32, 64, 128), "blocks": 1},
    "nafnet": {"width": 16, "enc": (1, 1, 1, 1), "middle": 1, "dec": (1, 1, 1, 1)},
}
register_model("dncnn", DnCNN, **SMALL["dncnn"])
register_model("drunet", DRUNet, **SMALL["drunet"])
register_model("nafnet", NAFNet, **SMALL["nafnet"])
PEERS = tuple(SMALL)
FULL = {
    "dncnn": {"width": 64, "depth": 20},  # DnCNN-B / CDnCNN-B (DnCNN-S: depth 17)
    "drunet": {"widths": (64, 128, 256, 512), "blocks": 4, "noise_level": 0.0},
    "nafnet": {"width": 32, "enc": (2, 2, 4, 8), "middle": 12, "dec": (2, 2, 2, 2)},
}
