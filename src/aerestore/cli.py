"""The ``aerestore`` command::

    aerestore restore photo.jpg scans/*.png --model models:/aerestore-conv_ae/latest -o restored/
    aerestore init-store          # create/migrate mlflow.db and the experiment (before parallel stages)
    aerestore ui                  # print the `mlflow ui` command for this repository's store
    aerestore to-json IMAGE       # input.json for `mlflow models predict`
    aerestore from-json OUT.json  # its predictions back to a PNG
    aerestore seeds --all -o metrics/seeds.md  # per-cluster vs control over the seeds' experiments
    aerestore interpolate A.jpg B.jpg --model models/vae_lfw -n 8 -o grid.png
    aerestore sample --model models/vae_lfw -n 16 -o samples.png --seed 0
    aerestore colourise grey.jpg --model models/conv_ae -o coloured/
    aerestore report --claims 3,7 --seeds 3  # re-test the studies' claims: reports/claims.md
    aerestore preset lfw-denoise --run     # a study's setting as one DVC experiment
    aerestore team-users --users deploy/team-users.example.yaml  # the team MLflow server's users
    aerestore cbsd68 /data/CBSD68 --model models/unet_ae --classical bm3d --anchor-images 8

Each subcommand is a pair: ``_add_<name>(subparsers)`` declares its arguments and sets
``func``, the function that runs it and returns the exit code. Adding one is a new
pair and a line in :data:`SUBCOMMANDS`.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

import numpy as np

if TYPE_CHECKING:
    from aerestore.restore import Restorer

IMAGE_SUFFIX = ".png"


class CliError(Exception):
    """A problem with the command's arguments; printed as one line, exit code 2."""


# ------------------------------------------------------------------------- images
def read_image(path: str | Path, max_pixels: int | None = None) -> np.ndarray:
    """A user's image as uint8 (H, W) or (H, W, 3|4): :func:`aerestore.data.images.read_image`
    (which names the file and why it cannot be used)."""
    from aerestore.data.images import READ_MAX_PIXELS
    from aerestore.data.images import read_image as read

    return read(path, READ_MAX_PIXELS if max_pixels is None else max_pixels)


def write_png(path: str | Path, image: np.ndarray) -> None:
    """Write uint8 (H, W[, 1|3|4]) as PNG atomically (temp file, then rename)."""
    from PIL import Image

    from aerestore.io import atomic_path

    arr = np.asarray(image)
    if arr.ndim == 3 and arr.shape[2] == 1:
        arr = arr[:, :, 0]
    with atomic_path(path) as tmp:
        Image.fromarray(np.ascontiguousarray(arr)).save(tmp, format="PNG")


# ------------------------------------------------------------------------- models
def _is_uri(model: str) -> bool:
    return "://" in model or model.startswith(("models:/", "runs:/"))


def load_any_restorer(model: str, routing: str | None = None) -> "Restorer":
    """A restorer from a registry URI (``models:/aerestore-conv_ae/latest``), a run
    URI, an MLflow model folder (holding ``MLmodel``) or a ``models/<arch>`` folder."""
    from aerestore.restore import Restorer

    if _is_uri(model):
        import mlflow
        from mlflow.exceptions import MlflowException

        from aerestore.mlflow_model import load_restorer
        from aerestore.tracking import tracking_uri

        mlflow.set_tracking_uri(tracking_uri())
        try:
            return load_restorer(model, routing=routing)
        except MlflowException as exc:
            raise CliError(f"--model {model}: {exc.message} (tracking URI {tracking_uri()})") from None
    folder = Path(model)
    if (folder / "MLmodel").is_file():
        from aerestore.mlflow_model import load_restorer

        return load_restorer(str(folder.resolve()), routing=routing)
    if (folder / "model.pt").is_file():
        return Restorer.load(folder, routing=routing)
    raise CliError(
        f"--model {model}: not a models:/ or runs:/ URI, nor a folder holding model.pt "
        "(models/<arch>) or MLmodel"
    )


# ------------------------------------------------------------------------ restore
def _add_restore(sub: Any) -> None:
    p = sub.add_parser(
        "restore",
        help="restore images of any size with a trained restorer",
        description="Restore each IMAGE and write OUT_DIR/<name>.png. A file that is not a usable "
        "still image (empty, not an image, truncated, corrupt, larger than --max-pixels, animated) is "
        "named with its reason and skipped, the others are restored; the exit code is 1 if any was skipped.",
    )
    p.add_argument("images", nargs="+", metavar="IMAGE", help="image files (PNG, JPEG, ...)")
    p.add_argument("--model", "-m", required=True,
                   help="models:/aerestore-<arch>/latest (needs the MLflow store), runs:/..., "
                        "or a folder: models/<arch> or an MLflow model folder")
    p.add_argument("--out", "-o", required=True, type=Path, metavar="OUT_DIR",
                   help="output folder (created if missing)")
    p.add_argument("--mode", choices=("multi", "single", "base"), default="multi",
                   help="multi: each block through its cluster's decoder (default); "
                        "single: the control decoder; base: the shared decoder")
    p.add_argument("--routing", choices=("hard", "soft"), default=None,
                   help="hard: nearest centroid; soft: decoders mixed by responsibilities "
                        "(default: what the model was saved with)")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto",
                   help="where the networks run (auto: CUDA when present)")
    p.add_argument("--amp", choices=("fp32", "bf16"), default="fp32",
                   help="bf16: bfloat16 autocast (mixed precision; for GPUs)")
    p.add_argument("--runtime", choices=("auto", "torch", "openvino"), default=None,
                   help="unet_ae on the CPU: openvino (compiled, ~1.7x faster, the same output to 1e-6), "
                        "torch, or auto (OpenVINO where it applies; default: $AERESTORE_RUNTIME, else auto)")
    p.add_argument("--max-pixels", type=int, default=None, metavar="N",
                   help="refuse larger images, from their header, before decoding (default: Pillow's "
                        "decompression-bomb limit, 89,478,485)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_restore)


def cmd_restore(args: argparse.Namespace) -> int:
    import torch
    from tqdm import tqdm

    from aerestore.models.device import resolve_device

    if args.max_pixels is not None and args.max_pixels < 1:
        raise CliError(f"--max-pixels must be >= 1, got {args.max_pixels}")
    restorer = load_any_restorer(args.model, routing=args.routing)
    restorer.to(resolve_device(args.device), args.amp)
    if args.runtime is not None:
        restorer.runtime = args.runtime
    try:
        restorer.runtime_for(args.mode)  # an impossible --runtime is an error before any image
    except ValueError as exc:
        raise CliError(str(exc)) from None
    out_dir: Path = args.out
    out_dir.mkdir(parents=True, exist_ok=True)
    failed: list[str] = []
    claimed: dict[Path, str] = {}
    bar = tqdm(args.images, desc="restoring", unit="image", file=sys.stderr,
               disable=args.no_progress)
    for name in bar:
        src = Path(name)
        dst = out_dir / (src.stem + IMAGE_SUFFIX)
        try:
            key = dst.resolve()
            if key in claimed:
                raise ValueError(f"{dst} is also the output of {claimed[key]}; rename one of them")
            if src.exists() and key == src.resolve():
                raise ValueError(f"{dst} would overwrite the input; choose another --out")
            image = read_image(src, args.max_pixels)
            write_png(dst, restorer.restore(image, mode=args.mode))
            claimed[key] = name
        except (OSError, ValueError, MemoryError, torch.OutOfMemoryError) as exc:
            failed.append(name)
            if isinstance(exc, (MemoryError, torch.OutOfMemoryError)):
                exc = MemoryError("out of memory (a lower --max-pixels refuses such images from their header)")
            message = str(exc) if str(src) in str(exc) else f"{src}: {exc}"
            tqdm.write(f"aerestore restore: skipped {message}", file=sys.stderr)
    bar.close()
    done = len(args.images) - len(failed)
    print(f"restored {done} of {len(args.images)} image(s) into {out_dir}", file=sys.stderr)
    if failed:
        print(f"failed: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


# --------------------------------------------------------------------- init-store
def _add_init_store(sub: Any) -> None:
    p = sub.add_parser(
        "init-store",
        help="create or migrate the MLflow store and the experiment",
        description="Create (or migrate) the MLflow database and the experiment. Run once "
        "before stages that may run in parallel; safe to run again.",
    )
    p.add_argument("--experiment", default=None,
                   help="experiment name (default: mlflow.experiment of params.yaml, or 'aerestore')")
    p.add_argument("--params", default="params.yaml", help="params file (default: params.yaml)")
    p.set_defaults(func=cmd_init_store)


def _experiment_name(given: str | None, params_file: str) -> str:
    """``given``, else ``mlflow.experiment`` of the params file, else the default."""
    from aerestore.tracking import DEFAULT_EXPERIMENT

    if given is not None:
        return given
    if Path(params_file).is_file():
        from aerestore.params import load_params

        return load_params(params_file).mlflow.experiment
    return DEFAULT_EXPERIMENT


def cmd_init_store(args: argparse.Namespace) -> int:
    from aerestore.tracking import artifact_location, init_store, tracking_uri

    experiment = _experiment_name(args.experiment, args.params)
    experiment_id = init_store(experiment)
    print(f"tracking URI: {tracking_uri()}")
    print(f"experiment:   {experiment} (id {experiment_id})")
    print(f"artifacts:    {artifact_location()}")
    return 0


# ----------------------------------------------------------------------------- ui
def ui_command(port: int = 5000, host: str = "127.0.0.1") -> list[str]:
    """``mlflow ui`` on this repository's store (runs keep their own artifact URIs)."""
    from aerestore.tracking import tracking_uri

    return ["mlflow", "ui", "--backend-store-uri", tracking_uri(), "--host", host, "--port", str(port)]


def ui_url(port: int, host: str, experiment: str) -> str:
    """The address that opens ``experiment`` in the UI's model-training view.

    MLflow 3.17's UI opens experiments in its GenAI view whatever their
    ``mlflow.experimentKind`` tag; ``workflowType=machine_learning`` picks the other one.
    The experiment is looked up without creating anything: with no store yet, or no such
    experiment, the address is the UI's front page."""
    base = f"http://{host}:{port}/"
    from aerestore.tracking import tracking_uri

    uri = tracking_uri()
    if uri.startswith("sqlite:///") and not Path(uri.removeprefix("sqlite:///")).is_file():
        return base
    try:
        from mlflow.tracking import MlflowClient

        exp = MlflowClient(tracking_uri=uri).get_experiment_by_name(experiment)
    except Exception:  # noqa: BLE001 - a server that is down, a store of another version: the front page
        return base
    return base if exp is None else f"{base}#/experiments/{exp.experiment_id}?workflowType=machine_learning"


def _add_ui(sub: Any) -> None:
    p = sub.add_parser("ui", help="print (or run) the `mlflow ui` command for this store")
    p.add_argument("--port", type=int, default=5000)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--experiment", default=None,
                   help="experiment to open (default: mlflow.experiment of params.yaml, or 'aerestore')")
    p.add_argument("--params", default="params.yaml", help="params file (default: params.yaml)")
    p.add_argument("--run", action="store_true", help="start it instead of printing it")
    p.set_defaults(func=cmd_ui)


def cmd_ui(args: argparse.Namespace) -> int:
    import shlex

    cmd = ui_command(args.port, args.host)
    url = ui_url(args.port, args.host, _experiment_name(args.experiment, args.params))
    print(f"then open {url}", file=sys.stderr)
    if args.run:
        os.execvp(cmd[0], cmd)  # replaces this process; does not return
    print(shlex.join(cmd))
    return 0


# ------------------------------------------------------------------ to/from json
def _add_to_json(sub: Any) -> None:
    p = sub.add_parser(
        "to-json",
        help="write an image as input JSON for `mlflow models predict`",
        description='Write {"inputs": [[[r, g, b], ...], ...]} (rows of pixels), the input '
        "of `mlflow models predict -t json` and of POST /invocations.",
    )
    p.add_argument("image", type=Path)
    p.add_argument("--out", "-o", type=Path, default=Path("input.json"),
                   help="output file (default: input.json; '-' for stdout)")
    p.add_argument("--mode", choices=("multi", "single", "base"), default=None,
                   help="add the inference param mode")
    p.set_defaults(func=cmd_to_json)


def image_to_json(image: np.ndarray, mode: str | None = None) -> str:
    arr = np.asarray(image, dtype=np.uint8)
    if arr.ndim == 2:
        arr = arr[:, :, None]  # the model takes (H, W, C)
    doc: dict[str, Any] = {"inputs": arr.tolist()}
    if mode:
        doc["params"] = {"mode": mode}
    return json.dumps(doc, separators=(",", ":"))


def cmd_to_json(args: argparse.Namespace) -> int:
    text = image_to_json(read_image(args.image), args.mode)
    if str(args.out) == "-":
        sys.stdout.write(text + "\n")
    else:
        from aerestore.io import write_text

        write_text(args.out, text + "\n")
        print(f"wrote {args.out}", file=sys.stderr)
    return 0


def _add_from_json(sub: Any) -> None:
    p = sub.add_parser("from-json", help="write the predictions of `mlflow models predict` as a PNG")
    p.add_argument("predictions", type=Path, help='JSON {"predictions": [[[r, g, b], ...], ...]}')
    p.add_argument("--out", "-o", type=Path, required=True, help="PNG to write")
    p.set_defaults(func=cmd_from_json)


def json_to_image(text: str, source: str = "input") -> np.ndarray:
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"{source}: not JSON ({exc})") from None
    data = doc.get("predictions") if isinstance(doc, dict) else doc
    if data is None:
        raise ValueError(f"{source}: no 'predictions' key")
    arr = np.asarray(data)
    if arr.ndim not in (2, 3) or arr.size == 0 or not np.issubdtype(arr.dtype, np.integer):
        raise ValueError(f"{source}: expected an image of integer pixels, got shape {arr.shape} "
                         f"({arr.dtype})")
    if arr.min() < 0 or arr.max() > 255:
        raise ValueError(f"{source}: pixel values outside 0..255")
    return arr.astype(np.uint8)


def cmd_from_json(args: argparse.Namespace) -> int:
    image = json_to_image(Path(args.predictions).read_text(), str(args.predictions))
    write_png(args.out, image)
    print(f"wrote {args.out} ({image.shape[1]}x{image.shape[0]})", file=sys.stderr)
    return 0


# --------------------------------------------------------------------------- main
# ------------------------------------------------------------------ models / summary
def _add_models(sub: Any) -> None:
    p = sub.add_parser("models", help="list the architectures the pipeline can train")
    p.add_argument("pattern", nargs="?", default=None, help="fnmatch pattern, e.g. 'vae*'")
    p.set_defaults(func=cmd_models)


def cmd_models(args: argparse.Namespace) -> int:
    from aerestore.models import list_models

    names = list_models(args.pattern)
    for name in names:
        print(name)
    return 0 if names else 1


def _add_summary(sub: Any) -> None:
    p = sub.add_parser("summary", help="print the results table of the last evaluate stage")
    p.add_argument("--path", default="metrics/summary.md")
    what = p.add_mutually_exclusive_group()
    what.add_argument("--sync-docs", action="store_true",
                      help="copy the summary's tables into README.md and docs/results.md (their marked blocks)")
    what.add_argument("--check", action="store_true",
                      help="exit 1 if a marked block of README.md or docs/results.md differs from the summary")
    p.set_defaults(func=cmd_summary)


def cmd_summary(args: argparse.Namespace) -> int:
    from aerestore import docs_tables

    path = Path(args.path)
    if not path.exists():
        print(f"error: {path} does not exist yet: run `dvc repro` (or ./run.sh repro) first", file=sys.stderr)
        return 1
    if args.sync_docs:
        changed = docs_tables.write_pages(Path.cwd(), path)
        print("updated: " + ", ".join(changed) if changed else "the docs' tables already equal the summary")
        return 0
    if args.check:
        stale = docs_tables.stale_pages(Path.cwd(), path)
        for rel in stale:
            print(f"{rel}: its results table differs from {path}: run `aerestore summary --sync-docs`",
                  file=sys.stderr)
        return 1 if stale else 0
    print(path.read_text(), end="")
    return 0


# -------------------------------------------------------------------------- seeds
def _add_seeds(sub: Any) -> None:
    p = sub.add_parser(
        "seeds",
        help="per-cluster vs control decoders over several seeds (one DVC experiment each)",
        description="For each SOURCE (a DVC experiment name or git revision of --repo, an "
        "evaluate_details.json file, or a folder holding metrics/evaluate_details.json), compare "
        "the per-image metrics of <arch>.multi and <arch>.single; then print, per architecture and "
        "metric, the mean and spread over the seeds of the mean difference, of the share of images "
        "won by multi and of the Wilcoxon p-value, and whether the targets hold in every seed. "
        "Queue the seeds with: dvc exp run --queue -S 'seed=1,2,3' && dvc queue start -j 1",
    )
    p.add_argument("sources", nargs="*", metavar="SOURCE",
                   help="experiment names / revisions, evaluate_details.json files or folders")
    p.add_argument("--all", action="store_true",
                   help="add every finished experiment of the baseline (HEAD) of --repo")
    p.add_argument("--repo", default=".", help="the DVC repository of the experiments (default: .)")
    p.add_argument("--out", "-o", type=Path, default=None, metavar="MD",
                   help="also write the table to MD, and MD's .json and .png beside it "
                        "(e.g. metrics/seeds.md)")
    p.add_argument("--json", type=Path, default=None, help="JSON report path (default: MD with .json)")
    p.add_argument("--plot", type=Path, default=None, help="PNG plot path (default: MD with .png)")
    p.add_argument("--metrics", default=None,
                   help="comma-separated metrics to compare (default: every one with a direction)")
    p.add_argument("--blur-metric", default="psnr_blur", help="target metric inside the blur (psnr_blur)")
    p.add_argument("--clean-metric", default="psnr_clean", help="target metric in clean regions (psnr_clean)")
    p.add_argument("--min-share", type=float, default=0.75, help="blur target: share won (0.75)")
    p.add_argument("--max-p", type=float, default=0.01, help="blur target: Wilcoxon p below (0.01)")
    p.add_argument("--min-clean-diff", type=float, default=-0.05,
                   help="clean target: mean difference at least (-0.05 dB)")
    p.add_argument("--check", action="store_true",
                   help="exit code 1 unless the targets hold in every seed for every architecture")
    p.set_defaults(func=cmd_seeds)


def cmd_seeds(args: argparse.Namespace) -> int:
    from aerestore import seeds as SD

    sources = list(args.sources)
    if args.all:
        sources += [name for name in SD.baseline_experiments(args.repo) if name not in sources]
    if not sources:
        raise CliError("no SOURCE given and --all found no experiment "
                       "(dvc exp run --queue -S 'seed=1,2,3' && dvc queue start -j 1)")
    runs = [SD.load_source(s, args.repo) for s in sources]
    runs.sort(key=lambda r: (r.seed is None, r.seed if r.seed is not None else 0, r.label))
    targets = SD.Targets(blur_metric=args.blur_metric, clean_metric=args.clean_metric,
                         min_share=args.min_share, max_p=args.max_p, min_clean_diff=args.min_clean_diff)
    metrics = [m.strip() for m in args.metrics.split(",") if m.strip()] if args.metrics else None
    report = SD.analyse(runs, metrics=metrics, targets=targets)
    print(SD.markdown(report), end="")
    json_path, png_path = args.json, args.plot
    if args.out is not None:
        json_path = json_path or args.out.with_suffix(".json")
        png_path = png_path or args.out.with_suffix(".png")
    for path in SD.write_report(report, args.out, json_path, png_path):
        print(f"wrote {path}", file=sys.stderr)
    return 1 if args.check and not all(report["holds"].values()) else 0


# ------------------------------------------------------- the generative side
def _model_image(restorer: "Restorer", path: str, size: int) -> np.ndarray:
    """A user's image as the model takes it: read (checked as `restore` checks it),
    converted to the model's channels, centre-cropped and resized to ``size``."""
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


def _add_interpolate(sub: Any) -> None:
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


def _add_sample(sub: Any) -> None:
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


def _add_colourise(sub: Any) -> None:
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


def _add_latent_sizes(sub: Any) -> None:
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
    from aerestore import latent_sizes as LS
    from aerestore.seeds import baseline_experiments

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


# ------------------------------------------------------- the studies' claims, presets
def _claim_numbers(text: str | None) -> list[int] | None:
    if not text:
        return None
    try:
        return [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise CliError(f"--claims {text!r}: give claim numbers separated by commas, e.g. 3,7") from None


R_SEEDS = (1, 2, 3, 4, 5)  # aerestore.report.SEEDS (not imported here: the CLI starts fast)


def _add_report(sub: Any) -> None:
    p = sub.add_parser(
        "report",
        help="re-test the studies' claims (scaled down) and write reports/claims.md",
        description="Train the arms each claim needs (param overrides on params.yaml, scaled down "
        "to the offline sample data) for every seed, or reuse their cached results "
        "(reports/cache/), then write reports/claims.md, reports/claims.json and one plot per "
        "claim (reports/claims/). See docs/studies.md, \"The studies' claims\".",
    )
    p.add_argument("--claims", default=None, metavar="N,N", help="only these claims (e.g. 3,7; default: all ten)")
    p.add_argument("--seeds", type=int, default=len(R_SEEDS), metavar="K",
                   help=f"seeds 1..K per arm (default {len(R_SEEDS)}; the interval needs at least 2)")
    p.add_argument("--params", default="params.yaml", help="the base params (default params.yaml)")
    p.add_argument("--out", type=Path, default=Path("reports"), help="output folder (default reports/)")
    p.add_argument("--cache", type=Path, default=None, help="run cache (default OUT/cache)")
    p.add_argument("--check", action="store_true",
                   help="train nothing: say whether OUT/claims.json was written by the code now "
                   "(exit code 1 when stale)")
    p.set_defaults(func=cmd_report)


def cmd_report(args: argparse.Namespace) -> int:
    from aerestore import report as R

    if args.check:
        fresh, message = R.check_report(args.out)
        print(message)
        return 0 if fresh else 1
    if args.seeds < 1:
        raise CliError(f"--seeds {args.seeds}: at least 1 (2 for the report's interval, 5 by default)")
    rows = R.report(_claim_numbers(args.claims), seeds=range(1, args.seeds + 1), params_path=args.params,
                    out_dir=args.out, cache_dir=args.cache)
    for r in rows:
        print(f"claim {r['claim']:2d}: {r['verdict']:14s} {r['text']}")
    print(f"wrote {args.out / 'claims.md'}", file=sys.stderr)
    return 0


def _add_preset(sub: Any) -> None:
    p = sub.add_parser(
        "preset",
        help="a study's setting as one `dvc exp run` (presets/NAME.yaml)",
        description="Without NAME: list the presets. With NAME: print the `dvc exp run -S ...` "
        "that runs presets/NAME.yaml's overrides of params.yaml as a DVC experiment (validated "
        "first); --run runs it, --sample scales it down to the offline sample data.",
    )
    p.add_argument("name", nargs="?", default=None, help="preset name (a file of presets/)")
    p.add_argument("--sample", action="store_true", help="add the preset's scaled-down overrides (sample data)")
    p.add_argument("--queue", action="store_true", help="queue the experiment (dvc queue start runs it)")
    p.add_argument("--run", action="store_true", help="run the command instead of printing it")
    p.add_argument("-S", "--set", action="append", default=[], metavar="KEY=VALUE",
                   help="one more `dvc exp run -S` override, after the preset's (e.g. 'seed=1,2,3' "
                        "to queue one experiment per seed, or train.loss.sharpness_weight=0 for a control)")
    p.add_argument("--params", default="params.yaml", help="the base params (default params.yaml)")
    p.add_argument("--dir", type=Path, default=Path("presets"), help="presets folder (default presets/)")
    p.set_defaults(func=cmd_preset)


def cmd_preset(args: argparse.Namespace) -> int:
    import subprocess

    from aerestore import study_presets as SP
    from aerestore.report import load_base

    if args.name is None:
        for preset in SP.list_presets(args.dir):
            print(f"{preset.name:28s} {preset.description}  [data: {preset.data}]")
        return 0
    preset = SP.find_preset(args.name, args.dir)
    cmd = SP.dvc_command(preset, load_base(args.params), sample=args.sample, queue=args.queue, extra=args.set)
    if not args.run:
        print(SP.shell_line(cmd))
        return 0
    print(SP.shell_line(cmd), file=sys.stderr)
    return subprocess.run(cmd).returncode


# --------------------------------------------------------------------- team-users
def _add_team_users(sub: Any) -> None:
    p = sub.add_parser(
        "team-users",
        help="create the team MLflow server's users with read / edit / manage permission",
        description="Create users on an `mlflow server --app-name basic-auth` (README: A team) and "
        "set each one's level on every experiment and registered model: read (browse), edit "
        "(log runs, register models), manage (also delete). Runs as the server's admin: "
        "MLFLOW_TRACKING_USERNAME / MLFLOW_TRACKING_PASSWORD, or --admin-password-file. New "
        "users' passwords are random, printed once (or appended to --passwords-out).",
    )
    p.add_argument("--users", metavar="FILE", help="YAML 'users: {NAME: LEVEL}' (deploy/team-users.example.yaml)")
    p.add_argument("--user", action="append", default=[], metavar="NAME=LEVEL",
                   help="a user and their level (read, edit, manage); repeatable; after --users")
    p.add_argument("--server", default=None, help="the server (default: MLFLOW_TRACKING_URI)")
    p.add_argument("--admin-user", default=None,
                   help="the admin's name with --admin-password-file (default: MLFLOW_TRACKING_USERNAME, else admin)")
    p.add_argument("--admin-password-file", metavar="FILE",
                   help="the admin's password (a git-ignored file, e.g. .team/admin-password; "
                   "default: MLFLOW_TRACKING_PASSWORD)")
    p.add_argument("--passwords-out", metavar="FILE",
                   help="append 'NAME PASSWORD' of new users here (mode 600, git-ignored) instead of printing them")
    p.add_argument("--reset-passwords", action="store_true", help="give the listed existing users new passwords too")
    p.add_argument("--new-admin-password-file", metavar="FILE",
                   help="first change the admin's own password to this file's (git-ignored, e.g. "
                   ".team/new-admin-password); then use it")
    p.set_defaults(func=cmd_team_users)


def cmd_team_users(args: argparse.Namespace) -> int:
    from aerestore import team_users as T  # noqa: N812

    users: dict[str, str] = T.read_users_file(args.users) if args.users else {}
    users.update(T.parse_user(spec) for spec in args.user)
    if not users and not args.new_admin_password_file:
        raise CliError("no users: give --users FILE and/or --user NAME=LEVEL")
    server = args.server or os.environ.get("MLFLOW_TRACKING_URI", "").strip()
    if not server:
        raise CliError("no server: set MLFLOW_TRACKING_URI or --server http://HOST:PORT")
    if args.admin_password_file:
        os.environ["MLFLOW_TRACKING_USERNAME"] = args.admin_user or os.environ.get("MLFLOW_TRACKING_USERNAME") or "admin"
        os.environ["MLFLOW_TRACKING_PASSWORD"] = T.read_admin_password_file(args.admin_password_file)
    else:
        if args.admin_user:
            os.environ["MLFLOW_TRACKING_USERNAME"] = args.admin_user
        unset = [v for v in ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD") if not os.environ.get(v)]
        if unset:
            raise CliError(f"the admin's credentials: {' and '.join(unset)} not set (or pass --admin-password-file)")
    if args.new_admin_password_file:
        T.check_server(server)
        admin = T.change_admin_password(server, args.new_admin_password_file)
        print(f"{admin}: password changed to the one in {args.new_admin_password_file}", file=sys.stderr)
    changes = T.apply(server, users, reset_passwords=args.reset_passwords) if users else []
    for c in changes:
        print(f"{c.username}: {c.level}{' (new user)' if c.created else ''}", file=sys.stderr)
    if args.passwords_out:
        n = T.write_passwords(args.passwords_out, changes)
        print(f"{n} new password(s) appended to {args.passwords_out}", file=sys.stderr)
    else:
        for c in changes:
            if c.password:
                print(f"{c.username} {c.password}")
    return 0


def _add_cbsd68(sub: Any) -> None:
    p = sub.add_parser(
        "cbsd68",
        help="score restorers and CBM3D on CBSD68 at sigma 15 / 25 / 50 (the standard benchmark)",
        description="Add white Gaussian noise (fixed seed, not clipped unless --clip) to the CBSD68 "
        "images in PATH (not shipped: non-commercial licence), restore them with each --model and "
        "each --classical anchor (CBM3D is told the true sigma), and write PSNR (RGB, all pixels, "
        "8-bit outputs) beside the published figures as OUT.md and OUT.json. See docs/cbsd68.md.",
    )
    p.add_argument("path", help="the folder of the CBSD68 images (e.g. 0000.png ... 0067.png)")
    p.add_argument("--model", action="append", default=[], metavar="DIR|URI",
                   help="a trained restorer (models/<arch>, an MLflow model folder or URI); repeatable")
    p.add_argument("--sigmas", type=int, nargs="+", default=[15, 25, 50], help="noise std on 0..255 (default 15 25 50)")
    p.add_argument("--classical", nargs="*", default=["bm3d"], metavar="NAME",
                   help="classical anchors (default: bm3d = CBM3D at the true sigma; none: --classical)")
    p.add_argument("--seed", type=int, default=0, help="noise seed (default 0)")
    p.add_argument("--clip", action="store_true",
                   help="clip the noisy input to [0, 1] and round it to 8 bits (default: float, unclipped, "
                        "as the published figures)")
    p.add_argument("--max-images", type=int, default=0, metavar="N", help="N evenly spaced images (0 = all)")
    p.add_argument("--anchor-images", type=int, default=0, metavar="N",
                   help="slow anchors (bm3d, ~25 s per image and sigma) on N evenly spaced of those (0 = all); "
                        "every row is also averaged on that subset")
    p.add_argument("--threads", type=int, default=1, help="PyTorch threads (default 1)")
    p.add_argument("--merge", type=Path, action="append", default=[], metavar="JSON",
                   help="add the rows of an earlier run's OUT.json (same folder, sigmas, seed, clipping): "
                        "e.g. CBM3D scored once, a new network scored later; repeatable")
    p.add_argument("-o", "--out", type=Path, default=Path("cbsd68"),
                   help="output path without suffix, or a folder (default ./cbsd68: cbsd68.md, cbsd68.json)")
    p.set_defaults(func=cmd_cbsd68)


def cmd_cbsd68(args: argparse.Namespace) -> int:
    import torch

    from aerestore import benchmark_sets as B

    if any(s <= 0 for s in args.sigmas):
        raise CliError(f"--sigmas {args.sigmas}: each must be > 0")
    if args.max_images < 0 or args.anchor_images < 0:
        raise CliError("--max-images and --anchor-images must be >= 0")
    B.list_images(args.path)  # a missing or empty folder fails before any model loads
    earlier = []
    for path in args.merge:
        try:
            earlier.append(json.loads(path.read_text()))
        except (OSError, ValueError) as exc:
            raise CliError(f"--merge {path}: {exc}") from None
    torch.set_num_threads(max(1, args.threads))
    methods = [B.noisy_method()] + [B.restorer_method(m) for m in args.model]
    methods += [B.classical_method(c) for c in args.classical]
    result = B.run_benchmark(args.path, methods, sigmas=args.sigmas, seed=args.seed, clip=args.clip,
                             max_images=args.max_images, anchor_images=args.anchor_images)
    for prev in earlier:
        result = B.merge(result, prev)
    md, js = B.write_outputs(result, args.out)
    print(md.read_text())
    print(f"wrote {md} and {js}", file=sys.stderr)
    return 0


SUBCOMMANDS: list[Callable[[Any], None]] = [
    _add_restore,
    _add_init_store,
    _add_ui,
    _add_to_json,
    _add_from_json,
    _add_models,
    _add_summary,
    _add_seeds,
    _add_interpolate,
    _add_sample,
    _add_colourise,
    _add_latent_sizes,
    _add_report,
    _add_preset,
    _add_team_users,
    _add_cbsd68,
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="aerestore",
        description="Restore degraded images with the autoencoders trained by the aerestore pipeline.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for add in SUBCOMMANDS:
        add(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except CliError as exc:
        print(f"aerestore {args.command}: {exc}", file=sys.stderr)
        return 2
    except RuntimeError as exc:  # TrackingError: the store or the server refused us, in one line
        from aerestore.stage import StageError

        if not isinstance(exc, StageError) or os.environ.get("AERESTORE_DEBUG"):
            raise
        print(f"aerestore {args.command}: {exc}", file=sys.stderr)
        return 2
    except (OSError, ValueError) as exc:
        if os.environ.get("AERESTORE_DEBUG"):
            raise
        print(f"aerestore {args.command}: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
