"""unet_ae's quality against training minutes, beside the best classical restorer's level.

Each budget in ``--steps`` is a separate, complete training run of ``unet_ae`` at the
settings of ``params.yaml`` (``train`` with ``arch.unet_ae.train`` applied, as
``train@unet_ae``; ``--set key=value`` overrides a ``train`` key, dotted below ``train``, e.g.
``loss.recon=mse``), with
its own warm-up + cosine schedule over its steps, the same seed, ``--threads`` threads
(1 by default), random crops of ``<prepared>/train`` and the best weights on ``<prepared>/val``
(:func:`aerestore.tracks.images.train.fit_crops`). Its shared decoder (the one ``train@unet_ae``
saves, before any per-cluster fine-tuning) then restores ``--images`` evenly spaced whole
images of ``--split`` (``round(linspace(0, n - 1, k))``, as the evaluate stage's anchor
subset), scored with :func:`aerestore.metrics.batch_metrics` (PSNR over all pixels and
inside the blurred / noisy / clean regions of the masks, SSIM). The classical restorers
(``--classical``; BM3D is the optional extra) run once on the same images, and the best of
them in each column is drawn as a horizontal line.

Writes ``<out>.json`` (conditions, every run's metrics and training seconds, the
classical scores, and for each run its margin over the best classical restorer in each
column) and ``<out>.png`` (PSNR whole / blur / clean and SSIM against training minutes).
``--merge A.json B.json ...`` joins reports of separate invocations (e.g. a long run made
later, or another seed from ``--params``) into ``<out>``: they must have scored the same
images with the same training settings (threads aside); the runs of the first report's
seed form the curve, those of other seeds are drawn as their own points. (A report's seed is
the training's: initial weights, crops, fresh damage. The images scored are those of
``--prepared``, whatever the seed.)
Minutes are wall-clock training time on this machine with these threads: compare the runs
of one invocation with each other, not with another machine's.

    python benchmarks/bench_budget.py [--prepared data/prepared] [--split test] \\
        [--steps 500 1000 2000 4000] [--threads 1] [--set loss.recon=mse] [--model width=24] \\
        [--out docs/benchmarks/budget]
"""

from __future__ import annotations

import argparse
import os
import platform
import time
from pathlib import Path

import numpy as np
import torch
import yaml
from pydantic import ValidationError

from aerestore.classical import RESTORERS, restore_all
from aerestore.tracks.images.dataset import ImageData, image_batches
from aerestore.tracks.images.train import fit_crops
from aerestore.data.degrade import degrader
from aerestore.evaluate import anchor_indices
from aerestore.io import open_split, read_json, write_json
from aerestore.losses import LossConfig
from aerestore.metrics import batch_metrics
from aerestore.models import create_model
from aerestore.params import RuntimeParams, TrainParams, deep_update, flatten, load_params
from aerestore.stage import seed_everything

ARCH = "unet_ae"
# the columns reported, and the margins of issue 10's targets (dB over the best classical)
COLUMNS = ("psnr", "psnr_blur", "psnr_noise", "psnr_clean", "ssim")
TARGETS = {"psnr": 1.0, "psnr_blur": 1.5}
PANELS = (("psnr", "PSNR, whole images (dB)"), ("psnr_blur", "PSNR inside the blurred regions (dB)"),
          ("psnr_clean", "PSNR in the clean regions (dB)"), ("ssim", "SSIM"))


def parse_set(items: list[str]) -> dict:
    """``key=value`` pairs -> a dict, each value read as YAML (``0.002`` a float, ``mse`` a
    string, as ``dvc exp run -S`` reads it); :class:`TrainParams` validates them."""
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise SystemExit(f"--set expects key=value, got {item!r}")
        out[key] = yaml.safe_load(value)
    return out


def train_params(params_file: Path, overrides: dict[str, str], steps: int) -> TrainParams:
    """unet_ae's train settings from ``params_file``, with ``overrides`` (keys dotted below
    ``train``: ``loss.recon``, ``crops.size``, ``lr``) and this run's steps."""
    base = load_params(params_file).train_for(ARCH).model_dump()
    unknown = sorted(set(overrides) - set(flatten(base)))
    if unknown:
        raise SystemExit(f"--set: unknown train key(s) {unknown}")
    nested: dict = {}
    for key, value in {**overrides, "crops.steps": steps}.items():
        *parents, leaf = key.split(".")
        cur = nested
        for part in parents:
            cur = cur.setdefault(part, {})
        cur[leaf] = value
    try:
        return TrainParams.model_validate(deep_update(base, nested))
    except ValidationError as exc:
        raise SystemExit(f"--set / --steps: invalid train params for {ARCH}:\n{exc}") from None


def runtime_params(params_file: Path, threads: int) -> RuntimeParams:
    """``params_file``'s runtime with this run's threads."""
    try:
        return RuntimeParams.model_validate({**load_params(params_file).runtime.model_dump(), "threads": threads})
    except ValidationError as exc:
        raise SystemExit(f"--threads: invalid runtime params:\n{exc}") from None


def train_conditions(cfg: TrainParams) -> dict:
    """The training settings a report records (its ``conditions.train``)."""
    return {"batch_size": cfg.batch_size, "lr": cfg.lr, "recon": cfg.loss.recon, "crop": cfg.crops.size,
            "warmup": cfg.crops.warmup, "eval_every": cfg.crops.eval_every, "damage_weight": cfg.loss.damage_weight,
            "fresh_damage": cfg.crops.fresh_damage}


def load_sets(prepared: Path, split: str, images: int, params, fresh: bool):
    """``(train, val, scored, masks, idx)`` of ``prepared``: the training images (degraded
    anew at every draw when ``fresh``, as ``train@unet_ae``), the validation images, and
    ``images`` evenly spaced images of ``split`` (their indices ``idx``; 0 = all) with their
    damage masks."""
    train = ImageData.load(prepared, "train")
    if fresh:
        train = train.fresh(degrader(params.prepare.degrade))
    val = ImageData.load(prepared, "val")
    scored_all = ImageData.load(prepared, split)
    idx = anchor_indices(len(scored_all), images)
    scored = ImageData(scored_all.degraded[idx], scored_all.clean[idx],
                       None if scored_all.classes is None else scored_all.classes[idx])
    masks = open_split(prepared / split, "prepare")["mask"]
    if masks is None:
        raise SystemExit(f"{prepared / split}: no damage masks (the region columns need them)")
    return train, val, scored, np.ascontiguousarray(masks[idx]), idx


def scores(restored: np.ndarray, clean: np.ndarray, masks: np.ndarray) -> dict[str, float]:
    """Mean of each column over the images (a region absent from an image is left out)."""
    m = batch_metrics(restored, clean, masks)
    return {k: float(np.nanmean(m[k])) for k in COLUMNS}


@torch.no_grad()
def restore(model, data: ImageData) -> np.ndarray:
    """The model's restoration of every image of ``data``, float (N, H, W, C) in [0, 1]."""
    model.eval()
    out = [model.run(deg).x_hat.permute(0, 2, 3, 1).numpy() for deg, _, _ in image_batches(data, 16)]
    return np.concatenate(out).astype(np.float64)


def classical_scores(names: list[str], degraded: np.ndarray, clean: np.ndarray, masks: np.ndarray,
                     cache: Path | None, key: dict) -> dict[str, dict[str, float]]:
    """Each classical restorer's scores on the images; read from ``cache`` when it holds
    the same ``key`` (prepared folder, split, indices), else computed and written there."""
    if cache is not None and cache.exists():
        stored = read_json(cache)
        if stored.get("key") == key and set(names) <= set(stored["scores"]):
            return {n: stored["scores"][n] for n in names}
    runnable = [n for n in names if RESTORERS[n].missing() is None]
    for n in sorted(set(names) - set(runnable)):
        print(f"bench_budget: {n} skipped: {RESTORERS[n].missing()}")
    restored = restore_all(degraded, runnable)
    result = {n: scores(restored[n], clean, masks) for n in runnable}
    if cache is not None:
        write_json(cache, {"key": key, "scores": result})
    return result


def best_classical(classical: dict[str, dict[str, float]]) -> dict[str, dict]:
    """Per column, the best classical restorer and its value."""
    best = {}
    for col in COLUMNS:
        name = max(classical, key=lambda n: classical[n][col])
        best[col] = {"name": name, "value": classical[name][col]}
    return best


def plot(report: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs = report["runs"]
    rate = report.get("plot_steps_per_second")

    def minutes_of(rows):
        return [r["steps"] / rate / 60 if rate else r["train_seconds"] / 60 for r in rows]

    minutes = minutes_of(runs)
    seed = report["conditions"]["seed"]
    fig, axes = plt.subplots(2, 2, figsize=(9.5, 7.0))
    for ax, (col, title) in zip(axes.flat, PANELS):
        ax.plot(minutes, [r[col] for r in runs], "o-", color="C0", label=f"{ARCH} (shared decoder), training seed {seed}")
        for m, r in zip(minutes, runs):
            ax.annotate(str(r["steps"]), (m, r[col]), textcoords="offset points", xytext=(4, -10), fontsize=7)
        for i, (other, rows) in enumerate(sorted(report.get("runs_by_seed", {}).items())):
            ax.plot(minutes_of(rows), [r[col] for r in rows], "s--", mfc="none", color=f"C{i + 1}",
                    label=f"training seed {other}")
        best = report["best_classical"][col]
        ax.axhline(best["value"], color="C3", ls="--", label=f"best classical ({best['name']})")
        if col in TARGETS:
            ax.axhline(best["value"] + TARGETS[col], color="C3", ls=":", lw=1,
                       label=f"target: +{TARGETS[col]} dB")
        ax.set_title(title, fontsize=9)
        ax.set_xlabel(f"training minutes at {rate:g} steps/s (steps / rate)" if rate else
                      f"training minutes ({report['conditions']['threads']} thread(s))")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="lower right")
    fig.suptitle(f"{ARCH}: quality against training budget\n({report['conditions']['images']} "
                 f"{report['conditions']['split']} images of {report['conditions']['prepared']}; steps annotated)",
                 fontsize=9)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


# conditions that must agree for two reports' runs to share a figure (threads may differ)
SAME = ("prepared", "split", "images", "overrides", "model", "train")


def _same_scores(a: dict, b: dict, tol: float = 1e-4) -> bool:
    """The same restorers and columns, equal to ``tol`` (the last bits of BM3D's FFTs may
    differ between CPUs)."""
    return a.keys() == b.keys() and all(
        a[n].keys() == b[n].keys() and all(abs(a[n][c] - b[n][c]) <= tol for c in a[n]) for n in a)


def merge(paths: list[Path]) -> dict:
    """One report from several: the first report's conditions and classical scores; every
    run of its seed in ``runs`` (by steps; a budget run twice keeps the later report's),
    the runs of other seeds in ``runs_by_seed``. Reports that scored other images or
    trained with other settings are refused, naming the file and the condition."""
    reports = [read_json(p) for p in paths]
    base = reports[0]
    seed = base["conditions"]["seed"]
    same_seed: dict[int, dict] = {}
    by_seed: dict[str, dict[int, dict]] = {}
    for path, report in zip(paths, reports):
        for key in SAME:
            if report["conditions"].get(key) != base["conditions"].get(key):
                raise SystemExit(f"--merge: {path} has conditions.{key} = {report['conditions'].get(key)!r}, "
                                 f"{paths[0]} {base['conditions'].get(key)!r}")
        if not _same_scores(report["classical"], base["classical"]):
            raise SystemExit(f"--merge: {path} scored other images or classical restorers than {paths[0]}")
        runs = {r["steps"]: {**r, "threads": r.get("threads", report["conditions"]["threads"])}
                for r in report["runs"]}
        if report["conditions"]["seed"] == seed:
            same_seed.update(runs)
        else:
            by_seed.setdefault(str(report["conditions"]["seed"]), {}).update(runs)
    merged = {k: v for k, v in base.items() if k not in ("runs", "runs_by_seed")}
    merged["runs"] = [same_seed[k] for k in sorted(same_seed)]
    if by_seed:
        merged["runs_by_seed"] = {s: [rows[k] for k in sorted(rows)] for s, rows in sorted(by_seed.items())}
    merged["merged_from"] = [str(p) for p in paths]
    return merged


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--prepared", type=Path, default=Path("data/prepared"))
    ap.add_argument("--params", type=Path, default=Path("params.yaml"))
    ap.add_argument("--split", default="test", help="the images scored (the settings were chosen on val)")
    ap.add_argument("--images", type=int, default=48, help="evenly spaced images scored (0 = all)")
    ap.add_argument("--steps", type=int, nargs="+", default=[500, 1000, 2000, 4000])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                    help="override a train key of unet_ae (repeatable)")
    ap.add_argument("--model", dest="model_overrides", action="append", default=[], metavar="KEY=VALUE",
                    help="override a model keyword of unet_ae (arch.unet_ae.model), e.g. width=24 (repeatable)")
    ap.add_argument("--classical", nargs="+", default=["bm3d", "tv", "nlmeans"])
    ap.add_argument("--out", type=Path, default=Path("docs/benchmarks/budget"),
                    help="writes <out>.json and <out>.png")
    ap.add_argument("--classical-cache", type=Path, default=None,
                    help="a JSON file of the classical scores, reused when it holds the same "
                         "images (BM3D is slow), else written; default: none")
    ap.add_argument("--no-plot", action="store_true")
    ap.add_argument("--rate", type=float, default=None, metavar="STEPS_PER_S",
                    help="plot minutes as steps / this rate (e.g. the default run's train@unet_ae "
                         "steps per second on a quiet machine) instead of this run's wall clock, "
                         "which other jobs on the machine distort")
    ap.add_argument("--replot", type=Path, default=None, metavar="JSON",
                    help="redraw <out>.png from a report this script wrote (with --rate), no training")
    ap.add_argument("--merge", type=Path, nargs="+", default=None, metavar="JSON",
                    help="join reports this script wrote (same images and settings) into <out>, no training")
    args = ap.parse_args()
    if args.merge or args.replot is not None:  # no training: a report from reports, redrawn
        report = merge(args.merge) if args.merge else read_json(args.replot)
        json_out = args.out.with_suffix(".json") if args.merge else args.replot
        if args.rate:
            report["plot_steps_per_second"] = args.rate
        if args.merge or args.rate:
            write_json(json_out, report)
        plot(report, args.out.with_suffix(".png"))
        print(f"wrote {args.out.with_suffix('.png')}" + (f" and {json_out}" if args.merge or args.rate else ""))
        return
    unknown = [n for n in args.classical if n not in RESTORERS]
    if unknown:
        raise SystemExit(f"--classical: unknown restorer(s) {unknown}; known: {list(RESTORERS)}")
    os.environ.setdefault("OMP_NUM_THREADS", str(args.threads))
    torch.set_num_threads(args.threads)

    params = load_params(args.params)
    overrides = parse_set(args.overrides)
    model_kwargs = {**params.arch_params(ARCH).model, **parse_set(args.model_overrides)}
    runtime = runtime_params(args.params, args.threads)  # bad overrides stop here, before any work
    fresh = train_params(args.params, overrides, args.steps[0]).crops.fresh_damage
    train, val, scored, masks, idx = load_sets(args.prepared, args.split, args.images, params, fresh)
    clean = scored.clean.permute(0, 2, 3, 1).numpy()
    degraded = scored.degraded.permute(0, 2, 3, 1).numpy()

    key = {"prepared": str(args.prepared.resolve()), "split": args.split, "indices": idx.tolist()}
    classical = classical_scores(args.classical, degraded, clean, masks,
                                 args.classical_cache, key)
    classical["degraded input"] = scores(degraded, clean, masks)
    best = best_classical({n: v for n, v in classical.items() if n != "degraded input"})

    runs = []
    for steps in args.steps:
        cfg = train_params(args.params, overrides, steps)
        seed_everything(params.seed)
        model = create_model(ARCH, latent=params.latent_for(ARCH), block=cfg.crops.size, channels=train.channels,
                             loss=LossConfig.from_train(cfg), **model_kwargs)
        t0, c0 = time.perf_counter(), time.process_time()
        result = fit_crops(model, train, val, cfg, params.seed, runtime=runtime)
        seconds, cpu = time.perf_counter() - t0, time.process_time() - c0
        row = {"steps": steps, "train_seconds": round(seconds, 1), "train_cpu_seconds": round(cpu, 1), **scores(restore(model, scored), clean, masks),
               "best_step": result.history[result.best_epoch - 1]["step"]}
        row["margin_db"] = {c: round(row[c] - best[c]["value"], 3) for c in COLUMNS if c != "ssim"}
        runs.append(row)
        print(f"{steps:5d} steps {seconds / 60:5.1f} min: " + "  ".join(f"{c} {row[c]:.4g}" for c in COLUMNS)
              + "  margin " + " ".join(f"{c} {v:+.2f}" for c, v in row["margin_db"].items()), flush=True)

    report = {
        "conditions": {"prepared": str(args.prepared), "split": args.split, "images": len(idx),
                       "threads": args.threads, "overrides": overrides, "model": model_kwargs,
                       "seed": params.seed,
                       "train": train_conditions(cfg),
                       "cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
                       "torch": torch.__version__},
        "classical": classical, "best_classical": best, "targets_db": TARGETS, "runs": runs,
    }
    if args.rate:
        report["plot_steps_per_second"] = args.rate
    write_json(args.out.with_suffix(".json"), report)
    if not args.no_plot:
        plot(report, args.out.with_suffix(".png"))
    print(f"wrote {args.out.with_suffix('.json')}" + ("" if args.no_plot else f" and {args.out.with_suffix('.png')}"))


if __name__ == "__main__":
    main()
