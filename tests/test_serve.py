"""The restorer served by ``mlflow models serve`` (MLflow's own scoring server, one uvicorn
worker, on 127.0.0.1): concurrent requests all answered, memory flat, malformed payloads
answered with a 4xx naming what is wrong while the server keeps serving. A smaller load
than ``benchmarks/bench_serve.py``'s (200 requests, 8 at once, 64-512 px), which measures
the latencies; nothing here asserts a time. Marked ``team`` (``./run.sh test -m team``): a
server start and the load take 30-45 s on 2 busy cores."""

from __future__ import annotations

import json

import mlflow
import numpy as np
import pytest

from aerestore import serving
from aerestore.data.images import READ_MAX_PIXELS, read_image
from aerestore.mlflow_model import save_restorer
from aerestore.model_input import BadInput

from helpers import save_tiny_restorer

#: The served model's limit, lowered through SERVING_MODEL_CONFIG so that a payload over it
#: stays small (the default, 89,478,485 pixels, is tested in process below).
MAX_PIXELS = 200 * 200
REQUESTS, CONCURRENCY, SIZES = 32, 4, (32, 160)

pytestmark = pytest.mark.team


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    root = tmp_path_factory.mktemp("serve")
    save_tiny_restorer(root / "restorer")
    save_restorer(root / "restorer", root / "pyfunc", "conv_ae")
    with serving.ModelServer(root / "pyfunc", root / "server.log", model_config={"max_pixels": MAX_PIXELS}) as server:
        yield server


def restored_ok(image: np.ndarray, response) -> str | None:
    got = np.asarray(response.json()["predictions"])
    if got.shape != image.shape[:2] + (3,) or got.min() < 0 or got.max() > 255:
        return f"got shape {got.shape}, values [{got.min()}, {got.max()}] for an image of shape {image.shape}"
    return None


def test_concurrent_requests_all_answered_and_memory_flat(served):
    warm = serving.load_images(8, SIZES, seed=1)
    assert serving.run_load(served.url, [serving.body(i) for i in warm], CONCURRENCY).ok == len(warm)
    before = served.rss()
    images = serving.load_images(REQUESTS, SIZES, seed=2)
    bodies = [serving.body(img, mode=("multi", "single")[i % 2]) for i, img in enumerate(images)]
    load = serving.run_load(served.url, bodies, CONCURRENCY, check=lambda i, r: restored_ok(images[i], r))
    after = served.rss()
    assert load.errors == [] and load.ok == REQUESTS
    assert after <= 1.2 * before, f"server RSS {before / 2**20:.0f} MiB after warm-up, {after / 2**20:.0f} MiB after"


def test_served_restores_as_in_process(served):
    image = serving.load_images(1, (40, 40), seed=3)[0]
    response = served.post(serving.body(image, mode="single"))
    model = mlflow.pyfunc.load_model(str(served.model_path))
    expected = model.predict(image, params={"mode": "single"})
    got = np.asarray(response.json()["predictions"], np.int64)
    # the server's torch runs on more threads than this test's one: sums in another order
    assert np.abs(got - expected).max() <= 1


@pytest.mark.parametrize("name,payload,content_type,status,words", serving.bad_payloads(MAX_PIXELS),
                         ids=[bad[0] for bad in serving.bad_payloads(MAX_PIXELS)])
def test_malformed_payload_gets_a_4xx_naming_the_problem(served, name, payload, content_type, status, words):
    response = served.post(payload, content_type)
    assert response.status_code == status, response.text[:500]
    message = response.text
    if response.headers.get("content-type", "").startswith("application/json"):
        message = json.loads(response.text)["message"]  # MLflow's error document
    assert words in message
    assert served.post(serving.body(np.zeros((8, 8, 3), np.uint8))).status_code == 200  # still serving


def test_one_limit_for_the_server_and_aerestore_restore(served, tmp_path):
    """The default limit is ``aerestore restore --max-pixels``'s: a 10^4 x 10^4 image is
    refused before any pass over its pixels (in process: over HTTP MLflow would first
    parse 10^8 JSON numbers, see README)."""
    model = mlflow.pyfunc.load_model(str(served.model_path))
    assert model.model_config["max_pixels"] == READ_MAX_PIXELS
    python_model = model.unwrap_python_model()
    with pytest.raises(BadInput, match="10000x10000 = 100,000,000 pixels > max_pixels = 89,478,485"):
        python_model.predict(None, np.zeros((10_000, 10_000), np.uint8))
    small = mlflow.pyfunc.load_model(str(served.model_path), model_config={"max_pixels": 99})
    with pytest.raises(BadInput, match="10x10 = 100 pixels > max_pixels = 99"):
        small.predict(np.zeros((10, 10, 3), np.uint8))
    # aerestore restore refuses from the same constant
    from PIL import Image

    Image.new("L", (10, 10)).save(tmp_path / "big.png")
    with pytest.raises(ValueError, match="100 pixels > --max-pixels = 99"):
        read_image(tmp_path / "big.png", 99)
