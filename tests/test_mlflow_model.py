"""The restorer as a registered MLflow pyfunc model and `mlflow models predict`.
(The tracking server's REST API is tested on a real pipeline's store, in
test_pipeline_mlflow.py.)"""

from __future__ import annotations

import json
import os
import subprocess
from types import SimpleNamespace

import mlflow
import numpy as np
import pytest
from mlflow.tracking import MlflowClient

from aerestore import cli
from aerestore.mlflow_model import RestorerModel, load_restorer, mark_best_overall, registered_name, tag_version
from aerestore.params import parse_params
from aerestore.restore import Restorer
from aerestore.tracking import init_store, stage_run, tracking_uri

from helpers import save_tiny_restorer
from test_tracking import make_repo, template_db

MODEL_URI = "models:/aerestore-conv_ae/latest"
#: What evaluate.json would say (the figures are made up).
EVALUATION = {"images": 5, "degraded": {"psnr": 20.25},
              "conv_ae": {"multi": {"psnr": 25.5, "ssim": 0.8125, "psnr_blur": 24.0},
                          "single": {"psnr": 25.0, "ssim": 0.75}}}


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """A repository whose store holds an evaluate run that logged and registered the
    tiny restorer."""
    with pytest.MonkeyPatch.context() as mp:
        root = make_repo(tmp_path_factory.mktemp("mlflow_model") / "repo",
                         template_db(tmp_path_factory.getbasetemp()), mp)
        model_dir = root / "models" / "conv_ae"
        save_tiny_restorer(model_dir)
        val = root / "data" / "prepared" / "val"  # a validation split for the champion's criterion
        val.mkdir(parents=True)
        rng = np.random.default_rng(3)
        np.save(val / "clean.npy", rng.integers(0, 256, (3, 16, 16, 3), dtype=np.uint8))
        np.save(val / "degraded.npy", rng.integers(0, 256, (3, 16, 16, 3), dtype=np.uint8))
        params = parse_params({"architectures": ["conv_ae"], "blocks": {"size": 16}})
        with stage_run("evaluate", params, keys=["evaluate"]) as evaluate:
            evaluate.register_restorers(root / "models", ["conv_ae"], EVALUATION, prepared=root / "data" / "prepared")
        yield SimpleNamespace(root=root, model_dir=model_dir, uri=tracking_uri(),
                              experiment_id=init_store(), evaluate=evaluate.run_id)
        mlflow.set_tracking_uri(None)


def images():
    rng = np.random.default_rng(7)
    yield rng.integers(0, 256, (37, 29, 3), dtype=np.uint8)  # not a multiple of the stride
    yield rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)  # one block
    yield rng.integers(0, 256, (5, 70, 3), dtype=np.uint8)  # thinner than a block
    yield rng.integers(0, 256, (20, 21, 1), dtype=np.uint8)  # grey: repeated to RGB


def test_the_registered_model_restores_exactly_like_the_restorer(store):
    client = MlflowClient(store.uri)
    [version] = client.search_model_versions(f"name = '{registered_name('conv_ae')}'")
    assert int(version.version) == 1 and version.run_id == store.evaluate
    model = mlflow.pyfunc.load_model(MODEL_URI)
    assert model.metadata.metadata["arch"] == "conv_ae" and model.metadata.metadata["block"] == 16
    local = Restorer.load(store.model_dir)
    for image in images():
        for mode in ("multi", "single", "ensemble"):  # ensemble: the third arm, in the saved decoders.pt
            got = model.predict(image, params={"mode": mode})
            assert got.dtype == np.uint8 and got.shape == image.shape[:2] + (3,)
            np.testing.assert_array_equal(got, local.restore(image, mode=mode))
    first = next(images())
    assert not np.array_equal(model.predict(first), model.predict(first, params={"mode": "single"}))


def test_routing_is_chosen_at_load_time(store):
    soft = load_restorer(MODEL_URI, routing="soft")
    assert isinstance(soft, Restorer) and soft.routing == "soft"
    image = next(images())
    np.testing.assert_array_equal(soft.restore(image),
                                  Restorer.load(store.model_dir, routing="soft").restore(image))
    assert load_restorer(MODEL_URI).routing == "hard"


def test_predict_refuses_what_is_not_one_image(store):
    model = mlflow.pyfunc.load_model(MODEL_URI)
    python_model = model.unwrap_python_model()
    assert isinstance(python_model, RestorerModel)
    with pytest.raises(ValueError, match="one image"):
        python_model.predict(None, np.zeros((2, 8, 8, 3), np.uint8))
    with pytest.raises(ValueError, match="0..255"):
        python_model.predict(None, np.full((8, 8, 3), 300, np.int64))
    with pytest.raises(ValueError, match="mode"):
        python_model.predict(None, np.zeros((8, 8, 3), np.uint8), params={"mode": "best"})
    # integers 0..255 of another dtype (as JSON gives) are accepted
    np.testing.assert_array_equal(python_model.predict(None, np.full((8, 8, 3), 9, np.int64)),
                                  python_model.predict(None, np.full((8, 8, 3), 9, np.uint8)))


def test_mlflow_models_predict_command(store, tmp_path):
    """The command the README gives, on JSON made by `aerestore to-json`."""
    from PIL import Image

    image = next(images())
    Image.fromarray(image).save(tmp_path / "photo.png")
    assert cli.main(["to-json", str(tmp_path / "photo.png"), "-o", str(tmp_path / "input.json"), "--mode", "single"]) == 0
    doc = json.loads((tmp_path / "input.json").read_text())
    assert doc["params"] == {"mode": "single"} and np.array_equal(np.array(doc["inputs"]), image)
    env = {**os.environ, "MLFLOW_TRACKING_URI": store.uri}
    subprocess.run(
        ["mlflow", "models", "predict", "-m", MODEL_URI, "-i", str(tmp_path / "input.json"), "-t", "json",
         "--env-manager", "local", "-o", str(tmp_path / "output.json")],
        check=True, env=env, capture_output=True, cwd=tmp_path,
    )
    assert cli.main(["from-json", str(tmp_path / "output.json"), "-o", str(tmp_path / "restored.png")]) == 0
    restored = np.asarray(Image.open(tmp_path / "restored.png"))
    np.testing.assert_array_equal(restored, Restorer.load(store.model_dir).restore(image, mode="single"))


def test_aerestore_restore_from_the_registry(store, tmp_path, capsys):
    from PIL import Image

    image = next(images())
    Image.fromarray(image).save(tmp_path / "photo.png")
    (tmp_path / "notes.png").write_text("not an image")
    out = tmp_path / "out"
    code = cli.main(["restore", str(tmp_path / "photo.png"), str(tmp_path / "notes.png"), "--model", MODEL_URI,
                     "-o", str(out), "--routing", "soft", "--no-progress"])
    assert code == 1
    assert f"skipped {tmp_path / 'notes.png'}" in capsys.readouterr().err
    np.testing.assert_array_equal(np.asarray(Image.open(out / "photo.png")),
                                  Restorer.load(store.model_dir, routing="soft").restore(image))
    assert cli.main(["restore", str(tmp_path / "photo.png"), "--model", "models:/aerestore-nope/latest",
                     "-o", str(out)]) == 2
    assert "aerestore-nope" in capsys.readouterr().err


def test_evaluate_tags_the_version_and_names_it_champion(store):
    client = MlflowClient(store.uri)
    version = client.get_model_version_by_alias("aerestore-conv_ae", "champion")
    assert str(version.version) == "1" and version.run_id == store.evaluate
    assert {k: v for k, v in version.tags.items() if k.startswith("test.")} == {
        "test.psnr": "25.5000", "test.ssim": "0.8125", "test.psnr_blur": "24.0000", "test.mode": "multi",
        "test.images": "5", "test.degraded_psnr": "20.2500"}
    # the validation PSNR, the champion's criterion: the restorer scored on the val split
    from aerestore.evaluate import restorer_row
    from aerestore.metrics import psnr

    val = store.root / "data" / "prepared" / "val"
    clean, degraded = np.load(val / "clean.npy"), np.load(val / "degraded.npy")
    restored = np.clip(restorer_row(Restorer.load(store.model_dir), "multi")(degraded / 255.0), 0, 1)
    expected = np.mean([psnr(r, c / 255.0) for r, c in zip(restored, clean)])
    assert float(version.tags["val.psnr"]) == pytest.approx(expected, abs=1e-4)
    assert version.tags["val.images"] == "3" and "Validation (3 images" in version.description
    assert "PSNR 25.50 dB, SSIM 0.812" in version.description
    model = client.get_registered_model("aerestore-conv_ae")
    assert "models:/aerestore-conv_ae@champion" in model.description
    assert model.tags["best_overall"] == "true"
    restorer = load_restorer("models:/aerestore-conv_ae@champion")
    assert isinstance(restorer, Restorer)


def test_champion_is_the_best_by_validation_psnr_on_the_same_data(tmp_path, tmp_path_factory, monkeypatch):
    """The alias follows the validation PSNR; the test PSNR only reports (issue 23: the
    champion was the best by test PSNR, so the test split informed a choice)."""
    make_repo(tmp_path / "repo", template_db(tmp_path_factory.getbasetemp()), monkeypatch)
    uri = tracking_uri()
    client = MlflowClient(uri)

    def version(arch: str, psnr: float | None, data: str, test_psnr: float | None = None) -> tuple[str, bool]:
        """A new version with validation PSNR ``psnr`` and test PSNR ``test_psnr`` (default:
        ``60 - psnr``, so that the best on test is the worst on validation)."""
        name = registered_name(arch)
        if not client.search_registered_models(f"name = '{name}'"):
            client.create_registered_model(name)
        number = str(client.create_model_version(name, source=str(tmp_path)).version)
        test = test_psnr if test_psnr is not None else 60.0 - (psnr or 0.0)
        metrics = {"multi": {"psnr": test, "ssim": 0.5}, "validation": {"psnr": psnr, "images": 4}}
        return number, tag_version(arch, number, metrics, test_data=data, uri=uri)

    def champion(arch: str) -> str:
        return str(client.get_model_version_by_alias(registered_name(arch), "champion").version)

    assert version("conv_ae", 25.0, "md5-a") == ("1", True)
    assert version("conv_ae", 24.0, "md5-a") == ("2", False)  # worse on the same data
    assert version("conv_ae", 25.00001, "md5-a") == ("3", False)  # the same as tagged (4 decimals)
    assert champion("conv_ae") == "1"
    assert version("conv_ae", 23.0, "md5-b") == ("4", True)  # new test data: not comparable
    assert version("unet_ae", 30.0, "md5-b") == ("1", True)
    assert mark_best_overall(["conv_ae", "unet_ae"], test_data="md5-b", uri=uri) == "unet_ae"
    tags = {arch: client.get_registered_model(registered_name(arch)).tags for arch in ("conv_ae", "unet_ae")}
    assert tags["unet_ae"]["best_overall"] == "true" and "best_overall" not in tags["conv_ae"]
    assert tags["unet_ae"]["champion.summary"].startswith(
        "version 1, validation PSNR 30.00 dB: the best of unet_ae 30.00")
    assert version("conv_ae", 31.0, "md5-b") == ("5", True)
    assert mark_best_overall(["conv_ae", "unet_ae"], test_data="md5-b", uri=uri) == "conv_ae"
    tags = {arch: client.get_registered_model(registered_name(arch)).tags for arch in ("conv_ae", "unet_ae")}
    assert tags["conv_ae"]["best_overall"] == "true" and "best_overall" not in tags["unet_ae"]
    assert champion("conv_ae") == "5" and champion("unet_ae") == "1"
    # the best test PSNR ever seen, worse on validation: not the champion
    assert version("conv_ae", 30.0, "md5-b", test_psnr=99.0) == ("6", False)
    assert version("conv_ae", None, "md5-b", test_psnr=99.0) == ("7", False)  # no validation figure
    assert champion("conv_ae") == "5"
    # a run without damage (a preset with prepare.degrade: []): the input's PSNR is infinite,
    # stored as None; the version is still tagged and described
    number = str(client.create_model_version(registered_name("conv_ae"), source=str(tmp_path)).version)
    tag_version("conv_ae", number, {"multi": {"psnr": 40.0, "ssim": 0.9}, "degraded": {"psnr": None}},
                test_data="md5-b", uri=uri)
    described = client.get_model_version(registered_name("conv_ae"), number)
    assert "PSNR 40.00 dB" in described.description and "degraded input" not in described.description
    assert "test.degraded_psnr" not in described.tags
    v6 = client.get_model_version(registered_name("conv_ae"), "6").tags
    assert v6["val.psnr"] == "30.0000" and v6["test.psnr"] == "99.0000" and v6["val.images"] == "4"
