"""Speed of one ``train@unet_ae`` step, and of cheaper ways to take the same step (issue 25).

The default ``unet_ae`` (``params.yaml``: ``arch.unet_ae`` model and train keys) and its
batches as :func:`aerestore.tracks.images.train.fit_crops` draws them (:func:`aerestore.tracks.images.dataset.sample_crops`
on ``data/prepared/train`` with fresh damage, ``train.batch_size`` crops of ``train.crops.size``
px; seeded by ``seed``). A step is ``model.train_step`` (forward, loss, backward, fused
Adam), ``torch.set_num_threads(runtime.threads)``. Variants of the same step:

* ``a`` today's (fp32, contiguous NCHW); ``cl`` channels_last (model and inputs);
  ``bf16`` bfloat16 autocast (``runtime.amp: bf16``); ``bf16_cl`` both;
  ``compile`` / ``compile_cl`` / ``compile_bf16`` / ``compile_max``: ``model.loss`` wrapped
  by ``torch.compile`` (CPU inductor; ``compile_max``: mode ``max-autotune-no-cudagraphs``);
  its first steps are the compile time;
* fewer FLOPs per pixel, the same design (``w12``, ``w8``: ``width``; ``us2``: the
  model's pixel-unshuffle stem ``unshuffle: 2``, FFDNet's; ``us2_w32`` with width 32;
  ``sep``: each level's two 3x3 convs depthwise-separable, 3x3 depthwise + 1x1, as
  MobileNet; a probe built here, not an option of the model).

Timing: every variant is built and warmed up, then timed in interleaved rounds (a, b, c,
..., a, b, c, ...) of ``--steps`` steps each on a pool of pre-drawn batches (compute only);
medians of wall and process CPU time per step (``time.process_time``: less disturbed by
other processes on a shared machine). Then: the data (``sample_crops`` with and without
fresh damage) timed alone, interleaved with ``a``, and today's loop (draw + step) against a
loop whose draws come from one ``DataLoader`` worker (same rng stream in the same order:
the same batches); numerics (each variant from the same weights on the same batches for
``--numerics`` steps: max |loss - loss_a|); FLOPs (``FlopCounterMode``) and parameters;
peak anonymous memory of each variant in a subprocess (``--memory``); a
``torch.profiler`` table of ``a``; and with ``--quality N`` short trainings by
:func:`aerestore.tracks.images.train.fit_crops` (N steps, one evaluation at the end) of ``a`` (two
seeds: the noise) and ``--quality-variants``, scored as PSNR on whole validation images.

On a shared machine prefer ``--threads 1``: with 2 threads every parallel region waits for
the other thread's time slice, which inflated even element-wise ops 3-4x and turned bf16's
1.8x gain at 1 thread into a 3.5x loss at 2 (measured at load 11-15 on 2 cores); the
pipeline's figure is 2 threads on a quiet machine, so confirm a choice there.

The variants, their set-up, timing, numerics and FLOPs are in ``step_variants.py``.

    python benchmarks/bench_train_step.py [--quick] [--variants a,cl,bf16] [--memory]
        [--quality 500 --quality-variants bf16] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import torch

from aerestore.tracks.images.dataset import ImageData, sample_crops
from step_variants import (ARCH, DEFAULT_VARIANTS, ROOT, VARIANTS, Runner, build, compile_loss, cycler, draw_batches,
                           flops_and_params, interleaved, numerics, setup)


def profile_a(runner: Runner, train, cfg, seed: int, steps: int, top: int) -> tuple[str, dict]:
    """torch.profiler over ``steps`` draws + steps of ``runner``: the top ops (self CPU) and
    the time by group."""
    from torch.profiler import ProfilerActivity, profile, record_function

    rng = np.random.default_rng(seed + 1)
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(steps):
            with record_function("## data: sample_crops (fresh damage)"):
                batch = tuple(t for t in sample_crops(train, cfg.batch_size, cfg.crops.size, rng) if t is not None)
            with record_function("## train_step"):
                runner.step(batch)
    events = prof.key_averages()
    table = events.table(sort_by="self_cpu_time_total", row_limit=top, max_name_column_width=48)
    groups = {"conv forward": ("mkldnn_convolution", "convolution_", "_convolution", "conv2d", "conv_transpose"),
              "conv backward": ("convolution_backward",), "relu (fwd + bwd)": ("relu", "threshold_backward"),
              "optimizer (fused Adam)": ("_fused_adam",), "zero_grad / copies": ("copy_", "fill_", "zero_")}
    total = sum(e.self_cpu_time_total for e in events if not e.key.startswith("##"))
    by_group = {g: 0.0 for g in groups}
    for e in events:
        if e.key.startswith("##"):
            continue
        for g, keys in groups.items():
            if any(k in e.key for k in keys) and not (g == "conv forward" and "backward" in e.key):
                by_group[g] += e.self_cpu_time_total
                break
    marks = {e.key: e.cpu_time_total for e in events if e.key.startswith("##")}
    summary = {g: v / total for g, v in by_group.items()}
    summary["other ops"] = 1 - sum(summary.values())
    summary["data share of draw + step (wall)"] = marks.get("## data: sample_crops (fresh damage)", 0) / max(
        sum(marks.values()), 1)
    return table, summary


def prefetch_loop(train, cfg, runner: Runner, seed: int, steps: int) -> dict:
    """Today's loop (draw, then step) against the draws made ahead, overlapped with the steps,
    by one background thread (``concurrent.futures``) and by one ``DataLoader`` worker
    process: the same rng stream drawn in the same order, so the same batches. Wall seconds
    per step of each, and whether the batches were the same."""
    from concurrent.futures import ThreadPoolExecutor

    class Stream(torch.utils.data.IterableDataset):
        def __iter__(self):
            torch.set_num_threads(1)
            rng = np.random.default_rng(seed)
            for _ in range(steps):
                yield draw(rng)

    def draw(rng):
        return tuple(t for t in sample_crops(train, cfg.batch_size, cfg.crops.size, rng) if t is not None)

    def inline():
        rng = np.random.default_rng(seed)
        for _ in range(steps):
            yield draw(rng)

    def threaded():
        rng = np.random.default_rng(seed)
        with ThreadPoolExecutor(1) as pool:
            nxt = pool.submit(draw, rng)
            for i in range(steps):
                batch = nxt.result()
                if i + 1 < steps:
                    nxt = pool.submit(draw, rng)  # drawn while this batch trains
                yield batch

    out, firsts = {}, {}
    loops = {"inline": inline, "thread": threaded,
             "worker": lambda: iter(torch.utils.data.DataLoader(Stream(), batch_size=None, num_workers=1,
                                                                prefetch_factor=4))}
    for name, loop in loops.items():
        t0 = time.perf_counter()
        for i, batch in enumerate(loop()):
            if i == 0:
                firsts[name] = batch
            runner.step(batch)
        out[name] = (time.perf_counter() - t0) / steps
    out["same_batches"] = all(torch.equal(x, y) for k in ("thread", "worker")
                              for x, y in zip(firsts[k], firsts["inline"]))
    return out


def decoder_parts(params, cfg, train, seed: int, n: int, rounds: int) -> dict:
    """``decoders@unet_ae``'s fine-tuning step (:func:`aerestore.tracks.images.decoders.fine_tune`) in
    its parts, interleaved: the draw (fresh damage), the frozen encoder with the routing maps
    (``damage_head``), the decoder's update; seconds per call."""
    import copy

    from aerestore.tracks.images.decoders import weighted_recon
    from aerestore.tracks.images.restore import route_maps, upsample_maps

    dp = params.decoders
    model = build(params, cfg, train.channels, {}, seed)
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    decoder = copy.deepcopy(model.decoder)
    for p in decoder.parameters():
        p.requires_grad_(True)
    opt = torch.optim.Adam(decoder.parameters(), lr=dp.lr)
    rng = np.random.default_rng(seed)
    deg, y, _ = sample_crops(train, dp.crop_batch, cfg.crops.size, rng)

    def encode():
        with torch.no_grad():
            f = model.features(deg)
            maps = upsample_maps(route_maps(model, f.code, "damage_head", None, 0.0, 1.0), model.multiple, f.size)
        return f, maps[:, :1]

    f, w = encode()

    def update():
        decoder.train()
        loss = weighted_recon(decoder(f), y, w, cfg.loss.recon)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    update()
    return interleaved({"draw": lambda: sample_crops(train, dp.crop_batch, cfg.crops.size, rng), "encode": encode,
                        "update": update}, n, rounds)


def memory_child(name: str, args) -> None:
    """(--memory-of NAME) peak anonymous RSS of ``--steps`` steps of one variant, over the
    RSS after the set-up, sampled every 2 ms: JSON on stdout."""
    params, cfg, train, _ = setup(args)
    batches = draw_batches(train, cfg, 4, params.seed)

    def rss_anon() -> int:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("RssAnon:"):
                return int(line.split()[1]) * 1024
        return 0

    base, peak, stop = rss_anon(), [0], threading.Event()

    def sample():
        while not stop.is_set():
            peak[0] = max(peak[0], rss_anon())
            time.sleep(0.002)

    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    r = Runner(name, params, cfg, train.channels, params.seed)
    base = rss_anon()  # the weights and the compiled code are not the step's
    for i in range(args.steps):
        r.step(batches[i % len(batches)])
    stop.set()
    thread.join()
    print(json.dumps({"peak_mib": (peak[0] - base) / 2**20}))


def quality(names, params, cfg, train, val, steps: int) -> list[dict]:
    """``fit_crops`` for ``steps`` steps (one evaluation, at the end), from the same initial
    weights (``seed``): validation MSE and PSNR on whole images."""
    from aerestore.tracks.images.train import fit_crops
    from aerestore.tracks.images.dataset import image_batches

    rows = []
    for name, seed in [("a", params.seed), ("a", params.seed + 1)] + [(n, params.seed) for n in names]:
        cl, amp, mode, overrides = VARIANTS[name]
        run_cfg = cfg.model_copy(update={"crops": cfg.crops.model_copy(update={"steps": steps, "eval_every": steps})})
        runtime = params.runtime.model_copy(update={"amp": amp})
        torch.manual_seed(seed)
        np.random.seed(seed % 2**32)
        model = build(params, cfg, train.channels, overrides, seed)
        if cl:
            model.to(memory_format=torch.channels_last)
        if mode:
            compile_loss(model, mode)
        # fit_crops trains channels-last on the CPU (aerestore.models.device.channels_last):
        # a variant without `cl` must train NCHW, as its name says
        t0 = time.perf_counter()
        fit_crops(model, train, val, run_cfg, seed, progress=False, runtime=runtime,
                  memory_format="channels_last" if cl else "contiguous")
        seconds = time.perf_counter() - t0
        model.eval()
        per_image, se, n = [], 0.0, 0
        with torch.no_grad():
            for deg, cln, _ in image_batches(val, 16):
                err = (model(deg.contiguous()).float() - cln).pow(2)
                per_image += (10 * torch.log10(1 / err.mean((1, 2, 3)))).tolist()
                se, n = se + float(err.sum()), n + err.numel()
        rows.append({"variant": name, "seed": seed, "val_mse": se / n, "val_psnr_of_mse": 10 * np.log10(n / se),
                     "val_psnr_mean": float(np.mean(per_image)), "seconds": seconds})
        print(f"  quality {name} seed {seed}: PSNR {rows[-1]['val_psnr_mean']:.3f} dB "
              f"(of the mean MSE {rows[-1]['val_psnr_of_mse']:.3f}), {seconds:.0f} s", flush=True)
    return rows


# ------------------------------------------------------------------ main
def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--params", default=str(ROOT / "params.yaml"))
    ap.add_argument("--prepared", default=str(ROOT / "data" / "prepared"),
                    help="data/prepared to read (read only); synthetic images when missing")
    ap.add_argument("--variants", default=DEFAULT_VARIANTS, help=f"comma-separated, of {','.join(VARIANTS)}")
    ap.add_argument("--threads", type=int, default=0, help="0 = runtime.threads")
    ap.add_argument("--steps", type=int, default=20, help="steps per timed round")
    ap.add_argument("--rounds", type=int, default=7, help="interleaved rounds")
    ap.add_argument("--warmup", type=int, default=10, help="steps before timing (after the compile)")
    ap.add_argument("--numerics", type=int, default=50, help="steps of the numerics comparison")
    ap.add_argument("--profile-steps", type=int, default=30)
    ap.add_argument("--memory", action="store_true", help="peak memory of each variant (subprocesses)")
    ap.add_argument("--memory-of", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--quality", type=int, default=0, help="steps of the short trainings (0 = none)")
    ap.add_argument("--quality-variants", default="bf16")
    ap.add_argument("--quality-only", action="store_true", help="only the short trainings")
    ap.add_argument("--quick", action="store_true", help="3 rounds of 8 steps, 10 numerics steps")
    ap.add_argument("--json", default=None, help="write every figure here")
    args = ap.parse_args()
    if args.quick:
        args.steps, args.rounds, args.warmup, args.numerics, args.profile_steps = 8, 3, 3, 10, 8
    if args.memory_of:
        return memory_child(args.memory_of, args)
    names = [n.strip() for n in args.variants.split(",") if n.strip()]
    if names[0] != "a":
        names = ["a"] + [n for n in names if n != "a"]
    params, cfg, train, val = setup(args)
    if args.quality_only:
        rows = quality([n for n in args.quality_variants.split(",") if n], params, cfg, train, val, args.quality)
        if args.json:
            Path(args.json).write_text(json.dumps(rows, indent=1))
        return
    out: dict = {"torch": torch.__version__, "cpu": platform.processor() or platform.machine(),
                 "capability": torch.backends.cpu.get_cpu_capability(), "threads": torch.get_num_threads(),
                 "data": args.source, "batch": cfg.batch_size, "crop": cfg.crops.size, "steps_default": cfg.crops.steps,
                 "load_start": os.getloadavg()}
    print(f"torch {out['torch']} ({out['capability']}), {out['threads']} threads, data {out['data']}, "
          f"batch {cfg.batch_size} x {cfg.crops.size} px; load average {out['load_start'][0]:.2f}", flush=True)

    batches = draw_batches(train, cfg, 16, params.seed)
    runners = {}
    for name in names:
        r = Runner(name, params, cfg, train.channels, params.seed)
        t0 = time.perf_counter()
        r.step(batches[0])
        r.compile_s = time.perf_counter() - t0
        for i in range(args.warmup):
            r.step(batches[i % len(batches)])
        runners[name] = r
        print(f"  built {name} (first step {r.compile_s:.1f} s)", flush=True)

    timing = interleaved({n: cycler(r, batches) for n, r in runners.items()}, args.steps, args.rounds)
    rng = np.random.default_rng(params.seed)
    plain = ImageData(train.degraded, train.clean, train.classes)
    timing.update(interleaved({
        "data_fresh": lambda: sample_crops(train, cfg.batch_size, cfg.crops.size, rng),
        "data_prepared_copy": lambda: sample_crops(plain, cfg.batch_size, cfg.crops.size, rng),
        "a_again": cycler(runners["a"], batches)}, args.steps, args.rounds))
    out["timing"] = timing
    out["load_after_timing"] = os.getloadavg()
    if args.numerics > 0:  # --numerics 0: no numerics comparison
        out["numerics"] = numerics(runners, params, cfg, train.channels, params.seed, batches, args.numerics)
    out["flops"] = flops_and_params(names, params, cfg, train.channels, params.seed, batches[0])
    out["prefetch"] = prefetch_loop(train, cfg, runners["a"], params.seed, args.steps * args.rounds)
    out["decoder_step"] = decoder_parts(params, cfg, train, params.seed, args.steps, args.rounds)
    table, groups = profile_a(runners["a"], train, cfg, params.seed, args.profile_steps, 25)
    out["profile_groups"] = groups
    if args.memory:
        mem = {}
        for name in names:
            res = subprocess.run([sys.executable, __file__, "--memory-of", name, "--params", args.params,
                                  "--prepared", args.prepared, "--steps", "10"], capture_output=True, text=True)
            mem[name] = json.loads(res.stdout.strip().splitlines()[-1])["peak_mib"] if res.returncode == 0 else None
        out["memory_mib"] = mem
    if args.quality:
        out["quality"] = quality([n for n in args.quality_variants.split(",") if n], params, cfg, train, val,
                                 args.quality)
    out["load_end"] = os.getloadavg()

    a = timing["a"]
    print(f"\nunet_ae train step, batch {cfg.batch_size} x {cfg.crops.size} px, {out['threads']} threads; medians of "
          f"{args.rounds} interleaved rounds of {args.steps} steps; load average {out['load_start'][0]:.2f} -> "
          f"{out['load_end'][0]:.2f}\n")
    print("| variant | steps/s | x a (wall) | x a (CPU) | first step s | min at "
          f"{cfg.crops.steps} steps | max abs loss diff vs a ({args.numerics} steps) | MFLOP/step | params | peak MiB |")
    print("|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|")
    for name in names:
        t, num = timing[name], out.get("numerics", {}).get(name, {})
        fl = out["flops"].get(name) or out["flops"]["a"]
        mem = out.get("memory_mib", {}).get(name)
        minutes = (cfg.crops.steps * t["wall"] + runners[name].compile_s) / 60
        print(f"| {name} | {1 / t['wall']:.2f} | {a['wall'] / t['wall']:.2f} | {a['cpu'] / t['cpu']:.2f} "
              f"| {runners[name].compile_s:.1f} | {minutes:.1f} | "
              f"{num.get('max_abs_diff', float('nan')):.2e} | {fl['mflop_per_step']:,.0f} | {fl['params']:,} | "
              f"{'' if mem is None else f'{mem:.0f}'} |")
    d = timing["data_fresh"]["wall"]
    print(f"\nData per batch: fresh damage {1e3 * d:.1f} ms, prepared copy "
          f"{1e3 * timing['data_prepared_copy']['wall']:.1f} ms; step a {1e3 * timing['a_again']['wall']:.1f} ms "
          f"(data = {100 * d / (d + timing['a_again']['wall']):.0f} % of draw + step)")
    pf = out["prefetch"]
    print(f"Loop of {args.steps * args.rounds} steps (draw + step a): inline {1e3 * pf['inline']:.1f} ms/step, "
          f"drawn ahead by a thread {1e3 * pf['thread']:.1f} (x{pf['inline'] / pf['thread']:.2f}), by a DataLoader "
          f"worker {1e3 * pf['worker']:.1f} (x{pf['inline'] / pf['worker']:.2f}); same batches: {pf['same_batches']}")
    ds = out["decoder_step"]
    dp = params.decoders
    parts = {k: ds[k]["wall"] for k in ("draw", "encode", "update")}
    k, total = params.cluster.k, sum(parts.values())
    # clusters and ensemble (2 k fine-tunings of dp.steps) and the control (k * dp.steps), one crop stream
    today = (2 * k + k) * dp.steps * total
    shared = k * dp.steps * (parts["draw"] + parts["encode"]) + (2 * k + k) * dp.steps * parts["update"]
    print(f"decoders@{ARCH} step: draw {1e3 * parts['draw']:.1f} ms, encoder + maps {1e3 * parts['encode']:.1f} ms, "
          f"decoder update {1e3 * parts['update']:.1f} ms; its {3 * k * dp.steps} steps {today / 60:.1f} min, "
          f"{shared / 60:.1f} min with each batch drawn and encoded once for every decoder that sees it")
    print("\nProfile of a (share of op self CPU time): "
          + ", ".join(f"{k} {100 * v:.0f} %" for k, v in groups.items()))
    print(table)
    print("Forward MFLOP per step by module (a):",
          ", ".join(f"{k} {v:.0f}" for k, v in out["flops"]["a"]["forward_mflop_by_module"].items()))
    if args.quality:
        print("\n| variant | seed | val PSNR (mean of images) | PSNR of the mean MSE | s |\n|---|--:|--:|--:|--:|")
        for q in out["quality"]:
            print(f"| {q['variant']} | {q['seed']} | {q['val_psnr_mean']:.3f} | {q['val_psnr_of_mse']:.3f} "
                  f"| {q['seconds']:.0f} |")
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=1, default=float))


if __name__ == "__main__":
    main()
