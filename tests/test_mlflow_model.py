"""The restorer as a registered MLflow pyfunc model, `mlflow models predict`, and the
tracking server's REST API over a store filled by stage_run."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from types import SimpleNamespace

import mlflow
import numpy as np
import pytest
import requests
from mlflow.tracking import MlflowClient

from aerestore import cli
from aerestore.mlflow_model import RestorerModel, load_restorer, registered_name
from aerestore.params import parse_params
from aerestore.restore import Restorer
from aerestore.tracking import init_store, stage_run, tracking_uri

from helpers import save_tiny_restorer
from test_tracking import make_repo, template_db

MODEL_URI = "models:/aerestore-conv_ae/latest"


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """A repository whose store holds a train run (metrics per epoch) and an evaluate
    run that logged and registered the tiny restorer."""
    with pytest.MonkeyPatch.context() as mp:
        root = make_repo(tmp_path_factory.mktemp("mlflow_model") / "repo",
                         template_db(tmp_path_factory.getbasetemp()), mp)
        model_dir = root / "models" / "conv_ae"
        save_tiny_restorer(model_dir)
        params = parse_params({"architectures": ["conv_ae"], "blocks": {"size": 16}})
        mp.setenv("DVC_EXP_NAME", "rest-exp")
        with stage_run("train@conv_ae", params, arch="conv_ae", keys=["seed", "train"]) as train:
            for epoch in range(3):
                train.log_metrics({"loss": 0.5 / (epoch + 1)}, step=epoch)
        with stage_run("evaluate", params, keys=["evaluate"]) as evaluate:
            evaluate.log_metrics({"conv_ae": {"psnr": 25.5}})
            evaluate.log_text("| arch | psnr |\n", "summary.md")
            evaluate.log_restorer(model_dir, "conv_ae", register=True)
        yield SimpleNamespace(root=root, model_dir=model_dir, uri=tracking_uri(),
                              experiment_id=init_store(), train=train.run_id, evaluate=evaluate.run_id)
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
        for mode in ("multi", "single"):
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


# ---------------------------------------------------------------------- REST API
@pytest.fixture
def server(store, tmp_path):
    from helpers import mlflow_server

    with mlflow_server(store.uri, tmp_path) as url:
        yield url


def test_rest_api_serves_runs_metrics_and_registered_models(store, server):
    api = f"{server}/api/2.0/mlflow"
    runs = requests.post(f"{api}/runs/search", json={"experiment_ids": [store.experiment_id]}, timeout=30)
    runs.raise_for_status()
    by_name = {r["info"]["run_name"]: r for r in runs.json()["runs"]}
    assert set(by_name) == {"train@conv_ae", "evaluate"}
    train = by_name["train@conv_ae"]
    tags = {t["key"]: t["value"] for t in train["data"]["tags"]}
    assert tags["arch"] == "conv_ae" and tags["dvc.exp_name"] == "rest-exp"
    assert tags["aerestore.pipeline_id"] == "exp-rest-exp"
    assert tags["aerestore.pipeline_id"] == {t["key"]: t["value"] for t in by_name["evaluate"]["data"]["tags"]}[
        "aerestore.pipeline_id"]
    params = {p["key"]: p["value"] for p in train["data"]["params"]}
    assert params["seed"] == "42" and params["train.lr"] == "0.001"
    assert train["info"]["status"] == "FINISHED"

    history = requests.get(f"{api}/metrics/get-history",
                           params={"run_id": store.train, "metric_key": "loss"}, timeout=30).json()["metrics"]
    assert [(m["step"], m["value"]) for m in history] == [(0, 0.5), (1, 0.25), (2, pytest.approx(0.5 / 3))]
    evaluate_metrics = {m["key"]: m["value"] for m in by_name["evaluate"]["data"]["metrics"]}
    assert evaluate_metrics == {"conv_ae.psnr": 25.5}

    files = requests.get(f"{api}/artifacts/list", params={"run_id": store.evaluate}, timeout=30).json()
    assert "summary.md" in {f["path"] for f in files.get("files", [])}

    models = requests.get(f"{api}/registered-models/search", timeout=30).json()["registered_models"]
    assert [m["name"] for m in models] == ["aerestore-conv_ae"]
    assert models[0]["latest_versions"][0]["run_id"] == store.evaluate


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
