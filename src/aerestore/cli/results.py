"""Results and studies: ``models``, ``summary``, ``seeds``, ``report``, ``side-by-side``, ``preset``, ``cbsd68``."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

from aerestore.cli.common import CliError


# ------------------------------------------------------------------ models / summary
def add_models(sub: Any) -> None:
    p = sub.add_parser("models", help="list the architectures the pipeline can train")
    p.add_argument("pattern", nargs="?", default=None, help="fnmatch pattern, e.g. 'vae*'")
    p.set_defaults(func=cmd_models)


def cmd_models(args: argparse.Namespace) -> int:
    from aerestore.models import list_models

    names = list_models(args.pattern)
    for name in names:
        print(name)
    return 0 if names else 1


def add_summary(sub: Any) -> None:
    p = sub.add_parser("summary", help="print the results table of the last evaluate stage")
    p.add_argument("--path", default="metrics/summary.md")
    what = p.add_mutually_exclusive_group()
    what.add_argument("--sync-docs", action="store_true",
                      help="copy the summary's tables into README.md and docs/results.md (their marked blocks)")
    what.add_argument("--check", action="store_true",
                      help="exit 1 if a marked block of README.md or docs/results.md differs from the summary")
    p.set_defaults(func=cmd_summary)


def cmd_summary(args: argparse.Namespace) -> int:
    from aerestore import docs_tables

    path = Path(args.path)
    if not path.exists():
        print(f"error: {path} does not exist yet: run `dvc repro` (or ./run.sh repro) first", file=sys.stderr)
        return 1
    if args.sync_docs:
        changed = docs_tables.write_pages(Path.cwd(), path)
        print("updated: " + ", ".join(changed) if changed else "the docs' tables already equal the summary")
        return 0
    if args.check:
        stale = docs_tables.stale_pages(Path.cwd(), path)
        for rel in stale:
            print(f"{rel}: its results table differs from {path}: run `aerestore summary --sync-docs`",
                  file=sys.stderr)
        return 1 if stale else 0
    print(path.read_text(), end="")
    return 0


# -------------------------------------------------------------------------- seeds
def add_seeds(sub: Any) -> None:
    p = sub.add_parser(
        "seeds",
        help="per-cluster vs control decoders over several seeds (one DVC experiment each)",
        description="For each SOURCE (a DVC experiment name or git revision of --repo, an "
        "evaluate_details.json file, or a folder holding metrics/evaluate_details.json), compare "
        "the per-image metrics of <arch>.multi and <arch>.single; then print, per architecture and "
        "metric, the mean and spread over the seeds of the mean difference, of the share of images "
        "won by multi and of the Wilcoxon p-value, and whether the targets hold in every seed. "
        "Queue the seeds with: dvc exp run --queue -S 'seed=1,2,3' && dvc queue start -j 1",
    )
    p.add_argument("sources", nargs="*", metavar="SOURCE",
                   help="experiment names / revisions, evaluate_details.json files or folders")
    p.add_argument("--all", action="store_true",
                   help="add every finished experiment of the baseline (HEAD) of --repo")
    p.add_argument("--repo", default=".", help="the DVC repository of the experiments (default: .)")
    p.add_argument("--out", "-o", type=Path, default=None, metavar="MD",
                   help="also write the table to MD, and MD's .json and .png beside it "
                        "(e.g. metrics/seeds.md)")
    p.add_argument("--json", type=Path, default=None, help="JSON report path (default: MD with .json)")
    p.add_argument("--plot", type=Path, default=None, help="PNG plot path (default: MD with .png)")
    p.add_argument("--metrics", default=None,
                   help="comma-separated metrics to compare (default: every one with a direction)")
    p.add_argument("--against", choices=("single", "ensemble"), default="single",
                   help="the control multi is compared with: single (the equal-budget single decoder) or "
                        "ensemble (the ensemble control: the idea holds only where multi beats it)")
    p.add_argument("--blur-metric", default="psnr_blur", help="target metric inside the blur (psnr_blur)")
    p.add_argument("--clean-metric", default="psnr_clean", help="target metric in clean regions (psnr_clean)")
    p.add_argument("--min-share", type=float, default=0.75, help="blur target: share won (0.75)")
    p.add_argument("--max-p", type=float, default=0.01, help="blur target: Wilcoxon p below (0.01)")
    p.add_argument("--min-clean-diff", type=float, default=-0.05,
                   help="clean target: mean difference at least (-0.05 dB)")
    p.add_argument("--check", action="store_true",
                   help="exit code 1 unless the targets hold in every seed for every architecture")
    p.set_defaults(func=cmd_seeds)


def cmd_seeds(args: argparse.Namespace) -> int:
    from aerestore.studies import seeds as SD
    from aerestore.studies import seeds_report as SR

    sources = list(args.sources)
    if args.all:
        sources += [name for name in SD.baseline_experiments(args.repo) if name not in sources]
    if not sources:
        raise CliError("no SOURCE given and --all found no experiment "
                       "(dvc exp run --queue -S 'seed=1,2,3' && dvc queue start -j 1)")
    runs = [SD.load_source(s, args.repo) for s in sources]
    runs.sort(key=lambda r: (r.seed is None, r.seed if r.seed is not None else 0, r.label))
    targets = SD.Targets(blur_metric=args.blur_metric, clean_metric=args.clean_metric,
                         min_share=args.min_share, max_p=args.max_p, min_clean_diff=args.min_clean_diff)
    metrics = [m.strip() for m in args.metrics.split(",") if m.strip()] if args.metrics else None
    report = SD.analyse(runs, metrics=metrics, targets=targets, against=args.against)
    print(SR.markdown(report), end="")
    json_path, png_path = args.json, args.plot
    if args.out is not None:
        json_path = json_path or args.out.with_suffix(".json")
        png_path = png_path or args.out.with_suffix(".png")
    for path in SR.write_report(report, args.out, json_path, png_path):
        print(f"wrote {path}", file=sys.stderr)
    return 1 if args.check and not all(report["holds"].values()) else 0



# ------------------------------------------------------- the studies' claims, presets
def _claim_numbers(text: str | None) -> list[int] | None:
    if not text:
        return None
    try:
        return [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise CliError(f"--claims {text!r}: give claim numbers separated by commas, e.g. 3,7") from None


R_SEEDS = (1, 2, 3, 4, 5)  # aerestore.studies.claims.SEEDS (not imported here: the CLI starts fast)


def add_report(sub: Any) -> None:
    p = sub.add_parser(
        "report",
        help="re-test the studies' claims (scaled down) and write reports/claims.md",
        description="Train the arms each claim needs (param overrides on params.yaml, scaled down "
        "to the offline sample data) for every seed, or reuse their cached results "
        "(reports/cache/), then write reports/claims.md, reports/claims.json and one plot per "
        "claim (reports/claims/). See docs/studies.md, \"The studies' claims\".",
    )
    p.add_argument("--claims", default=None, metavar="N,N", help="only these claims (e.g. 3,7; default: all)")
    p.add_argument("--seeds", type=int, default=len(R_SEEDS), metavar="K",
                   help=f"seeds 1..K per arm (default {len(R_SEEDS)}; the interval needs at least 2)")
    p.add_argument("--params", default="params.yaml", help="the base params (default params.yaml)")
    p.add_argument("--out", type=Path, default=Path("reports"), help="output folder (default reports/)")
    p.add_argument("--cache", type=Path, default=None, help="run cache (default OUT/cache)")
    p.add_argument("--workers", type=int, default=min(2, os.cpu_count() or 1), metavar="N",
                   help="runs trained at once, one thread each (default: 2, or 1 on a 1-core machine; "
                   "the numbers do not depend on it)")
    p.add_argument("--setting", default=None, metavar="NAME=PATH",
                   help="run the claims of a study's own setting on a local copy of its data, e.g. "
                   "mnist=/tmp/mnist5k (the sharpness study's claims 7, 8, 14, 15 on whole 32 px MNIST "
                   "digits); write to another --out")
    p.add_argument("--check", action="store_true",
                   help="train nothing: say whether OUT/claims.json was written by the code now "
                   "(exit code 1 when stale)")
    p.set_defaults(func=cmd_report)


def cmd_report(args: argparse.Namespace) -> int:
    from aerestore.studies import report as R

    if args.check:
        fresh, message = R.check_report(args.out)
        print(message)
        return 0 if fresh else 1
    if args.seeds < 1:
        raise CliError(f"--seeds {args.seeds}: at least 1 (2 for the report's interval, 5 by default)")
    if args.workers < 1:
        raise CliError(f"--workers {args.workers}: at least 1")
    if args.setting and args.out.resolve() == Path("reports").resolve():
        raise CliError(f"--setting {args.setting}: give another --out (e.g. reports/mnist), so that the "
                       "default report in reports/ is not overwritten")
    # a bad --setting (name, folder, a claim outside it) raises ValueError in R.report before any
    # run trains; main() prints it as this command's error
    rows = R.report(_claim_numbers(args.claims), seeds=range(1, args.seeds + 1), params_path=args.params,
                    out_dir=args.out, cache_dir=args.cache, workers=args.workers, setting=args.setting)
    for r in rows:
        print(f"claim {r['claim']:2d}: {r['verdict']:14s} {r['text']}")
    print(f"wrote {args.out / 'claims.md'}", file=sys.stderr)
    return 0


def add_side_by_side(sub: Any) -> None:
    p = sub.add_parser(
        "side-by-side",
        help="the studies' headline figures beside ours from runs of their presets",
        description="Set each number a study reports (aerestore.studies.side_by_side.FIGURES) beside "
        "the same quantity in our run of its setting (a DVC experiment of a study preset), with the "
        "difference and a verdict within a stated tolerance; settings without a run are listed as not "
        "run here, with what they need. Writes OUT/side_by_side.md and .json. See docs/studies.md, "
        "\"Studies side by side\".",
    )
    p.add_argument("--run", action="append", default=[], metavar="SETTING=REV",
                   help="our run of a setting: a DVC experiment name or git revision (repeatable), e.g. "
                   "celeba-256-noise=celeba-256-noise")
    p.add_argument("--out", type=Path, default=Path("reports"), help="output folder (default reports/)")
    p.set_defaults(func=cmd_side_by_side)


def cmd_side_by_side(args: argparse.Namespace) -> int:
    from aerestore.studies import side_by_side as SB

    runs: dict[str, str] = {}
    for item in args.run:
        setting, sep, rev = item.partition("=")
        if not sep or not setting or not rev:
            raise CliError(f"--run {item!r}: expected SETTING=REV (settings: {', '.join(sorted(SB.SETTINGS))})")
        if setting in runs:
            raise CliError(f"--run {setting}: given twice")
        runs[setting] = rev
    try:
        rows = SB.side_by_side(runs)
    except (ValueError, KeyError, FileNotFoundError) as e:
        raise CliError(str(e).strip("'\"")) from None
    md, _ = SB.write(rows, args.out)
    for r in rows:
        print(f"{r['verdict']:15s} {r['study']}: {r['what']}")
    print(f"wrote {md}", file=sys.stderr)
    return 0


def add_preset(sub: Any) -> None:
    p = sub.add_parser(
        "preset",
        help="a study's setting as one `dvc exp run` (presets/NAME.yaml)",
        description="Without NAME: list the presets. With NAME: print the `dvc exp run -S ...` "
        "that runs presets/NAME.yaml's overrides of params.yaml as a DVC experiment (validated "
        "first); --run runs it, --sample scales it down to the offline sample data.",
    )
    p.add_argument("name", nargs="?", default=None, help="preset name (a file of presets/)")
    p.add_argument("--sample", action="store_true", help="add the preset's scaled-down overrides (sample data)")
    p.add_argument("--queue", action="store_true", help="queue the experiment (dvc queue start runs it)")
    p.add_argument("--run", action="store_true", help="run the command instead of printing it")
    p.add_argument("-S", "--set", action="append", default=[], metavar="KEY=VALUE",
                   help="one more `dvc exp run -S` override, after the preset's (e.g. 'seed=1,2,3' "
                        "to queue one experiment per seed, or train.loss.sharpness_weight=0 for a control)")
    p.add_argument("-n", "--name", dest="exp_name", default=None,
                   help="the experiment's name (default: the preset's; a second run of a preset, e.g. its "
                        "control, needs its own)")
    p.add_argument("--params", default="params.yaml", help="the base params (default params.yaml)")
    p.add_argument("--dir", type=Path, default=Path("presets"), help="presets folder (default presets/)")
    p.set_defaults(func=cmd_preset)


def cmd_preset(args: argparse.Namespace) -> int:
    import subprocess

    from aerestore.studies import presets as SP
    from aerestore.params import load_base

    if args.name is None:
        for preset in SP.list_presets(args.dir):
            print(f"{preset.name:28s} {preset.description}  [data: {preset.data}]")
        return 0
    preset = SP.find_preset(args.name, args.dir)
    cmd = SP.dvc_command(preset, load_base(args.params), sample=args.sample, queue=args.queue, extra=args.set,
                         name=args.exp_name)
    if not args.run:
        print(SP.shell_line(cmd))
        return 0
    print(SP.shell_line(cmd), file=sys.stderr)
    return subprocess.run(cmd).returncode


def add_cbsd68(sub: Any) -> None:
    p = sub.add_parser(
        "cbsd68",
        help="score restorers and CBM3D on CBSD68 at sigma 15 / 25 / 50 (the standard benchmark)",
        description="Add white Gaussian noise (fixed seed, not clipped unless --clip) to the CBSD68 "
        "images in PATH (not shipped: non-commercial licence), restore them with each --model and "
        "each --classical anchor (CBM3D is told the true sigma), and write PSNR (RGB, all pixels, "
        "8-bit outputs) beside the published figures as OUT.md and OUT.json. See docs/cbsd68.md.",
    )
    p.add_argument("path", help="the folder of the CBSD68 images (e.g. 0000.png ... 0067.png)")
    p.add_argument("--model", action="append", default=[], metavar="DIR|URI",
                   help="a trained restorer (models/<arch>, an MLflow model folder or URI); repeatable")
    p.add_argument("--label", action="append", default=[], metavar="TEXT",
                   help="the row name of the --model of the same position (default: '<arch> (<path>)'); "
                        "repeatable, at most one per --model")
    p.add_argument("--sigmas", type=int, nargs="+", default=[15, 25, 50], help="noise std on 0..255 (default 15 25 50)")
    p.add_argument("--classical", nargs="*", default=["bm3d"], metavar="NAME",
                   help="classical anchors (default: bm3d = CBM3D at the true sigma; bm3d_x8: the same as a "
                        "self-ensemble of its 8 orientations, 8x the time; none: --classical)")
    p.add_argument("--seed", type=int, default=0, help="noise seed (default 0)")
    p.add_argument("--clip", action="store_true",
                   help="clip the noisy input to [0, 1] and round it to 8 bits (default: float, unclipped, "
                        "as the published figures)")
    p.add_argument("--max-images", type=int, default=0, metavar="N", help="N evenly spaced images (0 = all)")
    p.add_argument("--anchor-images", type=int, default=0, metavar="N",
                   help="slow anchors (bm3d, ~25 s per image and sigma) on N evenly spaced of those (0 = all); "
                        "every row is also averaged on that subset")
    p.add_argument("--self-ensemble", action="store_true",
                   help="also score each --model as the mean of its 8 orientations (flips and quarter "
                        "turns, 8x the restore time), a row of its own beside the single pass")
    p.add_argument("--threads", type=int, default=1, help="PyTorch threads (default 1)")
    p.add_argument("--merge", type=Path, action="append", default=[], metavar="JSON",
                   help="add the rows of an earlier run's OUT.json (same folder, sigmas, seed, clipping): "
                        "e.g. CBM3D scored once, a new network scored later; repeatable")
    p.add_argument("--other-images", action="store_true",
                   help="PATH is not CBSD68 (e.g. held-out validation photographs to choose a network on): "
                        "the same noise protocol, no published figures, not CBSD68's licence line")
    p.add_argument("-o", "--out", type=Path, default=Path("cbsd68"),
                   help="output path without suffix, or a folder (default ./cbsd68: cbsd68.md, cbsd68.json)")
    p.set_defaults(func=cmd_cbsd68)


def cmd_cbsd68(args: argparse.Namespace) -> int:
    import torch

    from aerestore import benchmark_sets as B

    if any(s <= 0 for s in args.sigmas):
        raise CliError(f"--sigmas {args.sigmas}: each must be > 0")
    if args.max_images < 0 or args.anchor_images < 0:
        raise CliError("--max-images and --anchor-images must be >= 0")
    if len(args.label) > len(args.model):
        raise CliError(f"{len(args.label)} --label for {len(args.model)} --model: at most one label per model")
    if args.self_ensemble and not args.model:
        raise CliError("--self-ensemble scores a --model's 8 orientations: give at least one --model")
    n_images = len(B.list_images(args.path))  # a missing or empty folder fails before any model loads
    header = B.record_header(args.path, n_images, args.sigmas, args.seed, args.clip, args.other_images)
    earlier = []
    for path in args.merge:
        try:
            earlier.append(json.loads(path.read_text()))
            B.check_mergeable(header, earlier[-1])  # before the scoring, which may take an hour
        except KeyError as exc:
            raise CliError(f"--merge {path}: not a record of aerestore cbsd68 (no {exc})") from None
        except (OSError, ValueError) as exc:
            raise CliError(f"--merge {path}: {exc}") from None
    torch.set_num_threads(max(1, args.threads))
    labels = args.label + [None] * (len(args.model) - len(args.label))
    methods = [B.noisy_method()]
    for m, name in zip(args.model, labels):
        methods.append(B.restorer_method(m, name))
        if args.self_ensemble:
            methods.append(B.restorer_method(m, name, self_ensemble=True))
    methods += [B.classical_method(c) for c in args.classical]
    result = B.run_benchmark(args.path, methods, sigmas=args.sigmas, seed=args.seed, clip=args.clip,
                             max_images=args.max_images, anchor_images=args.anchor_images,
                             other_images=args.other_images)
    for prev in earlier:
        result = B.merge(result, prev)
    md, js = B.write_outputs(result, args.out)
    print(md.read_text())
    print(f"wrote {md} and {js}", file=sys.stderr)
    return 0

