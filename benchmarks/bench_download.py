"""Speed of the download stage: the sample source at a few tile sizes, and a folder.

    python benchmarks/bench_download.py                      # sample at 32, 64, 128 px
    python benchmarks/bench_download.py --folder ../shared/datasets/celeba-3k

Prints, per run: images found / kept / per split, split groups, and wall time. The
folder run measures checking (full decode + hashing of every file) and copying.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

from aerestore.data.download import run_download
from aerestore.params import DataParams


def _one(label: str, data: DataParams, workdir: Path) -> None:
    t = time.perf_counter()
    m = run_download(data, 42, workdir / "out", workdir / "m.json", progress=False)
    dt = time.perf_counter() - t
    s = m["splits"]
    print(
        f"{label:<28} found {m['found']:>6}  kept {m['kept']:>6}  "
        f"train/val/test {s['train']}/{s['val']}/{s['test']}  groups {m['groups']:>5}  "
        f"flat {m['flat']:>4}  skipped {m['skipped_total']:>4}  dup {m['duplicates']:>4}  "
        f"{dt:6.2f} s  ({m['found'] / dt:,.0f} img/s)"
    )


def main() -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--sizes", type=int, nargs="*", default=[32, 64, 128])
    ap.add_argument("--folder", type=Path, help="also time source: folder on this tree")
    args = ap.parse_args()
    print(f"CPU cores: {os.cpu_count()}")
    with tempfile.TemporaryDirectory() as tmp:
        for size in args.sizes:
            _one(f"sample image_size={size}", DataParams(image_size=size), Path(tmp) / f"s{size}")
        if args.folder:
            _one(
                f"folder {args.folder.name}",
                DataParams(source="folder", path=str(args.folder)),
                Path(tmp) / "folder",
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
