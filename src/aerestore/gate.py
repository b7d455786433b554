"""A learned gate over K decoders (``decoders.method: gate``): a mixture of experts.

For fully convolutional models (``unet_ae``) the gate is a 1x1 convolution on the code
map: per bottleneck location, K logits and their softmax, the weights of the K decoders'
outputs (upsampled to the pixels as the routing maps of the clusters are, by
:func:`aerestore.tracks.images.restore.upsample_maps`). A linear gate per location is the gating network
of Shazeer et al. 2017 ("Outrageously large neural networks: the sparsely-gated
mixture-of-experts layer", eq. 3-5) and the router of Fedus et al. 2021 (Switch
Transformer, section 2.1).

Breaking the symmetry: the K decoders start as copies of the shared decoder, so with a
uniform gate every decoder would get the same gradient and stay a copy. The gate is
therefore initialised from the damage head when the model has one and K equals its
classes (:meth:`Gate.from_damage_head`: the gate's logits are then exactly the damage
head's, the routing of ``cluster.method: damage_head``, which training then changes end
to end); otherwise its weights start at zero and the training uses Shazeer et al.'s noisy
gating, ``H(x) = x W_g + eps * softplus(x W_noise)``, eps ~ N(0, 1), which makes the
routing, and so the decoders' gradients, differ from the first step. The noise is on in
training only (both initialisations); inference uses the clean logits.

Load balancing (so that no decoder starves): Shazeer et al. 2017's importance loss (eq.
6), ``CV(importance)^2``, the squared coefficient of variation over the K decoders of
their summed gate weights over the batch's locations: 0 when every decoder gets the same
total weight, larger the more uneven (``(K - 1)`` when one decoder takes everything).
Its weight is ``decoders.balance``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

GATE_VERSION = 1


class Gate(nn.Module):
    """Per code location, K softmax weights: ``(N, C, h, w) -> (N, K, h, w)``."""

    def __init__(self, in_channels: int, k: int) -> None:
        super().__init__()
        if k < 1 or in_channels < 1:
            raise ValueError(f"a gate needs k >= 1 and in_channels >= 1, got k={k}, in_channels={in_channels}")
        self.in_channels, self.k = int(in_channels), int(k)
        self.w_gate = nn.Conv2d(in_channels, k, 1)
        self.w_noise = nn.Conv2d(in_channels, k, 1)  # Shazeer et al.'s noise scale, softplus
        for conv in (self.w_gate, self.w_noise):  # zero (uniform routing) as in Shazeer et al.
            nn.init.zeros_(conv.weight)
            nn.init.zeros_(conv.bias)

    @classmethod
    def from_damage_head(cls, model) -> "Gate":
        """A gate whose logits equal ``model.damage_logits(code)`` (the head reads the
        code's last ``damage_channels`` channels when the model has a damage embedding)."""
        head = model.damage_head
        gate = cls(int(model.latent_dim), int(head.out_channels))
        with torch.no_grad():
            gate.w_gate.weight[:, -head.in_channels :] = head.weight
            gate.w_gate.bias.copy_(head.bias)
        return gate

    def logits(self, code: torch.Tensor, noise: torch.Generator | None = None) -> torch.Tensor:
        """Clean logits; with a generator ``noise``, Shazeer et al.'s noisy logits (training)."""
        h = self.w_gate(code)
        if noise is not None:
            eps = torch.randn(h.shape, generator=noise, dtype=h.dtype, device=h.device)
            h = h + eps * F.softplus(self.w_noise(code))
        return h

    def forward(self, code: torch.Tensor, noise: torch.Generator | None = None) -> torch.Tensor:
        return torch.softmax(self.logits(code, noise), dim=1)

    def state(self) -> dict:
        """What :meth:`from_state` needs (saved in ``decoders.pt``), on the host."""
        return {"version": GATE_VERSION, "in_channels": self.in_channels, "k": self.k,
                "weights": {k: v.detach().cpu() for k, v in self.state_dict().items()}}

    @classmethod
    def from_state(cls, state: dict, source: str = "decoders.pt") -> "Gate":
        if not isinstance(state, dict) or state.get("version") != GATE_VERSION:
            got = state.get("version") if isinstance(state, dict) else type(state).__name__
            raise ValueError(f"{source}: gate state of version {got!r}, expected {GATE_VERSION}")
        gate = cls(int(state["in_channels"]), int(state["k"]))
        gate.load_state_dict(state["weights"])
        return gate.eval()


def cv_squared(importance: torch.Tensor) -> torch.Tensor:
    """Squared coefficient of variation of ``importance`` (K,): ``var / mean^2``
    (population variance), 0 for equal entries (Shazeer et al. 2017, eq. 6)."""
    if importance.numel() < 2:
        return importance.new_zeros(())
    importance = importance.float()
    return importance.var(unbiased=False) / importance.mean().pow(2).clamp_min(1e-10)


def balance_loss(weights: torch.Tensor) -> torch.Tensor:
    """``CV(importance)^2`` of gate weights ``(N, K, h, w)``: importance_k = the sum of
    decoder k's weights over every location of the batch."""
    return cv_squared(weights.sum(dim=(0, 2, 3)))
