"""The studies' claims and the arms that test them (``aerestore report``, :mod:`aerestore.studies.report`).

Each claim of the five studies (:data:`CLAIMS`, issue 12) is tested by named **arms** (param
overrides of :data:`ARMS` on top of ``params.yaml`` and the scaled-down settings of
:data:`SCALED`), each trained once per seed (:mod:`aerestore.studies.runner`), and a
**measure** per test image (or per training block, for cluster separability) compared between
arms, image by image (:mod:`aerestore.studies.analysis`: the effect, its interval, the
verdict):

* "sharper" (claims 7 and 10) is measured as ``|blur %|``, the distance from the clean image's
  sharpness (``Measure.absolute``): blur % is a metric better closer to 0
  (:data:`aerestore.metrics.CLOSER_TO_ZERO_IS_BETTER`), and a signed blur % would call an
  output that swung from too blurry (+27 %) to amplified noise (-30 %) "sharper". Claim 5
  ("blurrier") keeps the signed blur %: its claim has a direction;
* claim 3 (separability) is measured on **held-out** codes: clusters fitted on the codes of
  training blocks, silhouettes of the codes of test blocks
  (:func:`aerestore.studies.runner.silhouette_items`), not the training codes the n-cut loss
  optimised.

**Seeds.** :data:`SEEDS` = 5 per arm (``--seeds``): every claim's arms train in minutes at the
scaled-down settings, and with 3 seeds the t interval's factor (4.30) is 1.6x that of 5 seeds
(2.78). ``reports/claims.md`` shows each measure's seeds and items per seed.

Scaled down means: the offline sample tiles (``data.source: sample``), ``data.limit`` images,
a few epochs of a few thousand blocks, no classical restorers, 1 thread (:data:`SCALED`). The
claims at 64 px (6, 9) use 64 px images as single 64 px blocks (``blocks.size: 64, overlap:
0``). The studies' numbers are quoted beside ours; our setting is not theirs (other data,
other damage, far less training), so a verdict says what our small re-run shows, not whether
the study was right.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

REPORT_DIR = Path("reports")
SEEDS = (1, 2, 3, 4, 5)
LEVEL = 0.95
INTERVAL = "t over per-seed means"

# Scaled-down settings on top of params.yaml (the offline sample tiles, tiny training).
SCALED: dict[str, Any] = {
    "data": {"source": "sample", "limit": 250},
    "prepare": {"augment_copies": 0, "workers": 1},
    "runtime": {"threads": 1, "device": "cpu", "amp": "fp32"},
    "train": {"batch_size": 64, "blocks": {"epochs": 6, "per_epoch": 3072, "patience": 0}},
    "cluster": {"max_blocks": 4000},
    "decoders": {"epochs": 1, "min_blocks": 64},
    "evaluate": {"classical": [], "max_images": 0, "grid_images": 1},
    "explore": {"architectures": []},
    "mlflow": {"enabled": False},
}
# The 64 px claims (the bottleneck study): whole 64 px images as one block each.
PX64: dict[str, Any] = {"data": {"image_size": 64, "limit": 200}, "blocks": {"size": 64, "overlap": 0},
                        "train": {"blocks": {"per_epoch": 0, "epochs": 6}, "batch_size": 32}}
# The bottleneck study's three distortions, all at once (its Table 2's last row): additive
# Gaussian noise, three 12x12 black squares (12/64 of the side), channel-wise salt and pepper.
ANIMAL_DISTORTIONS: list[dict[str, Any]] = [
    {"op": "gaussian_noise", "std": [0.02, 0.1], "prob": 1.0},
    {"op": "coarse_dropout", "holes": 3, "size": 0.1875, "fill": 0, "prob": 1.0},
    {"op": "salt_pepper", "amount": 0.02, "salt_ratio": 0.5, "prob": 1.0},
]
# Its latent sweep reconstructs undistorted images (section 3.1.1): no degradation.
PX64_CLEAN: dict[str, Any] = {**PX64, "prepare": {"degrade": []}}
PX64_DISTORTED: dict[str, Any] = {**PX64, "prepare": {"degrade": ANIMAL_DISTORTIONS}}


def _arch(name: str, latent: int | None = None, model: dict | None = None, train: dict | None = None,
          **top: Any) -> dict[str, Any]:
    entry: dict[str, Any] = {}
    if latent is not None:
        entry["latent"] = latent
    if model:
        entry["model"] = model
    if train:
        entry["train"] = train
    out: dict[str, Any] = {"architectures": [name], **top}
    if entry:
        out["arch"] = {name: entry}
    return out


@dataclass(frozen=True)
class Arm:
    """One trained configuration: ``overrides`` on params.yaml + :data:`SCALED`; ``full`` adds
    the cluster and decoders stages (rows ``single`` and ``multi``); ``silhouette`` measures
    the separability of the training blocks' latents (:func:`silhouette_items`)."""

    overrides: dict[str, Any]
    full: bool = False
    silhouette: bool = False

    @property
    def arch(self) -> str:
        return self.overrides["architectures"][0]


VAE_GAN_TRAIN: dict[str, Any] = {"loss": {"damage_weight": 0.0}, "blocks": {"per_epoch": 2048}}
VAE_GAN_SHARP: dict[str, Any] = {"loss": {"damage_weight": 0.0, "sharpness_weight": 1.0, "sharpness_variant": "max"},
                                 "blocks": {"per_epoch": 2048}}
ARMS: dict[str, Arm] = {
    "conv_ae": Arm(_arch("conv_ae"), full=True),
    "vae": Arm(_arch("vae")),
    "resnet_vae": Arm(_arch("resnet_vae")),
    "ncut_off": Arm(_arch("resnet_ncut", train={"loss": {"ncut_k": 3}}), silhouette=True),
    "ncut_on": Arm(_arch("resnet_ncut", train={"loss": {"ncut_weight": 0.1, "ncut_k": 3}}), silhouette=True),
    "v2_latent8": Arm(_arch("conv_ae_v2", latent=8, model={"code": True})),
    "v2_latent256": Arm(_arch("conv_ae_v2", latent=256, model={"code": True})),
    "ccp_500": Arm({**PX64_CLEAN, **_arch("ccp_ae", latent=500)}),
    "ccp_1000": Arm({**PX64_CLEAN, **_arch("ccp_ae", latent=1000)}),
    "ccp_2000": Arm({**PX64_CLEAN, **_arch("ccp_ae", latent=2000)}),
    "ccp_1000_distorted": Arm({**PX64_DISTORTED, **_arch("ccp_ae", latent=1000)}),
    "fcn_4096_distorted": Arm({**PX64_DISTORTED, **_arch("fcn_ae", latent=4096)}),
    "vae_sharp": Arm(_arch("vae", train={"loss": {"sharpness_weight": 1.0, "sharpness_variant": "max"}})),
    # vae_gan has no damage head (its three-optimiser update has no damage term), so its arms
    # cluster with soft k-means (they do not run the cluster stage; the params must validate);
    # its three updates per step make it 5x slower than vae: 2048 blocks an epoch, both arms
    "vae_gan": Arm(_arch("vae_gan", train=VAE_GAN_TRAIN, cluster={"method": "soft_kmeans"})),
    "vae_gan_sharp": Arm(_arch("vae_gan", train=VAE_GAN_SHARP,
                               cluster={"method": "soft_kmeans"})),
    "conv_ae_v1": Arm(_arch("conv_ae_v1")),
    "conv_ae_v2": Arm(_arch("conv_ae_v2")),
}


@dataclass(frozen=True)
class Measure:
    """A per-item measure and the contrast of arms that is the effect: ``terms`` are
    ``(weight, arm, row)`` with row ``base`` (the shared decoder), ``single`` or ``multi``;
    ``sign`` is the claimed direction of the effect (+1: positive), ``size`` the claimed size
    (0: any), ``kind`` ``"direction"`` or ``"none"`` (the claim is that there is no gain);
    ``absolute``: each arm's per-item value is taken as ``|value|`` before the contrast (for
    blur %, the distance from the clean image's sharpness)."""

    metric: str
    terms: tuple[tuple[float, str, str], ...]
    sign: int
    unit: str
    label: str
    size: float = 0.0
    kind: str = "direction"
    absolute: bool = False

    @property
    def arms(self) -> list[str]:
        return list(dict.fromkeys(a for _, a, _ in self.terms))


@dataclass(frozen=True)
class Claim:
    number: int
    text: str
    study: str
    source: str  # the study's own figure, quoted
    setting: str  # ours
    measures: tuple[Measure, ...]

    @property
    def arms(self) -> list[str]:
        return list(dict.fromkeys(a for m in self.measures for a in m.arms))


def _pair(metric: str, a: str, b: str, sign: int, unit: str, label: str, rows=("base", "base"), **kw) -> Measure:
    return Measure(metric, ((1.0, a, rows[0]), (-1.0, b, rows[1])), sign, unit, label, **kw)


CLAIMS: tuple[Claim, ...] = (
    Claim(1, "per-cluster decoders beat a single decoder", "CelebA blocks",
          "per-cluster decoders better on 93 % of the images (PSNR)",
          "conv_ae, 18 px blocks, damage-head clusters (k = 3), per-cluster decoders vs the equal-budget control",
          (Measure("psnr", ((1.0, "conv_ae", "multi"), (-1.0, "conv_ae", "single")), +1, "dB",
                   "PSNR multi - single"),)),
    Claim(2, "the conv AE restores far better than the VAE", "CelebA blocks",
          "conv AE ahead of the VAE in PSNR, SSIM and UQI (the conclusion table)",
          "conv_ae vs vae (shared decoders), 18 px blocks; 'far' = at least 1 dB",
          (_pair("psnr", "conv_ae", "vae", +1, "dB", "PSNR conv_ae - vae", size=1.0),)),
    Claim(3, "the soft n-cut loss makes clusters more separable", "CelebA blocks",
          "ResNet + N Cut: clusters more distinct (qualitative)",
          "resnet_ncut with ncut_weight 0.1 vs 0, k = 3; per-block silhouette of the held-out test blocks' codes, "
          "clusters of soft k-means (k = 3) fitted on the training blocks' codes",
          (_pair("silhouette", "ncut_on", "ncut_off", +1, "", "silhouette n-cut - none"),)),
    Claim(4, "a ResNet encoder does not help", "CelebA blocks",
          "VAE + ResNet no better than the VAE (the conclusion table)",
          "resnet_vae vs vae, 18 px blocks; 'no help' = gain below 0.1 dB",
          (_pair("psnr", "resnet_vae", "vae", +1, "dB", "PSNR resnet_vae - vae", size=0.1, kind="none"),)),
    Claim(5, "a smaller latent gives blurrier output and colour shifts", "blur study",
          "smaller latents: blurrier, colours shift (qualitative)",
          "conv_ae_v2 with a dense code of 8 vs 256, 18 px blocks; blur % and mean per-channel bias",
          (_pair("blur_percent", "v2_latent8", "v2_latent256", +1, "%", "blur % latent 8 - 256"),
           _pair("colour_bias", "v2_latent8", "v2_latent256", +1, "/255", "colour bias latent 8 - 256"))),
    Claim(6, "diminishing returns past a latent of about 1000 at 64 px", "bottleneck study",
          "the MSE gain is limited past 1000 units (Figure 4; 0.0058 validation MSE at 1000)",
          "ccp_ae at 64 px, undistorted images (reconstruction, as the sweep), latent 500 / 1000 / 2000: "
          "PSNR gain of the doubling past 1000 minus the one before",
          (Measure("psnr", ((1.0, "ccp_2000", "base"), (-2.0, "ccp_1000", "base"), (1.0, "ccp_500", "base")), -1,
                   "dB", "PSNR gain 1000->2000 minus gain 500->1000"),)),
    Claim(7, "the sharpness loss (variant b) gives sharper VAE output", "sharpness study",
          "variant (b) from the start gave the best, sharper MNIST digits (qualitative)",
          "vae with sharpness_weight 1, variant max (= b) vs 0, 18 px blocks; |blur %| (closer to the clean image's sharpness = sharper)",
          (_pair("blur_percent", "vae_sharp", "vae", -1, "%", "|blur %| sharpness - plain", absolute=True),)),
    Claim(8, "VAE-GAN with the sharpness loss is worse than plain VAE-GAN", "sharpness study",
          "VAE-GAN + sharpness worse than VAE-GAN (qualitative)",
          "vae_gan (width 0.25) with sharpness_weight 1, variant max vs 0, 18 px blocks; PSNR",
          (_pair("psnr", "vae_gan_sharp", "vae_gan", -1, "dB", "PSNR sharpness - plain"),)),
    Claim(9, "the fully convolutional AE beats the dense bottleneck", "bottleneck study",
          "validation MSE 0.0037 (FCN, code 4096, three distortions) vs 0.0058 (dense 1000, undistorted)",
          "fcn_ae (code 4096) vs ccp_ae (dense 1000) at 64 px, both on the three distortions; per-image test MSE",
          (_pair("mse", "fcn_4096_distorted", "ccp_1000_distorted", -1, "", "MSE fcn_ae - ccp_ae"),)),
    Claim(10, "strided convolutions keep more detail than pooling / upsampling", "blur study",
          "Version 2 (strided) sharper than Version 1 (pooling) (qualitative)",
          "conv_ae_v2 (stride 2) vs conv_ae_v1 (max pooling + upsampling), 18 px blocks; |blur %|",
          (_pair("blur_percent", "conv_ae_v2", "conv_ae_v1", -1, "%", "|blur %| strided - pooling", absolute=True),)),
)


def select_claims(numbers: Iterable[int] | None) -> list[Claim]:
    """The claims of these numbers, in order (all of :data:`CLAIMS` for none)."""
    if not numbers:
        return list(CLAIMS)
    known = {c.number: c for c in CLAIMS}
    bad = [n for n in numbers if n not in known]
    if bad:
        raise ValueError(f"unknown claim number(s) {bad}: the claims are {sorted(known)}")
    return [known[n] for n in sorted(set(numbers))]

