"""The ``prepare`` stage's input: the download's manifest (:func:`read_manifest`) and one raw
image read, checked, converted, centre-cropped and resized to a uint8 square
(:func:`load_image`; steps 1 and 2 of :mod:`aerestore.data.prepare`)."""

from __future__ import annotations

import csv
import hashlib
import io
import re
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from PIL import Image, ImageOps

from aerestore.data.degrade import LUMA
from aerestore.data.layout import SPLITS, PrepareError

MANIFEST = "manifest.csv"
MANIFEST_COLUMNS = ("file", "split", "sha256")
RESIZE_FLAGS = {
    "area": cv2.INTER_AREA,
    "bilinear": cv2.INTER_LINEAR,
    "bicubic": cv2.INTER_CUBIC,
    "lanczos": cv2.INTER_LANCZOS4,
    "nearest": cv2.INTER_NEAREST,
}


# ---------------------------------------------------------------- manifest
@dataclass(frozen=True)
class ManifestRow:
    file: str
    split: str
    sha256: str
    line: int


def read_manifest(raw_dir: Path) -> dict[str, list[ManifestRow]]:
    """Rows of ``raw_dir/manifest.csv`` grouped by split, in file order."""
    path = Path(raw_dir) / MANIFEST
    if not path.is_file():
        raise PrepareError(f"{path}: not found (run the download stage first)")
    out: dict[str, list[ManifestRow]] = {s: [] for s in SPLITS}
    with path.open(newline="") as fh:
        reader = csv.DictReader(fh)
        missing = [c for c in MANIFEST_COLUMNS if c not in (reader.fieldnames or [])]
        if missing:
            raise PrepareError(f"{path}: missing column(s) {', '.join(missing)} (header: {reader.fieldnames})")
        for row in reader:
            line = reader.line_num
            file, split, sha = (row["file"] or "").strip(), (row["split"] or "").strip(), (row["sha256"] or "").strip()
            if not file:
                raise PrepareError(f"{path}:{line}: empty 'file'")
            if split not in out:
                raise PrepareError(f"{path}:{line}: split {split!r} of {file} is not one of {SPLITS}")
            if not re.fullmatch(r"[0-9a-fA-F]{64}", sha):
                raise PrepareError(f"{path}:{line}: sha256 of {file} is not 64 hex digits: {sha!r}")
            out[split].append(ManifestRow(file, split, sha.lower(), line))
    if not any(out.values()):
        raise PrepareError(f"{path}: lists no images")
    return out


# ------------------------------------------------------------------ images
def image_to_float(img: Image.Image, channels: int) -> np.ndarray:
    """A Pillow image as float32 ``H x W x channels`` in the 0..255 scale (unrounded).

    Modes:

    * ``1``, ``L``: grey. ``P``/``PA``: the palette is expanded (to RGBA when the image
      has transparency). ``CMYK``, ``YCbCr``, ``LAB``, ``HSV``, ...: Pillow's RGB conversion.
    * ``I;16*`` (16-bit): ``v * 255 / 65535``.
    * ``I`` (32-bit int, Pillow's container for 16-bit PNG/TIFF): ``v * 255 / 65535`` when
      all values lie in 0..65535, otherwise min-max stretched to 0..255.
    * ``F`` (float): ``v * 255`` when all values lie in [0, 1]; kept when they lie in
      [0, 255]; otherwise min-max stretched.
    * Alpha (``LA``, ``RGBA``, ``PA``, premultiplied ``La``/``RGBa``): composited on black,
      ``v * alpha / 255`` (transparent pixels become black).
    * ``channels = 3``: grey is replicated; ``channels = 1``: RGB becomes BT.601 luma
      ``0.299 R + 0.587 G + 0.114 B`` (as Pillow's ``L`` and OpenCV's ``RGB2GRAY``).
    """
    mode = img.mode
    if mode == "1":
        img, mode = img.convert("L"), "L"
    elif mode in ("P", "PA"):
        has_alpha = mode == "PA" or "transparency" in img.info
        img = img.convert("RGBA" if has_alpha else "RGB")
        mode = img.mode
    elif mode in ("La", "RGBa", "RGBX"):
        img = img.convert({"La": "LA", "RGBa": "RGBA", "RGBX": "RGB"}[mode])
        mode = img.mode
    alpha = None
    if mode.startswith("I;16"):
        arr = np.asarray(img).astype(np.float32) * np.float32(255.0 / 65535.0)
    elif mode == "I":
        raw = np.asarray(img)
        lo, hi = (int(raw.min()), int(raw.max())) if raw.size else (0, 0)
        if lo >= 0 and hi <= 65535:
            arr = raw.astype(np.float32) * np.float32(255.0 / 65535.0)
        else:
            arr = (raw.astype(np.float64) - lo) * (255.0 / max(hi - lo, 1))
    elif mode == "F":
        raw = np.asarray(img).astype(np.float64)
        if not np.isfinite(raw).all():
            raw = np.nan_to_num(raw, nan=0.0, posinf=0.0, neginf=0.0)
        lo, hi = (float(raw.min()), float(raw.max())) if raw.size else (0.0, 0.0)
        if lo >= 0 and hi <= 1:
            arr = raw * 255.0
        elif lo >= 0 and hi <= 255:
            arr = raw
        else:
            arr = (raw - lo) * (255.0 / (hi - lo if hi > lo else 1.0))
    elif mode in ("L", "RGB"):
        arr = np.asarray(img).astype(np.float32)
    elif mode in ("LA", "RGBA"):
        raw = np.asarray(img).astype(np.float32)
        arr, alpha = raw[..., :-1], raw[..., -1:] / np.float32(255.0)
    else:
        arr = np.asarray(img.convert("RGB")).astype(np.float32)
    arr = np.asarray(arr, dtype=np.float32)
    if arr.ndim == 2:
        arr = arr[..., None]
    if alpha is not None:
        arr = arr * alpha
    if channels == 3 and arr.shape[2] == 1:
        arr = np.repeat(arr, 3, axis=2)
    elif channels == 1 and arr.shape[2] == 3:
        arr = (arr @ LUMA)[..., None]
    return np.ascontiguousarray(arr)


def center_crop_box(width: int, height: int) -> tuple[int, int, int, int]:
    """(left, top, right, bottom) of the centred square of side ``min(width, height)``."""
    side = min(width, height)
    left, top = (width - side) // 2, (height - side) // 2
    return left, top, left + side, top + side


def resize_square(arr: np.ndarray, size: int, method: str) -> np.ndarray:
    """Resize a square float32 HWC array to ``size x size`` with OpenCV."""
    if arr.shape[0] != size or arr.shape[1] != size:
        arr = cv2.resize(arr, (size, size), interpolation=RESIZE_FLAGS[method])
    return arr.reshape(size, size, -1)


def load_image(
    path: str | Path,
    size: int,
    channels: int,
    method: str = "area",
    sha256: str | None = None,
    max_pixels: int | None = None,
) -> np.ndarray:
    """Read, check, convert, centre-crop and resize one image -> uint8 ``size x size x channels``.

    Raises :class:`PrepareError` naming ``path`` if the file is missing, its SHA-256
    differs from ``sha256``, it has more than ``max_pixels`` pixels, or Pillow cannot
    decode it. EXIF orientation is applied.
    """
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise PrepareError(f"{path}: listed in {MANIFEST} but missing") from None
    except OSError as exc:
        raise PrepareError(f"{path}: cannot read ({exc})") from None
    if sha256 is not None and hashlib.sha256(data).hexdigest() != sha256.lower():
        raise PrepareError(f"{path}: SHA-256 differs from {MANIFEST} (file changed since download?)")
    try:
        with Image.open(io.BytesIO(data)) as img:
            if max_pixels is not None and img.width * img.height > max_pixels:
                raise PrepareError(
                    f"{path}: {img.width}x{img.height} exceeds data.max_pixels ({max_pixels})"
                )
            img.load()
            img = ImageOps.exif_transpose(img)
            if img.width < 1 or img.height < 1:
                raise PrepareError(f"{path}: empty image ({img.width}x{img.height})")
            img = img.crop(center_crop_box(img.width, img.height))
            arr = image_to_float(img, channels)
    except PrepareError:
        raise
    except Exception as exc:  # Pillow raises many types for a bad file
        raise PrepareError(f"{path}: cannot decode image ({type(exc).__name__}: {exc})") from None
    arr = resize_square(arr, size, method)
    return np.clip(np.rint(arr), 0, 255).astype(np.uint8)
