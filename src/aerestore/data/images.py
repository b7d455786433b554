"""Finding, checking and cutting images.

* :func:`iter_image_files` lists the image files of a folder tree, in a fixed order.
* :func:`check_image` / :func:`inspect_image` decide whether a file is a usable image,
  and if not, why: ``empty``, ``not_image``, ``truncated``, ``corrupt`` or ``too_large``.
* :func:`sample_tiles` cuts the photographs shipped with scikit-image into square tiles
  (the offline default data set).
* :func:`decode_idx` reads MNIST's IDX files.
"""

from __future__ import annotations

import contextlib
import dataclasses
import gzip
import hashlib
import io
import math
import os
import struct
import warnings
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
from PIL import Image, ImageFile, ImageOps, UnidentifiedImageError
from tqdm import tqdm

from aerestore.data.presets import SAMPLE_PHOTOS, SamplePhoto

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


# ------------------------------------------------------------------ sample tiles
# Tiles whose pixel standard deviation (0..255, over all channels) is below this are
# dropped: the black surround of the retina, empty sky. Low-contrast photographs
# (the moon, the cell micrograph, std 2-4) stay.
FLAT_STD = 2.0
# Scales at which photographs are tiled: 2 = halved (2x2 box mean), 4 = a quarter, so that
# a 64 px tile holds a face, a cup, a cat's head, as a real 64 px photo does. Full-resolution
# tiles (factor 1) of these 300-600 px photographs were mostly smooth patches: the median
# variance of the Laplacian of 64 px tiles was 0.0035 with factors (1, 2), is 0.0099 with
# (2, 4), against 0.027 for 64 px CelebA faces; a network gained about 8 dB on the smooth
# tiles and 2.5 dB on faces, so the default run's figures said little about real photos.
SAMPLE_FACTORS = (2, 4)


@dataclass(frozen=True)
class Tile:
    pixels: np.ndarray  # uint8 (size, size, 3)
    origin: str  # e.g. "skimage.data.coffee scale=1/2 x=256 y=0" (full-resolution pixels)
    group: str  # split unit: tiles of different groups share no source pixel


def load_sample_photo(photo: SamplePhoto) -> list[np.ndarray]:
    """The views of a scikit-image photograph as uint8 RGB arrays (grey is repeated)."""
    import skimage.data  # deferred: heavy import

    value = getattr(skimage.data, photo.name)()
    views = list(value[:2]) if isinstance(value, tuple) else [value]  # stereo: left, right
    out = []
    for v in views:
        v = np.asarray(v)
        if v.dtype != np.uint8:
            raise TypeError(f"skimage.data.{photo.name}: expected uint8, got {v.dtype}")
        if v.ndim == 2:
            v = np.repeat(v[:, :, None], 3, axis=2)
        elif v.shape[2] == 4:
            v = v[:, :, :3]
        out.append(np.ascontiguousarray(v))
    return out


def _halve(image: np.ndarray, factor: int) -> np.ndarray:
    if factor == 1:
        return image
    h, w = image.shape[0] // factor * factor, image.shape[1] // factor * factor
    # Exact box mean over factor x factor pixels (PIL's reduce), then rounding.
    return np.asarray(Image.fromarray(image[:h, :w]).reduce(factor))


# Split regions of the sample photographs are about this many pixels on a side.
REGION_PX = 256


def region_side(size: int, factors: Sequence[int]) -> int:
    """Side of a split region: the smallest multiple of every tile footprint ``size * f``
    (their least common multiple) that is at least :data:`REGION_PX`, so that a tile of any
    scale lies inside exactly one region (256 px at size 64 with factors (2, 4)). With
    factors that do not divide each other (2 and 3) the largest footprint alone is not
    enough: a third-scale tile would straddle two regions and leak across splits."""
    foot = math.lcm(*(size * f for f in factors))
    return foot * max(1, -(-REGION_PX // foot))


def photo_tiles(
    image: np.ndarray, size: int, factors: Sequence[int] = SAMPLE_FACTORS
) -> Iterator[tuple[int, int, int, int, int, np.ndarray]]:
    """``(factor, y, x, region_y, region_x, tile)`` for a grid of non-overlapping tiles.

    At each downscale ``factor`` the image is reduced by a factor x factor box mean and
    cut into a grid of ``size`` x ``size`` tiles aligned at the top-left corner (the
    last partial row and column are dropped). ``(y, x)`` is the tile's top-left corner
    in full-resolution pixels. Regions are squares of side ``R =`` :func:`region_side`
    full-resolution pixels; since ``R`` is a multiple of every tile's footprint
    ``size * factor`` and tiles are aligned, each tile lies inside exactly one region,
    so two tiles from different regions share no source pixel, at any scale.
    """
    region = region_side(size, factors)
    for f in factors:
        small = _halve(image, f)
        h, w = small.shape[:2]
        for ty in range(0, h - size + 1, size):
            for tx in range(0, w - size + 1, size):
                y, x = ty * f, tx * f
                yield f, y, x, y // region, x // region, small[ty : ty + size, tx : tx + size]


def sample_tiles(
    size: int, photos: Sequence[SamplePhoto] | None = None, factors: Sequence[int] | None = None
) -> Iterator[Tile]:
    """Every grid tile of the sample photographs (flat tiles included), in a fixed order.

    The split unit (``Tile.group``) is the photograph's region (see :func:`photo_tiles`):
    val and test tiles never share a pixel with train tiles. For a stereo pair (``band``)
    it is the region's row band across both views, since the right view repeats the
    left one shifted along the rows. ``photos`` and ``factors`` default to
    :data:`SAMPLE_PHOTOS` and :data:`SAMPLE_FACTORS`.
    """
    photos = SAMPLE_PHOTOS if photos is None else photos
    factors = SAMPLE_FACTORS if factors is None else factors
    for photo in photos:
        views = load_sample_photo(photo)
        for v, image in enumerate(views):
            view = f"[{v}]" if len(views) > 1 else ""
            for f, y, x, ry, rx, tile in photo_tiles(image, size, factors):
                group = f"{photo.name}:band{ry}" if photo.band else f"{photo.name}:{ry}:{rx}"
                origin = f"skimage.data.{photo.name}{view} scale=1/{f} x={x} y={y}"
                yield Tile(tile, origin, group)


def is_flat(pixels: np.ndarray, threshold: float = FLAT_STD) -> bool:
    """Whether the pixel standard deviation (all channels, 0..255) is below ``threshold``."""
    return float(pixels.std()) < threshold


# ---------------------------------------------------------------------------- IDX
_IDX_TYPES = {
    0x08: np.dtype(">u1"),
    0x09: np.dtype(">i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}


def decode_idx(source: str | Path | bytes) -> np.ndarray:
    """Decode an IDX file (MNIST's format), gzip-compressed or not.

    Layout (http://yann.lecun.com/exdb/mnist/): two zero bytes, a type code
    (0x08 = uint8, 0x09 = int8, 0x0B = int16, 0x0C = int32, 0x0D = float32,
    0x0E = float64), the number of dimensions ``n``, then ``n`` big-endian uint32 sizes,
    then the data, big-endian, C order. Image files are (count, rows, cols) uint8.
    """
    name = "IDX data" if isinstance(source, bytes) else str(source)
    raw = source if isinstance(source, bytes) else Path(source).read_bytes()
    if raw[:2] == b"\x1f\x8b":
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError) as exc:
            raise ValueError(f"{name}: broken gzip stream: {exc}") from exc
    if len(raw) < 4 or raw[:2] != b"\x00\x00":
        raise ValueError(f"{name}: not an IDX file (bad magic number {raw[:4].hex()!r})")
    code, ndim = raw[2], raw[3]
    if code not in _IDX_TYPES:
        raise ValueError(f"{name}: unknown IDX type code 0x{code:02x}")
    if ndim == 0 or len(raw) < 4 + 4 * ndim:
        raise ValueError(f"{name}: IDX header cut short ({ndim} dimensions)")
    dims = struct.unpack(f">{ndim}I", raw[4 : 4 + 4 * ndim])
    dtype = _IDX_TYPES[code]
    count = int(np.prod(dims, dtype=np.int64))
    expected = 4 + 4 * ndim + count * dtype.itemsize
    if len(raw) != expected:
        raise ValueError(
            f"{name}: IDX dimensions {dims} need {expected:,} bytes, the file has {len(raw):,}"
        )
    data = np.frombuffer(raw, dtype=dtype, count=count, offset=4 + 4 * ndim)
    return data.reshape(dims).astype(dtype.newbyteorder("="))
