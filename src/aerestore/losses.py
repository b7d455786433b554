"""Loss functions of the autoencoders, and :class:`LossConfig`, the ``train.*`` loss params.

Conventions (all functions take float tensors ``(N, C, H, W)`` in [0, 1] unless stated):

* Pixel losses (:func:`mse`, :func:`rmse`, :func:`charbonnier`, :func:`psnr_loss`) are
  computed **per sample** and averaged over the batch. A plain autoencoder minimises them as they are (a mean over pixels); a VAE
  multiplies them by the number of values in a block, ``n = C * H * W`` (see
  :func:`aerestore.models.base.RestorationModel.loss`), so that its reconstruction term is
  a per-sample *sum*, on the same scale as the KL divergence, which is a per-sample sum over
  latent dimensions (the ELBO as written by pythae, and by the Keras VAE example the
  CelebA study followed: ``reconstruction_loss *= original_dim``).
* :func:`kl_divergence` is a per-sample sum over latent dimensions, mean over the batch.
* :func:`sharpness_loss` and :func:`soft_ncut` are means (see each docstring).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor

ReconKind = Literal["mse", "rmse", "charbonnier", "psnr"]
SharpnessVariant = Literal["mean_max", "max", "mean_sq"]
RECON_KINDS: tuple[str, ...] = ("mse", "rmse", "charbonnier", "psnr")
SHARPNESS_VARIANTS: tuple[str, ...] = ("mean_max", "max", "mean_sq")

# Added under the square root of the RMSE: d sqrt(u)/du is infinite at u = 0, which a
# perfect reconstruction (e.g. a constant block) reaches.
RMSE_EPS = 1e-12
# Charbonnier's epsilon (LapSRN, Lai et al. 2017, and MPRNet use 1e-3): below an error of
# about eps the loss is quadratic, above it linear (an L1 with a smooth minimum).
CHARBONNIER_EPS = 1e-3
# Added to each image's MSE inside the log of :func:`psnr_loss` (NAFNet's PSNRLoss: 1e-8).
PSNR_LOSS_EPS = 1e-8


# --------------------------------------------------------------------------- divergence
class LossDiverged(ValueError):
    """A training loop met a NaN or infinite loss: the run stops at once (no model is written)."""


def check_finite(terms: dict[str, float], where: str, hint: str = "") -> None:
    """Raise :class:`LossDiverged` if a term of ``terms`` (plain floats: the loops already
    read them, so the check costs no device sync) is NaN or infinite. The message names
    ``where`` (the loop, epoch or step) and the terms that diverged, the weighted parts
    (``recon``, ``kl``, ``sharpness``...) before their sum ``loss``; ``hint`` says what to
    change (the learning rate)."""
    bad = [k for k, v in terms.items() if not math.isfinite(v)]
    if not bad:
        return
    bad.sort(key=lambda k: k == "loss")  # the culprit first, the total it spoils last
    named = ", ".join(f"{k} = {terms[k]}" for k in bad)
    raise LossDiverged(f"training diverged at {where}: loss term {bad[0]!r} is {terms[bad[0]]} ({named})"
                       + (f"; {hint}" if hint else ""))


# --------------------------------------------------------------------------- config
@dataclass(frozen=True)
class LossConfig:
    """The loss terms a model minimises; the ``train.*`` keys of ``params.yaml``.

    ``loss = w_r * recon + beta * kl + l1 * sum|w| + l2 * sum w^2
    + sharpness_weight * sharpness + ncut_weight * ncut + damage_weight * damage
    + w_r * pixel_kl * pixel-KL``, where ``w_r = alpha`` for
    variational models and 1 otherwise; terms whose weight is 0 are not computed.
    """

    recon: ReconKind = "mse"  # reconstruction loss: 'mse', 'rmse', 'charbonnier' or 'psnr'
    alpha: float = 1.0  # reconstruction weight (variational models)
    beta: float = 1.0  # KL weight (variational models)
    l1: float = 0.0  # weight of sum |w| over conv / linear weights
    l2: float = 0.0  # weight of sum w^2 over conv / linear weights
    sharpness_weight: float = 0.0  # 0 = off
    sharpness_variant: SharpnessVariant = "max"
    sharpness_start_epoch: int = 0  # the sharpness term is on from this epoch (0-based)
    ncut_weight: float = 0.0  # 0 = off, and no cluster head is built
    ncut_k: int = 2  # clusters of the cluster head
    ncut_sigma: float = 1.0  # w(u, v) = exp(-|z_u - z_v|^2 / (sigma^2 * D))
    # weight of the damage head's cross entropy (semi-supervised: the head predicts each
    # block's damage from its latent, so the latent carries the damage); 0 = no head
    damage_weight: float = 0.0
    # weight of the CelebA study's pixel-wise KL term t * log(t / y) (:func:`pixel_kl`),
    # added to the reconstruction of every network in its "basic loss"; 0 = off
    pixel_kl: float = 0.0

    def __post_init__(self) -> None:
        if self.recon not in RECON_KINDS:
            raise ValueError(f"loss.recon must be one of {RECON_KINDS}, got {self.recon!r}")
        if self.sharpness_variant not in SHARPNESS_VARIANTS:
            raise ValueError(
                f"loss.sharpness_variant must be one of {SHARPNESS_VARIANTS}, "
                f"got {self.sharpness_variant!r}"
            )
        for key in ("alpha", "beta", "l1", "l2", "sharpness_weight", "ncut_weight", "damage_weight", "pixel_kl"):
            value = getattr(self, key)
            if not isinstance(value, (int, float)) or isinstance(value, bool) or value < 0:
                raise ValueError(f"loss.{key} must be a number >= 0, got {value!r}")
        if not isinstance(self.sharpness_start_epoch, int) or self.sharpness_start_epoch < 0:
            raise ValueError(
                f"loss.sharpness_start_epoch must be an int >= 0, got {self.sharpness_start_epoch!r}"
            )
        if not isinstance(self.ncut_k, int) or self.ncut_k < 2:
            raise ValueError(f"loss.ncut_k must be an int >= 2, got {self.ncut_k!r}")
        if not isinstance(self.ncut_sigma, (int, float)) or self.ncut_sigma <= 0:
            raise ValueError(f"loss.ncut_sigma must be > 0, got {self.ncut_sigma!r}")

    @classmethod
    def from_train(cls, train: Any) -> LossConfig:
        """The ``loss`` section of an :class:`aerestore.params.TrainParams` (every field:
        :class:`aerestore.params.LossParams` has exactly these)."""
        return cls(**{f.name: getattr(train.loss, f.name) for f in dataclasses.fields(cls)})

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> LossConfig:
        """Inverse of :meth:`to_dict`; an unknown key raises ``ValueError`` naming it."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"loss: unknown key(s) {unknown}; known: {sorted(known)}")
        return cls(**data)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


# ----------------------------------------------------------------------- pixel losses
def mse(output: Tensor, target: Tensor) -> Tensor:
    """Mean squared error: ``mean_i mean_p (y_ip - t_ip)^2`` (p runs over C*H*W)."""
    _same_shape(output, target)
    return (output - target).pow(2).mean()


def rmse(output: Tensor, target: Tensor) -> Tensor:
    """Per-sample root mean squared error, averaged over the batch.

    ``mean_i sqrt(mean_p (y_ip - t_ip)^2 + eps)``, ``eps = 1e-12`` (keeps the gradient
    finite at a perfect reconstruction). As the CelebA block study's Keras loss
    ``K.sqrt(K.mean(K.square(y_pred - y_true)))`` but taken per block, so that a batch's
    value does not depend on which blocks share the batch.
    """
    _same_shape(output, target)
    per_sample = (output - target).pow(2).flatten(1).mean(1)
    return (per_sample + RMSE_EPS).sqrt().mean()


def charbonnier(output: Tensor, target: Tensor, eps: float = CHARBONNIER_EPS) -> Tensor:
    """Charbonnier loss, a smooth L1: ``mean_i mean_p sqrt((y_ip - t_ip)^2 + eps^2) - eps``.

    Every pixel pulls with a gradient of magnitude ~1 whatever the size of its error, so a
    few strongly damaged pixels do not drown the small errors of the lightly damaged ones
    (the squared error's gradient grows with the error). EDSR (Lim et al. 2017) found L1
    better than L2 for PSNR; LapSRN (Lai et al. 2017) and MPRNet (Zamir et al. 2021) train
    with this smooth form, ``eps = 1e-3``. ``- eps`` makes a perfect output score 0.
    """
    _same_shape(output, target)
    return ((output - target).pow(2) + eps * eps).sqrt().mean() - eps


def psnr_loss(output: Tensor, target: Tensor, eps: float = PSNR_LOSS_EPS) -> Tensor:
    """Minus the per-image PSNR (data range 1), averaged over the batch: NAFNet's PSNRLoss
    (Chen et al. 2022), ``mean_i 10 log10(mean_p (y_ip - t_ip)^2 + eps)``.

    The log gives each image the same say whatever its error: a batch-mean MSE lets the
    worst images (heavy noise) set the gradient; this one weights image i by ``1 / MSE_i``.
    Negative for any error below 1 (e.g. -30 at 30 dB).
    """
    _same_shape(output, target)
    per_sample = (output - target).pow(2).flatten(1).mean(1)
    return (10.0 / math.log(10.0)) * (per_sample + eps).log().mean()


def reconstruction(output: Tensor, target: Tensor, kind: str) -> Tensor:
    """:func:`mse`, :func:`rmse`, :func:`charbonnier` or :func:`psnr_loss`, by name."""
    if kind == "mse":
        return mse(output, target)
    if kind == "rmse":
        return rmse(output, target)
    if kind == "charbonnier":
        return charbonnier(output, target)
    if kind == "psnr":
        return psnr_loss(output, target)
    raise ValueError(f"reconstruction loss must be one of {RECON_KINDS}, got {kind!r}")


# Keras' backend epsilon: keras.losses.kl_divergence clips both arguments to [1e-7, 1].
PIXEL_KL_EPS = 1e-7


def pixel_kl(output: Tensor, target: Tensor) -> Tensor:
    """The CelebA block study's pixel-wise "KL divergence" (its Equation 2), as Keras computes it.

    The study writes ``KL(x, x_hat) = x_hat * log(x_hat / x)`` with x the reconstruction
    and x_hat the "true label" image, i.e. ``t * log(t / y)`` for target (clean block) t
    and output y: Keras' ``kl_divergence(y_true, y_pred)``, which clips both to
    ``[1e-7, 1]`` and sums over the last axis (the channels of an NHWC batch). So here:
    ``mean_{i,h,w} sum_c t' * log(t' / y')`` with ``t' = clamp(t, 1e-7, 1)``,
    ``y' = clamp(y, 1e-7, 1)``; the clamp keeps the log finite where a pixel is 0.

    It is not a divergence between distributions (pixels are not normalised): for a fixed
    t it falls as y grows, and can be negative; with the MSE it pulls dark outputs up.
    It is the study's term, as an option (``train.loss.pixel_kl``).
    """
    _same_shape(output, target)
    t = target.clamp(PIXEL_KL_EPS, 1.0)
    y = output.clamp(PIXEL_KL_EPS, 1.0)
    return (t * (t.log() - y.log())).sum(1).mean()


def kl_divergence(mu: Tensor, logvar: Tensor) -> Tensor:
    """KL(N(mu, diag(exp(logvar))) || N(0, I)), closed form (Kingma & Welling 2014, app. B).

    ``mean_i [ -1/2 * sum_j (1 + logvar_ij - mu_ij^2 - exp(logvar_ij)) ]``: summed over the
    latent dimensions j (all non-batch dims), averaged over the batch i.
    """
    _same_shape(mu, logvar)
    per_sample = -0.5 * (1.0 + logvar - mu.pow(2) - logvar.exp()).flatten(1).sum(1)
    return per_sample.mean()


def weight_penalties(module: torch.nn.Module, exclude: tuple[torch.nn.Module, ...] = ()) -> tuple[Tensor, Tensor]:
    """``(sum |w|, sum w^2)`` over the weights (not biases) of every conv / linear layer.

    The CelebA block study's Keras ``kernel_regularizer=l1_l2(l1, l2)`` on each layer; the
    layers inside any module of ``exclude`` (e.g. a GAN discriminator) are skipped.
    """
    skip = {id(m) for ex in exclude for m in ex.modules()}
    l1 = l2 = None
    for m in module.modules():
        if id(m) in skip or not isinstance(m, _WEIGHTED):
            continue
        w = m.weight
        a, b = w.abs().sum(), w.pow(2).sum()
        l1 = a if l1 is None else l1 + a
        l2 = b if l2 is None else l2 + b
    if l1 is None:
        zero = next(module.parameters()).new_zeros(())
        return zero, zero
    return l1, l2


_WEIGHTED = (torch.nn.Conv1d, torch.nn.Conv2d, torch.nn.Conv3d, torch.nn.ConvTranspose2d, torch.nn.Linear)


# -------------------------------------------------------------------------- sharpness
# The 8 neighbour offsets (dy, dx), in reading order around the centre.
NEIGHBOURS: tuple[tuple[int, int], ...] = (
    (-1, -1), (-1, 0), (-1, 1), (0, -1), (0, 1), (1, -1), (1, 0), (1, 1),
)


def neighbour_kernel() -> Tensor:
    """The fixed 3x3 filter bank ``(8, 1, 3, 3)``: centre -1, neighbour k +1.

    Channel k of the filtered image is ``x(p + o_k) - x(p)``, the intensity variation of
    pixel p towards its k-th neighbour (offsets :data:`NEIGHBOURS`).
    """
    k = torch.zeros(8, 1, 3, 3)
    for i, (dy, dx) in enumerate(NEIGHBOURS):
        k[i, 0, 1, 1] = -1.0
        k[i, 0, 1 + dy, 1 + dx] = 1.0
    return k


def neighbour_variations(x: Tensor) -> Tensor:
    """Per-pixel variations towards the 8 neighbours: ``(N, C, H, W)`` -> ``(N, C, 8, H, W)``.

    A non-learnable grouped 3x3 convolution with :func:`neighbour_kernel`, applied to each
    input channel separately. Borders are replicate-padded, so a border pixel has no
    variation towards the outside of the block.
    """
    n, c, h, w = x.shape
    kernel = neighbour_kernel().to(dtype=x.dtype, device=x.device).repeat(c, 1, 1, 1)
    padded = F.pad(x, (1, 1, 1, 1), mode="replicate")
    return F.conv2d(padded, kernel, groups=c).view(n, c, 8, h, w)


def max_variation(x: Tensor) -> Tensor:
    """The per-pixel maximum absolute variation, ``max_k |x(p + o_k) - x(p)|``: ``(N, C, H, W)``."""
    return neighbour_variations(x).abs().amax(dim=2)


def sharpness_loss(output: Tensor, target: Tensor, variant: str = "max") -> Tensor:
    """Sharpness loss of the sharpness study: match the local intensity variations.

    With ``d_k(p) = x(p + o_k) - x(p)`` (:func:`neighbour_variations`) and
    ``m(p) = max_k |d_k(p)|`` (:func:`max_variation`), for output y and target t:

    * ``'mean_max'`` (a): ``mean_i (mean_p m_y(p) - mean_p m_t(p))^2``, the squared
      difference of the per-block means of the per-pixel maxima;
    * ``'max'`` (b, the study's best, the default): ``mean_{i,p} (m_y(p) - m_t(p))^2``,
      L2 between the per-pixel maxima;
    * ``'mean_sq'`` (c): ``mean_i (mean_{k,p} d_{y,k}(p)^2 - mean_{k,p} d_{t,k}(p)^2)^2``,
      L2 between the per-block mean squared variations.

    Variant (d), switching any of these on after some epoch, is
    ``train.loss.sharpness_start_epoch``, applied by the model. Adapted: the study took the
    maximum of the signed variations; here the absolute value, so that a dark pixel next
    to a bright one and the bright pixel itself both count as an edge.
    """
    _same_shape(output, target)
    if variant == "max":
        return (max_variation(output) - max_variation(target)).pow(2).mean()
    if variant == "mean_max":
        a = max_variation(output).flatten(1).mean(1)
        b = max_variation(target).flatten(1).mean(1)
        return (a - b).pow(2).mean()
    if variant == "mean_sq":
        a = neighbour_variations(output).pow(2).flatten(1).mean(1)
        b = neighbour_variations(target).pow(2).flatten(1).mean(1)
        return (a - b).pow(2).mean()
    raise ValueError(f"sharpness variant must be one of {SHARPNESS_VARIANTS}, got {variant!r}")


# ------------------------------------------------------------------------------ n-cut
def similarity_matrix(z: Tensor, sigma: float) -> Tensor:
    """``w(u, v) = exp(-|z_u - z_v|^2 / (sigma^2 * D))`` for the rows of ``z`` ``(N, D)``.

    Dividing by D (the latent length) makes sigma independent of the latent size: the
    exponent is the mean squared difference per latent dimension over sigma^2.
    """
    if z.dim() != 2:
        raise ValueError(f"z must be (N, D), got shape {tuple(z.shape)}")
    d = z.shape[1]
    sq = (z.unsqueeze(1) - z.unsqueeze(0)).pow(2).sum(-1)  # exact, no cancellation
    return torch.exp(-sq / (sigma**2 * d))


def soft_ncut(z: Tensor, probs: Tensor, sigma: float = 1.0, eps: float = 1e-8) -> Tensor:
    """Soft normalised cut of a batch (Xia & Kulis 2017, W-Net, eq. 3; Shi & Malik 2000).

    ``K - sum_k [sum_{u,v} w(u,v) p_k(u) p_k(v)] / [sum_u p_k(u) sum_v w(u,v)]`` with
    ``w`` from :func:`similarity_matrix` over the batch's latent vectors ``z`` ``(N, D)``
    and ``probs`` ``(N, K)`` the soft cluster assignments (rows summing to 1). It lies in
    ``[0, K - 1]`` for hard assignments and is 0 when no similarity crosses clusters.
    ``u = v`` pairs are included (w = 1). ``eps`` guards an empty cluster.
    """
    if probs.dim() != 2 or probs.shape[0] != z.shape[0]:
        raise ValueError(
            f"probs must be (N, K) with N = {z.shape[0]} rows, got shape {tuple(probs.shape)}"
        )
    w = similarity_matrix(z, sigma)
    assoc = ((w @ probs) * probs).sum(0)  # (K,): sum_{u,v} w(u,v) p_k(u) p_k(v)
    volume = probs.t() @ w.sum(1)  # (K,): sum_u p_k(u) d(u)
    k = probs.shape[1]
    return k - (assoc / (volume + eps)).sum()


def _same_shape(a: Tensor, b: Tensor) -> None:
    if a.shape != b.shape:
        raise ValueError(f"shape mismatch: {tuple(a.shape)} vs {tuple(b.shape)}")


def soft_cross_entropy(logits: Tensor, target: Tensor) -> Tensor:
    """Cross entropy against target distributions: ``mean_i -sum_c t_ic log softmax(l_i)_c``
    (``target`` rows sum to 1, e.g. each block's share of pixels of each damage class)."""
    return -(target * torch.log_softmax(logits, dim=1)).sum(1).mean()
