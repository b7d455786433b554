"""Where on CBSD68 a network loses to an anchor: the per-image PSNR gap between two rows of
``aerestore cbsd68`` records, set against how textured each clean image is.

    python benchmarks/cbsd68_texture.py /path/to/CBSD68 --ours docs/cbsd68_faces_float.json \
        --ours-row "float noise" --anchor docs/cbsd68_cbm3d25.json \
        --anchor-row "CBM3D" --sigma 25 [--out gap.json]

Texture of an image: the mean absolute difference of neighbouring pixels of its clean grey
version (0..1), horizontal plus vertical; a flat image scores 0. Prints the Spearman rank
correlation of the gap (ours − anchor, dB) with the texture (scipy), and the mean gap on the
smoothest and the most textured quarter of the images. A network trained on smooth images
(faces) that loses most on the textured ones is short of textured training data, not only
of capacity (docs/cbsd68.md).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import sys

import numpy as np
from scipy.stats import spearmanr

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from aerestore.benchmark_sets import read_rgb, same_protocol  # noqa: E402


def texture(path: Path) -> float:
    grey = read_rgb(path).astype(np.float64) @ np.array([0.299, 0.587, 0.114]) / 255.0  # ITU-R 601 luma
    return float(np.abs(np.diff(grey, axis=1)).mean() + np.abs(np.diff(grey, axis=0)).mean())


def per_image(data: dict, record: Path, row: str, sigma: str) -> dict[str, float]:
    rows = data["rows"]
    hits = [r for r in rows if row.lower() in r["name"].lower()]
    if len(hits) != 1:
        names = ", ".join(repr(r["name"]) for r in rows)
        raise SystemExit(f"{record}: {len(hits)} rows match {row!r} (rows: {names})")
    scores = hits[0]["per_image"].get(sigma)
    if scores is None:
        raise SystemExit(f"{record}: row {hits[0]['name']!r} has no σ {sigma} (has {sorted(hits[0]['per_image'])})")
    return scores


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("folder", type=Path, help="the CBSD68 images")
    ap.add_argument("--ours", type=Path, required=True, help="an aerestore cbsd68 record (OUT.json)")
    ap.add_argument("--ours-row", required=True, help="part of the row's name, e.g. 'unet_ae'")
    ap.add_argument("--anchor", type=Path, required=True, help="the record holding the anchor row")
    ap.add_argument("--anchor-row", required=True, help="part of the anchor row's name, e.g. 'CBM3D'")
    ap.add_argument("--sigma", default="25", help="noise σ on 0..255 (default 25)")
    ap.add_argument("--out", type=Path, help="write the per-image gaps and textures as JSON")
    args = ap.parse_args(argv)

    records = {path: json.loads(path.read_text()) for path in (args.ours, args.anchor)}
    try:  # per-image gaps are only meaningful on the same noise
        same_protocol(records[args.ours], records[args.anchor], f"{args.anchor} against {args.ours}")
    except ValueError as e:
        raise SystemExit(str(e)) from None
    ours = per_image(records[args.ours], args.ours, args.ours_row, args.sigma)
    anchor = per_image(records[args.anchor], args.anchor, args.anchor_row, args.sigma)
    names = sorted(set(ours) & set(anchor))
    if len(names) < 8:
        raise SystemExit(f"only {len(names)} images scored by both rows: too few for a rank correlation")
    missing = [n for n in names if not (args.folder / n).is_file()]
    if missing:
        raise SystemExit(f"{args.folder}: no image {missing[0]} (of {len(missing)} missing)")
    gap = np.array([ours[n] - anchor[n] for n in names])
    tex = np.array([texture(args.folder / n) for n in names])
    rho, p = spearmanr(gap, tex)
    order, q = np.argsort(tex), max(1, len(names) // 4)
    result = {
        "sigma": args.sigma, "images": len(names), "gap_mean": float(gap.mean()), "gap_median": float(np.median(gap)),
        "spearman_rho": float(rho), "spearman_p": float(p),
        "gap_smoothest_quarter": float(gap[order[:q]].mean()), "gap_most_textured_quarter": float(gap[order[-q:]].mean()),
        "per_image": {n: {"gap": float(g), "texture": float(t)} for n, g, t in zip(names, gap, tex)},
    }
    print(f"σ {args.sigma}, {len(names)} images: gap (ours − anchor) mean {gap.mean():+.2f} dB, median "
          f"{np.median(gap):+.2f}; Spearman ρ(gap, texture) = {rho:+.2f} (p = {p:.1g}); smoothest quarter "
          f"{result['gap_smoothest_quarter']:+.2f} dB, most textured quarter {result['gap_most_textured_quarter']:+.2f} dB")
    if args.out:
        args.out.write_text(json.dumps(result, indent=1) + "\n")
        print(f"wrote {args.out}")
    return result


if __name__ == "__main__":
    main()
