"""The CBSD68 benchmark (aerestore.benchmark_sets, `aerestore cbsd68`) and its training preset
(presets/gaussian-denoise.yaml), on small synthetic images: nothing here reads ../shared."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from aerestore import benchmark_sets as B
from aerestore.cli import main
from aerestore.data.degrade import degrade_image
from aerestore.data.localops import draw_float
from aerestore.params import GaussianNoiseOp, load_base
from aerestore.studies import presets as SP
from helpers import load_script

REPO = Path(__file__).resolve().parents[1]


def _clean_images(n: int = 2, size: tuple[int, int] = (40, 48)) -> list[np.ndarray]:
    """Mid-range colour images (64..192): noise of sigma <= 10 is never clipped."""
    rng = np.random.default_rng(7)
    return [rng.integers(64, 193, (*size, 3), dtype=np.uint8) for _ in range(n)]


@pytest.fixture
def folder(tmp_path):
    images = _clean_images()
    for i, img in enumerate(images):
        Image.fromarray(img).save(tmp_path / f"{i:04d}.png")
    (tmp_path / "README.md").write_text("not an image")
    return tmp_path, images


def _oracle(images):
    """A 'restorer' that returns the clean image closest to the noisy one."""
    def denoise(x, sigma):
        errs = [np.mean((x - c / 255.0) ** 2) for c in images]
        return images[int(np.argmin(errs))].astype(np.float32) / 255.0
    return B.Method("oracle", "ours", denoise)


def test_a_restorer_returning_the_clean_image_scores_the_cap(folder):
    path, images = folder
    result = B.run_benchmark(path, [_oracle(images)], sigmas=[25], progress=False)
    (row,) = result["rows"]
    assert row["images"] == 2 and row["psnr"]["25"] == B.PSNR_CAP
    assert result["images"] == ["0000.png", "0001.png"]  # the README is not an image


def test_the_noisy_input_scores_the_analytic_psnr_of_the_noise(folder):
    path, _ = folder
    result = B.run_benchmark(path, [B.noisy_method()], sigmas=[4, 8], progress=False)
    row = result["rows"][0]
    for sigma in (4, 8):
        # 20 log10(255 / sigma); the 8-bit rounding adds 1/12 LSB^2 of variance (~0.01 dB at
        # sigma 4) and 5,760 samples per image leave the sample variance within ~2 %
        assert row["psnr"][str(sigma)] == pytest.approx(20 * math.log10(255 / sigma), abs=0.15)


def test_the_fixed_seed_gives_the_same_noisy_images(folder):
    _, images = folder
    a = B.noisy_image(images[0], 25, seed=0, index=3)
    assert np.array_equal(a, B.noisy_image(images[0], 25, seed=0, index=3))
    assert not np.array_equal(a, B.noisy_image(images[0], 25, seed=1, index=3))
    assert not np.array_equal(a, B.noisy_image(images[0], 25, seed=0, index=4))
    assert not np.array_equal(a, B.noisy_image(images[0], 15, seed=0, index=3))
    clipped = B.noisy_image(images[0], 50, seed=0, index=3, clip=True)
    assert clipped.min() >= 0 and clipped.max() <= 1
    assert np.allclose(clipped * 255, np.rint(clipped * 255), atol=1e-4)  # 8-bit levels


def test_unclipped_noise_leaves_the_range_and_has_the_stated_std():
    clean = np.zeros((64, 64, 3), np.uint8)
    x = B.noisy_image(clean, 25, seed=0, index=0)
    assert x.min() < 0  # not clipped: the literature's protocol
    assert x.std() * 255 == pytest.approx(25, rel=0.03)


def test_a_subset_sees_the_same_noise_as_the_whole_folder(folder):
    path, _ = folder
    whole = B.run_benchmark(path, [B.noisy_method()], sigmas=[25], progress=False)
    one = B.run_benchmark(path, [B.noisy_method()], sigmas=[25], max_images=1, progress=False)
    assert one["images"] == ["0000.png"]
    assert one["rows"][0]["per_image"]["25"]["0000.png"] == whole["rows"][0]["per_image"]["25"]["0000.png"]
    again = B.run_benchmark(path, [B.noisy_method()], sigmas=[25], progress=False)
    assert again["rows"] == [{**whole["rows"][0], "seconds": again["rows"][0]["seconds"]}]


def test_slow_anchors_run_on_the_anchor_subset_and_every_row_is_averaged_there(folder):
    path, images = folder
    slow = B.Method("slow", "classical", lambda x, s: x, slow=True)
    result = B.run_benchmark(path, [B.noisy_method(), slow], sigmas=[25], anchor_images=1, progress=False)
    assert result["anchor_images"] == ["0000.png"]
    noisy, anchor = result["rows"]
    assert noisy["images"] == 2 and anchor["images"] == 1
    assert noisy["psnr_anchor_subset"]["25"] == noisy["per_image"]["25"]["0000.png"]
    text = B.markdown(result)
    assert "non-commercial" in text and "not clipped" in text and "Every row on the 1 images" in text
    assert "30.71" in text  # the published CBM3D figure beside ours


def test_merge_adds_an_earlier_runs_rows_on_the_same_protocol(folder):
    path, images = folder
    first = B.run_benchmark(path, [B.noisy_method(), B.Method("slow", "classical", lambda x, s: x, slow=True)],
                            sigmas=[10], anchor_images=1, progress=False)
    later = B.run_benchmark(path, [B.noisy_method(), _oracle(images)], sigmas=[10], progress=False)
    merged = B.merge(later, first)
    assert [r["name"] for r in merged["rows"]] == ["noisy input", "oracle", "slow"]
    assert merged["anchor_images"] == ["0000.png"]
    assert merged["rows"][1]["psnr_anchor_subset"]["10"] == B.PSNR_CAP
    other_seed = B.run_benchmark(path, [B.noisy_method()], sigmas=[10], seed=1, progress=False)
    with pytest.raises(ValueError, match="seed"):
        B.merge(later, other_seed)


def test_an_incompatible_merge_is_refused_before_anything_is_scored(folder, tmp_path, capsys):
    """--merge of a record on another seed (or of other images) stops the command before any
    model loads or any image is scored (a missing model would otherwise fail first), and writes
    nothing; a file that is not a record is named."""
    path, _ = folder
    earlier = tmp_path / "seed1"
    assert main(["cbsd68", str(path), "--classical", "--sigmas", "10", "--seed", "1", "-o", str(earlier)]) == 0
    capsys.readouterr()
    out = tmp_path / "new"
    args = ["cbsd68", str(path), "--model", str(tmp_path / "no_such_model"), "--sigmas", "10", "-o", str(out)]
    assert main(args + ["--merge", str(earlier.with_suffix(".json"))]) == 2
    err = capsys.readouterr().err
    assert "--merge" in err and "seed 1 differs from 0" in err and not out.with_suffix(".json").exists()
    (tmp_path / "junk.json").write_text("{}")
    assert main(args + ["--merge", str(tmp_path / "junk.json")]) == 2
    assert "not a record of aerestore cbsd68" in capsys.readouterr().err


def test_spaced_picks_evenly_with_both_ends():
    assert B.spaced(68, 6) == [0, 13, 27, 40, 54, 67]
    assert B.spaced(68, 0) == list(range(68)) and B.spaced(3, 5) == [0, 1, 2]


def test_missing_or_empty_folders_are_named(tmp_path, capsys):
    missing = tmp_path / "nope"
    with pytest.raises(FileNotFoundError, match=str(missing)):
        B.list_images(missing)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ValueError, match=f"{empty}: holds no images"):
        B.list_images(empty)
    assert main(["cbsd68", str(missing), "--classical"]) == 2
    assert str(missing) in capsys.readouterr().err


def test_the_command_writes_markdown_and_json(folder, tmp_path):
    path, _ = folder
    out = tmp_path / "out" / "bench"
    assert main(["cbsd68", str(path), "--classical", "--sigmas", "10", "-o", str(out)]) == 0
    data = json.loads(out.with_suffix(".json").read_text())
    assert data["protocol"]["clip_noisy"] is False and data["sigmas"] == [10]
    assert "DRUNet" in out.with_suffix(".md").read_text()


def test_other_images_get_the_protocol_without_the_published_figures_and_never_merge_with_cbsd68(folder, tmp_path):
    """--other-images (a validation set, not CBSD68): the same noise and scores, but neither
    CBSD68's published figures nor its licence line; merging it with a CBSD68 record, or
    setting their per-image gaps side by side, is refused."""
    path, _ = folder
    out = tmp_path / "val"
    assert main(["cbsd68", str(path), "--classical", "--sigmas", "10", "--other-images", "-o", str(out)]) == 0
    data = json.loads(out.with_suffix(".json").read_text())
    md = out.with_suffix(".md").read_text()
    assert data["benchmark"] == B.OTHER and data["published"] == {} and "not CBSD68" in data["licence"]
    assert "## Published" not in md and "BSDS300" not in md and md.startswith(f"# {B.OTHER}")
    cbsd = B.run_benchmark(path, [B.noisy_method()], sigmas=[10], progress=False)
    assert data["rows"][0]["per_image"] == cbsd["rows"][0]["per_image"]  # the same protocol
    with pytest.raises(ValueError, match="not CBSD68|other images"):
        B.merge(cbsd, data)
    with pytest.raises(ValueError, match="other images"):
        B.same_protocol(data, cbsd)


def test_label_names_the_row_of_its_model(folder, tmp_path, capsys):
    from helpers import save_tiny_restorer

    path, _ = folder
    model = tmp_path / "models" / "conv_ae"
    save_tiny_restorer(model, block=16)
    out = tmp_path / "bench"
    args = ["cbsd68", str(path), "--classical", "--sigmas", "10", "-o", str(out), "--model", str(model)]
    assert main([*args, "--label", "my restorer, 4000 steps"]) == 0
    rows = [r["name"] for r in json.loads(out.with_suffix(".json").read_text())["rows"]]
    assert rows == ["noisy input", "my restorer, 4000 steps"]
    assert main(args) == 0  # no label: the architecture and the path
    rows = [r["name"] for r in json.loads(out.with_suffix(".json").read_text())["rows"]]
    assert rows[1] == f"conv_ae ({model})"
    assert main([*args, "--label", "a", "--label", "b"]) == 2
    assert "2 --label for 1 --model" in capsys.readouterr().err


# ------------------------------------------------------------------ the preset
def test_the_preset_validates_and_draws_sigma_over_the_benchmark_range():
    preset = SP.find_preset("gaussian-denoise", REPO / "presets")
    base = load_base(REPO / "params.yaml")
    for sample in (False, True):
        p = SP.resolve(preset, base, sample=sample)
        assert p.architectures == ["unet_ae"] and p.train.crops.fresh_damage
        assert p.train.crops.float_damage  # unclipped float noise, as the benchmark adds it
        (op,) = p.prepare.degrade
        assert isinstance(op, GaussianNoiseOp) and op.prob == 1.0
        lo, hi = op.std
        assert lo * 255 < 15 and hi * 255 > 50  # covers sigma 15, 25 and 50
    assert SP.resolve(preset, base, sample=True).data.source == "sample"
    draws = [draw_float(np.random.default_rng(i), op.std) for i in range(300)]
    assert lo <= min(draws) and max(draws) <= hi
    assert min(draws) * 255 < 15 and max(draws) * 255 > 50
    # over the whole image: a mid-grey image's noise, every pixel
    grey = np.full((96, 96, 3), 128, np.uint8)
    for i in range(5):
        noisy, mask = degrade_image(grey, [op], np.random.default_rng(i))
        std = (noisy.astype(np.float64) - 128).std()
        assert lo * 255 * 0.9 < std < hi * 255 * 1.05
        assert not mask.any()  # uniform noise: no local damage


def test_the_texture_script_finds_a_gap_that_grows_with_texture(tmp_path):
    """benchmarks/cbsd68_texture.py on 8 images of rising texture (random pixels of rising
    amplitude around grey) where "ours" loses 0.1 dB more on each: ρ = −1, the quarters'
    means are the known gaps; a row name that matches two rows is refused by name, and so is an anchor scored on other
    noise (another seed)."""
    mod = load_script(REPO / "benchmarks" / "cbsd68_texture.py")
    rng = np.random.default_rng(0)
    names = [f"{i:04d}.png" for i in range(8)]
    for i, n in enumerate(names):
        amp = 4 * (i + 1)
        Image.fromarray((128 + rng.integers(-amp, amp + 1, (24, 24, 3))).astype(np.uint8)).save(tmp_path / n)
    gaps = [-0.1 * i for i in range(8)]

    def record(path, rows, seed=0):
        protocol = {"seed": seed, "clip_noisy": False, "noise": "x + N(0, s^2)"}
        path.write_text(json.dumps({"images_in_folder": 8, "protocol": protocol,
                                    "rows": [{"name": k, "per_image": {"25": v}} for k, v in rows.items()]}))

    record(tmp_path / "ours.json", {"net A": {n: 30 + g for n, g in zip(names, gaps)}, "net B": {n: 0.0 for n in names}})
    record(tmp_path / "anchor.json", {"CBM3D (run here)": {n: 30.0 for n in names}})
    out = mod.main([str(tmp_path), "--ours", str(tmp_path / "ours.json"), "--ours-row", "net a", "--anchor",
                    str(tmp_path / "anchor.json"), "--anchor-row", "cbm3d", "--out", str(tmp_path / "gap.json")])
    assert out["images"] == 8 and out["spearman_rho"] == pytest.approx(-1.0)
    assert out["gap_smoothest_quarter"] == pytest.approx(-0.05) and out["gap_most_textured_quarter"] == pytest.approx(-0.65)
    assert json.loads((tmp_path / "gap.json").read_text())["per_image"]["0007.png"]["gap"] == pytest.approx(-0.7)
    with pytest.raises(SystemExit, match="2 rows match 'net'"):
        mod.main([str(tmp_path), "--ours", str(tmp_path / "ours.json"), "--ours-row", "net", "--anchor",
                  str(tmp_path / "anchor.json"), "--anchor-row", "cbm3d"])
    record(tmp_path / "other_noise.json", {"CBM3D (run here)": {n: 30.0 for n in names}}, seed=1)
    with pytest.raises(SystemExit, match="protocol seed 1 differs from 0"):  # gaps on other noise draws
        mod.main([str(tmp_path), "--ours", str(tmp_path / "ours.json"), "--ours-row", "net a", "--anchor",
                  str(tmp_path / "other_noise.json"), "--anchor-row", "cbm3d"])


def test_the_natural_tiles_script_keeps_the_held_out_photographs_out_of_training(tmp_path):
    """benchmarks/natural_tiles.py: train/ holds the grid tiles of the named photographs at
    each scale (camera 512 px at 1/2: 4 x 4 tiles of 64; coins 303 x 384 at 1/2: 2 x 3) and the
    faces copied in; val/ the four held-out photographs whole, none of them tiled into train/;
    an unknown or held-out name, an empty faces folder and a non-empty output are refused."""
    mod = load_script(REPO / "benchmarks" / "natural_tiles.py")
    faces = tmp_path / "faces"
    (faces / "sub").mkdir(parents=True)
    for name in ("a.png", "sub/b.png"):
        Image.fromarray(np.full((20, 30, 3), 90, np.uint8)).save(faces / name)
    m = mod.build(tmp_path / "out", size=64, factors=(2,), faces=faces, photos=("camera", "coins"))
    origins = list(m["train"].values())
    assert sum(o.startswith("skimage.data.camera scale=1/2") for o in origins) == 16
    assert sum(o.startswith("skimage.data.coins scale=1/2") for o in origins) == 6
    assert sorted(n for n in m["train"] if n.startswith("face_")) == ["face_a.png", "face_sub_b.png"]
    assert sorted(p.name for p in (tmp_path / "out" / "train").iterdir()) == sorted(m["train"])
    tile = np.asarray(Image.open(tmp_path / "out" / "train" / next(n for n in m["train"] if n.startswith("tile_"))))
    assert tile.shape == (64, 64, 3)
    val = sorted(p.name for p in (tmp_path / "out" / "val").iterdir())
    assert val == ["brick.png", "chelsea.png", "china.png", "flower.png"]
    assert np.asarray(Image.open(tmp_path / "out" / "val" / "china.png")).shape == (427, 640, 3)
    held = ("chelsea", "brick", "china", "flower")
    assert not any(h in o for o in origins for h in held)
    default = [p.name for p in mod.SAMPLE_PHOTOS if p.name not in mod.HELD_OUT_SKIMAGE + mod.NOT_SCENES]
    assert "chelsea" not in default and "astronaut" in default
    with pytest.raises(ValueError, match="unknown or held-out"):
        mod.build(tmp_path / "o2", size=64, photos=("chelsea",))
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="no images"):
        mod.build(tmp_path / "o3", size=64, factors=(4,), faces=tmp_path / "empty", photos=("coins",))
    with pytest.raises(FileExistsError, match="not empty"):
        mod.build(tmp_path / "out", size=64, photos=("camera",))
    assert mod.main([str(tmp_path / "out"), "--photos", "camera"]) == 2  # the command: a message, no traceback
