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
from aerestore.mlflow_model import RestorerModel, load_restorer, registered_name
from aerestore.params import parse_params
from aerestore.restore import Restorer
from aerestore.tracking import init_store, stage_run, tracking_uri

from helpers import save_tiny_restorer
from test_tracking import make_repo, template_db

MODEL_URI = "models:/aerestore-conv_ae/latest"


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """A repository whose store holds an evaluate run that logged and registered the
    tiny restorer."""
    with pytest.MonkeyPatch.context() as mp:
        root = make_repo(tmp_path_factory.mktemp("mlflow_model") / "repo",
                         template_db(tmp_path_factory.getbasetemp()), mp)
        model_dir = root / "models" / "conv_ae"
        save_tiny_restorer(model_dir)
        params = parse_params({"architectures": ["conv_ae"], "blocks": {"size": 16}})
        with stage_run("evaluate", params, keys=["evaluate"]) as evaluate:
            evaluate.log_restorer(model_dir, "conv_ae", register=True)
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
