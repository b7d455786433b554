"""The common base of every architecture (size helpers and shared layers: :mod:`aerestore.models.layers`).

Every model restores blocks: ``loss((degraded, clean))`` compares ``forward(degraded)``
with ``clean``. The training loop, the clustering of latent vectors, the per-cluster
decoders and the evaluation use only the methods of :class:`RestorationModel`.

A family subclasses :class:`RestorationModel` (or :class:`VariationalModel`), builds
``self.encoder`` and ``self.decoder`` in ``__init__`` and ends it with
``self._finish()``, which runs a dummy forward to check that the decoder gives back a
block of exactly ``block x block`` pixels and builds the n-cut cluster head.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from aerestore.damage import DAMAGE_CLASSES
from aerestore.models.layers import _plain
from aerestore.losses import (
    LossConfig,
    kl_divergence,
    pixel_kl,
    reconstruction,
    sharpness_loss,
    soft_cross_entropy,
    soft_ncut,
    weight_penalties,
)

CLUSTER_HEAD_HIDDEN = 64  # width of the cluster head's hidden ReLU layer
DAMAGE_HEAD_HIDDEN = 64  # width of the damage head's hidden ReLU layer


@dataclass
class ForwardOut:
    """What one training forward pass produced."""

    x_hat: Tensor  # (N, C, s, s) in [0, 1]
    z: Tensor  # the latent used for clustering / n-cut (the mean for VAEs), any shape (N, ...)
    mu: Tensor | None = None  # VAEs
    logvar: Tensor | None = None  # VAEs


class RestorationModel(nn.Module):
    """An autoencoder from degraded blocks to clean blocks.

    Attributes: ``name`` (registry name), ``latent`` (requested latent size), ``block``,
    ``channels``, ``encoder``, ``decoder`` (``decode(z) == decoder(z)``; a per-cluster
    decoder is ``copy.deepcopy(model.decoder)``), ``cluster_head`` (latent vector -> K
    probabilities when ``loss_config.ncut_weight > 0``, else None), ``epoch`` (set by the
    training loop before each epoch), ``latent_shape`` (shape of ``encode(x)[0]``) and
    ``latent_dim`` (length of :meth:`latent_vector`).
    """

    variational: ClassVar[bool] = False
    # the track the network trains, clusters and restores on (aerestore.tracks): "blocks"
    # (fixed-size blocks of data/blocks) or "images" (fully convolutional: crops, whole images)
    track: ClassVar[str] = "blocks"
    # overrides that load_model does not pass back when rebuilding (the state dict holds
    # what they produced, e.g. vgg_vae's pretrained-weights file).
    rebuild_ignore: ClassVar[tuple[str, ...]] = ()

    encoder: nn.Module
    decoder: nn.Module

    def __init__(self, latent: int, block: int, channels: int, loss: LossConfig | None = None) -> None:
        super().__init__()
        for key, value, low in (("latent", latent, 1), ("block", block, 4), ("channels", channels, 1)):
            if not isinstance(value, int) or isinstance(value, bool) or value < low:
                raise ValueError(f"{key} must be an int >= {low}, got {value!r}")
        if loss is not None and not isinstance(loss, LossConfig):
            raise TypeError(f"loss must be a LossConfig, got {type(loss).__name__}")
        self.name = type(self).__name__
        self.latent = latent
        self.block = block
        self.channels = channels
        self.loss_config = loss if loss is not None else LossConfig()
        self.overrides: dict[str, Any] = {}
        self.epoch = 0
        self.cluster_head: nn.Module | None = None
        self.damage_head: nn.Module | None = None
        self.latent_shape: tuple[int, ...] = ()
        self.latent_dim = 0

    # ------------------------------------------------------------------ construction
    def _finish(self) -> None:
        """Check the output size with a dummy forward; build the cluster head."""
        was_training = self.training
        self.eval()  # batch norm must not update its running statistics here
        with torch.no_grad():
            x = torch.zeros(2, self.channels, self.block, self.block)
            z = self.encode(x)
            out = self.decode(z)
        self.train(was_training)
        if out.shape != x.shape:
            raise RuntimeError(
                f"{type(self).__name__}: decoder gives {tuple(out.shape[1:])} for a "
                f"{tuple(x.shape[1:])} block (latent shape {tuple(z.shape[1:])})"
            )
        self.latent_shape = tuple(z.shape[1:])
        self.latent_dim = int(z[0].numel())
        if self.loss_config.ncut_weight > 0:
            self.cluster_head = nn.Sequential(
                nn.Flatten(),
                nn.Linear(self.latent_dim, CLUSTER_HEAD_HIDDEN),
                nn.ReLU(),
                nn.Linear(CLUSTER_HEAD_HIDDEN, self.loss_config.ncut_k),
                nn.Softmax(dim=1),
            )
        if self.loss_config.damage_weight > 0 and self.damage_head is None:
            # semi-supervised, as the CelebA study's cluster labels were "associated in a
            # semi-supervised manner": the latent vector predicts the block's damage
            self.damage_head = nn.Sequential(
                nn.Flatten(),
                nn.Linear(self.latent_dim, DAMAGE_HEAD_HIDDEN),
                nn.ReLU(),
                nn.Linear(DAMAGE_HEAD_HIDDEN, len(DAMAGE_CLASSES)),
            )

    # ------------------------------------------------------------------ the interface
    def encode(self, x: Tensor) -> Tensor:
        """``(N, C, s, s)`` in [0, 1] -> latent ``(N, D)`` or a feature map (VAEs: the mean)."""
        return self.encoder(x)

    def decode(self, z: Tensor) -> Tensor:
        """Latent -> ``(N, C, s, s)`` in [0, 1] (sigmoid output)."""
        return self.decoder(z)

    def forward(self, x: Tensor) -> Tensor:
        return self.run(x).x_hat

    def latent_vector(self, x: Tensor) -> Tensor:
        """``encode(x).flatten(1)``: ``(N, latent_dim)``, what the clustering uses."""
        return self.encode(x).flatten(1)

    def run(self, x: Tensor) -> ForwardOut:
        """One forward pass, keeping the latent (and the VAE's mean and log-variance)."""
        z = self.encode(x)
        return ForwardOut(x_hat=self.decode(z), z=z)

    def loss(self, batch: tuple[Tensor, ...]) -> dict[str, Tensor]:
        """Loss terms of a ``(degraded, clean)`` batch; ``'loss'`` is the total to minimise.

        A third element, each block's share of pixels of each damage class ``(N,
        len(DAMAGE_CLASSES))``, adds the damage head's term ``'damage'`` (soft cross
        entropy, weight ``damage_weight``) when the model has a damage head.

        Keys: ``'loss'``; ``'recon'`` (as it enters the loss, before its weight);
        ``'mse'`` (the pixel mean squared error, comparable across architectures, not
        part of the loss); ``'kl'`` (variational models); and ``'pixel_kl'``, ``'l1'``,
        ``'l2'``, ``'sharpness'``, ``'ncut'`` when their weights are > 0 (sharpness only from
        ``sharpness_start_epoch``). See :meth:`assemble`.
        """
        degraded, clean = batch[0], batch[1]
        out = self.run(degraded)
        terms = self.assemble(out, clean)
        if len(batch) > 2 and self.damage_head is not None:
            # per sample, scaled like the reconstruction (x C*s*s for VAEs, whose terms are
            # per-sample sums; otherwise the damage term would vanish beside them)
            n = float(clean[0].numel()) if self.variational else 1.0
            terms["damage"] = soft_cross_entropy(self.damage_head(out.z.flatten(1)), batch[2])
            terms["loss"] = terms["loss"] + self.loss_config.damage_weight * n * terms["damage"]
        return terms

    def assemble(self, out: ForwardOut, clean: Tensor) -> dict[str, Tensor]:
        """Sum the configured terms for a forward pass ``out`` against ``clean``.

        ``loss = w_r * n * recon + w_r * pixel_kl * n * pixel-KL + beta * kl + l1 * sum|w|
        + l2 * sum w^2 + sharpness_weight * n * sharpness + ncut_weight * ncut`` where, for variational
        models, ``w_r = alpha`` and ``n = C * s * s`` (per-sample sums, the scale of the
        KL term) and, for the others, ``w_r = 1`` and ``n = 1`` (means over pixels).
        ``recon``, ``sharpness`` and the pixel-KL (:func:`aerestore.losses.pixel_kl`) are
        the per-pixel means of :mod:`aerestore.losses`; the returned ``'recon'``,
        ``'pixel_kl'`` and ``'sharpness'`` include the factor ``n``.
        """
        cfg = self.loss_config
        n = float(clean[0].numel()) if self.variational else 1.0
        recon = n * reconstruction(out.x_hat, clean, cfg.recon)
        terms: dict[str, Tensor] = {"recon": recon}
        total = (cfg.alpha if self.variational else 1.0) * recon
        if cfg.pixel_kl > 0:  # the CelebA study's basic loss: MSE + pixel-wise KL, every network
            terms["pixel_kl"] = n * pixel_kl(out.x_hat, clean)
            total = total + (cfg.alpha if self.variational else 1.0) * cfg.pixel_kl * terms["pixel_kl"]
        if self.variational:
            assert out.mu is not None and out.logvar is not None
            terms["kl"] = kl_divergence(out.mu, out.logvar)
            if cfg.beta > 0:  # (0 * inf would be nan)
                total = total + cfg.beta * terms["kl"]
        if cfg.l1 > 0 or cfg.l2 > 0:
            l1, l2 = weight_penalties(self, exclude=self._unpenalised())
            if cfg.l1 > 0:
                terms["l1"] = l1
                total = total + cfg.l1 * l1
            if cfg.l2 > 0:
                terms["l2"] = l2
                total = total + cfg.l2 * l2
        if cfg.sharpness_weight > 0 and self.epoch >= cfg.sharpness_start_epoch:
            terms["sharpness"] = n * sharpness_loss(out.x_hat, clean, cfg.sharpness_variant)
            total = total + cfg.sharpness_weight * terms["sharpness"]
        if cfg.ncut_weight > 0:
            assert self.cluster_head is not None
            z = out.z.flatten(1)
            terms["ncut"] = soft_ncut(z, self.cluster_head(z), cfg.ncut_sigma)
            total = total + cfg.ncut_weight * terms["ncut"]
        with torch.no_grad():
            terms["mse"] = (out.x_hat - clean).pow(2).mean()
        terms["loss"] = total
        return terms

    def _unpenalised(self) -> tuple[nn.Module, ...]:
        """Submodules whose weights the l1 / l2 penalties skip (a discriminator)."""
        return ()

    def configure_optimizers(self, lr: float) -> list[torch.optim.Optimizer]:
        """One Adam over all parameters (the loop sets ``param_group['lr']`` each epoch)."""
        return [adam(self.parameters(), lr=lr)]

    def train_step(self, batch: tuple[Tensor, Tensor], optimizers: Sequence[torch.optim.Optimizer]) -> dict[str, float]:
        """One update: zero the gradients, back-propagate ``loss(batch)['loss']``, step."""
        for opt in optimizers:
            opt.zero_grad(set_to_none=True)
        terms = self.loss(batch)
        terms["loss"].backward()
        for opt in optimizers:
            opt.step()
        return {k: float(v.detach()) for k, v in terms.items()}

    def config(self) -> dict[str, Any]:
        """Everything :func:`aerestore.models.create_model` needs to rebuild the model (JSON-able)."""
        return {
            "name": self.name,
            "latent": self.latent,
            "block": self.block,
            "channels": self.channels,
            "overrides": _plain(self.overrides),
            "loss": self.loss_config.to_dict(),
        }

    def extra_repr(self) -> str:
        return f"name={self.name!r}, latent={self.latent}, block={self.block}, channels={self.channels}"


class VariationalModel(RestorationModel):
    """A VAE: ``encoder(x) -> (mu, logvar)``; ``encode`` gives the mean, training samples.

    ``z = mu + exp(logvar / 2) * eps``, ``eps ~ N(0, I)`` (the reparameterisation trick,
    Kingma & Welling 2014) in training mode; ``z = mu`` in eval mode.
    """

    variational = True

    def encode(self, x: Tensor) -> Tensor:
        return self.encoder(x)[0]

    def run(self, x: Tensor) -> ForwardOut:
        mu, logvar = self.encoder(x)
        z = reparameterise(mu, logvar) if self.training else mu
        return ForwardOut(x_hat=self.decode(z), z=mu, mu=mu, logvar=logvar)


def reparameterise(mu: Tensor, logvar: Tensor) -> Tensor:
    return mu + torch.exp(0.5 * logvar) * torch.randn_like(mu)


class GaussianHead(nn.Module):
    """Flattened features -> ``(mu, logvar)``: two dense layers (``z_mean``, ``z_log_var``).

    The log-variance is clamped to ``[-30, 20]`` so that ``exp(logvar)`` stays finite
    (with ``beta = 0`` nothing else stops it from drifting).
    """

    LOGVAR_RANGE = (-30.0, 20.0)

    def __init__(self, in_features: int, latent: int) -> None:
        super().__init__()
        self.z_mean = nn.Linear(in_features, latent)
        self.z_log_var = nn.Linear(in_features, latent)

    def forward(self, h: Tensor) -> tuple[Tensor, Tensor]:
        return self.z_mean(h), self.z_log_var(h).clamp(*self.LOGVAR_RANGE)


class VAEEncoder(nn.Module):
    """``body`` (conv layers, flatten, optional dense) then a :class:`GaussianHead`."""

    def __init__(self, body: nn.Module, head: GaussianHead) -> None:
        super().__init__()
        self.body = body
        self.head = head

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        return self.head(self.body(x))


def adam(params, lr: float, **kwargs) -> torch.optim.Optimizer:
    """Adam with the fused implementation (one kernel for all parameters) where torch has it."""
    params = list(params)
    try:
        return torch.optim.Adam(params, lr=lr, fused=True, **kwargs)
    except (RuntimeError, TypeError, ValueError):
        return torch.optim.Adam(params, lr=lr, **kwargs)
