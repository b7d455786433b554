"""Small real-looking data and tiny trained restorers for the unit tests."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from scipy import ndimage

from aerestore.blocks import split_images_uint8
from aerestore.tracks.blocks.dataset import BlockData
from aerestore.damage import DAMAGE_KINDS


def load_script(path: Path, name: str | None = None):
    """Import a script that is not a package module (``stages/*.py``, ``benchmarks/*.py``)
    by its path, as module ``name`` (default: the file's stem)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(name or path.stem, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def stage_args(stage: str, arch: str | None = None) -> list[str]:
    """The arguments ``dvc.yaml``'s cmd gives ``stages/<stage>.py`` (its paths; ``${item.arch}`` = ``arch``)."""
    import yaml

    cmd = yaml.safe_load((Path(__file__).resolve().parents[1] / "dvc.yaml").read_text())["stages"][stage]["cmd"]
    return cmd.replace("${item.arch}", arch or "").split()[2:]


def photo_images(n: int = 8, size: int = 32, seed: int = 0) -> np.ndarray:
    """Crops of scikit-image's real photographs, uint8 (n, size, size, 3)."""
    from skimage import data

    rng = np.random.default_rng(seed)
    sources = [data.astronaut(), data.coffee(), data.chelsea(), data.rocket()]
    out = []
    for i in range(n):
        src = sources[i % len(sources)]
        y = rng.integers(0, src.shape[0] - size)
        x = rng.integers(0, src.shape[1] - size)
        out.append(src[y : y + size, x : x + size, :3])
    return np.stack(out)


def degrade(images: np.ndarray, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Blur the left half of each image, add noise everywhere; return (degraded, mask), the
    mask with one channel per damage kind (blur = the left half, noise = none: the noise
    here is global, not local damage)."""
    rng = np.random.default_rng(seed)
    x = images.astype(np.float32)
    blurred = ndimage.gaussian_filter(x, (0, 2, 2, 0))
    mask = np.zeros(images.shape[:3] + (len(DAMAGE_KINDS),), np.uint8)
    w = images.shape[2]
    x[:, :, : w // 2] = blurred[:, :, : w // 2]
    mask[:, :, : w // 2, DAMAGE_KINDS.index("blur")] = 255
    x += rng.normal(0, 12, x.shape)
    return np.clip(np.rint(x), 0, 255).astype(np.uint8), mask


def block_data(n_images: int = 8, size: int = 32, block: int = 16, overlap: int = 4, seed: int = 0) -> BlockData:
    clean = photo_images(n_images, size, seed)
    degraded, mask = degrade(clean, seed)
    c, _ = split_images_uint8(clean, block, overlap)
    d, _ = split_images_uint8(degraded, block, overlap)
    m, _ = split_images_uint8(mask, block, overlap)
    return BlockData(d, c, m)


def tiny_model(name: str = "conv_ae", block: int = 16, channels: int = 3, latent: int = 8, seed: int = 0):
    from aerestore.losses import LossConfig
    from aerestore.models import create_model

    torch.manual_seed(seed)
    return create_model(name, latent=latent, block=block, channels=channels, loss=LossConfig())


def fit_to(model, blocks: torch.Tensor, steps: int, lr: float = 3e-3):
    """``model`` fitted for ``steps`` full-batch Adam steps to reconstruct float ``blocks``
    (N, C, s, s): a few seconds, enough for its outputs to depend on its codes."""
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    model.train()
    for _ in range(steps):
        opt.zero_grad()
        model.loss((blocks, blocks))["loss"].backward()
        opt.step()
    return model.eval()


def save_tiny_restorer(model_dir: Path, name: str = "conv_ae", block: int = 16, overlap: int = 4, k: int = 2):
    """A complete restorer directory (model.pt, clusters.npz, decoders.pt) from a briefly
    trained tiny model: what the pipeline writes, made in a second."""
    from aerestore import cluster as C
    from aerestore.artifacts import Clusters, ModelKey, write_clusters, write_decoders
    from aerestore.tracks.blocks.decoders import train_decoders
    from aerestore.models import save_model
    from aerestore.restore import Restorer
    from aerestore.tracks.blocks.train import fit
    from aerestore.params import RuntimeParams, TrainParams

    data = block_data(block=block, overlap=overlap)
    model = tiny_model(name, block=block)
    fit(model, data, data, TrainParams(batch_size=32, blocks={"epochs": 1}), seed=0, progress=False, runtime=RuntimeParams(threads=1))
    model_dir.mkdir(parents=True, exist_ok=True)
    save_model(model, model_dir / "model.pt", overlap=overlap)
    z = C.encode_blocks(model, data.degraded)
    res = C.soft_kmeans(z, k, 5.0, seed=0)
    write_clusters(model_dir / "clusters.npz", Clusters(ModelKey.of(model), res.centroids, res.scale, 5.0,
                                                        "soft_kmeans", ["a"] * k, [1] * k))
    restorer = Restorer.load(model_dir)
    result = train_decoders(restorer.model, restorer.route, k, data, data, 1, 1e-3, 32, 1, 0, progress=False)
    write_decoders(model_dir / "decoders.pt", restorer.model, result)
    return Restorer.load(model_dir)


@__import__("contextlib").contextmanager
def mlflow_server(uri: str, workdir: Path, *extra: str, workers: int = 1, env: dict[str, str] | None = None):
    """A real `mlflow server` on a free 127.0.0.1 port over the store ``uri`` (``extra``:
    more options, e.g. ``--artifacts-destination DIR``; ``env``: variables for the server
    alone, e.g. the basic-auth app's ``MLFLOW_AUTH_CONFIG_PATH``); yields its URL."""
    import os
    import signal
    import socket
    import subprocess
    import sys
    import time

    import pytest
    import requests

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server_env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    server_env["MLFLOW_SERVER_ENABLE_JOB_EXECUTION"] = "false"
    server_env.update(env or {})
    log_path = Path(workdir) / "server.log"
    log = open(log_path, "w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", uri,
         *extra, "--host", "127.0.0.1", "--port", str(port), "--workers", str(workers)],
        stdout=log, stderr=subprocess.STDOUT, env=server_env, cwd=workdir, start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 180
        while True:
            if proc.poll() is not None:
                pytest.fail(f"mlflow server exited: {log_path.read_text()[-2000:]}")
            try:
                if requests.get(f"{url}/health", timeout=2).ok:
                    break
            except requests.ConnectionError:
                pass
            if time.monotonic() > deadline:
                pytest.fail("mlflow server did not answer /health within 180 s")
            time.sleep(0.3)
        yield url
    finally:
        os.killpg(proc.pid, signal.SIGTERM)  # the server and its workers: the group we started
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        log.close()
