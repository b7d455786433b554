"""The restorer served by ``mlflow models serve``, under load and bad input: what
``tests/test_serve.py`` asserts and ``benchmarks/bench_serve.py`` measures.

* :class:`ModelServer`: ``mlflow models serve -m PATH --env-manager local`` on a free
  127.0.0.1 port (MLflow's own server: uvicorn, ``--workers`` 1 by default), its memory
  (RSS of the process tree), and a clean stop (the process group it was started in).
* :func:`run_load`: ``n`` requests from ``concurrency`` threads, bodies encoded before the
  clock starts; each request's status and latency.
* :data:`BAD_PAYLOADS`: malformed requests, each with the status and the words its answer
  must have.

Loopback only: the server binds 127.0.0.1 and the clients call it there.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

HOST = "127.0.0.1"
JSON = "application/json"


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def body(image: np.ndarray, mode: str | None = None) -> bytes:
    """The JSON ``aerestore to-json`` writes: ``{"inputs": rows of pixels[, "params"]}``."""
    doc: dict[str, Any] = {"inputs": np.asarray(image).tolist()}
    if mode:
        doc["params"] = {"mode": mode}
    return json.dumps(doc, separators=(",", ":")).encode()


class ModelServer:
    """``mlflow models serve`` of the pyfunc model at ``model_path`` on a free loopback port.

    ``model_config`` reaches the model through ``SERVING_MODEL_CONFIG``, the variable
    MLflow's scoring server reads it from (the CLI has no option for it). Use as a context
    manager; the URL is :attr:`url`."""

    def __init__(self, model_path: str | Path, log_path: str | Path, workers: int = 1,
                 model_config: dict[str, Any] | None = None, timeout_s: int = 60, start_s: float = 180) -> None:
        self.model_path, self.log_path = Path(model_path), Path(log_path)
        self.workers, self.model_config, self.timeout_s, self.start_s = workers, model_config, timeout_s, start_s
        self.port = free_port()
        self.url = f"http://{HOST}:{self.port}"
        self.proc: subprocess.Popen | None = None

    def __enter__(self) -> "ModelServer":
        import requests

        env = dict(os.environ)
        env.pop("SERVING_MODEL_CONFIG", None)
        if self.model_config:
            env["SERVING_MODEL_CONFIG"] = json.dumps(self.model_config)
        self._log = open(self.log_path, "w")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "mlflow", "models", "serve", "-m", str(self.model_path), "--env-manager", "local",
             "-h", HOST, "-p", str(self.port), "-w", str(self.workers), "-t", str(self.timeout_s)],
            stdout=self._log, stderr=subprocess.STDOUT, env=env, start_new_session=True,
        )
        deadline = time.monotonic() + self.start_s
        try:
            while True:
                if self.proc.poll() is not None:
                    raise RuntimeError(f"mlflow models serve exited: {self.log()[-2000:]}")
                try:
                    if requests.get(f"{self.url}/ping", timeout=2).ok:
                        return self
                except requests.ConnectionError:
                    pass
                if time.monotonic() > deadline:
                    raise RuntimeError(f"mlflow models serve did not answer /ping within {self.start_s:.0f} s: "
                                       f"{self.log()[-2000:]}")
                time.sleep(0.3)
        except BaseException:
            self.stop()
            raise

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    def stop(self) -> None:
        """SIGTERM to the process group we started (the CLI, uvicorn and its workers), then
        SIGKILL after 30 s."""
        if self.proc is not None and self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGTERM)
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
            except ProcessLookupError:
                pass
        if getattr(self, "_log", None) is not None:
            self._log.close()
            self._log = None

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def rss(self) -> int:
        """Resident bytes of the server's process tree (the CLI process and uvicorn)."""
        import psutil

        root = psutil.Process(self.proc.pid)
        total = 0
        for p in [root, *root.children(recursive=True)]:
            try:
                total += p.memory_info().rss
            except psutil.Error:  # a process that just ended
                pass
        return total

    def post(self, data: bytes, content_type: str | None = JSON, timeout: float = 120):
        import requests

        headers = {"Content-Type": content_type} if content_type else {}
        return requests.post(f"{self.url}/invocations", data=data, headers=headers, timeout=timeout)


@dataclass
class Load:
    """What :func:`run_load` saw: per request, the status (or the exception's name) and the
    latency in seconds; the wall time of the whole run."""

    statuses: list = field(default_factory=list)
    latencies: list = field(default_factory=list)
    wall_s: float = 0.0
    errors: list = field(default_factory=list)  # (index, status, first 300 characters of the answer)

    @property
    def ok(self) -> int:
        return sum(s == 200 for s in self.statuses)

    def percentile(self, q: float) -> float:
        return float(np.percentile(self.latencies, q))


def run_load(url: str, bodies: list[bytes], concurrency: int, check=None, timeout: float = 120) -> Load:
    """POST every body once to ``url``/invocations from ``concurrency`` threads (a session
    each); ``check(i, response)`` may return an error string for a 200 answer that is wrong.
    The checks run after the last request: decoding an answer between two requests would
    leave the connection idle, and uvicorn closes one idle for 5 s (its keep-alive), which
    a loaded client then sees as a reset on its next request."""
    import requests

    local = threading.local()
    load = Load(statuses=[None] * len(bodies), latencies=[0.0] * len(bodies))
    lock = threading.Lock()

    def one(i: int) -> None:
        session = getattr(local, "session", None) or requests.Session()
        local.session = session
        start = time.perf_counter()
        try:
            r = session.post(f"{url}/invocations", data=bodies[i], headers={"Content-Type": JSON}, timeout=timeout)
            status, problem = r.status_code, None if r.status_code == 200 else r.text[:300]
            if problem is None and check is not None:
                answers[i] = r
        except requests.RequestException as exc:
            status, problem = type(exc).__name__, str(exc)[:300]
        load.latencies[i] = time.perf_counter() - start
        load.statuses[i] = status
        if problem is not None:
            with lock:
                load.errors.append((i, status, problem))

    answers: dict[int, Any] = {}
    start = time.perf_counter()
    with ThreadPoolExecutor(concurrency) as pool:
        list(pool.map(one, range(len(bodies))))
    load.wall_s = time.perf_counter() - start
    for i, r in sorted(answers.items()):
        if (problem := check(i, r)) is not None:
            load.errors.append((i, r.status_code, problem))
    return load


def load_images(n: int, sizes: tuple[int, int], seed: int = 0) -> list[np.ndarray]:
    """``n`` seeded RGB images with sides drawn from ``sizes`` (inclusive): crops of
    scikit-image's photographs (mirrored past their edges for the largest sizes), so that
    the restorer sees real content."""
    from skimage import data

    rng = np.random.default_rng(seed)
    photos = []
    for photo in (data.astronaut(), data.coffee(), data.chelsea(), data.rocket()):
        ph, pw = max(0, sizes[1] - photo.shape[0]), max(0, sizes[1] - photo.shape[1])
        photos.append(np.pad(photo[..., :3], ((0, ph), (0, pw), (0, 0)), mode="symmetric"))
    out = []
    for i in range(n):
        src = photos[i % len(photos)]
        h, w = (int(v) for v in rng.integers(sizes[0], sizes[1] + 1, 2))
        y, x = int(rng.integers(0, src.shape[0] - h + 1)), int(rng.integers(0, src.shape[1] - w + 1))
        out.append(np.ascontiguousarray(src[y : y + h, x : x + w]))
    return out


def bad_payloads(max_pixels: int | None = None) -> list[tuple[str, bytes, str | None, int, str]]:
    """Malformed requests: (name, body, content type, status, words the answer must have).
    With ``max_pixels``, also ``too large``: one grey row of ``max_pixels + 1`` pixels."""
    ok = np.zeros((8, 8, 3), np.uint8)
    too_large = [] if max_pixels is None else [
        ("too large", body(np.zeros((1, max_pixels + 1), np.uint8)), JSON, 400, "too large")]
    return too_large + [
        ("wrong shape: 4-D batch of 2", body(np.zeros((2, 8, 8, 3), np.uint8)), JSON, 400, "got shape (2, 8, 8, 3)"),
        ("wrong shape: 1-D", b'{"inputs": [1, 2, 3]}', JSON, 400, "got shape (3,)"),
        ("wrong shape: 5 channels", body(np.zeros((8, 8, 5), np.uint8)), JSON, 400, "got shape (8, 8, 5)"),
        ("wrong shape: ragged rows", b'{"inputs": [[[1, 2, 3]], [[1, 2, 3], [4, 5, 6]]]}', JSON, 400,
         "inhomogeneous"),
        ("wrong dtype: floats in 0..1", body(ok.astype(np.float64) + 0.5), JSON, 400, "fractions"),
        ("wrong dtype: strings", json.dumps({"inputs": [[["a", "b", "c"]]]}).encode(), JSON, 400, "strings"),
        ("wrong dtype: booleans", b'{"inputs": [[[true, false, true]]]}', JSON, 400, "booleans"),
        ("wrong dtype: null", b'{"inputs": [[[null, 1, 2]]]}', JSON, 400, "null"),
        ("out of range: 300", b'{"inputs": [[[300, 1, 2]]]}', JSON, 400, "0..255"),
        ("out of range: -1", b'{"inputs": [[[-1, 1, 2]]]}', JSON, 400, "0..255"),
        ("NaN", b'{"inputs": [[[NaN, 1, 2]]]}', JSON, 400, "NaN"),
        ("infinity", b'{"inputs": [[[Infinity, 1, 2]]]}', JSON, 400, "infinity"),
        ("empty image", b'{"inputs": [[]]}', JSON, 400, "empty image"),
        ("empty inputs", b'{"inputs": []}', JSON, 400, "got shape (0,)"),
        ("unknown mode", body(ok, mode="best"), JSON, 400, "mode must be one of"),
        ("no inputs key", b'{"image": [[[1, 2, 3]]]}', JSON, 400, "inputs"),
        ("not JSON", b"this is not json", JSON, 400, "JSON"),
        ("empty body", b"", JSON, 400, "JSON"),
        ("not JSON: text/plain", b"this is not json", "text/plain", 415, "content types"),
    ]
