"""``vae`` and ``vae_lfw``: the variational autoencoders of the CelebA and LFW studies.

Both: 3x3 convs, each followed by ReLU then batch norm, flatten, (a hidden dense layer,)
two dense layers ``z_mean`` and ``z_log_var``, the reparameterisation
``z = mu + exp(logvar / 2) * eps`` (training only; ``encode`` gives the mean), and a
dense + transposed-conv decoder (:class:`~aerestore.models.conv_ae.StudyDecoder`) with a
sigmoid output. Loss ``alpha * n * recon + beta * KL`` with ``n = C * s * s``: both terms
are per-sample sums (the reconstruction summed over pixels, the KL over latent
dimensions), averaged over the batch — see :mod:`aerestore.losses`.

* ``form='celeba'`` (``vae``). Source: the CelebA block study, section 3.2.4, Figure 6
  (16 x 16 x 3 blocks): conv 32 stride 2 (8 px), batch norm, conv 64 stride 2 (4 px),
  batch norm, flatten (1024), dense 16, ``z_mean`` / ``z_log_var`` of 2. The figure has
  no decoder; the encoder is the Keras VAE example's layer for layer (plus the batch
  norms), so the decoder is that example's: dense to 4 x 4 x 64 + ReLU, transposed convs
  64 (stride 2) and 32 (stride 2) + ReLU, one to the image (stride 1), sigmoid.
  Parameters at 16 px, latent 2: encoder 36,052 (Figure 6 lists 36,244: Keras counts
  the batch norms' 192 running statistics, torch keeps them as buffers), decoder 59,331.
* ``form='lfw'`` (``vae_lfw``). Source: the LFW study, section 1.6.1, the "encoder" and
  "decoder" summaries (32 x 32 x 3): convs 32 (stride 1), 64 (stride 2), 64 (stride 2),
  64 (stride 1), each + ReLU + batch norm, flatten (4096), ``mu`` / ``log_variance`` of
  1024; decoder: dense 4096 (linear: the summary has no activation after it), reshape
  8 x 8 x 64, transposed convs 64 (stride 1), 64 (stride 2), 64 (stride 2), each + ReLU
  + batch norm, one to the image (stride 1), sigmoid. Parameters at 32 px, latent 1024:
  encoder 8,484,352, decoder 4,311,299 (the summaries' trainable counts).

Changed from the studies, deliberately: the pipeline's block (18 px by default, not 16
or 32) — the convs pad by 1 ("same"), so sides are ``ceil(side / stride)`` (18 -> 9 -> 5
for ``vae``, 18 -> 18 -> 9 -> 5 -> 5 for ``vae_lfw``) and the decoder lands on them
exactly; the latent is the pipeline's (``params.yaml`` ``latent``: 64, not the CelebA
study's 2; ``arch.vae_lfw.latent: 1024`` as the LFW study). Not in the figures, assumed:
ReLU in the CelebA convs and hidden dense layer (the Keras example's).

``latent``: the length of mu (and of ``encode(x)``).
Options: ``form``, ``filters``, ``strides`` (encoder), ``dense`` (0 = no hidden dense
layer), ``dec_filters``, ``dec_strides`` (decoder, as ``conv_ae``'s), ``dec_bn``;
``None`` takes the form's value.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from torch import nn

from aerestore.losses import LossConfig
from aerestore.models.base import GaussianHead, VAEEncoder, VariationalModel
from aerestore.models.layers import choice, int_tuple
from aerestore.models.conv_ae import StudyDecoder, study_encoder_convs
from aerestore.models.registry import register_model

FORMS: dict[str, dict[str, Any]] = {
    "celeba": {
        "filters": (32, 64), "strides": (2, 2), "dense": 16,
        "dec_filters": (64, 64, 32), "dec_strides": (2, 2), "dec_bn": False, "dense_relu": True,
    },
    "lfw": {
        "filters": (32, 64, 64, 64), "strides": (1, 2, 2, 1), "dense": 0,
        "dec_filters": (64, 64, 64, 64), "dec_strides": (1, 2, 2), "dec_bn": True, "dense_relu": False,
    },
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
        dec_filters: Sequence[int] | None = None,
        dec_strides: Sequence[int] | None = None,
        dec_bn: bool | None = None,
    ) -> None:
        super().__init__(latent, block, channels, loss)
        spec = FORMS[choice("form", form, list(FORMS))]
        filters = int_tuple("filters", spec["filters"] if filters is None else filters)
        strides = int_tuple("strides", spec["strides"] if strides is None else strides, len(filters))
        dense = spec["dense"] if dense is None else dense
        if not isinstance(dense, int) or isinstance(dense, bool) or dense < 0:
            raise ValueError(f"dense must be an int >= 0, got {dense!r}")
        dec_filters = int_tuple("dec_filters", spec["dec_filters"] if dec_filters is None else dec_filters)
        if len(dec_filters) < 2:
            raise ValueError(f"dec_filters needs at least 2 entries, got {dec_filters!r}")
        dec_strides = int_tuple(
            "dec_strides", spec["dec_strides"] if dec_strides is None else dec_strides, len(dec_filters) - 1
        )
        dec_bn = spec["dec_bn"] if dec_bn is None else choice("dec_bn", dec_bn, (True, False))
        convs, side = study_encoder_convs(channels, filters, strides, block, "all")
        flat = filters[-1] * side**2
        body: list[nn.Module] = [convs, nn.Flatten()]
        if dense:
            body += [nn.Linear(flat, dense), nn.ReLU(inplace=True)]
        self.encoder = VAEEncoder(nn.Sequential(*body), GaussianHead(dense or flat, latent))
        self.decoder = StudyDecoder(
            latent, channels, block, dec_filters, dec_strides, bn=dec_bn, dense_relu=spec["dense_relu"]
        )
        self._finish()


register_model("vae", VAE)
register_model("vae_lfw", VAE, form="lfw")
