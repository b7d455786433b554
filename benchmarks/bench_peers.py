"""unet_ae against its deep peers (DnCNN, DRUNet, NAFNet: docs/peers.md) at the same budget.

Every network trains with :func:`aerestore.tracks.images.train.fit_crops` at unet_ae's train settings
(``train`` with ``arch.unet_ae.train`` applied, as ``train@unet_ae``: batch, crop,
warm-up + cosine schedule, validation every ``eval_every`` steps, best weights on
``<prepared>/val``), the same seed (so the same crops and the same fresh damage, draw for
draw, as long as both run), ``--threads`` threads (1 by default). The only difference in
training: unet_ae's damage head term (``damage_weight``); the peers have no damage head.

- ``--mode steps``: each peer for unet_ae's ``--steps``;
- ``--mode cpu``: each peer for the same CPU seconds (``time.process_time`` of the
  training, validations included): the budget is unet_ae's, measured here, or
  ``--cpu-budget``. A peer's steps must be fixed before it trains (its schedule spans
  them), so they are ``budget / (overhead + its update)``: its update's CPU seconds from a
  probe of a few updates, the overhead (crop drawing, fresh damage, validations) from
  unet_ae's run less its own probed update. The CPU seconds each run really took are
  reported beside the budget.

``--lr-grid LR [LR ...]``: every network, unet_ae included, trains at each learning rate
of the grid (in each mode, at that mode's steps); the run with the lowest validation MSE
(``fit_crops``' best, on ``<prepared>/val``) is the network's row, and only that run
restores the scored images: the learning rate is chosen on validation, the test split
scored once. Each row records the grid's runs (``lr_grid``: lr, best validation MSE and
PSNR, CPU seconds). In ``--mode cpu`` the budget is the CPU seconds of unet_ae's chosen
run. Without it each network trains at its own rate, as ``peer@<name>`` trains it
(:meth:`aerestore.params.Params.peer_train`): unet_ae at its ``train.lr``, a peer at
``arch.<peer>.train.lr`` (params.yaml: the rate chosen for it on validation), else unet_ae's.

Each trained network (the one shared network; unet_ae without per-cluster decoders)
restores the whole images of ``--split`` (all by default), scored with
:func:`aerestore.metrics.batch_metrics` via ``bench_budget.scores`` (PSNR whole and inside
the blur / noise / clean masks, SSIM), and with ``--faces DIR`` the first ``--faces-n``
photos of DIR as ``benchmarks/real_photos.py`` prepares them (centre square, area resize to
``--faces-size``, the default damage seeded per photo). Restore speed: Mpx/s on one
``--speed-size`` px image, ``--speed-threads`` threads, the best of ``--speed-reps``.

Writes ``<out>.json`` (conditions, every row) and ``<out>.md`` (the table).

    python benchmarks/bench_peers.py [--prepared data/prepared] [--steps 4000] \\
        [--mode cpu steps] [--cpu-budget SECONDS] [--peers dncnn drunet nafnet] \\
        [--faces /work/shared/datasets/celeba-3k --faces-n 200] [--lr-grid 0.0005 0.001 0.002] \\
        [--out docs/peers/bench]
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch
from torch.utils.flop_counter import FlopCounterMode

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_budget import COLUMNS, load_sets, restore, runtime_params, scores, train_conditions, train_params  # noqa: E402
from real_photos import square  # noqa: E402

from aerestore.tracks.images.dataset import ImageData, sample_crops  # noqa: E402
from aerestore.tracks.images.train import fit_crops  # noqa: E402
from aerestore.data.degrade import degrade_image  # noqa: E402
from aerestore.io import write_json  # noqa: E402
from aerestore.losses import LossConfig  # noqa: E402
from aerestore.metric_ops import psnr_from_mse  # noqa: E402
from aerestore.models import create_model  # noqa: E402
from aerestore.models.peers import PEERS  # noqa: E402
from aerestore.params import load_params  # noqa: E402
from aerestore.stage import seed_everything  # noqa: E402

REF = "unet_ae"


def build(params, name: str, cfg, channels: int):
    seed_everything(params.seed)
    return create_model(name, latent=params.latent_for(name), block=cfg.crops.size, channels=channels,
                        loss=LossConfig.from_train(cfg), **params.arch_params(name).model)


def size_of(model) -> dict:
    """Parameters and forward FLOPs per pixel (FlopCounterMode, one 64 px image)."""
    model.eval()
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model(torch.rand(1, model.channels, 64, 64))
    return {"params": sum(p.numel() for p in model.parameters()), "flops_per_px": counter.get_total_flops() / 64**2}


def probe_step(params, name: str, cfg, train: ImageData, n: int = 6) -> float:
    """CPU seconds of one update (forward, backward, Adam) of a fresh ``name`` on a batch of
    real crops: the mean of ``n`` after two warm-up updates."""
    model = build(params, name, cfg, train.channels).train()
    opts = model.configure_optimizers(cfg.lr)
    deg, cln, dmg = sample_crops(train, cfg.batch_size, cfg.crops.size, np.random.default_rng(0))
    batch = (deg, cln, dmg) if dmg is not None else (deg, cln)
    for _ in range(2):
        model.train_step(batch, opts)
    c0 = time.process_time()
    for _ in range(n):
        model.train_step(batch, opts)
    return (time.process_time() - c0) / n


def speed(model, size: int, threads: int, reps: int) -> float:
    """Mpx/s restoring one ``size`` px image with ``threads`` threads (best of ``reps``)."""
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    model.eval()
    x = torch.rand(1, model.channels, size, size)
    best = float("inf")
    with torch.no_grad():
        model(x)  # warm-up
        for _ in range(reps):
            t0 = time.perf_counter()
            model(x)
            best = min(best, time.perf_counter() - t0)
    torch.set_num_threads(before)
    return size * size / 1e6 / best


def faces(folder: Path, n: int, size: int, ops, seed: int = 0) -> dict[str, np.ndarray]:
    """The first ``n`` photos (sorted names) as real_photos.py prepares them: degraded,
    clean, masks (uint8 N x H x W x C / K)."""
    paths = sorted(p for p in folder.iterdir() if p.suffix.lower() in (".jpg", ".jpeg", ".png"))[:n]
    if not paths:
        raise SystemExit(f"--faces: no photos in {folder}")
    out = {"degraded": [], "clean": [], "mask": []}
    for i, path in enumerate(paths):
        clean = square(path, size)
        degraded, mask = degrade_image(clean, ops, np.random.default_rng([seed, i]))
        for k, v in zip(out, (degraded, clean, mask)):
            out[k].append(v)
    return {k: np.stack(v) for k, v in out.items()}


def evaluate(model, scored: ImageData, clean, masks, face_set) -> dict:
    row = {"test": scores(restore(model, scored), clean, masks)}
    if face_set is not None:
        data = ImageData.from_arrays(face_set["degraded"], face_set["clean"], face_set["mask"])
        row["faces"] = scores(restore(model, data), face_set["clean"], face_set["mask"])
    return row


def table(report: dict) -> str:
    """The Markdown table of a report."""
    sets = ["test"] + (["faces"] if report["conditions"].get("faces") else [])
    head = ["network", "budget", "steps", "train CPU s", "params", "FLOPs/px", "Mpx/s"]
    grid = report["conditions"].get("lr_grid")
    if grid:
        head.insert(3, "lr (val PSNR of " + " / ".join(f"{lr:g}" for lr in grid) + ")")
    for s in sets:
        head += [f"{s} PSNR", f"{s} blur", f"{s} noise", f"{s} clean", f"{s} SSIM"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in report["rows"]:
        cells = [r["arch"], r["mode"], str(r.get("steps", "")),
                 f"{r['train_cpu_seconds']:.0f}" if "train_cpu_seconds" in r else "",
                 f"{r['params']:,}" if "params" in r else "", f"{r['flops_per_px'] / 1e3:.1f}k" if "params" in r else "",
                 f"{r['mpx_per_s']:.2f}" if "mpx_per_s" in r else ""]
        if grid:
            tried = r.get("lr_grid", [])
            cells.insert(3, f"{r['lr']:g} (" + " / ".join(f"{t['val_psnr']:.2f}" for t in tried) + ")" if tried else "")
        for s in sets:
            v = r.get(s, {})
            cells += [f"{v[c]:.2f}" if c != "ssim" else f"{v[c]:.4f}" for c in COLUMNS] if v else [""] * len(COLUMNS)
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--prepared", type=Path, default=Path("data/prepared"))
    ap.add_argument("--params", type=Path, default=Path("params.yaml"))
    ap.add_argument("--split", default="test")
    ap.add_argument("--images", type=int, default=0, help="evenly spaced images scored (0 = all)")
    ap.add_argument("--steps", type=int, default=None, help="unet_ae's steps (default: its train.crops.steps)")
    ap.add_argument("--mode", nargs="+", choices=("cpu", "steps"), default=["cpu", "steps"])
    ap.add_argument("--cpu-budget", type=float, default=None,
                    help="CPU seconds of each peer's training (default: unet_ae's, measured here)")
    ap.add_argument("--peers", nargs="*", choices=PEERS, default=list(PEERS),
                    help="the peers (none: unet_ae alone, e.g. to choose its --lr-grid rate)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--faces", type=Path, default=None, help="a folder of photos (e.g. celeba-3k)")
    ap.add_argument("--faces-n", type=int, default=200)
    ap.add_argument("--faces-size", type=int, default=None, help="default: data.image_size")
    ap.add_argument("--speed-size", type=int, default=256)
    ap.add_argument("--speed-threads", type=int, default=2)
    ap.add_argument("--speed-reps", type=int, default=3)
    ap.add_argument("--lr-grid", type=float, nargs="+", default=None,
                    help="learning rates every network trains at; the lowest validation MSE is its row "
                         "(default: unet_ae's lr)")
    ap.add_argument("--out", type=Path, default=Path("docs/peers/bench"))
    args = ap.parse_args()
    if args.lr_grid is not None and (min(args.lr_grid) <= 0 or len(set(args.lr_grid)) < len(args.lr_grid)):
        raise SystemExit(f"--lr-grid: positive, distinct learning rates expected, got {args.lr_grid}")
    os.environ.setdefault("OMP_NUM_THREADS", str(args.threads))
    torch.set_num_threads(args.threads)

    params = load_params(args.params)
    steps = args.steps or params.train_for(REF).crops.steps
    cfg = train_params(args.params, {}, steps)
    runtime = runtime_params(args.params, args.threads)
    train, val, scored, masks, idx = load_sets(args.prepared, args.split, args.images, params, cfg.crops.fresh_damage)
    clean = scored.clean.permute(0, 2, 3, 1).numpy()
    face_set = None
    if args.faces is not None:
        face_set = faces(args.faces, args.faces_n, args.faces_size or params.data.image_size, params.prepare.degrade)

    rows = [{"arch": "degraded input", "mode": "", "test": scores(scored.degraded.permute(0, 2, 3, 1).numpy(),
                                                                    clean, masks)}]
    if face_set is not None:
        rows[0]["faces"] = scores(face_set["degraded"], face_set["clean"], face_set["mask"])
    conditions = {
        "prepared": str(args.prepared), "split": args.split, "images": len(idx),
        "faces": None if face_set is None else {"folder": str(args.faces), "n": len(face_set["clean"]),
                                                "size": int(face_set["clean"].shape[1])},
        "threads": args.threads, "seed": params.seed, "ref_steps": steps,
        "speed": {"size": args.speed_size, "threads": args.speed_threads, "reps": args.speed_reps},
        "train": train_conditions(cfg), "lr_grid": args.lr_grid,
        "cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(), "torch": torch.__version__,
    }
    report = {"conditions": conditions, "rows": rows}

    def write() -> None:  # after every run: a run cut short keeps the rows done
        write_json(args.out.with_suffix(".json"), report)
        args.out.with_suffix(".md").write_text(table(report))

    def fit(name: str, mode: str, n_steps: int, lr: float):
        run_cfg = cfg.model_copy(update={"lr": lr, "crops": cfg.crops.model_copy(update={"steps": n_steps})})
        model = build(params, name, run_cfg, train.channels)
        row = {"arch": name, "mode": mode, "steps": n_steps, "lr": lr, **size_of(model)}
        t0, c0 = time.perf_counter(), time.process_time()
        result = fit_crops(model, train, val, run_cfg, params.seed, progress=False, runtime=runtime)
        row["train_cpu_seconds"] = round(time.process_time() - c0, 1)
        row["train_wall_seconds"] = round(time.perf_counter() - t0, 1)
        row["best_step"] = result.history[result.best_epoch - 1]["step"]
        row["val_mse"] = float(result.best_val_loss)
        return row, model

    def run(name: str, mode: str, n_steps: int) -> dict:
        """``name`` trained at each learning rate of the grid (without one, its own rate:
        unet_ae's ``train.lr``, a peer's ``arch.<peer>.train.lr``); the lowest validation MSE
        is chosen, and only that network restores the scored images."""
        tried, best = [], None
        for lr in args.lr_grid or [cfg.lr if name == REF else params.peer_train(name).lr]:
            row, model = fit(name, mode, n_steps, lr)
            val_psnr = round(float(psnr_from_mse(np.float64(row["val_mse"]))), 3)  # of the pooled MSE
            tried.append({"lr": lr, "val_mse": row["val_mse"], "val_psnr": val_psnr,
                          "best_step": row["best_step"], "train_cpu_seconds": row["train_cpu_seconds"]})
            if args.lr_grid:
                print(f"{name:8s} {mode:5s} {n_steps:5d} steps  lr {lr:g}: val PSNR {tried[-1]['val_psnr']:.2f}",
                      flush=True)
            if best is None or row["val_mse"] < best[0]["val_mse"]:
                best = row, model
        row, model = best
        if args.lr_grid:
            row["lr_grid"] = tried
        row.update(evaluate(model, scored, clean, masks, face_set))
        row["mpx_per_s"] = speed(model, args.speed_size, args.speed_threads, args.speed_reps)
        torch.set_num_threads(args.threads)
        rows.append(row)
        write()
        print(f"{name:8s} {mode:5s} {n_steps:5d} steps {row['train_cpu_seconds']:7.1f} CPU s (lr {row['lr']:g}): "
              + "  ".join(f"{c} {row['test'][c]:.4g}" for c in COLUMNS), flush=True)
        return row

    ref = run(REF, "ref", steps)
    conditions["cpu_budget_seconds"] = budget = args.cpu_budget or ref["train_cpu_seconds"]
    if "cpu" in args.mode:
        probes = {name: probe_step(params, name, cfg, train) for name in [REF, *args.peers]}
        conditions["probe_cpu_seconds_per_step"] = probes
        conditions["overhead_cpu_seconds_per_step"] = overhead = max(0.0, ref["train_cpu_seconds"] / steps - probes[REF])
    for mode in args.mode:  # one mode for every peer first: a run cut short keeps whole modes
        for name in args.peers:
            run(name, mode, steps if mode == "steps" else max(1, int(budget / (overhead + probes[name]))))
    print(table(report))
    print(f"wrote {args.out.with_suffix('.json')} and {args.out.with_suffix('.md')}")


if __name__ == "__main__":
    main()
