"""The generative side: ``interpolate``, ``sample``, ``colourise``, ``latent-sizes``."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from aerestore.cli.common import IMAGE_SUFFIX, CliError, load_any_restorer, write_png

if TYPE_CHECKING:
    from aerestore.restore import Restorer


# ------------------------------------------------------- the generative side
def _model_image(restorer: "Restorer", path: str, size: int) -> np.ndarray:
    """A user's image as the model takes it: read (checked as `restore` checks it),
    converted to the model's channels, centre-cropped and resized to ``size``."""
    from aerestore.data.images import read_image
    from aerestore.explore import fit_image

    image = restorer.to_model_channels(read_image(path))
    if min(image.shape[:2]) < 2:
        raise ValueError(f"{path}: image of {image.shape[1]}x{image.shape[0]} px is too small")
    return fit_image(image, size)


def _check_out_file(out: Path, inputs: list[str]) -> None:
    if out.suffix.lower() != IMAGE_SUFFIX:
        raise CliError(f"--out {out}: the grid is written as PNG; give a .png name")
    if out.is_dir():
        raise CliError(f"--out {out}: is a folder; give a .png file name")
    for name in inputs:
        if Path(name).exists() and out.resolve() == Path(name).resolve():
            raise CliError(f"--out {out} would overwrite the input {name}; choose another name")


def add_interpolate(sub: Any) -> None:
    p = sub.add_parser(
        "interpolate",
        help="decode the latent path between two images (a grid PNG)",
        description="Encode IMAGE_A and IMAGE_B (centre-cropped and resized to --size), "
        "interpolate their latent codes in N steps (spherical for VAEs, linear otherwise, "
        "or --method) and write one row: A, the N decoded frames (the first is A's "
        "reconstruction, the last B's), B. A block model interpolates block by block.",
    )
    p.add_argument("image_a", metavar="IMAGE_A")
    p.add_argument("image_b", metavar="IMAGE_B")
    p.add_argument("--model", "-m", required=True,
                   help="models/<arch>, an MLflow model folder, or models:/ or runs:/ URI")
    p.add_argument("-n", "--steps", type=int, default=8, help="frames, endpoints included (default 8)")
    p.add_argument("--out", "-o", required=True, type=Path, metavar="GRID.png")
    p.add_argument("--method", choices=("auto", "linear", "spherical"), default="auto",
                   help="auto (default): spherical for VAEs, linear otherwise")
    p.add_argument("--size", type=int, default=None,
                   help="side the images are resized to (default: the image size the model was "
                        "trained on, saved in model.pt; for files saved before it was recorded, the "
                        "model's block: give e.g. --size 64 for such an 18 px block model)")
    p.set_defaults(func=cmd_interpolate)


def cmd_interpolate(args: argparse.Namespace) -> int:
    from aerestore import explore as X

    if args.steps < 2:
        raise CliError(f"-n {args.steps}: at least 2 frames (the two endpoints)")
    _check_out_file(args.out, [args.image_a, args.image_b])
    restorer = load_any_restorer(args.model)
    codec = X.LatentCodec(restorer.model, overlap=restorer.overlap)
    size = args.size or restorer.image_size or restorer.block
    if size < restorer.block:
        raise CliError(f"--size {size}: smaller than the model's {restorer.block} px block")
    a = X.to_tensor(_model_image(restorer, args.image_a, size)[None])
    b = X.to_tensor(_model_image(restorer, args.image_b, size)[None])
    frames = X.interpolate(codec, a, b, args.steps, args.method)
    row = np.concatenate([X.to_uint8(a), X.to_uint8(frames[0]), X.to_uint8(b)])
    write_png(args.out, X.grid([row]))
    print(f"wrote {args.out}: {args.image_a}, {args.steps} frames "
          f"({X.resolve_method(restorer.model, args.method)}), {args.image_b} at {size} px", file=sys.stderr)
    return 0


def add_sample(sub: Any) -> None:
    p = sub.add_parser(
        "sample",
        help="decode codes drawn from a VAE's prior N(0, I) (a grid PNG)",
        description="Draw N codes from N(0, I) with --seed (the same seed gives the same "
        "images) and write their decodes as a grid. VAEs only. A whole-image VAE gives new "
        "images; a block VAE gives blocks.",
    )
    p.add_argument("--model", "-m", required=True,
                   help="models/<arch>, an MLflow model folder, or models:/ or runs:/ URI")
    p.add_argument("-n", type=int, default=16, help="images (default 16)")
    p.add_argument("--out", "-o", required=True, type=Path, metavar="SAMPLES.png")
    p.add_argument("--seed", type=int, default=0, help="seed of the draws (default 0)")
    p.add_argument("--per-row", type=int, default=8, help="images per grid row (default 8)")
    p.set_defaults(func=cmd_sample)


def cmd_sample(args: argparse.Namespace) -> int:
    from aerestore import explore as X

    if args.n < 1 or args.per_row < 1:
        raise CliError("-n and --per-row must be >= 1")
    _check_out_file(args.out, [])
    restorer = load_any_restorer(args.model)
    drawn = X.to_uint8(X.sample(restorer.model, args.n, args.seed))
    write_png(args.out, X.grid([drawn[s : s + args.per_row] for s in range(0, args.n, args.per_row)]))
    print(f"wrote {args.out}: {args.n} samples of {drawn.shape[2]}x{drawn.shape[1]} px, seed {args.seed}",
          file=sys.stderr)
    return 0


def add_colourise(sub: Any) -> None:
    p = sub.add_parser(
        "colourise",
        aliases=["colorize"],
        help="colour grey (or colour) images with a model trained on the colourisation preset",
        description="Convert each IMAGE to grey (BT.601 luma, as the grayscale degradation "
        "the model was trained on), restore it with the model and write OUT_DIR/<name>.png. "
        "Unreadable files are reported and skipped; the exit code is 1 if any image failed.",
    )
    p.add_argument("images", nargs="+", metavar="IMAGE")
    p.add_argument("--model", "-m", required=True,
                   help="models/<arch> of a colourisation run, an MLflow model folder, or a URI")
    p.add_argument("--out", "-o", required=True, type=Path, metavar="OUT_DIR")
    p.add_argument("--mode", choices=("multi", "single", "base"), default="multi")
    p.set_defaults(func=cmd_colourise)


def cmd_colourise(args: argparse.Namespace) -> int:
    from aerestore.colour import colourfulness, to_grey
    from aerestore.data.images import read_image

    restorer = load_any_restorer(args.model)
    if restorer.channels != 3:
        raise CliError(f"--model {args.model}: takes {restorer.channels} channel(s); colourisation needs RGB")
    out_dir: Path = args.out
    out_dir.mkdir(parents=True, exist_ok=True)
    failed: list[str] = []
    claimed: dict[Path, str] = {}
    for name in args.images:
        src = Path(name)
        dst = out_dir / (src.stem + IMAGE_SUFFIX)
        try:
            key = dst.resolve()
            if key in claimed:
                raise ValueError(f"{dst} is also the output of {claimed[key]}; rename one of them")
            if src.exists() and key == src.resolve():
                raise ValueError(f"{dst} would overwrite the input; choose another --out")
            grey = to_grey(restorer.to_model_channels(read_image(src)))
            coloured = restorer.restore(grey, mode=args.mode)
            write_png(dst, coloured)
            claimed[key] = name
            print(f"{dst}: colourfulness {colourfulness(coloured):.1f} (grey input 0)", file=sys.stderr)
        except (OSError, ValueError) as exc:
            failed.append(name)
            message = str(exc) if str(src) in str(exc) else f"{src}: {exc}"
            print(f"aerestore colourise: skipped {message}", file=sys.stderr)
    print(f"colourised {len(args.images) - len(failed)} of {len(args.images)} image(s) into {out_dir}",
          file=sys.stderr)
    return 1 if failed else 0


def add_latent_sizes(sub: Any) -> None:
    p = sub.add_parser(
        "latent-sizes",
        help="compare latent sizes from DVC experiments' explore outputs (a PNG and a table)",
        description="For each EXPERIMENT (a DVC experiment name or git revision of --repo; "
        "default: every finished experiment of HEAD), read metrics/explore/<arch>.json and "
        "metrics/explore/<arch>/interpolation.png and write OUT.png (rows: the same test "
        "images; columns: the test image, then each experiment's reconstruction of it, or the "
        "interpolation's mid-point with --frame midpoint, by latent size) and OUT.md (a table "
        "of the plausibility and colourfulness metrics per latent size).",
    )
    p.add_argument("experiments", nargs="*", metavar="EXPERIMENT")
    p.add_argument("--arch", required=True, help="the explored architecture, e.g. vae_lfw")
    p.add_argument("--repo", default=".", help="the DVC repository of the experiments (default: .)")
    p.add_argument("--frame", choices=("reconstruction", "midpoint"), default="reconstruction")
    p.add_argument("--out", "-o", type=Path, default=Path("metrics/latent_sizes.png"), metavar="OUT.png",
                   help="the figure (default metrics/latent_sizes.png); the table goes beside it as .md")
    p.set_defaults(func=cmd_latent_sizes)


def cmd_latent_sizes(args: argparse.Namespace) -> int:
    from aerestore.studies import latent_sizes as LS
    from aerestore.studies.seeds import baseline_experiments

    _check_out_file(args.out, [])
    names = list(args.experiments) or baseline_experiments(args.repo)
    if not names:
        raise CliError("no EXPERIMENT given and HEAD has no finished experiment "
                       "(dvc exp run --queue -S 'arch.vae_lfw.latent=16,128,512' ... && dvc queue start -j 1)")
    runs = [LS.load_run(name, args.arch, args.repo) for name in names]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    write_png(args.out, LS.figure(runs, args.frame))
    table = LS.markdown(runs)
    args.out.with_suffix(".md").write_text(table)
    print(table, end="")
    print(f"wrote {args.out} and {args.out.with_suffix('.md')}", file=sys.stderr)
    return 0

