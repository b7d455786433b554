"""The generative side end to end: whole-image models through load_model and the restorer,
the explore stage on tiny data, `aerestore interpolate / sample / colourise`, and the
colourisation preset against returning the grey image."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from aerestore import cli
from aerestore import explore as X
from aerestore.models import read_model, save_model
from aerestore.params import parse_params
from aerestore.restore import Restorer

from helpers import load_script, photo_images, stage_args
from test_explore import fitted

REPO = Path(__file__).resolve().parents[1]

# The recipes of "The generative side" (docs/generative.md), as `dvc exp run -S` would set them.
WHOLE_IMAGE_VAE = {
    "architectures": ["vae_lfw"], "explore": {"architectures": ["vae_lfw"]},
    "blocks": {"size": 64, "overlap": 0},
}
COLOURISE = {"prepare": {"degrade": [{"op": "grayscale", "prob": 1.0}]}}


def _with(raw: dict, changes: dict) -> dict:
    for k, v in changes.items():
        if isinstance(v, dict) and isinstance(raw.get(k), dict):
            _with(raw[k], v)
        else:
            raw[k] = v
    return raw


@pytest.mark.parametrize("recipe", [WHOLE_IMAGE_VAE, COLOURISE])
def test_the_readme_recipes_are_valid_params(recipe):
    raw = yaml.safe_load((REPO / "params.yaml").read_text())
    params = parse_params(_with(raw, recipe))
    if recipe is WHOLE_IMAGE_VAE:
        assert params.blocks.size == params.data.image_size and params.blocks.overlap == 0
    page = (REPO / "docs" / "generative.md").read_text()
    assert "## The generative side" in page


@pytest.fixture(scope="module")
def images():
    return X.to_tensor(photo_images(4, 32, seed=1))


@pytest.fixture(scope="module")
def vae_dir(tmp_path_factory, images):
    """A whole-image model folder: vae_lfw with a 32 px block = the image, overlap 0."""
    folder = tmp_path_factory.mktemp("gen") / "models" / "vae_lfw"
    folder.mkdir(parents=True)
    save_model(fitted("vae_lfw", 32, images, steps=10), folder / "model.pt")
    return folder


def _png(path: Path, array: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)
    return path


def test_whole_image_vae_loads_and_restores_any_size(vae_dir, images):
    saved = read_model(vae_dir / "model.pt")
    model = saved.model
    assert model.name == "vae_lfw" and model.block == 32 and saved.geometry.overlap == 0
    restorer = Restorer.load(vae_dir)
    photo = photo_images(1, 50, seed=2)[0][:45]  # 45 x 50: padded to two blocks a side
    assert restorer.restore(photo).shape == (45, 50, 3)
    codec = X.LatentCodec(model, overlap=0)
    torch.testing.assert_close(restorer.restore_float(images[:2], "base"), codec.reconstruct(images[:2]),
                               atol=1e-5, rtol=0)


def test_interpolate_cli_on_user_images(vae_dir, tmp_path, capsys):
    a = _png(tmp_path / "a.png", photo_images(1, 70, seed=3)[0][:, :60])  # any size: cropped + resized
    b = tmp_path / "b.jpg"
    Image.fromarray(photo_images(1, 40, seed=4)[0]).save(b, quality=90)
    out = tmp_path / "grid.png"
    assert cli.main(["interpolate", str(a), str(b), "--model", str(vae_dir), "-n", "5", "-o", str(out)]) == 0
    grid = np.asarray(Image.open(out))
    assert grid.shape == (2 + 64 + 2, 7 * (64 + 2) + 2, 3)  # A, 5 frames, B at 32 px, tiles 2x
    assert "spherical" in capsys.readouterr().err
    # the first frame is A's reconstruction
    restorer = Restorer.load(vae_dir)
    a_img = X.fit_image(np.asarray(Image.open(a)), 32)
    recon = X.to_uint8(X.LatentCodec(restorer.model).reconstruct(X.to_tensor(a_img[None])))[0]
    np.testing.assert_array_equal(grid[2:66:2, 68:132:2], recon)


def test_interpolate_names_the_bad_file(vae_dir, tmp_path, capsys):
    good = _png(tmp_path / "good.png", photo_images(1, 32)[0])
    fake = tmp_path / "fake.jpg"
    fake.write_text("not an image")
    missing = tmp_path / "missing.png"
    for bad, says in ((fake, "not an image"), (missing, "no such file")):
        code = cli.main(["interpolate", str(good), str(bad), "-m", str(vae_dir), "-o", str(tmp_path / "g.png")])
        assert code == 2
        err = capsys.readouterr().err
        assert str(bad) in err and says in err
    assert not (tmp_path / "g.png").exists()
    assert cli.main(["interpolate", str(good), str(good), "-m", str(vae_dir), "-o", str(good)]) == 2
    assert "would overwrite the input" in capsys.readouterr().err
    assert cli.main(["interpolate", str(good), str(good), "-m", str(tmp_path), "-o", str(tmp_path / "g.png")]) == 2
    assert "not a models:/" in capsys.readouterr().err


def test_interpolate_uses_the_saved_image_size_of_a_block_model(tmp_path, capsys, images):
    """A block model saved with its training image size interpolates at that size by default;
    a file saved before the size was recorded still loads and uses its block (or --size)."""
    from helpers import tiny_model

    a = _png(tmp_path / "a.png", photo_images(1, 48, seed=3)[0])
    model = tiny_model("conv_ae", block=16)
    for name, image_size, side in (("new", 40, 40), ("old", None, 16)):
        folder = tmp_path / name
        folder.mkdir()
        save_model(model, folder / "model.pt", overlap=4, image_size=image_size)
        assert Restorer.load(folder).image_size == image_size
        out = tmp_path / f"{name}.png"
        assert cli.main(["interpolate", str(a), str(a), "-m", str(folder), "-n", "2", "-o", str(out)]) == 0
        assert f"at {side} px" in capsys.readouterr().err
        tile = -(-64 // side) * side  # upscaled to at least 64 px
        assert np.asarray(Image.open(out)).shape == (tile + 4, 4 * (tile + 2) + 2, 3)
    assert cli.main(["interpolate", str(a), str(a), "-m", str(tmp_path / "old"), "--size", "32", "-n", "2",
                     "-o", str(tmp_path / "sized.png")]) == 0
    assert "at 32 px" in capsys.readouterr().err


def test_sample_cli_is_seeded_and_vae_only(vae_dir, tmp_path, capsys):
    outs = []
    for name, seed in (("s1.png", 0), ("s2.png", 0), ("s3.png", 1)):
        assert cli.main(["sample", "-m", str(vae_dir), "-n", "6", "--per-row", "3", "-o",
                         str(tmp_path / name), "--seed", str(seed)]) == 0
        outs.append(np.asarray(Image.open(tmp_path / name)))
    assert outs[0].shape == (2 * 66 + 2, 3 * 66 + 2, 3)
    np.testing.assert_array_equal(outs[0], outs[1])
    assert not np.array_equal(outs[0], outs[2])
    ae_dir = tmp_path / "conv_ae"
    ae_dir.mkdir()
    from helpers import tiny_model

    save_model(tiny_model("conv_ae", block=16), ae_dir / "model.pt", overlap=4)
    capsys.readouterr()
    assert cli.main(["sample", "-m", str(ae_dir), "-o", str(tmp_path / "x.png")]) == 2
    assert "not variational" in capsys.readouterr().err


def _load_stage():
    return load_script(REPO / "stages" / "explore.py", "explore_stage")


def _stage_repo(work: Path, vae_dir: Path, explore: dict, monkeypatch):
    """A working folder with models/vae_lfw, data/prepared (8 train, 2 val, 4 test photo
    crops) and data/raw's manifest and origins (train files t0..t7.jpg); the params."""
    (work / "models").mkdir(parents=True)
    (work / "models" / "vae_lfw").symlink_to(vae_dir)
    photos = photo_images(14, 32, seed=5)
    for split, sl in (("train", slice(0, 8)), ("val", slice(8, 10)), ("test", slice(10, 14))):
        folder = work / "data" / "prepared" / split
        folder.mkdir(parents=True)
        np.save(folder / "clean.npy", photos[sl])
        np.save(folder / "degraded.npy", photos[sl][:, :, ::-1].copy())
    raw_dir = work / "data" / "raw"
    raw_dir.mkdir(parents=True)
    (raw_dir / "manifest.csv").write_text("file,split,width,height,sha256\n" + "".join(
        f"images/{i}.jpg,train,32,32,{i}\n" for i in range(8)))
    (raw_dir / "origins.csv").write_text("file,origin\n" + "".join(f"images/{i}.jpg,t{i}.jpg\n" for i in range(8)))
    raw = yaml.safe_load((REPO / "params.yaml").read_text())
    params = parse_params(_with(raw, {
        "architectures": ["vae_lfw"], "data": {"image_size": 32}, "blocks": {"size": 32, "overlap": 0},
        "mlflow": {"enabled": False}, "runtime": {"threads": 1},  # the stage sets torch's threads
        "explore": {"architectures": ["vae_lfw"], "pairs": 2, "steps": 4, "samples": 4, **explore},
    }))
    monkeypatch.chdir(work)
    return params


def test_explore_stage_writes_the_grids_and_metrics(vae_dir, tmp_path, monkeypatch):
    work = tmp_path / "repo"
    params = _stage_repo(work, vae_dir, {}, monkeypatch)
    stage = _load_stage()
    stage.run(params, stage_args("explore", "vae_lfw"))
    pngs = sorted(p.name for p in (work / "metrics" / "explore" / "vae_lfw").iterdir())
    assert pngs == ["arithmetic.png", "interpolation.png", "interpolation_degraded.png", "samples.png"]
    assert np.asarray(Image.open(work / "metrics/explore/vae_lfw/interpolation.png")).shape == (2 * 66 + 2, 6 * 66 + 2, 3)
    metrics = yaml.safe_load((work / "metrics" / "explore" / "vae_lfw.json").read_text())
    assert metrics["interpolation"] == "spherical" and metrics["blocks_per_image"] == 1
    p = metrics["plausibility_clean"]
    assert len(p["per_step_mse"]) == 4 and p["endpoints_mse"] > 0 and p["midpoints_mse"] > 0
    assert set(metrics["colourfulness"]) == {"clean", "degraded", "reconstructed", "samples"}
    with pytest.raises(Exception, match="not in explore.architectures"):
        stage.run(params, stage_args("explore", "vae"))


def test_explore_stage_chains_an_ae_and_draws_attribute_directions(vae_dir, tmp_path, monkeypatch):
    """explore.chain trains the sharpening AE (1 epoch here) and scores it; explore.attributes
    reads the attribute file by the training images' origin names."""
    attr = tmp_path / "list_attr_celeba.txt"
    attr.write_text("9\nSmiling Eyeglasses\n" + "".join(
        f"t{i}.jpg {1 if i % 2 else -1} {1 if i < 3 else -1}\n" for i in range(8)) + "other.jpg 1 1\n")
    work = tmp_path / "repo"
    params = _stage_repo(work, vae_dir, {
        "chain": "conv_ae", "chain_epochs": 1, "chain_trained_on": "clean", "chain_passes": 2,
        "attributes": ["Smiling", "Eyeglasses"],
        "attributes_file": str(attr), "attribute_scales": [-1.0, 0.0, 1.0]}, monkeypatch)
    _load_stage().run(params, stage_args("explore", "vae_lfw"))
    out = work / "metrics" / "explore" / "vae_lfw"
    assert {"chain.png", "attribute_Smiling.png", "attribute_Eyeglasses.png"} <= {p.name for p in out.iterdir()}
    # 4 test images; VAE | pass 1 | pass 2 | clean
    assert np.asarray(Image.open(out / "chain.png")).shape == (4 * 66 + 2, 4 * 66 + 2, 3)
    assert np.asarray(Image.open(out / "attribute_Smiling.png")).shape == (2 * 66 + 2, 4 * 66 + 2, 3)
    metrics = yaml.safe_load((work / "metrics" / "explore" / "vae_lfw.json").read_text())
    chain = metrics["chain"]
    assert chain["arch"] == "conv_ae" and chain["epochs_run"] == 1 and chain["train_images"] == 8
    assert chain["trained_on"] == "clean" and chain["passes"] == 2
    assert set(chain) >= {"model", "chained", "chained_pass2", "clean"} and set(chain["model"]) == {
        "psnr", "ssim", "blur_percent", "laplacian_var", "colour_bias"}
    assert metrics["attributes"]["Smiling"]["with"] == 4 and metrics["attributes"]["Eyeglasses"]["with"] == 3
    assert metrics["attributes"]["scales"] == [-1.0, 0.0, 1.0]
    bald = params.model_copy(update={"explore": params.explore.model_copy(update={"attributes": ["Bald"]})})
    with pytest.raises(ValueError, match=r"list_attr_celeba.txt: no attribute\(s\) \['Bald'\]"):
        _load_stage().run(bald, stage_args("explore", "vae_lfw"))


def test_colourisation_beats_the_grey_image():
    """A small residual U-Net trained grey -> colour on real photographs (the colourisation
    preset's task) beats returning the grey input on PSNR, on held-out images."""
    from aerestore.colour import colourfulness, to_grey
    from aerestore.tracks.images.dataset import ImageData
    from aerestore.tracks.images.train import fit_crops
    from aerestore.losses import LossConfig
    from aerestore.metrics import psnr
    from aerestore.models import create_model
    from aerestore.params import RuntimeParams, TrainParams

    photos = photo_images(24, 48, seed=7)
    train, test = photos[:20], photos[20:]
    data = ImageData.from_arrays(to_grey(train), train)
    cfg = TrainParams(batch_size=8, lr=3e-3, crops={"size": 32, "steps": 60, "eval_every": 60},
                      loss={"beta": 1.0, "damage_weight": 0.0})
    torch.manual_seed(0)
    model = create_model("unet_ae", latent=8, block=32, channels=3, loss=LossConfig.from_train(cfg),
                         width=8, levels=1, unshuffle=1)
    fit_crops(model, data, data, cfg, seed=0, progress=False, runtime=RuntimeParams(threads=1))
    model.eval()
    grey = to_grey(test)
    with torch.no_grad():
        out = X.to_uint8(model(X.to_tensor(grey)))
    ours = np.mean([psnr(o / 255.0, t / 255.0) for o, t in zip(out, test)])
    baseline = np.mean([psnr(g / 255.0, t / 255.0) for g, t in zip(grey, test)])
    print(f"colourisation PSNR {ours:.2f} dB vs grey {baseline:.2f} dB")
    assert ours > baseline + 0.1, (ours, baseline)
    assert colourfulness(out).mean() > colourfulness(grey).mean() + 1
