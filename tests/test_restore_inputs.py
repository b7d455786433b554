"""`aerestore restore` on every kind of bad or unusual input, in one command: each file that
cannot be restored is named with its reason and skipped, the others are restored, and the
exit code says that some were skipped."""

from __future__ import annotations

import io
import struct
import zlib
from pathlib import Path

import numpy as np
from helpers import tiny_model
from PIL import Image

from aerestore import cli
from aerestore.data.images import read_image
from aerestore.models import save_model


def png_bytes(width: int, height: int, bit_depth: int, colour_type: int, rows: bytes) -> bytes:
    """A PNG written by hand (Pillow writes neither 16-bit RGB nor lying headers)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, bit_depth, colour_type, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(rows))
            + chunk(b"IEND", b""))


def encoded(image: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format=fmt, **kw)
    return buf.getvalue()


def test_restore_names_and_skips_each_bad_input_and_restores_the_rest(tmp_path, capsys):
    model_dir = tmp_path / "model"
    model_dir.mkdir()
    save_model(tiny_model("conv_ae", block=16), model_dir / "model.pt", overlap=4)
    rng = np.random.default_rng(0)
    photo = Image.fromarray(rng.integers(0, 256, (24, 30, 3), dtype=np.uint8))
    frames = [Image.fromarray(np.full((12, 12, 3), 60 * i, np.uint8)) for i in range(3)]
    wide = (rng.integers(0, 65536, (10, 14, 3))).astype(">u2")  # 16-bit RGB
    grey16 = Image.fromarray((rng.integers(0, 65536, (9, 11))).astype(np.uint16))
    png, jpeg = encoded(photo, "PNG"), encoded(photo, "JPEG", quality=90)
    files = {  # name -> (bytes, what happens: a restored shape or the reason it is skipped)
        "photo.png": (png, (24, 30, 3)),
        "one_pixel.png": (encoded(Image.new("RGB", (1, 1), (200, 10, 10)), "PNG"), (1, 1, 3)),
        "grey16.png": (encoded(grey16, "PNG"), (9, 11, 3)),
        "rgb48.png": (png_bytes(14, 10, 16, 2, b"".join(b"\0" + row.tobytes() for row in wide)), (10, 14, 3)),
        "cmyk.jpg": (encoded(photo.convert("CMYK"), "JPEG"), (24, 30, 3)),
        "still.gif": (encoded(frames[1], "GIF"), (12, 12, 3)),
        "empty.png": (b"", "empty file (0 bytes)"),
        "cut.png": (png[: len(png) // 2], "truncated image"),
        "cut.jpg": (jpeg[: len(jpeg) // 2], "truncated image"),
        "bomb.png": (png_bytes(30000, 30000, 8, 0, b"\0" * 64),
                     "too large, 30000x30000 = 900,000,000 pixels > --max-pixels = 89,478,485"),
        "animated.gif": (encoded(frames[0], "GIF", save_all=True, append_images=frames[1:]),
                         "animated or multi-page (3 frames)"),
        "animated.png": (encoded(frames[0], "PNG", save_all=True, append_images=frames[1:]),
                         "animated or multi-page (3 frames)"),
        "notes.png": (b"shopping list: eggs, flour\n", "not an image (no image format recognised)"),
    }
    for name, (data, _) in files.items():
        (tmp_path / name).write_bytes(data)
    out = tmp_path / "out"
    code = cli.main(["restore", *(str(tmp_path / n) for n in files), "-m", str(model_dir), "-o", str(out),
                     "--no-progress"])
    err = capsys.readouterr().err
    skipped = {n for n, (_, what) in files.items() if isinstance(what, str)}
    assert code == 1
    for name, (_, what) in files.items():
        if name in skipped:
            assert f"aerestore restore: skipped {tmp_path / name}: {what}" in err, name
            assert not (out / f"{Path(name).stem}.png").exists()
        else:
            assert np.asarray(Image.open(out / f"{Path(name).stem}.png")).shape == what, name
    assert err.count("skipped") == len(skipped) and f"restored {len(files) - len(skipped)} of {len(files)}" in err
    # the conversions: 16 bits scaled (grey /257; RGB keeps the high byte), CMYK as RGB
    np.testing.assert_array_equal(read_image(tmp_path / "grey16.png"),
                                  np.rint(np.asarray(grey16) / 257.0).astype(np.uint8))
    np.testing.assert_array_equal(read_image(tmp_path / "rgb48.png"), (wide >> 8).astype(np.uint8))
    assert read_image(tmp_path / "cmyk.jpg").shape == (24, 30, 3)
    # --max-pixels: a lower limit refuses an ordinary photo from its header
    assert cli.main(["restore", str(tmp_path / "photo.png"), "-m", str(model_dir), "-o", str(out),
                     "--no-progress", "--max-pixels", "100"]) == 1
    assert "too large, 30x24 = 720 pixels > --max-pixels = 100" in capsys.readouterr().err
