"""The `aerestore` command: restore, init-store, ui, to-json / from-json."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from aerestore import cli
from aerestore.data.images import read_image
from aerestore.restore import Restorer

from helpers import photo_images, save_tiny_restorer
from test_tracking import make_repo, template_db


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("cli") / "models" / "conv_ae"
    save_tiny_restorer(folder)
    return folder


def _png(path, array):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)
    return path


def test_restore_writes_good_images_and_names_each_bad_one(model_dir, tmp_path, capsys):
    photo = photo_images(1, 40, seed=3)[0]
    rgb = _png(tmp_path / "in" / "rgb.png", photo[:37, :29])
    grey = _png(tmp_path / "in" / "grey.png", photo[:, :, 0])
    Image.fromarray(photo).save(tmp_path / "in" / "photo.jpg", quality=90)
    fake = tmp_path / "in" / "fake.png"
    fake.write_text("this is not a PNG")
    missing = tmp_path / "in" / "missing.png"
    folder = tmp_path / "in" / "folder.png"
    folder.mkdir()
    out = tmp_path / "out"

    args = [rgb, fake, grey, missing, tmp_path / "in" / "photo.jpg", folder]
    code = cli.main(["restore", *map(str, args), "--model", str(model_dir), "-o", str(out), "--no-progress"])

    assert code == 1
    err = capsys.readouterr().err
    for bad in (fake, missing, folder):
        assert f"skipped {bad}" in err
    assert "restored 3 of 6" in err
    assert sorted(p.name for p in out.iterdir()) == ["grey.png", "photo.png", "rgb.png"]
    restorer = Restorer.load(model_dir)
    np.testing.assert_array_equal(np.asarray(Image.open(out / "rgb.png")), restorer.restore(photo[:37, :29]))
    np.testing.assert_array_equal(np.asarray(Image.open(out / "grey.png")), restorer.restore(photo[:, :, 0]))
    decoded = np.array(Image.open(tmp_path / "in" / "photo.jpg"))
    np.testing.assert_array_equal(np.asarray(Image.open(out / "photo.png")), restorer.restore(decoded))


def test_restore_modes_and_routing(model_dir, tmp_path):
    photo = photo_images(1, 48, seed=5)[0]
    src = _png(tmp_path / "p.png", photo)
    results = {}
    for mode, routing in (("multi", "hard"), ("single", "hard"), ("multi", "soft")):
        out = tmp_path / f"{mode}-{routing}"
        assert cli.main(["restore", str(src), "-m", str(model_dir), "-o", str(out), "--mode", mode,
                         "--routing", routing, "--no-progress"]) == 0
        results[mode, routing] = np.asarray(Image.open(out / "p.png"))
        expected = Restorer.load(model_dir, routing=routing).restore(photo, mode=mode)
        np.testing.assert_array_equal(results[mode, routing], expected)
    assert not np.array_equal(results["multi", "hard"], results["single", "hard"])


def test_restore_never_overwrites_an_input_or_another_output(model_dir, tmp_path, capsys):
    photo = photo_images(1, 24)[0]
    a = _png(tmp_path / "a" / "x.png", photo)
    b = _png(tmp_path / "b" / "x.jpg", photo)
    before = a.read_bytes()
    assert cli.main(["restore", str(a), "-m", str(model_dir), "-o", str(tmp_path / "a"), "--no-progress"]) == 1
    assert a.read_bytes() == before
    assert "would overwrite the input" in capsys.readouterr().err
    out = tmp_path / "out"
    assert cli.main(["restore", str(a), str(b), "-m", str(model_dir), "-o", str(out), "--no-progress"]) == 1
    assert f"also the output of {a}" in capsys.readouterr().err
    assert [p.name for p in out.iterdir()] == ["x.png"]


def test_restore_with_a_bad_model_says_so(tmp_path, capsys):
    img = _png(tmp_path / "x.png", photo_images(1, 24)[0])
    assert cli.main(["restore", str(img), "-m", str(tmp_path / "nowhere"), "-o", str(tmp_path / "o")]) == 2
    assert "nowhere: not a models:/ or runs:/ URI" in capsys.readouterr().err
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "model.pt").write_text("junk")
    assert cli.main(["restore", str(img), "-m", str(broken), "-o", str(tmp_path / "o")]) == 2
    assert "model.pt: not a model file saved by aerestore: not a zip archive" in capsys.readouterr().err


def test_read_image_converts_16_bit_and_palette(tmp_path):
    wide = (np.arange(12 * 10, dtype=np.uint16).reshape(12, 10) * 500)
    Image.fromarray(wide).save(tmp_path / "wide.png")
    np.testing.assert_array_equal(read_image(tmp_path / "wide.png"), np.rint(wide / 257.0).astype(np.uint8))
    rgb = photo_images(1, 16)[0]
    Image.fromarray(rgb).convert("P").save(tmp_path / "pal.png")
    got = read_image(tmp_path / "pal.png")
    assert got.shape == (16, 16, 3) and got.dtype == np.uint8
    with pytest.raises(ValueError, match="nothing.png: empty file"):
        (tmp_path / "nothing.png").write_bytes(b"")
        read_image(tmp_path / "nothing.png")


def test_to_json_and_from_json_round_trip(tmp_path, capsys):
    rgb = photo_images(1, 16)[0][:9, :7]
    src = _png(tmp_path / "x.png", rgb)
    assert cli.main(["to-json", str(src), "-o", str(tmp_path / "input.json")]) == 0
    doc = json.loads((tmp_path / "input.json").read_text())
    assert set(doc) == {"inputs"} and np.array_equal(np.array(doc["inputs"]), rgb)
    grey = _png(tmp_path / "g.png", rgb[:, :, 1])
    assert cli.main(["to-json", str(grey), "-o", "-"]) == 0
    assert np.array(json.loads(capsys.readouterr().out)["inputs"]).shape == (9, 7, 1)

    (tmp_path / "output.json").write_text(json.dumps({"predictions": rgb.tolist()}))
    assert cli.main(["from-json", str(tmp_path / "output.json"), "-o", str(tmp_path / "back.png")]) == 0
    np.testing.assert_array_equal(np.asarray(Image.open(tmp_path / "back.png")), rgb)

    (tmp_path / "bad.json").write_text(json.dumps({"predictions": [[1.5, 2]]}))
    assert cli.main(["from-json", str(tmp_path / "bad.json"), "-o", str(tmp_path / "bad.png")]) == 2
    assert "bad.json: expected an image of integer pixels" in capsys.readouterr().err
    assert not (tmp_path / "bad.png").exists()


def test_init_store_and_ui(tmp_path, tmp_path_factory, monkeypatch, capsys):
    import mlflow
    from mlflow.tracking import MlflowClient

    root = make_repo(tmp_path / "repo", template_db(tmp_path_factory.getbasetemp()), monkeypatch)
    (root / "params.yaml").write_text("mlflow:\n  experiment: from-params\n")
    try:
        assert cli.main(["init-store"]) == 0
        out = capsys.readouterr().out
        assert f"tracking URI: sqlite:///{root}/mlflow.db" in out and "experiment:   from-params" in out
        assert cli.main(["init-store", "--experiment", "named"]) == 0
        assert "experiment:   named" in capsys.readouterr().out
        names = {e.name for e in MlflowClient(f"sqlite:///{root}/mlflow.db").search_experiments()}
        assert {"from-params", "named"} <= names
        assert cli.main(["ui", "--port", "5123"]) == 0
        printed = capsys.readouterr()
        assert printed.out.strip() == (
            f"mlflow ui --backend-store-uri sqlite:///{root}/mlflow.db --host 127.0.0.1 --port 5123")
        exp_id = MlflowClient(f"sqlite:///{root}/mlflow.db").get_experiment_by_name("from-params").experiment_id
        assert printed.err.strip() == (
            f"then open http://127.0.0.1:5123/#/experiments/{exp_id}?workflowType=machine_learning")
        assert cli.main(["ui", "--experiment", "no-such"]) == 0
        assert capsys.readouterr().err.strip() == "then open http://127.0.0.1:5000/"
    finally:
        mlflow.set_tracking_uri(None)


def test_every_subcommand_has_help(capsys):
    for command in ("restore", "init-store", "ui", "to-json", "from-json"):
        with pytest.raises(SystemExit) as exit_:
            cli.main([command, "--help"])
        assert exit_.value.code == 0
        assert f"aerestore {command}" in capsys.readouterr().out


def test_models_lists_the_registry(capsys):
    from aerestore.cli import main
    from aerestore.models import list_models

    assert main(["models"]) == 0
    assert capsys.readouterr().out.split() == list_models()
    assert main(["models", "vae*"]) == 0
    assert set(capsys.readouterr().out.split()) == set(list_models("vae*"))
    assert main(["models", "nothing*"]) == 1


def test_summary_prints_the_table_or_says_what_to_run(tmp_path, capsys):
    from aerestore.cli import main

    assert main(["summary", "--path", str(tmp_path / "none.md")]) == 1
    assert "dvc repro" in capsys.readouterr().err
    (tmp_path / "s.md").write_text("| table |\n")
    assert main(["summary", "--path", str(tmp_path / "s.md")]) == 0
    assert capsys.readouterr().out == "| table |\n"
