"""Image discovery, checking (each failure kind), tiling and the IDX decoder."""

from __future__ import annotations

import gzip
import io
import struct
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageFile

from aerestore.data import images as im
from aerestore.data import tiles as tl
from aerestore.data.idx import decode_idx
from aerestore.data.presets import SamplePhoto


def _rgb(seed: int, h: int = 24, w: int = 32) -> np.ndarray:
    rng = np.random.default_rng(seed)
    base = np.linspace(0, 255, w)[None, :, None] * np.ones((h, 1, 3))
    return np.clip(base + rng.normal(0, 30, (h, w, 3)), 0, 255).astype(np.uint8)


def _encode(arr: np.ndarray, fmt: str) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format=fmt)
    return buf.getvalue()


# ------------------------------------------------------------------ file discovery
def test_iter_image_files_sorted_any_case_nested_skips_hidden(tmp_path: Path) -> None:
    for rel in [
        "b.PNG",
        "a/z.jpg",
        "a/b/c.JpEg",
        "x.tif",
        "y.TIFF",
        "w.webp",
        "v.bmp",
        "notes.txt",
        "a/data.csv",
        ".hidden.jpg",
        ".git/h.png",
        "__MACOSX/._b.png",
        "a/._b.jpg",
    ]:
        p = tmp_path / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(b"x")
    got = [p.relative_to(tmp_path).as_posix() for p in im.iter_image_files(tmp_path)]
    assert got == ["a/b/c.JpEg", "a/z.jpg", "b.PNG", "v.bmp", "w.webp", "x.tif", "y.TIFF"]
    _, others = im.scan_folder(tmp_path)
    assert [p.name for p in others] == ["data.csv", "notes.txt"]


def test_scan_folder_missing_root_is_named(tmp_path: Path) -> None:
    with pytest.raises(NotADirectoryError, match="nope"):
        im.scan_folder(tmp_path / "nope")


# ------------------------------------------------------------------------- checks
@pytest.mark.parametrize(
    "fmt,ext", [("JPEG", "jpg"), ("PNG", "png"), ("BMP", "bmp"), ("TIFF", "tif"), ("WEBP", "webp")]
)
def test_good_images_pass(tmp_path: Path, fmt: str, ext: str) -> None:
    p = tmp_path / f"ok.{ext}"
    p.write_bytes(_encode(_rgb(1), fmt))
    assert im.check_image(p, 10_000) == (True, None, (32, 24))


def test_size_follows_exif_orientation(tmp_path: Path) -> None:
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees when displayed
    buf = io.BytesIO()
    Image.fromarray(_rgb(9)).save(buf, format="JPEG", exif=exif.tobytes())
    p = tmp_path / "rotated.jpg"
    p.write_bytes(buf.getvalue())
    assert im.check_image(p, 10_000) == (True, None, (24, 32))


def _bad_files(tmp_path: Path) -> dict[str, tuple[Path, str]]:
    """name -> (path, expected reason)."""
    png = _encode(_rgb(2, 48, 48), "PNG")
    jpg = _encode(_rgb(3, 48, 48), "JPEG")
    webp = _encode(_rgb(4, 48, 48), "WEBP")
    half = len(jpg) // 2
    cases = {
        "empty.png": (b"", "empty"),
        "text.jpg": (b"this is a text file, not a JPEG\n" * 4, "not_image"),
        "html.png": (b"<html><body>404 Not Found</body></html>", "not_image"),
        "cut.png": (png[: len(png) // 2], "truncated"),
        "cut.jpg": (jpg[:half], "truncated"),
        "cut.webp": (webp[: len(webp) // 2], "truncated"),
        "cut_header.png": (png[:30], "truncated"),
        "garbled.jpg": (jpg[:half] + bytes(255 - b for b in jpg[half:]), "corrupt"),
        "garbled.png": (png[:60] + bytes(255 - b for b in png[60:-20]) + png[-20:], "corrupt"),
    }
    out = {}
    for name, (data, reason) in cases.items():
        (tmp_path / name).write_bytes(data)
        out[name] = (tmp_path / name, reason)
    return out


def test_each_bad_kind_is_classified(tmp_path: Path) -> None:
    for name, (path, reason) in _bad_files(tmp_path).items():
        ok, got, _ = im.check_image(path, 10_000_000)
        assert (ok, got) == (False, reason), name


@pytest.mark.parametrize("limit", [1000, 600])  # Pillow's own bomb error fires past 2 x limit
def test_too_large_is_decided_from_the_header(tmp_path: Path, limit: int) -> None:
    p = tmp_path / "big.png"
    data = _encode(_rgb(5, 30, 40), "PNG")  # 1200 pixels
    p.write_bytes(data)
    assert im.check_image(p, 1200)[0] is True
    assert im.check_image(p, limit)[:2] == (False, "too_large")
    # A cut file is reported too_large, not truncated: it was never decoded.
    p.write_bytes(data[: len(data) // 2])
    assert im.check_image(p, limit)[:2] == (False, "too_large")


def test_check_forces_strict_decoding_and_restores_pillow_settings(tmp_path: Path) -> None:
    p = tmp_path / "cut.jpg"
    jpg = _encode(_rgb(6, 64, 64), "JPEG")
    p.write_bytes(jpg[: len(jpg) // 2])
    old_max = Image.MAX_IMAGE_PIXELS
    ImageFile.LOAD_TRUNCATED_IMAGES = True
    try:
        assert im.check_image(p, 10_000)[:2] == (False, "truncated")
        assert ImageFile.LOAD_TRUNCATED_IMAGES is True
        assert Image.MAX_IMAGE_PIXELS == old_max
    finally:
        ImageFile.LOAD_TRUNCATED_IMAGES = False


def test_check_images_in_threads_keeps_order_and_digests(tmp_path: Path) -> None:
    paths = []
    for i in range(12):
        p = tmp_path / f"{i:02d}.png"
        p.write_bytes(_encode(_rgb(i), "PNG"))
        paths.append(p)
    (tmp_path / "05.png").write_bytes(b"")
    checks = im.check_images(paths, 10_000, workers=3)
    assert [c.reason for c in checks] == [None] * 5 + ["empty"] + [None] * 6
    assert checks[0].sha256 == __import__("hashlib").sha256(paths[0].read_bytes()).hexdigest()
    # Same pixels in another container give the same pixel digest, not the same bytes.
    bmp = tmp_path / "00.bmp"
    bmp.write_bytes(_encode(_rgb(0), "BMP"))
    c_bmp = im.check_images([bmp], 10_000, workers=1)[0]
    assert c_bmp.pixel_sha256 == checks[0].pixel_sha256 and c_bmp.sha256 != checks[0].sha256


# -------------------------------------------------------------------------- tiles
def test_photo_tiles_grid_regions_and_halving() -> None:
    img = _rgb(7, 100, 140)
    tiles = list(tl.photo_tiles(img, 16, factors=(1, 2)))
    full = [t for t in tiles if t[0] == 1]
    half = [t for t in tiles if t[0] == 2]
    assert len(full) == (100 // 16) * (140 // 16)
    assert len(half) == (50 // 16) * (70 // 16)
    region = tl.region_side(16, (1, 2))
    assert region == 256
    for f, y, x, ry, rx, tile in tiles:
        assert tile.shape == (16, 16, 3)
        # the whole footprint lies inside its region
        assert ry == y // region == (y + 16 * f - 1) // region
        assert rx == x // region == (x + 16 * f - 1) // region
    f, y, x, *_, tile = half[3]
    want = img[y : y + 32, x : x + 32].reshape(16, 2, 16, 2, 3).mean(axis=(1, 3))
    assert np.abs(tile.astype(float) - want).max() <= 0.5 + 1e-9  # exact box mean, rounded
    f, y, x, *_, tile = full[5]
    assert np.array_equal(tile, img[y : y + 16, x : x + 16])


def test_sample_tiles_groups_and_band_for_stereo() -> None:
    tiles = list(
        tl.sample_tiles(
            128, photos=(SamplePhoto("coins"), SamplePhoto("stereo_motorcycle", band=True))
        )
    )
    coins = [t for t in tiles if "coins" in t.origin]
    moto = [t for t in tiles if "motorcycle" in t.origin]
    assert coins and moto
    assert all(t.pixels.shape == (128, 128, 3) and t.pixels.dtype == np.uint8 for t in tiles)
    assert {t.group.split(":")[0] for t in moto} == {"stereo_motorcycle"}
    assert all(":band" in t.group for t in moto)
    assert any("[0]" in t.origin for t in moto) and any("[1]" in t.origin for t in moto)
    assert all(t.group.count(":") == 2 for t in coins)  # photo:ry:rx


def test_is_flat() -> None:
    flat = np.full((8, 8, 3), 100, np.uint8)
    assert tl.is_flat(flat)
    flat[0, 0] = 130
    assert not tl.is_flat(flat, threshold=1.0)


def test_encode_png_roundtrip() -> None:
    grey = _rgb(8)[:, :, 0]
    back = np.asarray(Image.open(io.BytesIO(im.encode_png(grey))))
    assert back.shape == grey.shape and np.array_equal(back, grey)
    assert im.encode_png(grey) == im.encode_png(grey.copy())
    with pytest.raises(TypeError):
        im.encode_png(grey.astype(np.float32))


# ---------------------------------------------------------------------------- IDX
def _idx(arr: np.ndarray, code: int) -> bytes:
    head = bytes([0, 0, code, arr.ndim]) + struct.pack(f">{arr.ndim}I", *arr.shape)
    return head + arr.astype(arr.dtype.newbyteorder(">")).tobytes()


def test_decode_idx_images_labels_gzip(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    digits = rng.integers(0, 256, (3, 4, 5), dtype=np.uint8)
    (tmp_path / "img.idx").write_bytes(_idx(digits, 0x08))
    (tmp_path / "img.idx.gz").write_bytes(gzip.compress(_idx(digits, 0x08)))
    labels = np.array([7, 2, 1], np.uint8)
    (tmp_path / "lab.gz").write_bytes(gzip.compress(_idx(labels, 0x08)))
    shorts = np.array([[-300, 2], [1000, -1]], np.int16)
    for name in ("img.idx", "img.idx.gz"):
        out = decode_idx(tmp_path / name)
        assert out.dtype == np.uint8 and np.array_equal(out, digits)
    assert np.array_equal(decode_idx(tmp_path / "lab.gz"), labels)
    assert np.array_equal(decode_idx(_idx(shorts, 0x0B)), shorts)  # big-endian int16


def test_decode_idx_errors_name_the_problem(tmp_path: Path) -> None:
    good = _idx(np.zeros((2, 3, 3), np.uint8), 0x08)
    p = tmp_path / "bad.idx"
    p.write_bytes(b"\x01\x02" + good[2:])
    with pytest.raises(ValueError, match="bad.idx.*magic"):
        decode_idx(p)
    p.write_bytes(good[:-1])
    with pytest.raises(ValueError, match="need 34 bytes, the file has 33"):
        decode_idx(p)
    p.write_bytes(bytes([0, 0, 0x42, 1]) + good[4:])
    with pytest.raises(ValueError, match="type code 0x42"):
        decode_idx(p)
