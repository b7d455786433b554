"""docs/peers.md's seed table and its summary come from the committed raw benchmark files
(docs/peers/bench_full*.json, written by benchmarks/bench_peers.py): a hand-edited or stale
figure fails here."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import yaml

from aerestore.stats import t_interval
from helpers import load_script

DOCS = Path(__file__).resolve().parents[1] / "docs"
SEEDS = {42: "bench_full.json", 1: "bench_full_seed1.json", 2: "bench_full_seed2.json", 3: "bench_full_seed3.json",
         4: "bench_full_seed4.json"}


def _rows(name: str) -> dict[str, dict]:
    data = json.loads((DOCS / "peers" / name).read_text())
    return {r["arch"]: r for r in data["rows"] if "arch" in r}


def _signed(x: float) -> str:
    return f"{x:+.2f}".replace("-", "\u2212")


def _assert_seed_rows(seeds: dict[int, str], columns: tuple[tuple[str, str], ...]) -> None:
    """Each seed's row of a seed table: unet_ae's CPU s, NAFNet's steps and CPU s, then
    "unet_ae / NAFNet" for each (split, metric) of ``columns``, from the raw file."""
    page = (DOCS / "peers.md").read_text()
    for seed, name in seeds.items():
        r = _rows(name)
        u, n = r["unet_ae"], r["nafnet"]
        cells = [str(seed), f"{u['train_cpu_seconds']:.0f}", f"{n['steps']}, {n['train_cpu_seconds']:.0f}"]
        cells += [f"{u[split][key]:.2f} / {n[split][key]:.2f}" for split, key in columns]
        assert "| " + " | ".join(cells) + " |" in page, cells


def test_the_seed_table_is_the_raw_files():
    _assert_seed_rows(SEEDS, (("test", "psnr"), ("test", "psnr_blur"), ("faces", "psnr"), ("faces", "psnr_blur")))


def _interval(seeds: dict[int, str], split: str, key: str, unit: str = "") -> str:
    """unet_ae − NAFNet over the seeds' raw files as the page writes it: "mean[unit] [lo, hi]",
    the mean and 95 % t interval with the seeds as units."""
    diffs = [_rows(name)["unet_ae"][split][key] - _rows(name)["nafnet"][split][key] for name in seeds.values()]
    lo, hi = t_interval([np.array([d]) for d in diffs])
    return f"{_signed(float(np.mean(diffs)))}{unit} [{_signed(lo)}, {_signed(hi)}]"


def test_the_seed_summary_is_the_t_interval_of_the_raw_files():
    page = (DOCS / "peers.md").read_text()
    for split, key, shown in (("test", "psnr", "test PSNR **{}**"), ("faces", "psnr", "faces PSNR **{}**")):
        figure = _interval(SEEDS, split, key, " dB" if split == "test" else "")
        assert shown.format(figure) in page, figure


def _bench_peer_start():
    return load_script(DOCS.parent / "benchmarks" / "bench_peer_start.py")


def test_the_dncnn_start_table_is_the_raw_file():
    # docs/peers.md's "Why DnCNN stays at the input": the table that bench_peer_start.py
    # writes from docs/peers/start.json, line for line
    page = (DOCS / "peers.md").read_text()
    report = json.loads((DOCS / "peers" / "start.json").read_text())
    for line in _bench_peer_start().table(report).splitlines():
        assert line in page, line


def test_bench_peer_start_runs_its_variants(tmp_path, monkeypatch):
    # two steps of two variants: the curve is recorded at the checkpoints, and "no batch
    # norm" takes DnCNN's batch norms out (fewer parameters), nothing else
    import sys

    bench = _bench_peer_start()
    out = tmp_path / "start"
    monkeypatch.setattr(sys, "argv", ["bench_peer_start.py", "--steps", "2", "--every", "1", "--threads", "1",
                                      "--params", str(DOCS.parent / "params.yaml"), "--out", str(out),
                                      "--variants", "dncnn", "dncnn no batch norm"])
    import torch

    threads = torch.get_num_threads()
    try:
        bench.main()
    finally:
        torch.set_num_threads(threads)  # main() sets --threads for the process: not for the next tests
    report = json.loads(out.with_suffix(".json").read_text())
    plain, no_bn = report["rows"]
    assert [s for s, _ in plain["curve"]] == [1, 2] and all(np.isfinite(p) for _, p in plain["curve"])
    assert no_bn["params"] < plain["params"] and plain["params"] == 35_920  # the small configuration
    assert out.with_suffix(".md").read_text() == bench.table(report)


FACES_SEEDS = {42: "bench_faces_cpu.json", 1: "bench_faces_cpu_seed1.json", 2: "bench_faces_cpu_seed2.json",
               3: "bench_faces_cpu_seed3.json", 4: "bench_faces_cpu_seed4.json"}
REGIONS = ("psnr", "psnr_blur", "psnr_noise", "psnr_clean")


def test_the_faces_seed_table_is_the_raw_files():
    # "On real faces at equal CPU seconds"
    _assert_seed_rows(FACES_SEEDS, tuple(("test", key) for key in REGIONS))


def test_the_faces_seed_summary_is_the_t_interval_of_the_raw_files():
    text = " ".join((DOCS / "peers.md").read_text().split())  # the page's line breaks as spaces
    for key, label in zip(REGIONS, ("faces PSNR", "inside the blur", "noise", "clean")):
        figure = _interval(FACES_SEEDS, "test", key, " dB" if key == "psnr" else "")
        assert f"{label} **{figure}**" in text, figure
    ahead = sum(_rows(n)["unet_ae"]["test"]["psnr"] > _rows(n)["nafnet"]["test"]["psnr"] for n in FACES_SEEDS.values())
    assert f"(unet_ae ahead in {ahead} of {len(FACES_SEEDS)} seeds)" in text


def _grid(r: dict) -> tuple[str, dict]:
    """A row's validation cell ("a / **b** / c": the grid's validation PSNRs, the lowest
    validation MSE in bold) and that chosen run."""
    best = min(r["lr_grid"], key=lambda t: t["val_mse"])
    return " / ".join(f"**{t['val_psnr']:.2f}**" if t is best else f"{t['val_psnr']:.2f}" for t in r["lr_grid"]), best


def test_the_learning_rate_table_is_the_raw_file():
    # "Learning rates chosen on validation": each network's grid, its choice (the lowest
    # validation MSE, in bold) and the chosen run's scores
    lines = (DOCS / "peers.md").read_text().splitlines()
    for arch, label in (("unet_ae", "unet_ae"), ("nafnet", "NAFNet")):
        r = _rows("bench_lr.json")[arch]
        vals, best = _grid(r)
        assert r["lr"] == best["lr"]
        cells = [label, vals.replace("**", ""), f"{r['lr']:g}",
                 f"{r['steps']}, {r['train_cpu_seconds']:.0f}"]
        cells += [f"{r['test'][k]:.2f}" for k in REGIONS] + [f"{r['test']['ssim']:.4f}", f"{r['faces']['psnr']:.2f}"]
        row = [line for line in lines if line.startswith(f"| {label} | ") and " / " in line.split(" | ")[1]]
        assert len(row) == 1 and row[0].replace("**", "") == "| " + " | ".join(cells) + " |", row
        assert row[0].split(" | ")[1] == vals


# "unet_ae's default rate, chosen over five seeds": unet_ae alone (--peers with no names) at
# 0.001 and 0.002, and the 0.002 run of the same seed from the equal-CPU tables
LR_SEEDS = {
    "tiles": ({1: "bench_lr_seed1.json", 2: "bench_lr_seed2.json", 3: "bench_lr_seed3.json",
               4: "bench_lr_seed4.json", 42: "bench_lr.json"}, SEEDS),
    "faces": ({s: f"bench_faces_lr_seed{s}.json" for s in (1, 2, 3, 4, 42)}, FACES_SEEDS),
}


def _pair(r: dict) -> tuple[str, dict, dict]:
    """The validation cell "a / b" at 0.001 / 0.002 (the lower MSE in bold), the chosen run and
    both runs by rate."""
    runs = {t["lr"]: t for t in r["lr_grid"] if t["lr"] in (0.001, 0.002)}
    cell, best = _grid({"lr_grid": [runs[0.001], runs[0.002]]})
    return cell, best, runs


def test_the_default_learning_rate_tables_are_the_raw_files():
    lines = (DOCS / "peers.md").read_text().splitlines()
    for chosen, earlier in LR_SEEDS.values():
        for seed, name in chosen.items():
            r = _rows(name)["unet_ae"]
            cell, best, _ = _pair(r)
            assert r["lr"] == best["lr"] or len(r["lr_grid"]) > 2  # the 3-rate grid may choose outside the pair
            cells = [str(seed), cell, f"{best['lr']:g}"] + [f"{r['test'][k]:.2f}" for k in REGIONS]
            cells.append(f"{_rows(earlier[seed])['unet_ae']['test']['psnr']:.2f}")
            assert "| " + " | ".join(cells) + " |" in lines, cells


def test_the_default_learning_rate_summary_is_the_raw_files():
    # the default moved to 0.001 because validation preferred it in every seed of the default
    # task: the page's interval, its count and params.yaml must follow the raw files
    text = " ".join((DOCS / "peers.md").read_text().split())
    chosen, earlier = LR_SEEDS["tiles"]
    val = [_pair(_rows(n)["unet_ae"])[2] for n in chosen.values()]
    d = [v[0.001]["val_psnr"] - v[0.002]["val_psnr"] for v in val]
    lo, hi = t_interval([np.array([x]) for x in d])
    assert f"by {_signed(float(np.mean(d)))} dB [{_signed(lo)}, {_signed(hi)}]" in text
    ahead = sum(x > 0 for x in d)
    assert ahead == 5 and "validation prefers 0.001 in all five seeds" in text
    faces = [_pair(_rows(n)["unet_ae"])[2] for n in LR_SEEDS["faces"][0].values()]
    f = [v[0.001]["val_psnr"] - v[0.002]["val_psnr"] for v in faces]
    lo, hi = t_interval([np.array([x]) for x in f])
    assert f"0.001 in {sum(x > 0 for x in f)} seeds of 5, {_signed(float(np.mean(f)))} dB [{_signed(lo)}, {_signed(hi)}]" in text
    params = yaml.safe_load((DOCS.parent / "params.yaml").read_text())
    assert params["arch"]["unet_ae"]["train"]["lr"] == 0.001
    assert all(params["arch"][p]["train"]["lr"] == 0.002 for p in ("dncnn", "drunet", "nafnet"))
