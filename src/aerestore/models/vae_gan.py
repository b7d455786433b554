"""``vae_gan``: the sharpness study's VAE-GAN (Larsen et al. 2016, "Autoencoding beyond
pixels using a learned similarity metric").

Networks (Larsen et al., table 1, widths times ``width``):

* encoder: 5x5 stride-2 convs with 64, 128, 256 filters (batch norm, ReLU), flatten,
  dense 2048 (batch norm, ReLU), then ``z_mean`` and ``z_log_var`` (dense, ``latent``);
* decoder / generator: dense to 256 maps at the encoder's last side (batch norm, ReLU),
  5x5 stride-2 transposed convs with 256, 128, 32 filters (batch norm, ReLU) landing on
  the encoder's exact sides, a 5x5 conv to the image and a sigmoid (the paper: tanh);
* discriminator: 5x5 conv 32 (ReLU), 5x5 stride-2 convs 128, 256, 256 (batch norm,
  ReLU), dense 512 (batch norm, ReLU), dense 1 (a logit; ``Dis(x) = sigmoid(logit)``).
  ``Dis_l``, the features that measure reconstruction, is the output of its third conv
  layer (256 maps at a quarter of the side).

Losses, for a degraded block x, its clean block t, ``x_rec = Dec(z)``, ``z ~ Enc(x)``,
and ``x_p = Dec(z_p)``, ``z_p ~ N(0, I)``; ``n = C * s * s``:

* ``prior`` = KL(q(z | x) || N(0, I)), per sample summed (:func:`kl_divergence`);
* ``feature`` = ``n * mean_f (Dis_l(x_rec) - Dis_l(t))^2`` per sample, averaged (the
  Gaussian feature-wise likelihood of the paper, up to constants; scaled to the pixel
  term's per-sample-sum scale so that its weight does not depend on the discriminator's
  width);
* ``recon`` = ``n * mse(x_rec, t)`` (or rmse): ADDED to the paper, so that the network
  learns to restore pixels and not only features, and so that validation has a loss
  comparable across epochs;
* ``gan_dis`` = BCE(Dis(t), 1) + BCE(Dis(x_rec), 0) + BCE(Dis(x_p), 0) (= -L_GAN);
* ``gan_gen`` = BCE(Dis(x_rec), 1) + BCE(Dis(x_p), 1) (the non-saturating form of
  -(-L_GAN) for the generator, Goodfellow et al. 2014).

Three updates from one forward pass (Larsen et al., algorithm 1), gradients taken
separately for each parameter group, then each optimiser steps:

* encoder (+ cluster head): ``alpha * recon + beta * prior + feature`` (+ extras);
* decoder: ``alpha * recon + gamma * feature + gan_gen`` (+ extras);
* discriminator: ``gan_dis``.

"Extras" are the base class's l1 / l2 weight penalties (the discriminator excluded),
sharpness and n-cut terms. :meth:`VAEGAN.loss` returns ``'loss' = alpha * recon + beta *
prior`` (+ extras), comparable across epochs, and logs ``feature``, ``gan_gen`` and
``gan_dis`` computed without prior samples (so that validation is deterministic);
:meth:`VAEGAN.train_step` logs them with the prior samples.

``latent``: the length of mu. Options: ``width`` (1.0), ``gamma`` (1.0, the decoder's
weight of the feature term against the GAN term), ``dense`` (2048, before ``width``).
Adam optimisers with betas (0.5, 0.999) (Radford et al. 2016; the paper used RMSProp).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from aerestore.losses import LossConfig
from aerestore.models.base import adam, ForwardOut, GaussianHead, VAEEncoder, VariationalModel, reparameterise
from aerestore.models.layers import conv_stack, positive, transpose_to
from aerestore.models.registry import register_model

KERNEL = 5


def _scaled(widths: Sequence[int], width: float) -> list[int]:
    return [max(1, round(w * width)) for w in widths]


class Discriminator(nn.Module):
    """``x -> (logit, Dis_l(x))``."""

    def __init__(self, channels: int, block: int, width: float) -> None:
        super().__init__()
        c0, c1, c2, c3 = _scaled((32, 128, 256, 256), width)
        hidden = max(1, round(512 * width))
        self.head = nn.Sequential(nn.Conv2d(channels, c0, KERNEL, 1, KERNEL // 2), nn.ReLU(inplace=True))
        convs, sides = conv_stack(c0, (c1, c2, c3), (2, 2, 2), block, KERNEL)
        self.features = convs[:6]  # conv 128, conv 256 (each conv, BN, ReLU): up to Dis_l
        self.rest = nn.Sequential(
            convs[6:],
            nn.Flatten(),
            nn.Linear(c3 * sides[-1] ** 2, hidden, bias=False),
            nn.BatchNorm1d(hidden),
            nn.ReLU(inplace=True),
            nn.Linear(hidden, 1),
        )

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        feat = self.features(self.head(x))
        return self.rest(feat).squeeze(1), feat


class GANDecoder(nn.Module):
    def __init__(self, latent: int, channels: int, widths: list[int], sides: list[int]) -> None:
        super().__init__()
        top, side = widths[0], sides[-1]
        self.shape = (top, side, side)
        self.dense = nn.Sequential(
            nn.Linear(latent, top * side * side, bias=False),
            nn.BatchNorm1d(top * side * side),
            nn.ReLU(inplace=True),
        )
        layers: list[nn.Module] = []
        cin = top
        for j, cout in enumerate(widths):
            i = len(widths) - 1 - j  # encoder stage mirrored: sides[i + 1] -> sides[i]
            up = transpose_to(cin, cout, sides[i + 1], sides[i], KERNEL, 2)
            layers += [up, nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]
            cin = cout
        layers += [nn.Conv2d(cin, channels, KERNEL, 1, KERNEL // 2), nn.Sigmoid()]
        self.convs = nn.Sequential(*layers)

    def forward(self, z: Tensor) -> Tensor:
        return self.convs(self.dense(z).view(z.shape[0], *self.shape))


def _bce(logits: Tensor, target: float) -> Tensor:
    return F.binary_cross_entropy_with_logits(logits, torch.full_like(logits, target))


class VAEGAN(VariationalModel):
    def __init__(
        self,
        latent: int = 64,
        block: int = 18,
        channels: int = 3,
        loss: LossConfig | None = None,
        *,
        width: float = 1.0,
        gamma: float = 1.0,
        dense: int = 2048,
    ) -> None:
        super().__init__(latent, block, channels, loss)
        if self.loss_config.damage_weight > 0:
            raise ValueError(
                "vae_gan: train.loss.damage_weight must be 0 (its three-optimiser update of Larsen et al. "
                "has no damage term); set arch.vae_gan.train.loss.damage_weight: 0"
            )
        width = positive("width", width)
        self.gamma = float(positive("gamma", gamma))
        dense = max(1, round(positive("dense", dense, integer=True) * width))
        enc_widths = _scaled((64, 128, 256), width)
        convs, sides = conv_stack(channels, enc_widths, (2, 2, 2), block, KERNEL)
        body = nn.Sequential(
            convs,
            nn.Flatten(),
            nn.Linear(enc_widths[-1] * sides[-1] ** 2, dense, bias=False),
            nn.BatchNorm1d(dense),
            nn.ReLU(inplace=True),
        )
        self.encoder = VAEEncoder(body, GaussianHead(dense, latent))
        self.decoder = GANDecoder(latent, channels, _scaled((256, 128, 32), width), sides)
        self.discriminator = Discriminator(channels, block, width)
        self._finish()

    def _unpenalised(self) -> tuple[nn.Module, ...]:
        return (self.discriminator,)

    def _feature(self, feat_rec: Tensor, feat_real: Tensor, n: float) -> Tensor:
        return n * (feat_rec - feat_real.detach()).pow(2).flatten(1).mean(1).mean()

    def loss(self, batch: tuple[Tensor, ...]) -> dict[str, Tensor]:
        degraded, clean = batch[0], batch[1]  # a damage target, if any, is not used here
        out = self.run(degraded)
        terms = self.assemble(out, clean)
        with torch.no_grad():
            logit_real, feat_real = self.discriminator(clean)
            logit_rec, feat_rec = self.discriminator(out.x_hat)
            terms["feature"] = self._feature(feat_rec, feat_real, float(clean[0].numel()))
            terms["gan_dis"] = _bce(logit_real, 1.0) + _bce(logit_rec, 0.0)
            terms["gan_gen"] = _bce(logit_rec, 1.0)
        return terms

    def configure_optimizers(self, lr: float) -> list[torch.optim.Optimizer]:
        """Adam for (encoder + cluster head), decoder, discriminator, betas (0.5, 0.999)."""
        enc = list(self.encoder.parameters())
        if self.cluster_head is not None:
            enc += list(self.cluster_head.parameters())
        return [
            adam(enc, lr=lr, betas=(0.5, 0.999)),
            adam(self.decoder.parameters(), lr=lr, betas=(0.5, 0.999)),
            adam(self.discriminator.parameters(), lr=lr, betas=(0.5, 0.999)),
        ]

    def train_step(self, batch: tuple[Tensor, Tensor], optimizers: Sequence[torch.optim.Optimizer]) -> dict[str, float]:
        """The three updates of Larsen et al.'s algorithm 1 (see the module docstring)."""
        if len(optimizers) != 3:
            raise ValueError(f"vae_gan needs 3 optimizers (encoder, decoder, discriminator), got {len(optimizers)}")
        degraded, clean = batch[0], batch[1]
        mu, logvar = self.encoder(degraded)
        x_rec = self.decode(reparameterise(mu, logvar))
        x_p = self.decode(torch.randn_like(mu))
        terms = self.assemble(ForwardOut(x_hat=x_rec, z=mu, mu=mu, logvar=logvar), clean)
        logit_real, feat_real = self.discriminator(clean)
        logit_rec, feat_rec = self.discriminator(x_rec)
        logit_p, _ = self.discriminator(x_p)
        terms["feature"] = self._feature(feat_rec, feat_real, float(clean[0].numel()))
        terms["gan_gen"] = _bce(logit_rec, 1.0) + _bce(logit_p, 1.0)
        terms["gan_dis"] = _bce(logit_real, 1.0) + _bce(logit_rec, 0.0) + _bce(logit_p, 0.0)
        objectives = (
            terms["loss"] + terms["feature"],  # encoder
            terms["loss"] + self.gamma * terms["feature"] + terms["gan_gen"],  # decoder
            terms["gan_dis"],  # discriminator
        )
        grads = []
        for i, (objective, opt) in enumerate(zip(objectives, optimizers, strict=True)):
            params = [p for group in opt.param_groups for p in group["params"]]
            grads.append(torch.autograd.grad(objective, params, retain_graph=i < 2, allow_unused=True))
        for opt, grad in zip(optimizers, grads, strict=True):  # simultaneous update: all gradients first
            params = [p for group in opt.param_groups for p in group["params"]]
            for p, g in zip(params, grad, strict=True):
                p.grad = g
            opt.step()
        return {k: float(v.detach()) for k, v in terms.items()}


register_model("vae_gan", VAEGAN)
