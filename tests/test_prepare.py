"""The prepare stage (aerestore.data.prepare)."""

from __future__ import annotations

import csv
import hashlib
import json
import random
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from aerestore.damage import DAMAGE_CLASSES
from aerestore.data.layout import damage_labels
from aerestore.data.layout import PrepareError
from aerestore.data.prepare import run_prepare
from aerestore.data.raw import load_image
from aerestore.io import open_array
from aerestore.params import Params

SIZE = 16


def make_params(**prepare) -> Params:
    return Params.model_validate(
        {
            "seed": prepare.pop("seed", 3),
            "data": {"image_size": SIZE},
            "blocks": {"size": 8, "overlap": 2},
            "prepare": prepare,
        }
    )


NOISE_AND_BLUR = [
    {"op": "gaussian_noise", "std": 0.03},
    {"op": "local_blur", "regions": [1, 2], "strength": [1.0, 2.0]},
    {"op": "local_noise", "regions": 1, "std": 0.2, "exclusive": True},
]


def textured_image(i: int, w: int = 24, h: int = 20) -> Image.Image:
    rng = np.random.default_rng(i)
    y, x = np.mgrid[0:h, 0:w]
    base = 100 + 60 * np.sin((x + i) / 3.0)[..., None] + 40 * np.cos((y - i) / 4.0)[..., None]
    arr = np.clip(base + rng.uniform(-25, 25, (h, w, 3)), 0, 255).astype(np.uint8)
    return Image.fromarray(arr)


def write_raw(raw: Path, images: list[tuple[str, Image.Image | None, str]], order: list[int] | None = None) -> Path:
    """Save images under raw/images and write raw/manifest.csv (rows in ``order``)."""
    (raw / "images").mkdir(parents=True, exist_ok=True)
    rows = []
    for name, img, split in images:
        path = raw / "images" / name
        if not path.exists():
            img.save(path)
        rows.append(
            {
                "file": f"images/{name}",
                "split": split,
                "width": img.width if img is not None else 0,
                "height": img.height if img is not None else 0,
                "sha256": hashlib.sha256(path.read_bytes()).hexdigest(),
            }
        )
    if order is not None:
        rows = [rows[i] for i in order]
    with (raw / "manifest.csv").open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=["file", "split", "width", "height", "sha256"])
        writer.writeheader()
        writer.writerows(rows)
    return raw


SPLIT_OF = ["train"] * 5 + ["val"] * 2 + ["test"] * 2


def dataset(tmp_path: Path, order: list[int] | None = None, name: str = "raw") -> Path:
    images = [(f"img{i}.png", textured_image(i), s) for i, s in enumerate(SPLIT_OF)]
    return write_raw(tmp_path / name, images, order)


def run(params: Params, raw: Path, tmp_path: Path, tag: str = "out") -> tuple[Path, dict]:
    out = tmp_path / tag / "prepared"
    metrics = run_prepare(
        params, raw, out, tmp_path / tag / "metrics.json", tmp_path / tag / "grid.png", progress=False
    )
    return out, metrics


def test_outputs_shapes_dtypes_metrics_and_augment_only_train(tmp_path):
    raw = dataset(tmp_path)
    params = make_params(augment_copies=2, degrade=NOISE_AND_BLUR, chunk=2)
    out, metrics = run(params, raw, tmp_path)
    expected_n = {"train": 5 * 3, "val": 2, "test": 2}
    for split, n in expected_n.items():
        clean = open_array(out / split / "clean.npy")
        degraded = open_array(out / split / "degraded.npy")
        mask = open_array(out / split / "mask.npy")
        assert isinstance(clean, np.memmap)
        assert clean.shape == degraded.shape == (n, SIZE, SIZE, 3)
        assert mask.shape == (n, SIZE, SIZE, 2)  # one channel per damage kind: blur, noise
        assert clean.dtype == degraded.dtype == mask.dtype == np.uint8
        assert (degraded != clean).any(axis=(1, 2, 3)).all()  # every input is degraded
        assert mask[..., 0].any(axis=(1, 2)).all()  # every image has a blurred blob
        assert mask[..., 1].any()  # and noisy ones (they may be crowded out by blur)
        m = metrics["splits"][split]
        assert m["n"] == n and m["images"] == n // (3 if split == "train" else 1)
        assert 15 < m["psnr"] < 60 and 0 < m["ssim"] < 1
        assert m["mask_share"] == pytest.approx(np.count_nonzero(mask.max(-1)) / mask[..., 0].size)
        labels = damage_labels(mask)
        for c, name in enumerate(DAMAGE_CLASSES):
            assert m[f"{name}_share"] == pytest.approx((labels == c).mean())
        assert m["blur_share"] > 0 and m["noise_share"] > 0
        # per-class PSNR of the input: the noisy regions (sigma 0.2) are the worst
        assert m["psnr_noise"] < m["psnr_clean"] and m["psnr_noise"] < m["psnr_blur"]
    assert json.loads((tmp_path / "out" / "metrics.json").read_text()) == metrics
    grid = np.asarray(Image.open(tmp_path / "out" / "grid.png"))
    assert grid.ndim == 3 and grid.shape[0] > 3 * 90 and grid.shape[1] > 2 * 90

    # val/test: the unaugmented image; train: copy 0 unaugmented, copies 1..2 augmented
    train = open_array(out / "train" / "clean.npy")
    for i in range(5):
        ref = load_image(raw / "images" / f"img{i}.png", SIZE, 3)
        np.testing.assert_array_equal(train[3 * i], ref)
        assert not np.array_equal(train[3 * i + 1], ref)
        assert not np.array_equal(train[3 * i + 2], train[3 * i + 1])
    test = open_array(out / "test" / "clean.npy")
    for j, i in enumerate((7, 8)):
        np.testing.assert_array_equal(test[j], load_image(raw / "images" / f"img{i}.png", SIZE, 3))


def test_no_degradation_no_augmentation(tmp_path):
    raw = dataset(tmp_path)
    out, metrics = run(make_params(), raw, tmp_path)
    clean = open_array(out / "train" / "clean.npy")
    assert clean.shape[0] == 5
    np.testing.assert_array_equal(open_array(out / "train" / "degraded.npy"), clean)
    assert not open_array(out / "train" / "mask.npy").any()
    assert metrics["splits"]["train"]["psnr"] == 100.0  # identical: the cap
    assert metrics["splits"]["train"]["ssim"] == pytest.approx(1.0)
    assert metrics["splits"]["train"]["mask_share"] == 0


def test_deterministic_across_workers_chunks_and_order(tmp_path):
    ops = NOISE_AND_BLUR + [{"op": "jpeg", "quality": [30, 70], "prob": 0.5}]
    raw = dataset(tmp_path)
    out1, m1 = run(make_params(augment_copies=1, degrade=ops, workers=1, chunk=2), raw, tmp_path, "a")
    out2, m2 = run(make_params(augment_copies=1, degrade=ops, workers=2, chunk=3), raw, tmp_path, "b")
    for split in ("train", "val", "test"):
        for name in ("clean", "degraded", "mask"):
            a = (out1 / split / f"{name}.npy").read_bytes()
            assert a == (out2 / split / f"{name}.npy").read_bytes(), (split, name)
    assert m1 == m2
    # shuffled manifest: the same rows per image, in the new order
    order = list(range(9))
    random.Random(0).shuffle(order)
    raw_s = dataset(tmp_path, order=order, name="raw_shuffled")
    out3, _ = run(make_params(augment_copies=1, degrade=ops, workers=2, chunk=4), raw_s, tmp_path, "c")
    for split in ("train", "val", "test"):
        old = [i for i in range(9) if SPLIT_OF[i] == split]
        new = [i for i in order if SPLIT_OF[i] == split]
        k = 2 if split == "train" else 1
        for name in ("degraded", "mask"):
            a = open_array(out1 / split / f"{name}.npy")
            b = open_array(out3 / split / f"{name}.npy")
            for pos_new, img in enumerate(new):
                pos_old = old.index(img)
                np.testing.assert_array_equal(b[k * pos_new : k * pos_new + k], a[k * pos_old : k * pos_old + k])
    # another seed gives other degradations
    out4, _ = run(make_params(augment_copies=1, degrade=ops, seed=4), raw, tmp_path, "d")
    assert not np.array_equal(open_array(out4 / "val" / "degraded.npy"), open_array(out1 / "val" / "degraded.npy"))


def test_single_channel_and_empty_split(tmp_path):
    images = [(f"g{i}.png", textured_image(i).convert("L"), s) for i, s in enumerate(["train", "train", "test"])]
    raw = write_raw(tmp_path / "raw", images)
    params = make_params(channels=1, augment_copies=1, degrade=NOISE_AND_BLUR)
    out, metrics = run(params, raw, tmp_path)
    assert open_array(out / "train" / "clean.npy").shape == (4, SIZE, SIZE, 1)
    assert open_array(out / "train" / "degraded.npy").shape == (4, SIZE, SIZE, 1)
    assert open_array(out / "test" / "clean.npy").shape == (1, SIZE, SIZE, 1)
    for name, c in (("clean", 1), ("degraded", 1), ("mask", 2)):
        assert open_array(out / "val" / f"{name}.npy").shape == (0, SIZE, SIZE, c)
    assert metrics["splits"]["val"] == {
        "images": 0, "n": 0, "psnr": None, "ssim": None, "mask_share": None, "mask_mean": None,
        "clean_share": None, "psnr_clean": None, "blur_share": None, "psnr_blur": None,
        "noise_share": None, "psnr_noise": None,
    }


# ------------------------------------------------------------------- modes
def save(tmp_path: Path, img: Image.Image, name: str, **kw) -> Path:
    path = tmp_path / name
    img.save(path, **kw)
    return path


def test_mode_conversions(tmp_path):
    const = lambda mode, v, size=(12, 12): Image.new(mode, size, v)  # noqa: E731
    # L -> replicated RGB, or kept as one channel
    p = save(tmp_path, const("L", 77), "l.png")
    assert (load_image(p, 8, 3) == 77).all() and load_image(p, 8, 3).shape == (8, 8, 3)
    assert (load_image(p, 8, 1) == 77).all() and load_image(p, 8, 1).shape == (8, 8, 1)
    # RGB -> one channel: BT.601 luma
    p = save(tmp_path, const("RGB", (200, 100, 50)), "rgb.png")
    assert (load_image(p, 8, 1) == round(0.299 * 200 + 0.587 * 100 + 0.114 * 50)).all()
    # RGBA composited on black
    rgba = Image.new("RGBA", (12, 12), (200, 100, 50, 128))
    rgba.paste((10, 20, 30, 0), (0, 0, 12, 6))
    out = load_image(save(tmp_path, rgba, "rgba.png"), 12, 3)
    assert (out[:6] == 0).all()
    np.testing.assert_array_equal(out[6:, 0, :], [[round(v * 128 / 255) for v in (200, 100, 50)]] * 6)
    # LA
    out = load_image(save(tmp_path, const("LA", (90, 255)), "la.png"), 8, 3)
    assert (out == 90).all()
    # palette, with and without transparency
    pal = Image.new("P", (12, 12), 1)
    pal.putpalette([0, 0, 0, 10, 200, 30] + [0] * (256 * 3 - 6))
    pal.paste(0, (0, 0, 12, 6))
    out = load_image(save(tmp_path, pal, "p.png"), 12, 3)
    np.testing.assert_array_equal(out[8, 8], [10, 200, 30])
    pal.info["transparency"] = 1
    out = load_image(save(tmp_path, pal, "pt.png", transparency=1), 12, 3)
    assert (out == 0).all()  # index 1 transparent -> black, index 0 is black
    # 16-bit: scaled, not clipped
    a16 = np.array([[0, 65535, 257 * 10, 1000]] * 4, np.uint16)
    img16 = Image.fromarray(a16)
    assert img16.mode == "I;16"
    out = load_image(save(tmp_path, img16, "g16.png"), 4, 1, "nearest")
    np.testing.assert_array_equal(out[0, :, 0], [0, 255, 10, round(1000 * 255 / 65535)])
    # 32-bit int holding 16-bit data, and float in [0, 1]
    img_i = Image.fromarray(a16.astype(np.int32), mode="I")
    out = load_image(save(tmp_path, img_i, "i.tif"), 4, 1, "nearest")
    np.testing.assert_array_equal(out[0, :, 0], [0, 255, 10, 4])
    img_f = Image.fromarray(np.array([[0.0, 1.0, 0.5, 0.25]] * 4, np.float32), mode="F")
    out = load_image(save(tmp_path, img_f, "f.tif"), 4, 3, "nearest")
    np.testing.assert_array_equal(out[0, :, 0], [0, 255, 128, 64])


def test_centre_crop_then_resize(tmp_path):
    wide = np.tile((np.arange(30) * 8).astype(np.uint8), (10, 1))  # 10 high, 30 wide
    out = load_image(save(tmp_path, Image.fromarray(wide), "wide.png"), 10, 1, "nearest")
    np.testing.assert_array_equal(out[0, :, 0], np.arange(10, 20) * 8)
    tall = wide.T.copy()  # 30 high, 10 wide
    out = load_image(save(tmp_path, Image.fromarray(tall), "tall.png"), 10, 1, "nearest")
    np.testing.assert_array_equal(out[:, 0, 0], np.arange(10, 20) * 8)
    # downscale by area: 2x2 means
    out = load_image(save(tmp_path, Image.fromarray(wide), "wide2.png"), 5, 1, "area")
    np.testing.assert_array_equal(out[0, :, 0], (np.arange(10, 20, 2) * 8 + 4))


# ------------------------------------------------------------------ errors
def test_bad_input_names_the_file_and_keeps_previous_output(tmp_path):
    raw = dataset(tmp_path)
    out, _ = run(make_params(), raw, tmp_path)
    before = (out / "train" / "clean.npy").read_bytes()
    params = make_params(degrade=NOISE_AND_BLUR)

    (raw / "images" / "img3.png").unlink()
    with pytest.raises(PrepareError, match=r"img3\.png.*missing"):
        run(params, raw, tmp_path)
    (raw / "images" / "img3.png").write_bytes(b"not a png")
    with pytest.raises(PrepareError, match=r"img3\.png: SHA-256"):
        run(params, raw, tmp_path)
    write_raw(raw, [(f"img{i}.png", None, s) for i, s in enumerate(SPLIT_OF)])  # re-hash the bad file
    with pytest.raises(PrepareError, match=r"img3\.png: cannot decode"):
        run(params, raw, tmp_path)
    with pytest.raises(PrepareError, match=r"img3\.png: cannot decode"):
        run(make_params(workers=2), raw, tmp_path)

    assert (out / "train" / "clean.npy").read_bytes() == before  # previous output intact
    assert sorted(p.name for p in out.parent.iterdir()) == ["grid.png", "metrics.json", "prepared"]

    text = (raw / "manifest.csv").read_text().replace(",train,", ",training,", 1)
    (raw / "manifest.csv").write_text(text)
    with pytest.raises(PrepareError, match=r"manifest\.csv:2: split 'training'"):
        run(params, raw, tmp_path)
    (raw / "manifest.csv").write_text("file,split\nimages/img0.png,train\n")
    with pytest.raises(PrepareError, match="missing column.*sha256"):
        run(params, raw, tmp_path)
