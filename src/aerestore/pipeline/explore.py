"""``explore@<arch>``: the latent space of a trained model: interpolation, arithmetic,
samples, (``explore.chain``) a sharpening AE chained after it and (``explore.attributes``)
attribute directions (:func:`run_explore`).

Writes the grids (PNG; DVC plots, logged to MLflow) to ``metrics/explore/<arch>/`` and the
metrics to ``metrics/explore/<arch>.json``. Only for the names in ``explore.architectures``.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..attributes import prepared_origins
from ..explore import explore_images, pick
from ..io import atomic_dir, write_json
from ..models import read_model
from ..stage import StageError, record_machine, seed_everything, set_threads
from ..tracking import stage_run


@dataclass(frozen=True)
class ExplorePaths:
    model: Path  # models/<arch>/model.pt
    prepared: Path  # data/prepared
    raw: Path  # data/raw: origins.csv and manifest.csv, the training images' file names (explore.attributes)
    plots: Path  # out: metrics/explore/<arch> (a folder of PNG grids)
    metrics: Path  # out: metrics/explore/<arch>.json


def _write_png(path: Path, image: np.ndarray) -> None:
    from PIL import Image

    Image.fromarray(image).save(path, format="PNG", optimize=True)


def run_chain(params, model, overlap, clean, train, prepared):
    """VAE -> AE (``explore.chain``): train the chained AE on the model's reconstructions of
    ``train`` (``explore.chain_trained_on: vae``) or on ``train`` itself (``clean``), score the
    model alone and each of ``explore.chain_passes`` passes of the chain on the test images;
    -> (grid, metrics)."""
    from ..chain import chain_grid, chain_passes, compare, pass_names, train_chain, vae_outputs
    from ..explore import LatentCodec

    ep = params.explore
    # no damage or n-cut head: there are no masks or clusters to train them on here
    cfg = params.train_for(ep.chain)
    cfg = cfg.model_copy(update={"blocks": cfg.blocks.model_copy(update={"epochs": ep.chain_epochs}),
                                 "loss": cfg.loss.model_copy(update={"damage_weight": 0.0, "ncut_weight": 0.0})})
    val = np.load(prepared / "val" / "clean.npy", mmap_mode="r")
    val = np.ascontiguousarray(val[pick(len(val), ep.max_train_images, params.seed)]) if len(val) else val[:0]
    codec = LatentCodec(model, overlap=overlap)
    ae, result = train_chain(codec, ep.chain, train, val, cfg, params.seed, latent=params.latent_for(ep.chain),
                             runtime=params.runtime, trained_on=ep.chain_trained_on,
                             **params.arch_params(ep.chain).model)
    vae_out = vae_outputs(codec, clean)
    passes = chain_passes(ae, vae_out, ep.chain_passes)
    names = pass_names(ep.chain_passes)
    scores = compare({"model": vae_out, **dict(zip(names, passes))}, clean)
    metrics = {"arch": ep.chain, "trained_on": ep.chain_trained_on, "passes": ep.chain_passes,
               "train_images": len(train), "epochs_run": result.epochs_run,
               "best_epoch": result.best_epoch, "train_seconds": round(result.seconds, 1), **scores}
    for name in names:
        print(f"explore chain {ep.chain} ({name}): PSNR {scores['model']['psnr']:.2f} -> {scores[name]['psnr']:.2f} dB, "
              f"blur % {scores['model']['blur_percent']:.1f} -> {scores[name]['blur_percent']:.1f}, colour bias "
              f"{scores['model']['colour_bias']:.2f} -> {scores[name]['colour_bias']:.2f} /255", file=sys.stderr)
    return chain_grid(vae_out, passes, clean, rows=2 * ep.pairs), metrics


def run_attributes(params, model, overlap, clean, train, train_files):
    """Attribute directions (``explore.attributes``) from the training images' labels; one
    grid per attribute on ``explore.pairs`` test images -> (grids, metrics)."""
    from ..attributes import attribute_grid, directions, read_attributes
    from ..explore import LatentCodec, to_tensor

    ep = params.explore
    labels = read_attributes(ep.attributes_file).labels(train_files, ep.attributes)
    codec = LatentCodec(model, overlap=overlap)
    dirs = directions(codec, to_tensor(train), labels)
    shown = to_tensor(clean[pick(len(clean), ep.pairs, params.seed + 2)])
    grids, metrics = {}, {"scales": ep.attribute_scales}
    for k, name in enumerate(ep.attributes):
        grids[f"attribute_{name}"] = attribute_grid(codec, shown, dirs[k], ep.attribute_scales)
        metrics[name] = {"with": int(labels[:, k].sum()), "without": int((~labels[:, k]).sum()),
                         "direction_norm": float(dirs[k].norm())}
    return grids, metrics


def run_explore(params, arch: str, paths: ExplorePaths) -> None:
    """Explore ``arch``'s latent space; write the grids to ``paths.plots`` and the metrics."""
    ep = params.explore
    if arch not in ep.architectures:
        raise StageError(f"{arch!r} is not in explore.architectures {ep.architectures} (params.yaml)")
    if arch not in params.architectures:
        raise StageError(f"explore.architectures lists {arch!r}, which the pipeline does not train: "
                         f"add it to architectures {params.architectures} (params.yaml)")
    set_threads(params.runtime.threads)
    seed_everything(params.seed)
    saved = read_model(paths.model)
    model, overlap = saved.model, saved.geometry.overlap
    prepared = paths.prepared
    clean = np.load(prepared / "test" / "clean.npy")
    degraded = np.load(prepared / "test" / "degraded.npy")
    train_all = np.load(prepared / "train" / "clean.npy", mmap_mode="r")
    train_idx = pick(len(train_all), ep.max_train_images, params.seed)
    train = np.ascontiguousarray(train_all[train_idx])
    if clean.shape[-1] != model.channels:
        raise StageError(f"{paths.model.parent} takes {model.channels} channel(s), the prepared data has {clean.shape[-1]}")

    with stage_run(f"explore@{arch}", params, arch=arch) as mlrun:
        grids, metrics = explore_images(
            model, overlap, clean, degraded, train, pairs=ep.pairs, steps=ep.steps,
            interpolation=ep.interpolation, samples=ep.samples, seed=params.seed,
        )
        metrics = {"arch": arch, "block": int(model.block), "overlap": overlap, **metrics}
        if ep.chain:
            grids["chain"], metrics["chain"] = run_chain(params, model, overlap, clean, train, prepared)
        if ep.attributes:
            origins = prepared_origins(paths.raw, "train", len(train_all))
            attribute_grids, metrics["attributes"] = run_attributes(
                params, model, overlap, clean, train, [origins[i] for i in train_idx])
            grids.update(attribute_grids)
        out = paths.plots
        with atomic_dir(out) as tmp:
            for name, image in grids.items():
                _write_png(Path(tmp) / f"{name}.png", image)
        write_json(paths.metrics, metrics)
        mlrun.log_metrics({k: v for k, v in metrics.items() if k not in ("arch", "interpolation")})
        mlrun.log_artifact(out, "explore")
        mlrun.log_artifact(paths.metrics, "explore")
        record_machine(f"explore_{arch}", mlrun)  # the chained AE trains: its floats depend on it
        print(f"explore@{arch}: {', '.join(sorted(grids))} in {out}; midpoints' nearest-train MSE "
              f"{metrics['plausibility_clean']['midpoints_mse']:.4f} vs endpoints' "
              f"{metrics['plausibility_clean']['endpoints_mse']:.4f}", file=sys.stderr)
