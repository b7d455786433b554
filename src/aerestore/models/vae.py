"""``vae`` and ``vae_lfw``: variational autoencoders of the CelebA and LFW studies.

Sources: the CelebA block study's VAE (Keras, after the Keras VAE example) and the LFW
study's convolutional VAE. Both: a convolutional encoder, then two dense layers
``z_mean`` and ``z_log_var``, the reparameterisation ``z = mu + exp(logvar / 2) * eps``
(training only; ``encode`` gives the mean), and a dense + transposed-conv decoder with a
sigmoid output. Loss ``alpha * n * recon + beta * KL`` with ``n = C * s * s``: both terms
are per-sample sums (the reconstruction summed over pixels, the KL over latent
dimensions), averaged over the batch — see :mod:`aerestore.losses`.

* ``form='celeba'`` (``vae``): the conv_ae encoder (five 3x3 convs, 16-32-48-72-128
  filters, strides 1-2-1-2-1, batch norm, ReLU), flatten, dense 96 (ReLU), then the head.
* ``form='lfw'`` (``vae_lfw``): four 3x3 stride-2 convs with 32-64-128-256 filters,
  batch norm and ReLU, flatten, then the head (no hidden dense layer). The LFW study
  used a latent of 1024: set ``arch.vae_lfw.latent: 1024`` to match it.

Adapted: sizes follow the block (decoder padding computed from the encoder's sides);
sigmoid output for [0, 1] targets.

``latent``: the length of mu (and of ``encode(x)``).
Options: ``form``, ``filters``, ``strides``, ``dense`` (0 = no hidden dense layer);
``None`` takes the form's value.
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import nn

from aerestore.losses import LossConfig
from aerestore.models.base import (
    DenseConvDecoder,
    GaussianHead,
    VAEEncoder,
    VariationalModel,
    choice,
    conv_stack,
    int_tuple,
)
from aerestore.models.registry import register_model

FORMS = {
    "celeba": {"filters": (16, 32, 48, 72, 128), "strides": (1, 2, 1, 2, 1), "dense": 96},
    "lfw": {"filters": (32, 64, 128, 256), "strides": (2, 2, 2, 2), "dense": 0},
}


class VAE(VariationalModel):
    def __init__(
        self,
        latent: int = 64,
        block: int = 18,
        channels: int = 3,
        loss: LossConfig | None = None,
        *,
        form: str = "celeba",
        filters: Sequence[int] | None = None,
        strides: Sequence[int] | None = None,
        dense: int | None = None,
    ) -> None:
        super().__init__(latent, block, channels, loss)
        spec = FORMS[choice("form", form, list(FORMS))]
        filters = int_tuple("filters", spec["filters"] if filters is None else filters)
        strides = int_tuple("strides", spec["strides"] if strides is None else strides, len(filters))
        dense = spec["dense"] if dense is None else dense
        if not isinstance(dense, int) or isinstance(dense, bool) or dense < 0:
            raise ValueError(f"dense must be an int >= 0, got {dense!r}")
        convs, sides = conv_stack(channels, filters, strides, block)
        flat = filters[-1] * sides[-1] ** 2
        body: list[nn.Module] = [convs, nn.Flatten()]
        if dense:
            body += [nn.Linear(flat, dense), nn.ReLU(inplace=True)]
        self.encoder = VAEEncoder(nn.Sequential(*body), GaussianHead(dense or flat, latent))
        self.decoder = DenseConvDecoder(latent, channels, filters, strides, sides)
        self._finish()


register_model("vae", VAE)
register_model("vae_lfw", VAE, form="lfw")
