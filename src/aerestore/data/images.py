"""Finding, checking and reading images.

* :func:`iter_image_files` lists the image files of a folder tree, in a fixed order.
* :func:`check_image` / :func:`inspect_image` decide whether a file is a usable image,
  and if not, why: ``empty``, ``not_image``, ``truncated``, ``corrupt`` or ``too_large``.
* :func:`read_image` reads a user's image to restore; :func:`encode_png` writes PNG bytes.

The sample tiles are cut by :mod:`aerestore.data.tiles`, MNIST's IDX files read by
:mod:`aerestore.data.idx`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import io
import os
import warnings
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
from PIL import Image, ImageFile, ImageOps, UnidentifiedImageError
from tqdm import tqdm

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")
SKIP_REASONS = ("corrupt", "truncated", "empty", "not_image", "too_large")

# Folders never searched for images: resource forks that macOS adds to zip files.
_SKIP_DIRS = {"__MACOSX"}


# ------------------------------------------------------------------ finding files
def _rel_key(root: Path, path: Path) -> str:
    return path.relative_to(root).as_posix()


def scan_folder(root: str | Path) -> tuple[list[Path], list[Path]]:
    """``(image files, other files)`` under ``root``, each sorted by relative POSIX path.

    An image file has one of :data:`IMAGE_EXTENSIONS` (any case). Hidden files and
    folders (name starting with ``.``, e.g. ``.DS_Store``, AppleDouble ``._x.jpg``) and
    ``__MACOSX`` folders are left out of both lists. Symbolic links to files are
    followed; links to folders are not (no cycles).
    """
    root = Path(root)
    if not root.is_dir():
        raise NotADirectoryError(f"{root}: not a folder")
    images: list[Path] = []
    others: list[Path] = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = [d for d in dirnames if not d.startswith(".") and d not in _SKIP_DIRS]
        for name in filenames:
            if name.startswith("."):
                continue
            path = Path(dirpath) / name
            (images if path.suffix.lower() in IMAGE_EXTENSIONS else others).append(path)
    images.sort(key=lambda p: _rel_key(root, p))
    others.sort(key=lambda p: _rel_key(root, p))
    return images, others


def iter_image_files(root: str | Path) -> Iterator[Path]:
    """The image files under ``root`` (see :func:`scan_folder`), sorted by relative path."""
    yield from scan_folder(root)[0]


# ---------------------------------------------------------------- checking files
@dataclass(frozen=True)
class ImageCheck:
    """What :func:`inspect_image` found out about one file."""

    ok: bool
    reason: str | None  # one of SKIP_REASONS when not ok
    size: tuple[int, int] | None  # (width, height) if the header was read; ok: EXIF-oriented
    detail: str = ""  # the decoder's message, for the skip list
    sha256: str = ""  # of the file's bytes
    pixel_sha256: str = ""  # of mode, size and decoded pixels (ok files only)
    format: str = ""  # Pillow's format name


# Leading bytes of the formats we accept; a file that starts with one of them but
# does not decode is a broken image, not "not an image".
_SIGNATURES = (
    (b"\x89PNG\r\n\x1a\n", "PNG"),
    (b"\xff\xd8\xff", "JPEG"),
    (b"BM", "BMP"),
    (b"II*\x00", "TIFF"),
    (b"MM\x00*", "TIFF"),
    (b"II+\x00", "TIFF"),  # BigTIFF
    (b"MM\x00+", "TIFF"),
)


def _signature(data: bytes) -> str | None:
    for magic, fmt in _SIGNATURES:
        if data.startswith(magic):
            return fmt
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "WEBP"
    return None


def _ends_early(fmt: str | None, data: bytes) -> bool:
    """Whether a file of format ``fmt`` visibly stops before its end marker."""
    if fmt == "PNG":
        return b"IEND" not in data[-32:]
    if fmt == "JPEG":
        return b"\xff\xd9" not in data[-32:]
    if fmt == "WEBP":  # RIFF header: 'RIFF' <little-endian size of the rest> 'WEBP'
        return len(data) < 8 + int.from_bytes(data[4:8], "little")
    if fmt in ("BMP", "TIFF"):
        return len(data) < 64
    return False


def _failure(data: bytes, exc: BaseException, at_open: bool) -> tuple[str, str]:
    """Classify a decoding failure as ``not_image``, ``truncated`` or ``corrupt``."""
    msg = f"{type(exc).__name__}: {exc}".replace("\n", " ")
    sig = _signature(data)
    if at_open and isinstance(exc, UnidentifiedImageError) and sig is None:
        return "not_image", "no image format recognised"
    if isinstance(exc, EOFError) or "truncat" in str(exc).lower():
        return "truncated", msg
    if at_open and sig is not None and _ends_early(sig, data):
        return "truncated", msg
    if sig is None and at_open:
        return "not_image", msg
    return "corrupt", msg


def pixel_digest(img: Image.Image) -> str:
    """SHA-256 of an image's mode, size and decoded pixel bytes."""
    h = hashlib.sha256(f"{img.mode}:{img.size[0]}x{img.size[1]}:".encode())
    h.update(img.tobytes())
    return h.hexdigest()


def inspect_bytes(data: bytes, max_pixels: int) -> ImageCheck:
    """Check an image held in memory; see :func:`inspect_image`."""
    sha = hashlib.sha256(data).hexdigest()
    img, check = decode_bytes(data, max_pixels, "data.max_pixels")
    if img is None:
        return dataclasses.replace(check, sha256=sha)
    with img:
        w, h = check.size
        # Report the size as displayed: EXIF orientations 5-8 swap width and height
        # (Pillow's ImageOps.exif_transpose, which prepare applies, does the same).
        if img.getexif().get(0x0112) in (5, 6, 7, 8):
            w, h = h, w
        return ImageCheck(True, None, (w, h), "", sha, pixel_digest(img), check.format)


def decode_bytes(data: bytes, max_pixels: int, limit: str) -> tuple[Image.Image | None, ImageCheck]:
    """``(image fully decoded, check)`` of an image file's bytes, or ``(None, why not)``
    (the reasons of :func:`inspect_image`; no hashes; ``limit`` names ``max_pixels`` in the
    message). The caller closes the image."""
    if not data:
        return None, ImageCheck(False, "empty", None, "0 bytes")
    try:
        img = Image.open(io.BytesIO(data))
    except Image.DecompressionBombError as exc:
        return None, ImageCheck(False, "too_large", None, str(exc))
    except Exception as exc:  # Pillow raises many types for bad headers
        reason, detail = _failure(data, exc, at_open=True)
        return None, ImageCheck(False, reason, None, detail)
    w, h = img.size
    fmt = img.format or ""
    # Size first, from the header alone: a huge image is never decoded.
    if w * h > max_pixels:
        img.close()
        return None, ImageCheck(False, "too_large", (w, h), f"{w}x{h} = {w * h:,} pixels > {limit} = {max_pixels:,}",
                                "", "", fmt)
    if w <= 0 or h <= 0:
        img.close()
        return None, ImageCheck(False, "corrupt", (w, h), f"size {w}x{h}", "", "", fmt)
    try:
        img.load()  # full decode: a cut or damaged stream fails here
    except Image.DecompressionBombError as exc:
        img.close()
        return None, ImageCheck(False, "too_large", (w, h), str(exc), "", "", fmt)
    except Exception as exc:
        img.close()
        reason, detail = _failure(data, exc, at_open=False)
        return None, ImageCheck(False, reason, (w, h), detail, "", "", fmt)
    return img, ImageCheck(True, None, (w, h), "", "", "", fmt)


def inspect_image(path: str | Path, max_pixels: int) -> ImageCheck:
    """Read ``path`` once, hash it, and try to decode it fully with Pillow.

    Reasons, in the order they are tested:

    * ``empty``: zero bytes;
    * ``not_image``: Pillow recognises no image format and the file does not start
      with the signature of an accepted format (e.g. text named ``.jpg``);
    * ``too_large``: width * height > ``max_pixels``, read from the header before any
      decoding (or Pillow's own decompression-bomb check fired);
    * ``truncated``: the file stops before its image data does (Pillow's "image file
      is truncated", or an accepted signature with the end marker missing);
    * ``corrupt``: any other decoding failure of a file with a valid header.

    Must run with ``ImageFile.LOAD_TRUNCATED_IMAGES = False`` (Pillow's default; see
    :func:`pillow_checking`), otherwise Pillow pads cut images with grey silently.
    """
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        return ImageCheck(False, "corrupt", None, f"cannot read: {exc}")
    return inspect_bytes(data, max_pixels)


@contextlib.contextmanager
def pillow_checking(max_pixels: int) -> Iterator[None]:
    """Pillow settings for checking, restored afterwards.

    Sets ``Image.MAX_IMAGE_PIXELS`` to ``max_pixels`` (Pillow then raises its
    DecompressionBombError only past ``2 * max_pixels``, by which point the header
    check of :func:`inspect_bytes` has already refused the file), forces
    ``ImageFile.LOAD_TRUNCATED_IMAGES = False`` and silences Pillow's warnings (the
    decompression-bomb warning, "Corrupt EXIF data"): the outcome is reported per file.
    """
    old_max, old_trunc = Image.MAX_IMAGE_PIXELS, ImageFile.LOAD_TRUNCATED_IMAGES
    Image.MAX_IMAGE_PIXELS = max_pixels
    ImageFile.LOAD_TRUNCATED_IMAGES = False
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            warnings.filterwarnings("ignore", category=UserWarning, module=r"PIL\.")
            yield
    finally:
        Image.MAX_IMAGE_PIXELS, ImageFile.LOAD_TRUNCATED_IMAGES = old_max, old_trunc


def check_image(
    path: str | Path, max_pixels: int
) -> tuple[bool, str | None, tuple[int, int] | None]:
    """``(ok, reason, (width, height) or None)`` for one file; see :func:`inspect_image`."""
    with pillow_checking(max_pixels):
        c = inspect_image(path, max_pixels)
    return c.ok, c.reason, c.size


def check_images(
    paths: Sequence[Path],
    max_pixels: int,
    *,
    workers: int = 0,
    progress: bool = False,
    desc: str = "check images",
) -> list[ImageCheck]:
    """:func:`inspect_image` over many files, in order, on ``workers`` threads.

    Threads help because Pillow's decoders and hashlib release the GIL. ``workers=0``
    means one per CPU core (at most 8).
    """
    workers = workers or min(8, os.cpu_count() or 1)
    out: list[ImageCheck] = []
    with (
        pillow_checking(max_pixels),
        tqdm(total=len(paths), desc=desc, unit="img", disable=not progress, leave=False) as bar,
    ):
        if workers == 1:
            for p in paths:
                out.append(inspect_image(p, max_pixels))
                bar.update()
        else:
            with ThreadPoolExecutor(max_workers=workers) as pool:
                for c in pool.map(lambda p: inspect_image(p, max_pixels), paths, chunksize=16):
                    out.append(c)
                    bar.update()
    return out


# ------------------------------------------------------------ a user's image to restore
# Pillow's own decompression-bomb threshold (Image.MAX_IMAGE_PIXELS): larger images are
# refused from their header, before any decoding (`aerestore restore --max-pixels` raises it).
READ_MAX_PIXELS = 89_478_485

_WHY = {  # SKIP_REASONS as a user reads them (too_large has its own message)
    "empty": "empty file",
    "not_image": "not an image",
    "truncated": "truncated image",
    "corrupt": "corrupt image",
}


def read_image(path: str | Path, max_pixels: int = READ_MAX_PIXELS) -> np.ndarray:
    """Read one still image as uint8 (H, W) or (H, W, 3|4), EXIF rotation applied.

    16-bit images are scaled to 8 bits (grey: /257; Pillow keeps the high byte of 16-bit
    RGB), CMYK becomes RGB (through the file's ICC profile when it has one), palette and
    other modes become RGB, grey with alpha grey. Refused with a one-line ``ValueError``
    naming the file: an empty file, a file that is not an image, a truncated or corrupt one,
    one of more than ``max_pixels`` pixels (read from the header, never decoded: a
    decompression bomb), an animation or multi-page file (which frame would be meant?).
    ``FileNotFoundError`` / ``IsADirectoryError`` / ``OSError`` when it cannot be read.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such file")
    if path.is_dir():
        raise IsADirectoryError(f"{path}: is a folder, not an image")
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise OSError(f"{path}: cannot read ({exc.strerror or exc})") from None
    with pillow_checking(max_pixels):
        Image.MAX_IMAGE_PIXELS = None  # decode_bytes refuses large images from the header, naming their size
        img, check = decode_bytes(data, max_pixels, "--max-pixels")
        if img is None:
            if check.reason == "too_large":
                raise ValueError(f"{path}: too large, {check.detail} (raise --max-pixels to restore it)")
            raise ValueError(f"{path}: {_WHY[check.reason]} ({check.detail})")
        with img:
            try:
                frames = getattr(img, "n_frames", 1)
            except Exception as exc:  # a damaged later frame
                raise ValueError(f"{path}: corrupt image ({type(exc).__name__}: {exc})") from None
            if frames > 1:
                raise ValueError(f"{path}: animated or multi-page ({frames} frames); aerestore restores still "
                                 "images: save the frames as separate files first")
            try:
                return _pixels(ImageOps.exif_transpose(img))
            except Exception as exc:  # corrupt EXIF, an unconvertible mode
                raise ValueError(f"{path}: corrupt image ({type(exc).__name__}: {exc})") from None


def _pixels(img: Image.Image) -> np.ndarray:
    """uint8 pixels of a decoded image: L, RGB, RGBA as they are, the rest converted."""
    if img.mode in ("L", "RGB", "RGBA"):
        return np.asarray(img, dtype=np.uint8).copy()
    if img.mode in ("I;16", "I;16B", "I;16L", "I"):  # 16-bit grey (and 32-bit integer, clipped)
        wide = np.asarray(img).astype(np.float64)
        return np.clip(np.rint(wide / 257.0), 0, 255).astype(np.uint8)
    if img.mode == "LA":
        return np.asarray(img.convert("L"), dtype=np.uint8).copy()
    if img.mode == "CMYK" and img.info.get("icc_profile"):
        from PIL import ImageCms

        try:
            profile = ImageCms.ImageCmsProfile(io.BytesIO(img.info["icc_profile"]))
            rgb = ImageCms.profileToProfile(img, profile, ImageCms.createProfile("sRGB"), outputMode="RGB")
            return np.asarray(rgb, dtype=np.uint8).copy()
        except (ImageCms.PyCMSError, OSError, ValueError):  # a broken profile: Pillow's plain conversion
            pass
    return np.asarray(img.convert("RGB"), dtype=np.uint8).copy()


# --------------------------------------------------------------------- PNG output
def encode_png(pixels: np.ndarray) -> bytes:
    """PNG bytes of a uint8 HxW (grey) or HxWx3 (RGB) array; deterministic for a given Pillow."""
    if pixels.dtype != np.uint8:
        raise TypeError(f"expected uint8 pixels, got {pixels.dtype}")
    if pixels.ndim == 3 and pixels.shape[2] == 1:
        pixels = pixels[:, :, 0]
    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(pixels)).save(buf, format="PNG", compress_level=6)
    return buf.getvalue()
