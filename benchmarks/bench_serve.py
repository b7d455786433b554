"""The restorer served by ``mlflow models serve`` under load and bad input, on 127.0.0.1.

    python benchmarks/bench_serve.py [--model models/unet_ae] [--requests 200] [--concurrency 8]
                                     [--sizes 64 512] [--warmup 16] [--workers 1] [--huge]

Saves the restorer folder ``--model`` as the pyfunc model ``aerestore restore`` and the
registry use (:func:`aerestore.mlflow_model.save_restorer`), serves it with MLflow's own
server (``mlflow models serve --env-manager local``, ``--workers`` uvicorn workers, its
default limit ``max_pixels``), then:

1. ``--warmup`` requests of the largest size, ``--concurrency`` at once, then the server's
   RSS (its process tree);
2. ``--requests`` requests from ``--concurrency`` threads, RGB photo crops with sides drawn
   from ``--sizes`` (seeded; JSON bodies encoded before the clock starts): errors, latency
   p50/p90/p99, throughput, and the RSS after against the RSS after warm-up (target <= 1.2x);
3. every malformed payload of :func:`aerestore.serving.bad_payloads`: its status and
   whether the answer names the problem, each followed by a good request (still serving?);
4. with ``--huge``: one 10^4 x 10^4 grey image (200 MB of JSON) at the default limit: the
   status, the seconds to answer and the RSS after (MLflow parses the JSON before the model
   can refuse it: slow and a few GB; off by default).

The client runs on the same machine: its JSON decoding of the answers takes CPU from the
server, so the figures are for server and client together.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from aerestore import serving  # noqa: E402
from aerestore.mlflow_model import save_restorer  # noqa: E402


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def huge_body(side: int = 10_000) -> bytes:
    """``{"inputs": side x side zeros}`` built as bytes (no 10^8-element list here)."""
    row = b"[" + b",".join([b"0"] * side) + b"]"
    return b'{"inputs":[' + b",".join([row] * side) + b"]}"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", type=Path, default=ROOT / "models" / "unet_ae", help="a restorer folder")
    ap.add_argument("--arch", default=None, help="its architecture (default: the folder's name)")
    ap.add_argument("--requests", type=int, default=200)
    ap.add_argument("--concurrency", type=int, default=8)
    ap.add_argument("--sizes", type=int, nargs=2, default=(64, 512), metavar=("MIN", "MAX"))
    ap.add_argument("--warmup", type=int, default=16)
    ap.add_argument("--workers", type=int, default=1, help="uvicorn workers (mlflow models serve -w)")
    ap.add_argument("--mode", default="multi", choices=("multi", "single", "base"))
    ap.add_argument("--huge", action="store_true", help="also send a 10^4 x 10^4 image (slow, GBs)")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    # the server runs in its own session; on SIGTERM (`timeout`) unwind so that it is stopped
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    if not (args.model / "model.pt").exists():
        ap.error(f"{args.model} holds no restorer (model.pt): run the pipeline, or pass --model")
    arch = args.arch or args.model.name

    tmp = Path(tempfile.mkdtemp(prefix="bench-serve-"))
    save_restorer(args.model, tmp / "pyfunc", arch)
    # warm-up at the largest size, so that the server has held as many of the largest images
    # as it will at once before its RSS is taken as the reference
    images = (serving.load_images(args.warmup, (args.sizes[1], args.sizes[1]), seed=args.seed + 1)
              + serving.load_images(args.requests, tuple(args.sizes), seed=args.seed))
    bodies = [serving.body(img, mode=args.mode) for img in images]
    warm, load_bodies = bodies[: args.warmup], bodies[args.warmup :]
    pixels = sum(img.shape[0] * img.shape[1] for img in images[args.warmup :])

    def check(i: int, response) -> str | None:
        img = images[args.warmup + i]
        got = np.asarray(response.json()["predictions"])
        return None if got.shape[:2] == img.shape[:2] else f"shape {got.shape} for {img.shape}"

    print(f"{cpu_name()}, {os.cpu_count()} cores, {platform.python_version()}; {arch} from {args.model}, "
          f"mode {args.mode}; mlflow models serve, {args.workers} worker(s); {args.requests} requests, "
          f"{args.concurrency} at once, {args.sizes[0]}-{args.sizes[1]} px sides", flush=True)
    with serving.ModelServer(tmp / "pyfunc", tmp / "server.log", workers=args.workers, timeout_s=600) as server:
        start_rss = server.rss()
        w = serving.run_load(server.url, warm, args.concurrency)
        warm_rss = server.rss()
        load = serving.run_load(server.url, load_bodies, args.concurrency, check=check)
        after_rss = server.rss()
        mib = 2**20
        print("\n| requests | errors | p50 ms | p90 ms | p99 ms | requests/s | Mpx/s | RSS start MiB | "
              "after warm-up | after load | ratio |")
        print("|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|")
        print(f"| {args.requests} | {len(load.errors) + len(w.errors)} | {load.percentile(50) * 1e3:.0f} | "
              f"{load.percentile(90) * 1e3:.0f} | {load.percentile(99) * 1e3:.0f} | "
              f"{args.requests / load.wall_s:.2f} | {pixels / load.wall_s / 1e6:.2f} | {start_rss / mib:.0f} | "
              f"{warm_rss / mib:.0f} | {after_rss / mib:.0f} | {after_rss / warm_rss:.3f} |")
        for i, status, problem in (w.errors + load.errors)[:5]:
            print(f"error: request {i}: {status}: {problem}")

        print("\n| malformed payload | status | names the problem | served after |\n|---|--:|---|---|")
        good = serving.body(np.zeros((16, 16, 3), np.uint8))
        for name, payload, content_type, status, words in serving.bad_payloads():  # too large: --huge
            r = server.post(payload, content_type)
            message = r.text
            if r.headers.get("content-type", "").startswith("application/json"):
                message = json.loads(r.text).get("message", r.text)
            after = server.post(good).status_code
            print(f"| {name} | {r.status_code}{'' if r.status_code == status else f' (expected {status})'} | "
                  f"{'yes' if words in message else 'NO: ' + message[-200:]} | {after} |")
        print(f"\nRSS after the malformed payloads: {server.rss() / mib:.0f} MiB")

        if args.huge:
            data = huge_body()
            peak, done = [server.rss()], threading.Event()

            def watch() -> None:  # the server's RSS every 0.5 s while it works on the image
                while not done.wait(0.5):
                    peak.append(server.rss())

            watcher = threading.Thread(target=watch, daemon=True)
            watcher.start()
            start = time.perf_counter()
            try:
                r = server.post(data, timeout=900)
            finally:
                done.set()
                watcher.join()
            took = time.perf_counter() - start
            print(f"\n10^4 x 10^4 grey image ({len(data) / 1e6:.0f} MB of JSON): {r.status_code} after {took:.1f} s; "
                  f"{r.text[-300:]!r}; served after: {server.post(good).status_code}; RSS peak "
                  f"{max(peak) / mib:.0f} MiB, after {server.rss() / mib:.0f} MiB")
    return 0 if not (load.errors or w.errors) else 1


if __name__ == "__main__":
    sys.exit(main())
