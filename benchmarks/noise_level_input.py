"""Does ``unet_ae`` remove the camera noise better when it is told the noise level?

Issue 22's clean-region target: in the undamaged regions ``unet_ae`` trails BM3D (on the
faces run 37.47 dB against BM3D with the noise map's 38.53; on the default task the
one-level BM3D, whose sigma is the image-wide estimate of the camera noise, reaches 41.34
against ``unet_ae``'s 39.44). The camera noise's sigma is drawn per image (0.01-0.03); BM3D
is given the image-wide level, while the network (a ~56 px receptive field, 195k parameters)
would have to learn to measure it. This experiment gives it that level, FFDNet's way (Zhang et al. 2018,
"FFDNet: toward a fast and flexible solution for CNN based image denoising": the noise level
map as extra input channels), estimated from the degraded input alone, no oracle:

- ``global``: one channel, the image's noise sigma: median ``|r|`` / 0.6745 over the whole
  image (all channels), ``r`` the Immerkaer high-pass residual of
  :func:`aerestore.noisemap.noise_map` (the MAD estimator of Donoho & Johnstone, image-wide);
- ``map``: one channel, the local level: the mean ``|r|`` over the channels in a 7 x 7 window
  times sqrt(pi / 2) (the L1 scale of a Gaussian; a mean, not
  :func:`~aerestore.noisemap.noise_map`'s median, so that it is a cheap pooling that any
  runtime runs).

Both are computed inside the network's forward from its input (the 48 px crop in training,
the whole image at restore time), scaled by 10, and stacked with the image as the head's
input; nothing else changes (the residual output, the skips, the damage tower on the image
alone). Every variant trains with :func:`aerestore.tracks.images.train.fit_crops` at
``train@unet_ae``'s settings, the same seed (the same crops and fresh damage), ``--threads``
threads (``--seed``: another training seed, the same images); the best weights on validation. Rows: validation MSE (the choice), then PSNR whole /
blur / noise / clean and SSIM of the shared decoder (no per-cluster decoders) on ``--split``
of ``--prepared``. ``--faces-train`` trains and scores on faces instead: photos sorted by
name, the first ``--faces-train-n`` for training, the next 200 for validation, the next
``--faces-n`` scored (``faces`` rows; ``--prepared`` is then not read).
BM3D with the noise map (``--bm3d N``) runs on the first N scored images of each set, every row
averaged on those too.

    python benchmarks/noise_level_input.py [--variants ref global global+map] [--threads 2] [--seed S] \\
        [--faces-train ../shared/datasets/celeba-3k] [--bm3d 48] [--out docs/benchmarks/noise_level_input]
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_budget import COLUMNS, load_sets, restore, runtime_params, scores, train_conditions, train_params  # noqa: E402
from real_photos import square  # noqa: E402

from aerestore.classical import restore_all  # noqa: E402
from aerestore.data.degrade import degrade_image, degrader  # noqa: E402
from aerestore.io import write_json  # noqa: E402
from aerestore.losses import LossConfig  # noqa: E402
from aerestore.metric_ops import psnr_from_mse  # noqa: E402
from aerestore.models.unet_ae import UNetAE, UNetEncoder  # noqa: E402
from aerestore.noisemap import _IMMERKAER, _MAD_TO_SIGMA, NOISE_MAP  # noqa: E402
from aerestore.params import load_params  # noqa: E402
from aerestore.stage import seed_everything  # noqa: E402
from aerestore.tracks.images.dataset import ImageData  # noqa: E402
from aerestore.tracks.images.train import fit_crops  # noqa: E402

ARCH = "unet_ae"
SCALE = 10.0  # sigma 0.01-0.2 -> 0.1-2, the order of the image's values


def noise_inputs(x: Tensor, kinds: tuple[str, ...], window: int = NOISE_MAP["window"]) -> Tensor:
    """``(N, len(kinds), H, W)``: the noise-level channels of ``x`` (module docstring), in torch
    inside the forward (noise_map is NumPy), with noise_map's kernel, MAD constant and window."""
    c = x.shape[1]
    kernel = torch.as_tensor(_IMMERKAER).to(x).expand(c, 1, 3, 3)
    r = F.conv2d(F.pad(x, (1, 1, 1, 1), mode="reflect"), kernel, groups=c).abs()
    out = []
    for kind in kinds:
        if kind == "global":
            g = r.flatten(1).median(dim=1).values * _MAD_TO_SIGMA
            out.append(g.view(-1, 1, 1, 1).expand(-1, 1, *x.shape[-2:]))
        elif kind == "map":
            p = window // 2
            m = F.avg_pool2d(F.pad(r.mean(1, keepdim=True), (p, p, p, p), mode="reflect"), window, stride=1)
            out.append(m * math.sqrt(math.pi / 2))
        else:
            raise ValueError(f"unknown noise input {kind!r}")
    return torch.cat(out, 1) * SCALE


class NoiseLevelHead(nn.Module):
    """``unet_ae``'s head (a 3x3 conv and a ReLU) reading its input and the input's
    noise-level channels (the sub-images' when ``unshuffle`` > 1; every run here has 1)."""

    def __init__(self, cin: int, width: int, kinds: tuple[str, ...]) -> None:
        super().__init__()
        self.kinds = kinds
        self.conv = nn.Conv2d(cin + len(kinds), width, 3, padding=1)

    def forward(self, inp: Tensor) -> Tensor:
        return F.relu(self.conv(torch.cat([inp, noise_inputs(inp, self.kinds)], 1)))


class NoiseLevelUNetAE(UNetAE):
    """``unet_ae`` told the noise level (module docstring); ``kinds`` empty = ``unet_ae``."""

    def __init__(self, latent: int, block: int, channels: int, loss: LossConfig | None = None, *,
                 kinds: tuple[str, ...] = (), **model) -> None:
        super().__init__(latent, block, channels, loss, **model)
        if kinds:  # a fresh encoder (as the first runs drew it), its head reading the noise level
            self.encoder = UNetEncoder(channels, latent, self.width, self.levels, self.unshuffle, self.damage_channels)
            self.encoder.head = NoiseLevelHead(channels * self.unshuffle**2, self.width, kinds)
            self._finish()


def face_sets(folder: Path, n_train: int, n_val: int, n_test: int, size: int, ops):
    """(train, val, test, test masks): ImageData of the photos of ``folder`` sorted by name, in that order;
    val and test degraded once (seed per photo), train degraded anew at every draw."""
    paths = sorted(p for p in folder.iterdir() if p.suffix.lower() in (".jpg", ".jpeg", ".png"))
    if len(paths) < n_train + n_val + n_test:
        raise SystemExit(f"--faces-train {folder}: {len(paths)} photos, {n_train + n_val + n_test} needed")
    sets = []
    for k, (a, b) in enumerate([(0, n_train), (n_train, n_train + n_val), (n_train + n_val, n_train + n_val + n_test)]):
        clean, deg, mask = [], [], []
        for i, p in enumerate(paths[a:b]):
            c = square(p, size)
            d, m = degrade_image(c, ops, np.random.default_rng([k, i]))
            clean.append(c), deg.append(d), mask.append(m)
        sets.append(ImageData.from_arrays(np.stack(deg), np.stack(clean), np.stack(mask)))
    sets[0] = sets[0].fresh(degrader(ops))
    return (*sets, np.stack(mask))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--prepared", type=Path, default=Path("data/prepared"))
    ap.add_argument("--params", type=Path, default=Path("params.yaml"))
    ap.add_argument("--split", default="test")
    ap.add_argument("--variants", nargs="+", default=["ref", "global", "global+map"])
    ap.add_argument("--steps", type=int, default=None)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=None,
                    help="training seed: initial weights, crops, fresh damage (default: params.yaml's seed)")
    ap.add_argument("--faces-train", type=Path, default=None)
    ap.add_argument("--faces-train-n", type=int, default=2600)
    ap.add_argument("--faces-n", type=int, default=200)
    ap.add_argument("--bm3d", type=int, default=48, help="scored images BM3D with the noise map runs on (0 = none)")
    ap.add_argument("--out", type=Path, default=Path("docs/benchmarks/noise_level_input"))
    args = ap.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", str(args.threads))
    torch.set_num_threads(args.threads)

    params = load_params(args.params)
    seed = params.seed if args.seed is None else args.seed
    steps = args.steps or params.train_for(ARCH).crops.steps
    cfg = train_params(args.params, {}, steps)
    runtime = runtime_params(args.params, args.threads)
    if args.faces_train is not None:
        train, val, scored, masks = face_sets(args.faces_train, args.faces_train_n, 200, args.faces_n,
                                              params.data.image_size, params.prepare.degrade)
        set_name = "faces"
    else:
        train, val, scored, masks, _ = load_sets(args.prepared, args.split, 0, params, cfg.crops.fresh_damage)
        set_name = args.split
    clean = scored.clean.permute(0, 2, 3, 1).numpy()
    degraded = scored.degraded.permute(0, 2, 3, 1).numpy()
    sub = slice(0, args.bm3d)
    rows = [{"variant": "degraded input", set_name: scores(degraded, clean, masks)}]
    if args.bm3d:
        rows[0]["anchors"] = scores(degraded[sub], clean[sub], masks[sub])
        out = restore_all(degraded[sub], ["bm3d_map"])["bm3d_map"]
        rows.append({"variant": "bm3d_map (anchors only)", "anchors": scores(out, clean[sub], masks[sub])})
    report = {"conditions": {"set": set_name, "faces_train": str(args.faces_train) if args.faces_train else None,
                             "prepared": None if args.faces_train else str(args.prepared), "images": len(clean),
                             "anchor_images": args.bm3d, "steps": steps, "threads": args.threads,
                             "seed": seed, "train": train_conditions(cfg),
                             "cpu": platform.processor() or platform.machine(), "torch": torch.__version__},
              "rows": rows}
    for variant in args.variants:
        kinds = () if variant == "ref" else tuple(variant.split("+"))
        seed_everything(seed)
        model = NoiseLevelUNetAE(latent=params.latent_for(ARCH), block=cfg.crops.size, channels=train.channels,
                                 loss=LossConfig.from_train(cfg), kinds=kinds, **params.arch_params(ARCH).model)
        t0 = time.perf_counter()
        result = fit_crops(model, train, val, cfg, seed, progress=False, runtime=runtime)
        out = restore(model, scored)
        row = {"variant": variant, "params": sum(p.numel() for p in model.parameters()),
               "train_wall_seconds": round(time.perf_counter() - t0, 1),
               "val_mse": float(result.best_val_loss),
               "val_psnr": float(psnr_from_mse(np.float64(result.best_val_loss))),
               set_name: scores(out, clean, masks)}
        if args.bm3d:
            row["anchors"] = scores(out[sub], clean[sub], masks[sub])
        rows.append(row)
        write_json(args.out.with_suffix(".json"), report)
        print(f"{variant:12s} val {row['val_psnr']:.3f}  " + "  ".join(f"{c} {row[set_name][c]:.3f}" for c in COLUMNS)
              + f"  ({row['train_wall_seconds']:.0f} s)", flush=True)
    sets = (set_name, "anchors") if args.bm3d else (set_name,)
    lines = ["| variant | val PSNR | " + " | ".join(f"{s}: " + " | ".join(COLUMNS) for s in sets) + " |",
             "|" + "---|" * (2 + len(sets) * len(COLUMNS))]
    for r in rows:
        cells = [r["variant"], f"{r['val_psnr']:.2f}" if "val_psnr" in r else ""]
        for s in sets:
            cells += [f"{r[s][c]:.2f}" if c != "ssim" else f"{r[s][c]:.4f}" for c in COLUMNS] if s in r else [""] * len(COLUMNS)
        lines.append("| " + " | ".join(cells) + " |")
    args.out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
