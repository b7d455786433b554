"""`aerestore seeds`: per-cluster vs control over several seeds (aerestore.studies.seeds)."""

from __future__ import annotations

import json
import math
import subprocess
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from aerestore import cli
from aerestore import metrics as M
from aerestore.studies import seed_runs as SR
from aerestore.studies import seeds as SD
from aerestore.studies import seeds_report as SW

from pipeline_utils import run, stand_in_repo

N = 20


def _per_image(wins: int, win: float, loss: float, clean_diff: float, seed: int = 0) -> dict:
    """Per-image rows of one run with known results: multi - single PSNR inside the blur is
    ``+win`` on ``wins`` of the N images and ``-loss`` on the others; the whole-image PSNR the
    same halved; in the clean regions exactly ``clean_diff``. Two images have no blur region
    (None) and one has no clean region."""
    rng = np.random.default_rng(seed)
    base = rng.uniform(20, 30, N)
    d_blur = np.where(np.arange(N) < wins, win, -loss)
    blur_single = rng.uniform(18, 25, N)
    blur_multi = blur_single + d_blur
    blur_single_l = blur_single.tolist() + [None, None]
    blur_multi_l = blur_multi.tolist() + [None, None]
    clean_single = rng.uniform(25, 35, N + 2)
    clean_multi = clean_single + clean_diff
    clean_single_l = clean_single.tolist()
    clean_multi_l = clean_multi.tolist()
    clean_single_l[-1] = clean_multi_l[-1] = None
    psnr_single = np.concatenate([base, [22.0, 23.0]])
    psnr_multi = psnr_single + np.concatenate([d_blur / 2, [0.0, 0.0]])  # two ties
    ssim_single = rng.uniform(0.6, 0.9, N + 2)
    blur_pct_single = np.full(N + 2, 10.0)
    blur_pct_multi = np.full(N + 2, -5.0)  # |-5| < |10|: multi better everywhere
    return {
        "conv_ae.single": {"psnr": psnr_single.tolist(), "ssim": ssim_single.tolist(),
                           "blur_percent": blur_pct_single.tolist(), "laplacian_var": [1.0] * (N + 2),
                           "psnr_blur": blur_single_l, "psnr_clean": clean_single_l},
        "conv_ae.multi": {"psnr": psnr_multi.tolist(), "ssim": (ssim_single - 0.01).tolist(),
                          "blur_percent": blur_pct_multi.tolist(), "laplacian_var": [2.0] * (N + 2),
                          "psnr_blur": blur_multi_l, "psnr_clean": clean_multi_l},
        "conv_ae.base": {"psnr": psnr_single.tolist()},
        "degraded": {"psnr": (psnr_single - 3).tolist()},
    }


def _run(label: str, seed: int, **kw) -> SR.SeedRun:
    return SR.SeedRun(label=label, seed=seed, per_image=SR.parse_per_image({"per_image": _per_image(seed=seed, **kw)}))


def test_base_metric_and_direction():
    assert M.base_metric("psnr_blur") == "psnr"
    assert M.base_metric("blur_percent_clean") == "blur_percent"
    assert M.base_metric("blur_percent") == "blur_percent"
    assert M.direction("ssim_noise") is True
    assert M.direction("blur_percent") is False
    assert M.direction("laplacian_var_blur") is None


def test_compare_run_known_values():
    per = _run("a", 1, wins=16, win=1.0, loss=0.5, clean_diff=-0.01).per_image
    cmp = SD.compare_run(per, "conv_ae")
    # laplacian_var has no direction: not compared; every other metric of both rows is
    assert list(cmp) == ["psnr", "ssim", "blur_percent", "psnr_blur", "psnr_clean"]
    blur = cmp["psnr_blur"]
    assert blur["n"] == N  # the two images without a blur region are left out
    assert blur["share"] == pytest.approx(16 / N)
    assert blur["mean_diff"] == pytest.approx((16 * 1.0 - 4 * 0.5) / N)
    assert blur["median_diff"] == pytest.approx(1.0)
    assert blur["p_value"] < 0.05
    whole = cmp["psnr"]
    assert whole["share"] == pytest.approx((16 + 0.5 * 2) / (N + 2))  # two ties count half
    assert whole["mean_diff"] == pytest.approx((16 * 0.5 - 4 * 0.25) / (N + 2))
    assert cmp["psnr_clean"]["mean_diff"] == pytest.approx(-0.01)
    assert cmp["psnr_clean"]["share"] == 0.0 and cmp["psnr_clean"]["n"] == N + 1
    assert cmp["ssim"]["share"] == 0.0 and cmp["ssim"]["mean_diff"] == pytest.approx(-0.01)
    # |blur %|: 5 - 10, lower is better, so multi wins everywhere
    assert cmp["blur_percent"]["mean_diff"] == pytest.approx(-5.0)
    assert cmp["blur_percent"]["share"] == 1.0
    only = SD.compare_run(per, "conv_ae", metrics=["psnr_blur", "missing"])
    assert list(only) == ["psnr_blur"]


def test_check_targets_each_condition():
    t = SD.Targets()
    good = {"psnr_blur": {"share": 0.8, "p_value": 0.001, "mean_diff": 1.0},
            "psnr_clean": {"share": 0.4, "p_value": 0.3, "mean_diff": -0.04}}
    assert SD.check_targets(good, t) == {"blur_share": True, "blur_p": True, "clean_diff": True, "holds": True}
    for metric, key, value, failed in [("psnr_blur", "share", 0.74, "blur_share"),
                                       ("psnr_blur", "p_value", 0.01, "blur_p"),
                                       ("psnr_clean", "mean_diff", -0.06, "clean_diff")]:
        bad = json.loads(json.dumps(good))
        bad[metric][key] = value
        checks = SD.check_targets(bad, t)
        assert checks[failed] is False and not checks["holds"]
        assert sum(v is False for v in checks.values()) == 2  # that check and holds
    # a missing region metric (no image with a clean region, or old evaluate output): undecided
    checks = SD.check_targets({"psnr_blur": good["psnr_blur"]}, t)
    assert checks["clean_diff"] is None and checks["holds"] is False
    nan = {"psnr_blur": {**good["psnr_blur"], "p_value": math.nan}, "psnr_clean": good["psnr_clean"]}
    assert SD.check_targets(nan, t)["blur_p"] is None
    custom = SD.Targets(clean_metric="psnr", min_clean_diff=-2.0)
    assert SD.check_targets({**good, "psnr": {"mean_diff": -1.0}}, custom)["holds"]


def test_analyse_means_and_spreads_over_seeds():
    runs = [_run("s1", 1, wins=16, win=1.0, loss=0.5, clean_diff=-0.01),
            _run("s2", 2, wins=18, win=1.0, loss=0.5, clean_diff=-0.03),
            _run("s3", 3, wins=14, win=1.0, loss=0.5, clean_diff=0.04)]
    report = SD.analyse(runs)
    agg = report["aggregate"]["conv_ae"]
    shares = [16 / N, 18 / N, 14 / N]
    diffs = [(w * 1.0 - (N - w) * 0.5) / N for w in (16, 18, 14)]
    assert agg["psnr_blur"]["share"]["mean"] == pytest.approx(np.mean(shares))
    assert agg["psnr_blur"]["share"]["std"] == pytest.approx(np.std(shares, ddof=1))
    assert agg["psnr_blur"]["share"]["min"] == pytest.approx(0.7)
    assert agg["psnr_blur"]["mean_diff"]["mean"] == pytest.approx(np.mean(diffs))
    assert agg["psnr_blur"]["mean_diff"]["std"] == pytest.approx(np.std(diffs, ddof=1))
    assert agg["psnr_clean"]["mean_diff"]["mean"] == pytest.approx(0.0)
    assert agg["psnr_clean"]["mean_diff"]["std"] == pytest.approx(np.std([-0.01, -0.03, 0.04], ddof=1))
    assert agg["psnr_blur"]["p_value"]["n"] == 3
    per_seed = report["per_seed"]["conv_ae"]
    assert [per_seed[s]["targets"]["holds"] for s in ("s1", "s2", "s3")] == [True, True, False]  # 70 % < 75 %
    assert report["holds"] == {"conv_ae": False}
    assert report["runs"][0] == {"label": "s1", "seed": 1, "source": ""}
    assert not report["warnings"]
    assert SD.analyse(runs[:2])["holds"] == {"conv_ae": True}

    text = SW.markdown(report)
    assert "| conv_ae | psnr_blur |" in text and "| conv_ae | s3 | 3 |" in text
    assert "do **not** hold in every run (2 of 3)" in text


def test_levels_the_headline_figures_per_seed_and_their_spread(tmp_path):
    """Each row's figure per seed (evaluate_details' "rows", the classical ones included; else
    the per-image mean) and mean ± sd over the seeds, in the JSON and as a markdown table."""
    runs = [_run("s1", 1, wins=16, win=1.0, loss=0.5, clean_diff=-0.01),
            _run("s2", 2, wins=18, win=1.0, loss=0.5, clean_diff=-0.03)]
    lv = SD.analyse(runs)["levels"]  # no "rows": the means of the per-image figures
    means = [np.mean(r.per_image["conv_ae.multi"]["psnr"]) for r in runs]
    assert lv["conv_ae.multi"]["psnr"]["values"] == pytest.approx({"s1": means[0], "s2": means[1]})
    assert lv["conv_ae.multi"]["psnr"]["std"] == pytest.approx(np.std(means, ddof=1))
    clean = [np.nanmean(np.array(r.per_image["conv_ae.multi"]["psnr_clean"], float)) for r in runs]
    assert lv["conv_ae.multi"]["psnr_clean"]["mean"] == pytest.approx(np.mean(clean))  # images without: left out
    assert "laplacian_var" not in lv["conv_ae.multi"]  # not a column of the results table
    assert list(lv) == ["conv_ae.single", "conv_ae.multi", "conv_ae.base", "degraded"]

    # from files: the "rows" key wins (what evaluate.json shows), classical rows come with it
    for seed, tv in ((1, 30.0), (2, 31.0), (3, 32.5)):
        doc = {"seed": seed, "per_image": _per_image(seed=seed, wins=16, win=1.0, loss=0.5, clean_diff=0.0),
               "rows": {"conv_ae.multi": {"psnr": 26.0 + seed / 10, "ssim": 0.5}, "tv": {"psnr": tv, "ssim": 0.8}}}
        if seed == 3:  # a larger test split: bm3d on the anchor subset only
            doc["anchor_subset"] = {"slow_rows": ["bm3d"], "rows": {"bm3d": {"psnr": 27.0}, "tv": {"psnr": 0.0}}}
        else:
            doc["rows"]["bm3d"] = {"psnr": 26.0}
        (tmp_path / f"{seed}.json").write_text(json.dumps(doc))
    report = SD.analyse([SR.load_file(tmp_path / f"{s}.json") for s in (1, 2, 3)])
    assert list(report["levels"]["bm3d"]["psnr"]["values"].values()) == [26.0, 26.0, 27.0]
    tv = report["levels"]["tv"]["psnr"]
    assert (tv["mean"], tv["min"], tv["max"], tv["n"]) == (pytest.approx(31.1666667), 30.0, 32.5, 3)
    assert tv["std"] == pytest.approx(np.std([30.0, 31.0, 32.5], ddof=1))
    text = SW.markdown(report)
    assert "## The headline figures over 3 seed(s)" in text
    assert "| restorer | psnr | ssim |" in text
    assert "| tv | 31.17 ± 1.26 [30.00, 32.50] | 0.800 ± 0.000 [0.800, 0.800] |" in text
    assert "| conv_ae.multi | 26.20 ± 0.10 [26.10, 26.30] |" in text
    assert json.loads(json.dumps(SW._clean(report)))["levels"]["tv"]["psnr"]["values"] == {
        str(tmp_path / f"{s}.json"): v for s, v in ((1, 30.0), (2, 31.0), (3, 32.5))}


def test_analyse_warnings_and_errors():
    one = _run("a", 1, wins=16, win=1.0, loss=0.5, clean_diff=0.0)
    twin = _run("b", 1, wins=16, win=1.0, loss=0.5, clean_diff=0.0)
    report = SD.analyse([one, twin])
    assert any("share a seed" in w for w in report["warnings"])
    assert any("one run only" in w for w in SD.analyse([one])["warnings"])
    assert math.isnan(SD.analyse([one])["aggregate"]["conv_ae"]["psnr"]["share"]["std"])
    with pytest.raises(ValueError, match="same source twice"):
        SD.analyse([one, one])
    with pytest.raises(ValueError, match="no architecture"):
        SD.analyse([SR.SeedRun("x", {"degraded": {"psnr": np.ones(3)}})])
    with pytest.raises(ValueError, match="no 'per_image' key"):
        SR.parse_per_image({"rows": {}}, "old.json")


def _write_details(path: Path, seed: int | None, **kw) -> Path:
    doc = {"rows": {}, "per_image": _per_image(seed=seed or 0, **kw)}
    if seed is not None:
        doc["seed"] = seed
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(doc))
    return path


def test_cli_seeds_on_json_files_and_folders(tmp_path, capsys):
    f1 = _write_details(tmp_path / "one.json", 11, wins=16, win=1.0, loss=0.5, clean_diff=-0.01)
    f2 = _write_details(tmp_path / "two.json", 12, wins=17, win=0.8, loss=0.5, clean_diff=0.0)
    folder = tmp_path / "exp3"  # a folder: metrics/evaluate_details.json, seed from params.yaml
    _write_details(folder / "metrics" / "evaluate_details.json", None, wins=18, win=0.9, loss=0.5, clean_diff=0.01)
    (folder / "params.yaml").write_text("seed: 3\nlatent: 8\n")
    md = tmp_path / "out" / "seeds.md"

    code = cli.main(["seeds", str(f2), str(folder), str(f1), "-o", str(md), "--check"])

    out, err = capsys.readouterr()
    assert code == 0, err
    assert "over 3 seed(s)" in out and "| conv_ae | psnr_blur |" in out
    assert "hold in every run (3 of 3)" in out
    assert md.read_text() == out
    report = json.loads(md.with_suffix(".json").read_text())
    assert [r["seed"] for r in report["runs"]] == [3, 11, 12]  # sorted by seed
    assert report["holds"] == {"conv_ae": True}
    blur = report["aggregate"]["conv_ae"]["psnr_blur"]["share"]
    assert blur["mean"] == pytest.approx(np.mean([16, 17, 18]) / N)
    assert blur["std"] == pytest.approx(np.std([16, 17, 18], ddof=1) / N)
    with Image.open(md.with_suffix(".png")) as im:
        assert im.size[0] > 300 and im.size[1] > 300
    assert f"wrote {md.with_suffix('.png')}" in err

    # a seed that misses the blur target: --check fails; --min-share lowers the bar
    f4 = _write_details(tmp_path / "four.json", 14, wins=14, win=1.0, loss=0.5, clean_diff=0.0)
    assert cli.main(["seeds", str(f1), str(f4), "--check"]) == 1
    assert "do **not** hold in every run (1 of 2)" in capsys.readouterr().out
    assert cli.main(["seeds", str(f1), str(f4), "--check", "--min-share", "0.7",
                     "--metrics", "psnr_blur,psnr_clean", "--json", str(tmp_path / "r.json")]) == 0
    report = json.loads((tmp_path / "r.json").read_text())
    assert list(report["aggregate"]["conv_ae"]) == ["psnr_blur", "psnr_clean"]
    assert not (tmp_path / "r.png").exists()


def test_cli_seeds_errors(tmp_path, capsys):
    old = tmp_path / "old.json"
    old.write_text(json.dumps({"rows": {"conv_ae.multi": {"psnr": 27.0}}}))
    assert cli.main(["seeds", str(old)]) == 2
    assert "no 'per_image' key" in capsys.readouterr().err
    assert cli.main(["seeds", str(tmp_path / "missing.json"), "--repo", str(tmp_path)]) == 2
    assert "missing.json" in capsys.readouterr().err
    assert cli.main(["seeds"]) == 2
    assert "no SOURCE given" in capsys.readouterr().err


MAKE = """import json, os, yaml
from tests_fixture import per_image
seed = yaml.safe_load(open("params.yaml"))["seed"]
os.makedirs("metrics", exist_ok=True)
json.dump({"per_image": per_image(seed)}, open("metrics/evaluate_details.json", "w"))
"""

FIXTURE = """def per_image(seed):
    wins = {1: 16, 2: 18}.get(seed, 10)
    single = [20.0 + i for i in range(20)]
    multi = [s + (1.0 if i < wins else -0.5) for i, s in enumerate(single)]
    return {"conv_ae.multi": {"psnr": multi, "psnr_blur": multi, "psnr_clean": single},
            "conv_ae.single": {"psnr": single, "psnr_blur": single, "psnr_clean": single}}
"""

DVC_YAML = """stages:
  evaluate:
    cmd: python make.py
    deps: [make.py, tests_fixture.py]
    params: [seed]
    outs:
      - metrics/evaluate_details.json:
          cache: false
"""


def test_cli_seeds_reads_dvc_experiments(tmp_path, capsys):
    """Sources as DVC experiment names (git refs under refs/exps) and --all, on a one-stage
    stand-in for the pipeline (the real one: test_seeds_on_two_pipeline_experiments)."""
    repo = stand_in_repo(tmp_path / "repo", {"params.yaml": "seed: 42\n", "make.py": MAKE,
                                             "tests_fixture.py": FIXTURE, "dvc.yaml": DVC_YAML})
    for seed in (1, 2):
        run(["dvc", "exp", "run", "-q", "-S", f"seed={seed}", "-n", f"seed-{seed}"], repo)

    assert cli.main(["seeds", "seed-1", "seed-2", "--repo", str(repo), "--check"]) == 0
    out = capsys.readouterr().out
    assert "seed-1 (seed 1), seed-2 (seed 2)" in out
    assert "| conv_ae | seed-1 | 1 | 80.0% (yes)" in out and "| conv_ae | seed-2 | 2 | 90.0% (yes)" in out

    md = repo / "metrics" / "seeds.md"
    assert cli.main(["seeds", "--all", "--repo", str(repo), "-o", str(md)]) == 0
    assert "over 2 seed(s)" in capsys.readouterr().out
    assert md.with_suffix(".png").is_file() and md.with_suffix(".json").is_file()

    assert cli.main(["seeds", "no-such-exp", "--repo", str(repo)]) == 2
    assert "no-such-exp: not a file, folder, experiment or git revision" in capsys.readouterr().err



# ------------------------------------------------ against the ensemble control, per region
def _three_arms(seed: int, vs_ensemble: float, vs_single: float, n: int = 30) -> dict:
    """Per-image rows of one seed with a known effect: PSNR (whole and per region) of multi is
    the ensemble control's + ``vs_ensemble`` and the single control's + ``vs_single``, plus
    per-image noise (sd 0.05 dB) drawn from ``seed``."""
    rng = np.random.default_rng(seed)
    rows: dict = {"unet_ae.multi": {}, "unet_ae.single": {}, "unet_ae.ensemble": {}}
    for k in SD.REGION_VERDICT_METRICS:
        multi = rng.uniform(25, 35, n)
        rows["unet_ae.multi"][k] = multi.tolist()
        rows["unet_ae.ensemble"][k] = (multi - vs_ensemble + rng.normal(0, 0.05, n)).tolist()
        rows["unet_ae.single"][k] = (multi - vs_single + rng.normal(0, 0.05, n)).tolist()
    return rows


def _arm_run(seed: int, own: int = 3, **kw) -> SR.SeedRun:
    return SR.SeedRun(label=f"s{seed}", seed=seed, per_image=SR.parse_per_image({"per_image": _three_arms(seed, **kw)}),
                      meta={"own_decoders": {"unet_ae": own}})


def test_against_the_ensemble_control_compares_multi_with_the_ensemble_row():
    """multi beats the single control by 0.3 dB but the ensemble control by nothing: against
    ``single`` every region is "better", against ``ensemble`` none is (a comparison that read the
    single row for the ensemble one, or the control for multi, turns this red)."""
    runs = [_arm_run(s, vs_ensemble=0.0, vs_single=0.3) for s in range(1, 6)]
    vs_single = SD.analyse(runs, against="single")
    vs_ensemble = SD.analyse(runs, against="ensemble")
    assert vs_single["against"] == "single" and vs_ensemble["against"] == "ensemble"
    for k in SD.REGION_VERDICT_METRICS:
        s, e = vs_single["regions"]["unet_ae"][k], vs_ensemble["regions"]["unet_ae"][k]
        assert s["verdict"] == "better" and s["mean"] == pytest.approx(0.3, abs=0.02)
        assert s["ci"][0] > 0 and s["seeds"] == 5 and s["seeds_won"] == 5
        assert e["verdict"] == "undecided" and e["ci"][0] < 0 < e["ci"][1]
        assert vs_ensemble["aggregate"]["unet_ae"][k]["mean_diff"]["mean"] == pytest.approx(e["mean"])
    text = SW.markdown(vs_ensemble)
    assert "Per-cluster vs ensemble control decoders over 5 seed(s)" in text
    assert "| unet_ae | blur | 5 |" in text and "multi − ensemble" in text
    # swapped arms: multi worse than the ensemble control everywhere
    worse = SD.analyse([_arm_run(s, vs_ensemble=-0.2, vs_single=0.0) for s in range(1, 6)], against="ensemble")
    assert {v["verdict"] for v in worse["regions"]["unet_ae"].values()} == {"worse"}
    with pytest.raises(ValueError, match="against must be one of"):
        SD.analyse(runs, against="base")


def test_region_verdict_needs_two_seeds_and_two_own_decoders():
    one = SD.analyse([_arm_run(1, vs_ensemble=0.3, vs_single=0.3)], against="ensemble")
    assert {v["verdict"] for v in one["regions"]["unet_ae"].values()} == {"one seed: no interval"}
    # a run whose per-cluster restorer has one decoder of its own is an ensemble itself
    runs = [_arm_run(s, own=1 if s == 3 else 3, vs_ensemble=0.3, vs_single=0.3) for s in range(1, 6)]
    region = SD.analyse(runs, against="ensemble")["regions"]["unet_ae"]["psnr_blur"]
    assert region["verdict"] == "not applicable: one cluster" and region["not_applicable_runs"] == ["s3"]
    # no ensemble row at all: a clear error
    plain = [_run("s1", 1, wins=16, win=1.0, loss=0.5, clean_diff=0.0)]
    with pytest.raises(ValueError, match="decoders.ensemble"):
        SD.analyse(plain, against="ensemble")


def test_cli_seeds_against_the_ensemble_reads_own_decoders_beside_the_details(tmp_path, capsys):
    paths = []
    for s in range(1, 4):
        folder = tmp_path / f"exp{s}" / "metrics"
        folder.mkdir(parents=True)
        (folder / "evaluate_details.json").write_text(json.dumps(
            {"seed": s, "rows": {}, "per_image": _three_arms(s, vs_ensemble=0.2, vs_single=0.2)}))
        (folder / "evaluate.json").write_text(json.dumps({"unet_ae": {"own_decoders": 1 if s == 2 else 3}}))
        paths.append(str(folder / "evaluate_details.json"))
    md = tmp_path / "seeds_ensemble.md"
    assert cli.main(["seeds", *paths, "--against", "ensemble", "-o", str(md)]) == 0
    out = capsys.readouterr().out
    assert "ensemble control" in out and "not applicable: one cluster" in out
    report = json.loads(md.with_suffix(".json").read_text())
    assert report["regions"]["unet_ae"]["psnr"]["not_applicable_runs"] == [paths[1]]
    assert SR.own_decoders('{"conv_ae": {"own_decoders": 1}, "images": 30}') == {"conv_ae": 1}
    assert SR.own_decoders(None) == {} and SR.own_decoders("not json") == {}
