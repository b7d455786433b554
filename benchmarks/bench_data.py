"""Memory of the prepare + blocks stages vs dataset size, and split/merge throughput.

    python benchmarks/bench_data.py            # full run (a few minutes on 2 cores)
    python benchmarks/bench_data.py --base 40  # quicker

1. Peak memory. A synthetic raw dataset is written from real photographs of
   ``skimage.data`` (different 128 px crops of each, as PNG, with a manifest), at 1x, 4x
   and 16x a base size. For each size a FRESH subprocess runs ``run_prepare`` then
   ``run_blocks`` (64 px images, 1 augmented copy, local blur + noise + JPEG, 18 px
   blocks with overlap 4, one worker) and reports

   * ``ru_maxrss``: the kernel's RSS high-water mark. It also counts the pages of the
     output ``.npy`` memory maps that were touched (file-backed, reclaimable page
     cache), so it grows with the output size whatever the chunk;
   * peak anonymous RSS (``RssAnon`` of /proc/self/status, sampled every 2 ms): the
     process's own heap, i.e. what the chunking bounds;

   each minus the same figure measured after the imports, before any work. The largest
   dataset is also run with a small and a large ``prepare.chunk`` to show that the heap
   follows the chunk, not the dataset.
2. Throughput of ``split_blocks`` / ``merge_blocks`` (float32 tensors) and of the uint8
   numpy path ``split_images_uint8`` in blocks per second, 2 torch threads, 18 px blocks
   with overlap 4 on 64 px and 256 px images.

Prints Markdown tables.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import json
import os
import resource
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

IMAGE_SIZE = 64
BLOCK, OVERLAP = 18, 4


# ------------------------------------------------------------------ dataset
def _sources() -> list[np.ndarray]:
    from skimage import data

    out = []
    for name in ("astronaut", "coffee", "chelsea", "rocket", "immunohistochemistry", "camera", "coins", "moon"):
        img = getattr(data, name)()
        out.append(img if img.ndim == 3 else np.repeat(img[..., None], 3, axis=2))
    return out


def write_images(folder: Path, n: int, tile: int = 128, seed: int = 0) -> list[tuple[str, str]]:
    """n PNG crops ``tile x tile`` of real photographs -> [(file name, sha256)]."""
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    sources = _sources()
    out = []
    for i in range(n):
        src = sources[i % len(sources)]
        y = int(rng.integers(0, src.shape[0] - tile + 1))
        x = int(rng.integers(0, src.shape[1] - tile + 1))
        name = f"tile{i:05d}.png"
        Image.fromarray(np.ascontiguousarray(src[y : y + tile, x : x + tile, :3])).save(folder / name)
        out.append((name, hashlib.sha256((folder / name).read_bytes()).hexdigest()))
    return out


def write_raw(raw: Path, images_dir: Path, files: list[tuple[str, str]]) -> None:
    raw.mkdir(parents=True, exist_ok=True)
    link = raw / "images"
    if not link.exists():
        link.symlink_to(images_dir)
    splits = ["train"] * 8 + ["val", "test"]
    with (raw / "manifest.csv").open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["file", "split", "width", "height", "sha256"])
        for i, (name, sha) in enumerate(files):
            w.writerow([f"images/{name}", splits[i % 10], 128, 128, sha])


# -------------------------------------------------------------------- child
def _rss_anon_kb() -> int:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("RssAnon:"):
                return int(line.split()[1])
    return 0


def child(raw: Path, work: Path, chunk: int) -> None:
    """Runs in a fresh process: prepare + blocks, prints a JSON line of figures."""
    from aerestore.blocks import run_blocks
    from aerestore.data.prepare import run_prepare
    from aerestore.params import Params

    params = Params.model_validate(
        {
            "data": {"image_size": IMAGE_SIZE},
            "blocks": {"size": BLOCK, "overlap": OVERLAP},
            "prepare": {
                "augment_copies": 1,
                "chunk": chunk,
                "workers": 1,
                "degrade": [
                    {"op": "local_blur", "strength": [1.0, 3.0]},
                    {"op": "gaussian_noise", "std": [0.01, 0.03]},
                    {"op": "jpeg", "quality": [40, 80], "prob": 0.5},
                ],
            },
        }
    )
    # warm the lazy imports (albumentations) so the baseline holds every library
    from aerestore.data.augment import Augmenter

    Augmenter(params.prepare.augment)(np.zeros((8, 8, 3), np.uint8), 0)
    base_maxrss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    base_anon = _rss_anon_kb()
    peak = [base_anon]
    stop = threading.Event()

    def sample() -> None:
        while not stop.is_set():
            peak[0] = max(peak[0], _rss_anon_kb())
            time.sleep(0.002)

    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    t0 = time.perf_counter()
    m_prep = run_prepare(params, raw, work / "prepared", work / "prepare.json", work / "grid.png", progress=False)
    t1 = time.perf_counter()
    time.sleep(0.01)
    prep_peak, peak[0] = peak[0], _rss_anon_kb()
    m_blocks = run_blocks(params, work / "prepared", work / "blocks", work / "blocks.json", progress=False)
    t2 = time.perf_counter()
    stop.set()
    thread.join()
    out_bytes = sum(p.stat().st_size for p in work.rglob("*.npy"))
    print(
        json.dumps(
            {
                "rows": sum(s["n"] for s in m_prep["splits"].values()),
                "blocks": sum(s["blocks"] for s in m_blocks["splits"].values()),
                "prepare_s": t1 - t0,
                "blocks_s": t2 - t1,
                "maxrss_mb": (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base_maxrss) / 1024,
                "prepare_anon_mb": (prep_peak - base_anon) / 1024,
                "blocks_anon_mb": (peak[0] - base_anon) / 1024,
                "base_anon_mb": base_anon / 1024,
                "output_mb": out_bytes / 2**20,
            }
        )
    )


def run_child(raw: Path, work: Path, chunk: int) -> dict:
    proc = subprocess.run(
        [sys.executable, __file__, "--child", str(raw), str(work), str(chunk)],
        capture_output=True,
        text=True,
        check=False,
    )
    if proc.returncode != 0:
        raise RuntimeError(proc.stderr)
    return json.loads(proc.stdout.strip().splitlines()[-1])


# --------------------------------------------------------------- throughput
def throughput(repeats: int = 5) -> list[dict]:
    import torch

    from aerestore.blocks import block_grid, merge_blocks, split_blocks, split_images_uint8

    torch.set_num_threads(2)
    rows = []
    for side, n in ((64, 256), (256, 16)):
        g = block_grid(side, side, BLOCK, OVERLAP)
        x = torch.rand(n, 3, side, side, generator=torch.Generator().manual_seed(0))
        u8 = (x * 255).to(torch.uint8).permute(0, 2, 3, 1).contiguous().numpy()
        nb = n * g.per_image
        best = {"split": 1e9, "merge": 1e9, "split_uint8": 1e9}
        for _ in range(repeats):
            t = time.perf_counter()
            blocks = split_blocks(x, BLOCK, OVERLAP).contiguous()
            best["split"] = min(best["split"], time.perf_counter() - t)
            t = time.perf_counter()
            merge_blocks(blocks, side, side, BLOCK, OVERLAP)
            best["merge"] = min(best["merge"], time.perf_counter() - t)
            t = time.perf_counter()
            split_images_uint8(u8, BLOCK, OVERLAP)
            best["split_uint8"] = min(best["split_uint8"], time.perf_counter() - t)
        rows.append({"side": side, "images": n, "blocks": nb, **{k: nb / v for k, v in best.items()}})
    return rows


# --------------------------------------------------------------------- main
def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--base", type=int, default=150, help="images at 1x (default 150)")
    ap.add_argument("--factors", type=int, nargs="+", default=[1, 4, 16])
    ap.add_argument("--chunk", type=int, default=64, help="prepare.chunk for the size sweep")
    ap.add_argument("--chunks", type=int, nargs="+", default=[16, 256], help="chunks tried at the largest size")
    ap.add_argument("--child", nargs=3, metavar=("RAW", "WORK", "CHUNK"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child(Path(args.child[0]), Path(args.child[1]), int(args.child[2]))
        return

    from aerestore.blocks import CHUNK_BYTES

    with tempfile.TemporaryDirectory(prefix="bench_data.") as tmp:
        root = Path(tmp)
        n_max = args.base * max(args.factors)
        print(f"writing {n_max} PNG tiles (128 px crops of skimage.data photographs) ...", file=sys.stderr)
        files = write_images(root / "images", n_max)
        runs = [(f, args.chunk) for f in args.factors]
        runs += [(max(args.factors), c) for c in args.chunks if c != args.chunk]
        results = []
        for factor, chunk in runs:
            raw = root / f"raw{factor}"
            write_raw(raw, root / "images", files[: args.base * factor])
            work = root / f"work{factor}_{chunk}"
            print(f"run: {factor}x ({args.base * factor} images), chunk {chunk} ...", file=sys.stderr)
            results.append((factor, chunk, run_child(raw, work, chunk)))
            for p in sorted(work.rglob("*.npy")):
                p.unlink()

    print(f"\n### Peak memory of prepare + blocks ({IMAGE_SIZE} px, 1 augmented copy, {BLOCK} px blocks, 1 worker)\n")
    print(
        "| dataset | images | prepared rows | blocks | output .npy MB | prepare.chunk "
        "| peak heap, prepare MB | peak heap, blocks MB | ru_maxrss MB | prepare s | blocks s |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for factor, chunk, r in results:
        print(
            f"| {factor}x | {args.base * factor} | {r['rows']} | {r['blocks']} | {r['output_mb']:.0f} | {chunk} "
            f"| {r['prepare_anon_mb']:.1f} | {r['blocks_anon_mb']:.1f} | {r['maxrss_mb']:.0f} "
            f"| {r['prepare_s']:.1f} | {r['blocks_s']:.1f} |"
        )
    print(
        f"\nPeak heap = peak RssAnon minus the {results[0][2]['base_anon_mb']:.0f} MB held after the imports; "
        f"ru_maxrss (also minus its post-import value) includes the touched pages of the output memory maps. "
        f"The blocks stage cuts about {CHUNK_BYTES / 2**20:.0f} MiB of blocks per chunk (aerestore.blocks.CHUNK_BYTES)."
    )

    print(f"\n### Split / merge throughput ({BLOCK} px blocks, overlap {OVERLAP}, 2 torch threads, best of 5)\n")
    print("| image | images | blocks | split_blocks blocks/s | merge_blocks blocks/s | split_images_uint8 blocks/s |")
    print("|---|---:|---:|---:|---:|---:|")
    for r in throughput():
        print(
            f"| {r['side']} px | {r['images']} | {r['blocks']} | {r['split']:,.0f} | {r['merge']:,.0f} "
            f"| {r['split_uint8']:,.0f} |"
        )


if __name__ == "__main__":
    os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
    main()
