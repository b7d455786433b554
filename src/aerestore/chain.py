"""VAE -> AE chaining (the blur study): a sharpening autoencoder trained on a VAE's outputs.

A VAE's reconstructions are blurry. The blur study ran them through a second, plain
autoencoder to sharpen them. Here that second model is any registered architecture,
trained by the pipeline's own loop (:func:`aerestore.tracks.blocks.train.fit`) on whole images:

* input: the VAE's reconstruction of a training image (through
  :class:`aerestore.explore.LatentCodec`, the shared decoder, as ``explore`` decodes),
  rounded to uint8 like any image the pipeline stores;
* target: the clean training image.

:func:`compare` scores the VAE's outputs and the chained outputs against the clean test
images with :func:`aerestore.metrics.batch_metrics`: PSNR, SSIM and the blur measures
(``blur_percent``: the full-reference blur of Crete et al., 0 = as sharp as the clean image,
positive = blurrier; ``laplacian_var``: the study's variance of the Laplacian, no reference).
"""

from __future__ import annotations

import numpy as np
import torch

from .tracks.blocks.dataset import BlockData
from .explore import LatentCodec, grid, to_tensor, to_uint8
from .losses import LossConfig
from .metrics import batch_metrics
from .models import create_model

# what compare() reports, per method (means over the test images)
CHAIN_METRICS = ("psnr", "ssim", "blur_percent", "laplacian_var")


def _chw(images: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(np.asarray(images).transpose(0, 3, 1, 2))


def vae_outputs(codec: LatentCodec, images: np.ndarray, batch: int = 64) -> np.ndarray:
    """uint8 ``(N, H, W, C)`` -> the VAE's reconstructions, uint8 ``(N, H, W, C)``."""
    out = [to_uint8(codec.reconstruct(to_tensor(images[s : s + batch]))) for s in range(0, len(images), batch)]
    return np.concatenate(out)


def chain_data(codec: LatentCodec, clean: np.ndarray) -> BlockData:
    """Training pairs of the sharpening AE: (VAE reconstruction, clean image), whole images."""
    return BlockData(degraded=_chw(vae_outputs(codec, clean)), clean=_chw(clean))


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
    **model_options,
):
    """Train ``arch`` (a registered architecture, on whole images: block = the image size)
    to map the VAE's reconstructions of ``train_clean`` to the images; ``cfg`` is a
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
    train = chain_data(codec, train_clean)
    val = chain_data(codec, val_clean) if len(val_clean) else BlockData(train.degraded[:0], train.clean[:0])
    result = fit(model, train, val, cfg, seed, progress=progress, runtime=runtime)
    return model.eval(), result


@torch.no_grad()
def sharpen(model: torch.nn.Module, images: np.ndarray, batch: int = 64) -> np.ndarray:
    """The sharpening AE on uint8 ``(N, H, W, C)`` images -> uint8 ``(N, H, W, C)``."""
    model.eval()
    out = [to_uint8(model(to_tensor(images[s : s + batch]))) for s in range(0, len(images), batch)]
    return np.concatenate(out)


def compare(outputs: dict[str, np.ndarray], clean: np.ndarray) -> dict[str, dict[str, float]]:
    """``{method: uint8 images}`` -> ``{method: {metric: mean over the images}}`` for
    :data:`CHAIN_METRICS`, each against ``clean`` (``laplacian_var`` needs no reference;
    the clean images' own value is reported as method ``clean``)."""
    scores: dict[str, dict[str, float]] = {}
    for name, images in outputs.items():
        m = batch_metrics(images, clean)
        scores[name] = {k: float(np.nanmean(m[k])) for k in CHAIN_METRICS}
    scores["clean"] = {"laplacian_var": float(np.mean(batch_metrics(clean, clean)["laplacian_var"]))}
    return scores


def chain_images(codec: LatentCodec, model: torch.nn.Module, clean: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The VAE's outputs and the chained (VAE -> AE) outputs of uint8 ``clean`` images."""
    vae = vae_outputs(codec, clean)
    return vae, sharpen(model, vae)


def chain_grid(vae: np.ndarray, chained: np.ndarray, clean: np.ndarray, rows: int = 8) -> np.ndarray:
    """One row per image (the first ``rows``): VAE output | VAE -> AE output | clean image."""
    n = min(rows, len(clean))
    return grid([np.stack([vae[i], chained[i], clean[i]]) for i in range(n)])
