"""``aerestore restore`` and the JSON of `mlflow models predict` (``to-json``, ``from-json``)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np

from aerestore.cli.common import IMAGE_SUFFIX, CliError, load_any_restorer, write_png


# ------------------------------------------------------------------------ restore
def add_restore(sub: Any) -> None:
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
    p.add_argument("--self-ensemble", action="store_true",
                   help="restore each image in its 8 orientations (flips and quarter turns) and average "
                        "them: a little better (docs/cbsd68.md), 8x the time")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_restore)


def cmd_restore(args: argparse.Namespace) -> int:
    import torch
    from tqdm import tqdm

    from aerestore.data.images import READ_MAX_PIXELS, read_image
    from aerestore.models.device import resolve_device
    from aerestore.cli.selfensemble import restore_self_ensemble

    if args.max_pixels is not None and args.max_pixels < 1:
        raise CliError(f"--max-pixels must be >= 1, got {args.max_pixels}")
    max_pixels = READ_MAX_PIXELS if args.max_pixels is None else args.max_pixels
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
            image = read_image(src, max_pixels)
            if args.self_ensemble:
                write_png(dst, restore_self_ensemble(restorer, image, args.mode))
            else:
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



# ------------------------------------------------------------------ to/from json
def add_to_json(sub: Any) -> None:
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
    from aerestore.data.images import read_image

    text = image_to_json(read_image(args.image), args.mode)
    if str(args.out) == "-":
        sys.stdout.write(text + "\n")
    else:
        from aerestore.io import write_text

        write_text(args.out, text + "\n")
        print(f"wrote {args.out}", file=sys.stderr)
    return 0


def add_from_json(sub: Any) -> None:
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

