"""Real photos the networks never saw: degraded with the default task's damage, restored by a
trained restorer and by the classical ones, scored, and drawn side by side.

    python benchmarks/real_photos.py PHOTO [PHOTO ...] [--model models/unet_ae] [--size 128]
        [--classical nlmeans_map bm3d_map tv] [--seed 0] [--out docs/restore/faces.jpg]
        [--settings metrics/evaluate_details.json] [--oracle] [--self-ensemble]

Each photo is centre-cropped to a square, resized to ``--size`` px (area), degraded by
``prepare.degrade`` of ``params.yaml`` (seeded per photo), restored by ``--model`` (as
``aerestore restore`` restores: whole image, per-cluster decoders, its default runtime) and
by each classical restorer (by default the rows a user would pick: NL-means and BM3D at the
estimated noise map and TV, as the evaluate table's fair anchors; noise level estimated per
image, or a noise map for the ``*_map`` rows; a row whose package is missing is named and
skipped; ``--settings``: the settings the evaluate stage chose on the validation split, read from
its ``evaluate_details.json``, by default the pipeline's ``metrics/evaluate_details.json``
where it exists, else the restorers' defaults) and, with ``--oracle``, by the upper bound
told the true damage (``classical.oracle_restore``, not a competitor); with ``--self-ensemble``
also the model as ``aerestore restore --self-ensemble`` restores (row ``model x8``). Prints PSNR per photo and the
means (whole image, inside the blurred regions) and writes one row per photo: degraded |
the classical restorers | the model | clean.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
# the settings the pipeline's evaluate stage chose on the validation split
DEFAULT_SETTINGS = ROOT / "metrics" / "evaluate_details.json"
sys.path.insert(0, str(ROOT / "src"))

from aerestore.classical import RESTORERS, oracle_restore  # noqa: E402
from aerestore.cli.selfensemble import restore_self_ensemble  # noqa: E402
from aerestore.data.degrade import degrade_image  # noqa: E402
from aerestore.params import load_params  # noqa: E402
from aerestore.restore import Restorer  # noqa: E402


def square(path: Path, size: int) -> np.ndarray:
    img = Image.open(path).convert("RGB")
    side = min(img.size)
    left, top = (img.width - side) // 2, (img.height - side) // 2
    return np.asarray(img.crop((left, top, left + side, top + side)).resize((size, size), Image.BOX))


def psnr(a: np.ndarray, b: np.ndarray, where: np.ndarray | None = None) -> float:
    d = (a.astype(np.float64) - b.astype(np.float64)) / 255.0
    se = (d**2).mean(-1)
    mse = se.mean() if where is None else se[where].mean()
    return float(10 * np.log10(1.0 / max(mse, 1e-12)))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("photos", nargs="+", type=Path)
    ap.add_argument("--model", type=Path, default=ROOT / "models" / "unet_ae")
    ap.add_argument("--size", type=int, default=128)
    # the fair anchors by default: at one noise level per image NL-means and BM3D leave the
    # locally noisy regions as they are (the old default, and a strawman beside the network)
    ap.add_argument("--classical", nargs="+", default=["nlmeans_map", "bm3d_map", "tv"],
                    choices=sorted(RESTORERS), metavar="NAME", help="classical rows, of: " + ", ".join(sorted(RESTORERS)))
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=None, help="the picture (JPEG or PNG); none by default")
    ap.add_argument("--settings", type=Path, default=None,
                    help="evaluate_details.json whose classical_settings (chosen on validation) to use; "
                         "default: the pipeline's metrics/evaluate_details.json where it exists")
    ap.add_argument("--oracle", action="store_true", help="add the oracle row (told the true damage; an upper bound)")
    ap.add_argument("--self-ensemble", action="store_true",
                    help="add the row 'model x8': the mean of the model's 8 orientations (aerestore restore --self-ensemble)")
    args = ap.parse_args()
    names = []
    for n in args.classical:
        why = RESTORERS[n].missing()
        if why is None:
            names.append(n)
        else:
            print(f"skipped {n}: {why}")
    restorers = {n: RESTORERS[n] for n in names}
    if args.settings is None and DEFAULT_SETTINGS.is_file():
        args.settings = DEFAULT_SETTINGS
    if args.settings is not None:
        print("settings from", args.settings)
        try:
            chosen = json.loads(args.settings.read_text()).get("classical_settings", {})
        except (OSError, ValueError, AttributeError) as e:
            raise SystemExit(f"--settings {args.settings}: not an evaluate_details.json ({e})") from e
        restorers = {n: r.with_settings(**{k: v for k, v in chosen.get(n, {}).items() if k in r.tunable})
                     for n, r in restorers.items()}
        print("settings:", {n: r.tunable for n, r in restorers.items() if r.tunable})
    # as the evaluate stage picks it: BM3D whenever the package is there, whichever rows were asked
    # for (keying on the "bm3d" row gave an NL-means oracle beside "--classical bm3d_map")
    oracle_denoiser = "bm3d" if RESTORERS["bm3d"].missing() is None else "nlmeans"
    if args.oracle:
        names.append("oracle")
        print("oracle denoiser:", oracle_denoiser)
    restorer = Restorer.load(args.model, routing="soft")
    ops = load_params(ROOT / "params.yaml").prepare.degrade
    models = ["model", "model x8"] if args.self_ensemble else ["model"]
    rows, scores = [], {k: [] for k in ["degraded", *names, *models]}
    blur_scores = {k: [] for k in scores}
    for i, path in enumerate(args.photos):
        clean = square(path, args.size)
        degraded, mask = degrade_image(clean, ops, np.random.default_rng([args.seed, i]))
        outs = {"degraded": degraded}
        x = degraded.astype(np.float64) / 255.0
        for n in names:
            y = oracle_restore(x, clean / 255.0, mask, oracle_denoiser)[0] \
                if n == "oracle" else restorers[n](x)
            outs[n] = np.clip(np.rint(y * 255), 0, 255).astype(np.uint8)
        outs["model"] = restorer.restore(degraded)
        if args.self_ensemble:
            outs["model x8"] = restore_self_ensemble(restorer, degraded)
        blur = mask[..., 0] > 127
        for k, img in outs.items():
            scores[k].append(psnr(img, clean))
            if blur.any():
                blur_scores[k].append(psnr(img, clean, blur))
        print(f"{path.name}: " + "  ".join(f"{k} {scores[k][-1]:.2f}" for k in outs), flush=True)
        rows.append(np.concatenate([*outs.values(), clean], axis=1))
    print("\nmean PSNR (dB), whole / inside the blur, over", len(args.photos), "photos:")
    for k in scores:
        b = f"{np.mean(blur_scores[k]):.2f}" if blur_scores[k] else "-"
        wins = "" if k == "model" else f"   model wins on {sum(m > v for m, v in zip(scores['model'], scores[k]))}/{len(scores[k])}"
        print(f"  {k:10s} {np.mean(scores[k]):6.2f} / {b}{wins}")
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.concatenate(rows, axis=0)).save(args.out, quality=92)
        print(f"wrote {args.out}: rows of degraded | {' | '.join(names)} | {' | '.join(models)} | clean")


if __name__ == "__main__":
    main()
