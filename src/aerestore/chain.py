"""VAE -> AE chaining (the blur study): a second autoencoder run on a VAE's outputs.

A VAE's reconstructions are blurry. The blur study ran them through a second, plain
autoencoder to sharpen them. Here that second model is any registered architecture,
trained by the pipeline's own loop (:func:`aerestore.tracks.blocks.train.fit`) on whole
images, with the target the clean training image and, as input (``trained_on``):

* ``"vae"`` (this project's default): the VAE's reconstruction of the training image
  (through :class:`aerestore.explore.LatentCodec`, the shared decoder, as ``explore``
  decodes), rounded to uint8 like any image the pipeline stores: the AE learns to undo
  the VAE's errors;
* ``"clean"`` (the blur study's): the clean image itself, an AE "to only reconstruct
  images from the dataset", then fed the VAE's output, which it never saw in training.

``passes`` > 1 feeds the AE its own output again, as the study ran images "through the ae
multiple times" (:func:`chain_passes`).

:func:`compare` scores the VAE's outputs and each pass of the chain against the clean test
images: PSNR and SSIM (:func:`aerestore.metrics.batch_metrics`), the blur measures
(``blur_percent``: the full-reference blur of Crete et al., 0 = as sharp as the clean image,
positive = blurrier; ``laplacian_var``: the study's variance of the Laplacian, no
reference) and ``colour_bias`` (:func:`aerestore.colour.colour_bias`: the colour cast, in
1/255 steps, the study's "background color change").
"""

from __future__ import annotations

from typing import get_args

import numpy as np
import torch

from .colour import colour_bias
from .tracks.blocks.dataset import BlockData
from .explore import LatentCodec, grid, to_tensor, to_uint8
from .losses import LossConfig
from .metrics import batch_metrics
from .models import create_model
from .params.stages import ChainTrainedOn

# what compare() reports, per method (means over the test images)
CHAIN_METRICS = ("psnr", "ssim", "blur_percent", "laplacian_var", "colour_bias")
# what the chained AE is trained to map to the clean image (see the module's docstring);
# the values of explore.chain_trained_on
TRAINED_ON = get_args(ChainTrainedOn)


def _chw(images: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(np.asarray(images).transpose(0, 3, 1, 2))


def vae_outputs(codec: LatentCodec, images: np.ndarray, batch: int = 64) -> np.ndarray:
    """uint8 ``(N, H, W, C)`` -> the VAE's reconstructions, uint8 ``(N, H, W, C)``."""
    out = [to_uint8(codec.reconstruct(to_tensor(images[s : s + batch]))) for s in range(0, len(images), batch)]
    return np.concatenate(out)


def chain_data(codec: LatentCodec, clean: np.ndarray, trained_on: str = "vae") -> BlockData:
    """Training pairs of the chained AE, whole images: (VAE reconstruction, clean image) for
    ``trained_on="vae"``, (clean image, clean image) for ``"clean"`` (the blur study's)."""
    if trained_on not in TRAINED_ON:
        raise ValueError(f"chain: trained_on must be one of {TRAINED_ON}, got {trained_on!r}")
    source = vae_outputs(codec, clean) if trained_on == "vae" else clean
    return BlockData(degraded=_chw(source), clean=_chw(clean))


def train_chain(
    codec: LatentCodec,
    arch: str,
    train_clean: np.ndarray,
    val_clean: np.ndarray,
    cfg,
    seed: int,
    latent: int = 64,
    progress: bool = True,
    *,
    runtime,
    trained_on: str = "vae",
    **model_options,
):
    """Train ``arch`` (a registered architecture, on whole images: block = the image size)
    to map the VAE's reconstructions of ``train_clean`` (``trained_on="vae"``) or the images
    themselves (``"clean"``, the blur study's) to the images; ``cfg`` is a
    :class:`aerestore.params.TrainParams` (``train.blocks``' epochs, batch size, learning rate, loss, ...)
    and ``runtime`` an :class:`aerestore.params.RuntimeParams` (device, threads).
    Returns ``(model in eval mode, TrainResult)``."""
    from .tracks.blocks.train import fit

    if len(train_clean) == 0:
        raise ValueError("chain: no training images")
    h, w, c = train_clean.shape[1:]
    if h != w:
        raise ValueError(f"chain: whole images must be square, got {h}x{w}")
    torch.manual_seed(seed)
    model = create_model(arch, latent=latent, block=h, channels=c, loss=LossConfig.from_train(cfg), **model_options)
    train = chain_data(codec, train_clean, trained_on)
    val = chain_data(codec, val_clean, trained_on) if len(val_clean) else BlockData(train.degraded[:0], train.clean[:0])
    result = fit(model, train, val, cfg, seed, progress=progress, runtime=runtime)
    return model.eval(), result


@torch.no_grad()
def sharpen(model: torch.nn.Module, images: np.ndarray, batch: int = 64) -> np.ndarray:
    """The sharpening AE on uint8 ``(N, H, W, C)`` images -> uint8 ``(N, H, W, C)``."""
    model.eval()
    out = [to_uint8(model(to_tensor(images[s : s + batch]))) for s in range(0, len(images), batch)]
    return np.concatenate(out)


def chain_passes(model: torch.nn.Module, images: np.ndarray, passes: int = 1, batch: int = 64) -> list[np.ndarray]:
    """``passes`` runs of the chained AE, each on the previous one's uint8 output (the first
    on ``images``) -> one uint8 ``(N, H, W, C)`` stack per pass."""
    if passes < 1:
        raise ValueError(f"chain: passes must be >= 1, got {passes}")
    out = []
    for _ in range(passes):
        images = sharpen(model, images, batch)
        out.append(images)
    return out


def pass_names(passes: int) -> list[str]:
    """The methods :func:`compare` scores for ``passes`` passes: ``chained`` (the first pass)
    and ``chained_pass2`` ... ``chained_pass<passes>``."""
    return ["chained", *(f"chained_pass{k}" for k in range(2, passes + 1))]


def compare(outputs: dict[str, np.ndarray], clean: np.ndarray) -> dict[str, dict[str, float]]:
    """``{method: uint8 images}`` -> ``{method: {metric: mean over the images}}`` for
    :data:`CHAIN_METRICS`, each against ``clean`` (``laplacian_var`` needs no reference;
    the clean images' own value is reported as method ``clean``)."""
    scores: dict[str, dict[str, float]] = {}
    for name, images in outputs.items():
        m = batch_metrics(images, clean)
        m["colour_bias"] = colour_bias(images, clean)
        scores[name] = {k: float(np.nanmean(m[k])) for k in CHAIN_METRICS}
    scores["clean"] = {"laplacian_var": float(np.mean(batch_metrics(clean, clean)["laplacian_var"]))}
    return scores


def chain_grid(vae: np.ndarray, passes: list[np.ndarray], clean: np.ndarray, rows: int = 8) -> np.ndarray:
    """One row per image (the first ``rows``): VAE output | one column per pass of the
    chained AE (:func:`chain_passes`' stacks) | clean image."""
    n = min(rows, len(clean))
    return grid([np.stack([vae[i], *(s[i] for s in passes), clean[i]]) for i in range(n)])
