"""explore@<arch>: the latent space of a trained model: interpolation, arithmetic, samples.

Writes metrics/explore/<arch>/*.png (DVC plots; logged to MLflow) and
metrics/explore/<arch>.json. Only for the names in ``explore.architectures``.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))  # this checkout's code, also in DVC temp dirs

import numpy as np  # noqa: E402

from aerestore.explore import explore_images, pick  # noqa: E402
from aerestore.io import atomic_dir, write_json  # noqa: E402
from aerestore.models import load_model  # noqa: E402
from aerestore.stage import StageError, main, seed_everything, set_threads  # noqa: E402
from aerestore.tracking import stage_run  # noqa: E402


def _write_png(path: Path, image: np.ndarray) -> None:
    from PIL import Image

    Image.fromarray(image).save(path, format="PNG", optimize=True)


def run(params, args):
    ep = params.explore
    if len(args) != 1:
        raise StageError(f"usage: python stages/explore.py ARCH (one of explore.architectures {ep.architectures})")
    arch = args[0]
    if arch not in ep.architectures:
        raise StageError(f"{arch!r} is not in explore.architectures {ep.architectures} (params.yaml)")
    if arch not in params.architectures:
        raise StageError(f"explore.architectures lists {arch!r}, which the pipeline does not train: "
                         f"add it to architectures {params.architectures} (params.yaml)")
    set_threads(params.train_for(arch).threads)
    seed_everything(params.seed)
    model, extra = load_model(Path(f"models/{arch}/model.pt"))
    overlap = int((extra or {}).get("overlap", 0))
    prepared = Path("data/prepared")
    clean = np.load(prepared / "test" / "clean.npy")
    degraded = np.load(prepared / "test" / "degraded.npy")
    train = np.load(prepared / "train" / "clean.npy", mmap_mode="r")
    train = np.ascontiguousarray(train[pick(len(train), ep.max_train_images, params.seed)])
    if clean.shape[-1] != model.channels:
        raise StageError(f"models/{arch} takes {model.channels} channel(s), the prepared data has {clean.shape[-1]}")

    with stage_run(f"explore@{arch}", params, arch=arch) as mlrun:
        grids, metrics = explore_images(
            model, overlap, clean, degraded, train, pairs=ep.pairs, steps=ep.steps,
            interpolation=ep.interpolation, samples=ep.samples, seed=params.seed,
        )
        metrics = {"arch": arch, "block": int(model.block), "overlap": overlap, **metrics}
        out = Path(f"metrics/explore/{arch}")
        with atomic_dir(out) as tmp:
            for name, image in grids.items():
                _write_png(Path(tmp) / f"{name}.png", image)
        write_json(Path(f"metrics/explore/{arch}.json"), metrics)
        mlrun.log_metrics({k: v for k, v in metrics.items() if k not in ("arch", "interpolation")})
        mlrun.log_artifact(out, "explore")
        mlrun.log_artifact(Path(f"metrics/explore/{arch}.json"), "explore")
        print(f"explore@{arch}: {', '.join(sorted(grids))} in {out}; midpoints' nearest-train MSE "
              f"{metrics['plausibility_clean']['midpoints_mse']:.4f} vs endpoints' "
              f"{metrics['plausibility_clean']['endpoints_mse']:.4f}", file=sys.stderr)


if __name__ == "__main__":
    main("explore", run)
