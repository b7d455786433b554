"""The evaluate stage: whole-image scoring, regions per damage kind, the multi-vs-single
comparison, the slow restorers' anchor subset, the outputs."""

from __future__ import annotations

import dataclasses
import json
import sys

import numpy as np
import pytest

from aerestore import classical as C
from aerestore import evaluate as E
from aerestore import evaluate_classical as EC
from aerestore import evaluate_summary as ES
from aerestore import metrics as M
from aerestore.damage import DAMAGE_KINDS
from aerestore.params import parse_params

from helpers import degrade, photo_images, save_tiny_restorer


@pytest.fixture(scope="module")
def test_split():
    """6 images, 32 px: the left half blurred (blur channel), a band of local noise at the
    bottom (noise channel, synthetic until the prepare stage writes it), light noise
    everywhere."""
    clean = photo_images(6, 32, seed=4)
    degraded, mask = degrade(clean, seed=4)
    rng = np.random.default_rng(4)
    noisy = degraded.astype(np.float64)
    noisy[:, 24:30] += rng.normal(0, 40, noisy[:, 24:30].shape)
    degraded = np.clip(np.rint(noisy), 0, 255).astype(np.uint8)
    mask[:, 24:30, :, DAMAGE_KINDS.index("noise")] = 255
    return clean, degraded, mask


@pytest.fixture(scope="module")
def workdir(tmp_path_factory, test_split):
    root = tmp_path_factory.mktemp("evaluate")
    prepared = root / "prepared" / "test"
    prepared.mkdir(parents=True)
    for name, arr in zip(("clean", "degraded", "mask"), test_split):
        np.save(prepared / f"{name}.npy", arr)
    val = root / "prepared" / "val"  # the classical settings are chosen here
    val.mkdir(parents=True)
    for name, arr in zip(("clean", "degraded", "mask"), _val_split()):
        np.save(val / f"{name}.npy", arr)
    save_tiny_restorer(root / "models" / "conv_ae")
    return root


def _val_split(seed: int = 5, n: int = 4):
    clean = photo_images(n, 32, seed=seed)
    degraded, mask = degrade(clean, seed=seed)
    return clean, degraded, mask


def _run(root, out, prepare=None, **evaluate):
    params = parse_params({"architectures": ["conv_ae"], "data": {"image_size": 32}, **({"prepare": prepare} if prepare else {}),
                           "blocks": {"size": 16, "overlap": 4},
                           # the classical defaults, no oracle and no speed image unless a test asks (tested on
                           # their own)
                           "evaluate": {"grid_images": 2, "classical_grid": {}, "oracle": False, "speed_size": 0,
                                        **evaluate}})
    out.mkdir(parents=True, exist_ok=True)
    result, summary = E.run_evaluate(params, root / "prepared", root / "models", out / "evaluate.json",
                                     out / "details.json", out / "summary.md", out / "plots", progress=False)
    details = json.loads((out / "details.json").read_text())
    assert json.loads((out / "evaluate.json").read_text()) == json.loads(json.dumps(result))
    return result, summary, details


def test_identity_restorer_reproduces_the_degraded_row(test_split):
    clean, degraded, mask = test_split
    rows = {"degraded": lambda d: d, "identity": lambda d: d.copy()}
    metrics, seconds, images = E.score_rows(clean, degraded, mask, rows, chunk=4, keep=3, progress=False)
    for k in metrics["degraded"]:
        assert np.array_equal(metrics["degraded"][k], metrics["identity"][k], equal_nan=True), k
    direct = M.batch_metrics(degraded, clean, mask)
    assert np.allclose(metrics["degraded"]["psnr"], direct["psnr"])
    assert np.array_equal(images["identity"], degraded[:3])
    for region in M.REGIONS:
        assert np.isfinite(metrics["degraded"][f"psnr_{region}"]).all(), region
    # damage lowers PSNR: the noisy band and the blurred half score below the clean pixels
    d = metrics["degraded"]
    assert d["psnr_noise"].mean() < d["psnr_clean"].mean()
    assert d["psnr_blur"].mean() < d["psnr_clean"].mean()
    # masks without any damaged pixel: no region metrics, unless asked for
    none = np.zeros_like(mask)
    assert "psnr_clean" not in E.score_rows(clean, degraded, none, rows, progress=False)[0]["degraded"]
    assert "psnr_clean" in E.score_rows(clean, degraded, none, rows, progress=False, regions=True)[0]["degraded"]


def test_compare_counts_wins_and_tests_significance():
    better = {"psnr": np.arange(10.0) + 1, "ssim": np.full(10, 0.5), "uqi": np.full(10, 0.5),
              "blur_percent": np.full(10, -5.0), "psnr_blur": np.arange(10.0) + 2,
              "psnr_noise": np.full(10, np.nan), "ssim_clean": np.full(10, 0.9)}
    worse = {"psnr": np.arange(10.0), "ssim": np.full(10, 0.5), "uqi": np.full(10, 0.4),
             "blur_percent": np.full(10, 10.0), "psnr_blur": np.arange(10.0),
             "psnr_noise": np.full(10, np.nan), "ssim_clean": np.full(10, 0.8)}
    cmp_ = E.compare(better, worse)
    assert cmp_["psnr"]["share"] == 1.0 and cmp_["psnr"]["p_value"] < 0.01
    assert cmp_["ssim"]["share"] == 0.5 and cmp_["ssim"]["p_value"] == 1.0
    assert cmp_["blur_percent"]["share"] == 1.0  # |-5| beats |10|
    # every region metric present is compared; an empty region gives None, not NaN
    assert cmp_["psnr_blur"]["share"] == 1.0 and cmp_["ssim_clean"]["share"] == 1.0
    assert cmp_["psnr_noise"] == {"share": None, "p_value": None}
    assert "psnr_clean" not in cmp_


def test_anchor_indices_are_fixed_and_evenly_spaced():
    idx = E.anchor_indices(183, 48)
    assert len(idx) == 48 and idx[0] == 0 and idx[-1] == 182
    assert np.all(np.diff(idx) >= 3) and np.all(np.diff(idx) <= 4)
    assert np.array_equal(idx, E.anchor_indices(183, 48))
    assert np.array_equal(E.anchor_indices(6, 0), np.arange(6))
    assert np.array_equal(E.anchor_indices(6, 10), np.arange(6))
    assert np.array_equal(E.anchor_indices(6, 3), [0, 2, 5])
    assert np.array_equal(E.anchor_indices(6, 1), [0])


def test_on_subset_gives_every_row_the_same_images():
    full = {"a": {"psnr": np.arange(6.0)}, "b": {"psnr": np.arange(6.0) * 10}}
    idx = np.array([0, 2, 5])
    sub = E.on_subset(full, idx, {"slow": {"psnr": np.array([7.0, 8.0, 9.0])}})
    assert np.array_equal(sub["a"]["psnr"], [0, 2, 5]) and np.array_equal(sub["b"]["psnr"], [0, 20, 50])
    assert np.array_equal(sub["slow"]["psnr"], [7, 8, 9])
    with pytest.raises(ValueError, match="subset"):
        E.on_subset(full, idx, {"slow": {"psnr": np.zeros(6)}})


def test_run_evaluate_writes_table_json_and_grids(tmp_path, workdir, test_split):
    clean, degraded, mask = test_split
    saved, summary, details = _run(workdir, tmp_path, classical=["tv", "bilateral"])
    assert saved["images"] == 6
    assert saved["degraded"]["psnr"] == pytest.approx(M.batch_metrics(degraded, clean)["psnr"].mean())
    assert saved["degraded"]["psnr_noise"] == pytest.approx(M.batch_metrics(degraded, clean, mask)["psnr_noise"].mean())
    for mode in ("base", "single", "multi", "ensemble"):
        assert set(saved["conv_ae"][mode]) >= {"psnr", "ssim", "uqi", "psnr_blur", "psnr_noise", "psnr_clean",
                                               "ssim_blur", "ssim_noise", "ssim_clean"}
    cmp_ = saved["conv_ae"]["multi_vs_single"]
    assert 0 <= cmp_["psnr"]["share"] <= 1
    assert set(cmp_) == set(E.COMPARED) | set(E.REGION_KEYS)
    # the third arm: per-cluster vs the ensemble control, the ensemble vs the control, a verdict
    for name in ("multi_vs_ensemble", "ensemble_vs_single"):
        assert set(saved["conv_ae"][name]) == set(E.COMPARED) | set(E.REGION_KEYS)
    assert saved["conv_ae"]["own_decoders"] == 2 and saved["conv_ae"]["verdict"] != E.NOT_APPLICABLE
    assert set(saved["classical"]) == {"tv", "bilateral"}
    # 6 images <= anchor_images (48): the subset is the whole split, the same numbers
    sub = saved["anchor_subset"]
    assert sub["images"] == 6 and sub["degraded"] == saved["degraded"]
    assert sub["classical"]["tv"]["psnr"] == saved["classical"]["tv"]["psnr"]
    best = max(("tv", "bilateral"), key=lambda n: saved["classical"][n]["psnr"])
    assert sub["best_classical"] == {"name": best, "psnr": saved["classical"][best]["psnr"]}
    assert sub["conv_ae"]["multi"]["margin_db"] == pytest.approx(sub["conv_ae"]["multi"]["psnr"] - sub["best_classical"]["psnr"])
    for text in ("degraded input", "conv_ae per-cluster decoders", "conv_ae ensemble control", "beat the ensemble",
                 "the ensemble control beats the single decoder", "tv (", "Wilcoxon", "PSNR blur",
                 "PSNR noise", "PSNR clean", "psnr_noise", f"Best classical restorer on the 6 anchor images: **{best}**"):
        assert text in summary
    assert "Like for like" not in summary  # nothing ran on a subset only
    assert "inside" not in summary and "outside" not in summary
    assert (tmp_path / "summary.md").read_text() == summary
    for name in ("grid_conv_ae.png", "bars.png"):
        assert (tmp_path / "plots" / name).read_bytes()[:4] == b"\x89PNG"
    assert details["anchor_subset"]["images"] == list(range(6)) and details["skipped"] == {}
    # per image, for `aerestore seeds`: the network rows, the compared metrics
    per = details["per_image"]
    assert set(per) == {"degraded", "conv_ae.base", "conv_ae.single", "conv_ae.multi", "conv_ae.ensemble"}
    assert set(per["conv_ae.multi"]) == set(E.MAIN_METRICS) | set(E.REGION_KEYS)
    direct = M.batch_metrics(degraded, clean, mask)
    assert per["degraded"]["psnr_blur"] == pytest.approx(list(direct["psnr_blur"]))
    from aerestore.studies import seed_runs

    parsed = seed_runs.parse_per_image(details)
    assert np.allclose(parsed["conv_ae.multi"]["psnr"], per["conv_ae.multi"]["psnr"])


def test_slow_restorers_run_on_the_anchor_subset_and_every_row_is_compared_there(
        tmp_path, workdir, test_split, monkeypatch):
    clean, degraded, mask = test_split
    # tv stands in for a slow restorer (bm3d): fast, and always installed
    monkeypatch.setitem(C.RESTORERS, "tv", dataclasses.replace(C.RESTORERS["tv"], slow=True))
    saved, summary, details = _run(workdir, tmp_path, classical=["nlmeans", "tv"], anchor_images=3)
    idx = [0, 2, 5]
    assert details["anchor_subset"]["images"] == idx and details["anchor_subset"]["slow_rows"] == ["tv"]
    assert set(saved["classical"]) == {"nlmeans"}  # tv did not run on every image
    sub = saved["anchor_subset"]
    assert sub["images"] == 3 and set(sub["classical"]) == {"nlmeans", "tv"}
    # every row on the subset is scored on exactly the images idx
    c, d, m = clean[idx], degraded[idx], mask[idx]
    expected = {
        "degraded": M.batch_metrics(d, c, m),
        "nlmeans": M.batch_metrics(C.restore_all(d, ["nlmeans"], progress=False)["nlmeans"], c, m),
        "tv": M.batch_metrics(C.restore_all(d, ["tv"], progress=False)["tv"], c, m),
    }
    got = {"degraded": sub["degraded"], "nlmeans": sub["classical"]["nlmeans"], "tv": sub["classical"]["tv"]}
    for row, exp in expected.items():
        for key in ("psnr", "ssim", "psnr_blur", "psnr_noise", "psnr_clean"):
            assert got[row][key] == pytest.approx(exp[key].mean()), (row, key)
    rows = details["anchor_subset"]["rows"]
    assert rows["conv_ae.multi"]["psnr"] == pytest.approx(sub["conv_ae"]["multi"]["psnr"])
    full_multi = details["rows"]["conv_ae.multi"]["psnr"]
    assert sub["conv_ae"]["multi"]["psnr"] != pytest.approx(full_multi)  # a different set of images
    best = max(("nlmeans", "tv"), key=lambda n: sub["classical"][n]["psnr"])
    assert sub["best_classical"] == {"name": best, "psnr": sub["classical"][best]["psnr"]}
    for mode in ("base", "single", "multi"):
        r = sub["conv_ae"][mode]
        assert r["margin_db"] == pytest.approx(r["psnr"] - sub["best_classical"]["psnr"])
    assert "Like for like on the anchor subset: 3 of the 6 test images" in summary
    assert "ran on these images only: tv" in summary and f"vs {best} (dB)" in summary
    assert (tmp_path / "plots" / "bars_anchor.png").read_bytes()[:4] == b"\x89PNG"


def test_a_missing_optional_restorer_is_skipped_with_a_note(tmp_path, workdir, monkeypatch):
    monkeypatch.setitem(sys.modules, "bm3d", None)  # `import bm3d` raises ImportError
    saved, summary, details = _run(workdir, tmp_path, classical=["tv", "bm3d"], anchor_images=3)
    assert "bm3d" not in saved["classical"] and "bm3d" not in saved["anchor_subset"]["classical"]
    assert saved["anchor_subset"]["best_classical"]["name"] == "tv"
    assert "not installed" in details["skipped"]["bm3d"]
    assert "**bm3d (classical): skipped**" in summary and ".[bm3d]" in summary
    assert "Like for like" not in summary  # no slow row ran


def test_bm3d_row_on_the_anchor_subset(tmp_path, workdir, test_split):
    pytest.importorskip("bm3d")
    clean, degraded, mask = test_split
    saved, summary, details = _run(workdir, tmp_path, classical=["bm3d"], anchor_images=2)
    sub = saved["anchor_subset"]
    assert "bm3d" not in saved.get("classical", {}) and sub["best_classical"]["name"] == "bm3d"
    assert sub["classical"]["bm3d"]["psnr"] > sub["degraded"]["psnr"] + 1
    assert sub["classical"]["bm3d"]["megapixels_per_s"] > 0
    assert "bm3d (classical)" in summary and details["anchor_subset"]["images"] == [0, 5]


def test_block_settings_must_match_the_model(tmp_path, test_split):
    clean, degraded, mask = test_split
    prepared = tmp_path / "prepared" / "test"
    prepared.mkdir(parents=True)
    for name, arr in (("clean", clean), ("degraded", degraded), ("mask", mask)):
        np.save(prepared / f"{name}.npy", arr)
    save_tiny_restorer(tmp_path / "models" / "conv_ae")
    params = parse_params({"architectures": ["conv_ae"], "data": {"image_size": 32},
                           "blocks": {"size": 16, "overlap": 2}, "evaluate": {"classical": []}})
    with pytest.raises(ValueError, match="overlap"):
        E.run_evaluate(params, tmp_path / "prepared", tmp_path / "models", tmp_path / "e.json",
                       tmp_path / "d.json", tmp_path / "s.md", tmp_path / "plots", progress=False)
    assert not (tmp_path / "e.json").exists()


def test_classical_settings_are_chosen_on_validation_and_the_test_split_never_enters(
        tmp_path, workdir, test_split, monkeypatch):
    clean, degraded, mask = test_split
    grid = {"tv": {"weight": [0.02, 0.3]}, "wiener": {"psf_sigma": [1.0, 2.0], "balance": [0.1]}}
    seen = []
    real = EC.tune_on_validation

    def spy(names, grid_, c, d, progress=True):
        seen.append((np.array(c), np.array(d)))
        return real(names, grid_, c, d, progress)

    monkeypatch.setattr(EC, "tune_on_validation", spy)
    saved, summary, details = _run(workdir, tmp_path, classical=["tv", "wiener"], classical_grid=grid)
    val_clean, val_degraded, _ = _val_split()
    # the grid saw the validation images, all of them (tune_images 0), and no test image
    (c, d), = seen
    assert np.array_equal(c, val_clean) and np.array_equal(d, val_degraded)
    assert not any(np.array_equal(t, v) for t in clean for v in c)
    tuning = saved["classical_tuning"]
    assert set(tuning) == {"tv", "wiener"} and saved["classical_tuning_images"] == 4
    chosen_tv = tuning["tv"]["chosen"]["weight"]
    best = max(grid["tv"]["weight"], key=lambda wt: np.mean(
        [M.psnr(C.RESTORERS["tv"].with_settings(weight=wt)(x / 255), y / 255) for x, y in zip(val_degraded, val_clean)]))
    assert chosen_tv == best
    # the test row is the chosen setting, scored once on the test images
    out = C.RESTORERS["tv"].with_settings(weight=chosen_tv)
    expected = M.batch_metrics(np.stack([out(x / 255) for x in degraded]), clean / 255)["psnr"].mean()
    assert saved["classical"]["tv"]["psnr"] == pytest.approx(expected)
    assert details["classical_settings"]["tv"]["weight"] == chosen_tv
    assert details["classical_tuning"]["records"]["wiener"]["grid"] == grid["wiener"]
    assert "chosen on 4 validation images" in summary and f"tv: weight {chosen_tv:g}" in summary
    # another test split, the same validation split: the same choices
    other = tmp_path / "other"
    (other / "prepared").mkdir(parents=True)
    import shutil

    shutil.copytree(workdir / "prepared" / "val", other / "prepared" / "val")
    shutil.copytree(workdir / "models", other / "models")
    (other / "prepared" / "test").mkdir()
    np.save(other / "prepared" / "test" / "clean.npy", clean)
    np.save(other / "prepared" / "test" / "degraded.npy", np.ascontiguousarray(degraded[:, ::-1]))
    np.save(other / "prepared" / "test" / "mask.npy", mask)
    saved2, _, _ = _run(other, tmp_path / "out2", classical=["tv", "wiener"], classical_grid=grid)
    assert saved2["classical_tuning"] == tuning


def test_oracle_row_is_an_upper_bound_never_the_best_classical(tmp_path, workdir, test_split):
    clean, degraded, mask = test_split
    saved, summary, details = _run(workdir, tmp_path, classical=["tv"], oracle=True, anchor_images=3)
    sub = saved["anchor_subset"]
    assert "oracle" not in sub["classical"] and "oracle" not in saved.get("classical", {})
    assert sub["best_classical"]["name"] == "tv"
    o = sub["oracle"]
    assert o["psnr"] > sub["classical"]["tv"]["psnr"] and o["psnr"] > sub["degraded"]["psnr"] + 1
    assert o["denoiser"] in ("bm3d", "nlmeans")
    for mode in ("single", "multi"):
        r = sub["conv_ae"][mode]
        assert r["oracle_gap_db"] == pytest.approx(r["psnr"] - o["psnr"])
        assert r["margin_db"] == pytest.approx(r["psnr"] - sub["classical"]["tv"]["psnr"])
    told = details["oracle"]["told"]
    assert len(told) == 3  # the anchor subset's images, in order
    # the fixture: noise std 40/255 in rows 24..30 on top of 12/255 everywhere (measured after
    # the clipping at 0 and 255, which lowers it on a saturated crop: the median over the images)
    assert np.median([t["sigma_noise"] for t in told]) == pytest.approx(np.hypot(40, 12) / 255, rel=0.2)
    assert np.median([t["sigma_camera"] for t in told]) == pytest.approx(12 / 255, rel=0.2)
    assert all(t["sigma_noise"] > 2 * t["sigma_camera"] for t in told)
    assert f"Best classical SSIM on the 3 anchor images: **tv**, {sub['classical']['tv']['ssim']:.3f}" in summary
    assert "Upper bound, not a competitor" in summary and "oracle" not in summary.split("Best classical")[1].split(".")[0]


def _cmp(share: float, p: float) -> dict:
    return {"share": share, "p_value": p}


def test_verdict_only_where_the_per_cluster_decoders_beat_the_ensemble():
    beats = {"psnr": _cmp(0.8, 0.001), "psnr_blur": _cmp(0.9, 1e-4), "psnr_noise": _cmp(0.55, 0.3),
             "psnr_clean": _cmp(0.2, 0.01)}
    assert E.verdict(beats, 3) == "supported in: whole image, blur; worse than it in: clean"
    assert E.verdict({"psnr": _cmp(0.6, 0.2)}, 2) == "not supported: beats the ensemble control nowhere"
    # fewer than two clusters with a decoder of their own: the per-cluster restorer is an
    # ensemble of the control and its twins, whatever the figures
    assert E.verdict(beats, 1) == E.NOT_APPLICABLE == "not applicable: one cluster"
    assert E.verdict(beats, 0) == E.NOT_APPLICABLE
    assert E.verdict(None, 3).startswith("no verdict")


def test_beating_the_ensemble_is_not_enough_when_the_single_decoder_is_better():
    """The CelebA study's setting (celeba-256-noise) gave per-cluster decoders that beat the
    ensemble control on most images but lost to the single decoder on 99 % of them: that is
    no support. A verdict that reads the ensemble comparison alone fails here."""
    vs_ensemble = {"psnr": _cmp(0.8, 1e-5), "psnr_blur": _cmp(0.9, 1e-4), "psnr_noise": _cmp(0.7, 0.01)}
    vs_single = {"psnr": _cmp(0.01, 1e-20), "psnr_blur": _cmp(0.85, 1e-3), "psnr_noise": _cmp(0.6, 0.4)}
    assert E.verdict(vs_ensemble, 2, vs_single=vs_single) == (
        "supported in: blur; worse than a control in: whole image")
    assert E.verdict(vs_ensemble, 2, vs_single={"psnr": _cmp(0.2, 1e-3)}) == (
        "not supported: beats both controls nowhere; worse than a control in: whole image")
    # the stage passes its multi-vs-single comparison to the verdict
    rng = np.random.default_rng(0)
    base = rng.normal(25, 1, 40)
    metrics = {"a.multi": {"psnr": base + 0.5}, "a.single": {"psnr": base + 1.0}, "a.ensemble": {"psnr": base}}
    for row in metrics.values():
        row.update({k: np.full(40, 0.5) for k in ("ssim", "uqi", "blur_percent")})
    out = E.network_comparisons(metrics, "a", 2)
    assert out["multi_vs_ensemble"]["psnr"]["share"] == 1.0 and out["multi_vs_single"]["psnr"]["share"] == 0.0
    assert out["verdict"].startswith("not supported") and "whole image" in out["verdict"]


def test_summary_reports_both_controls_and_not_applicable_for_one_cluster():
    rng = np.random.default_rng(0)
    n = 30
    base = rng.normal(25, 1, n)

    def row(shift):
        return {k: base + shift + rng.normal(0, 0.01, n) for k in ("psnr", "psnr_blur", "psnr_noise", "psnr_clean")} | {
            "ssim": np.full(n, 0.8), "uqi": np.full(n, 0.7), "blur_percent": np.zeros(n),
            "ssim_blur": np.full(n, 0.8), "ssim_noise": np.full(n, 0.8), "ssim_clean": np.full(n, 0.8)}

    metrics = {"degraded": row(-5)}
    for arch in ("one", "two"):
        metrics |= {f"{arch}.base": row(0), f"{arch}.single": row(0.1), f"{arch}.ensemble": row(0.2),
                    f"{arch}.multi": row(0.3)}
    seconds = {r: 1.0 for r in metrics}
    result = E.summarise(metrics, seconds, ["one", "two"], [], n, 1.0, own_decoders={"one": 1, "two": 3})
    assert result["one"]["verdict"] == E.NOT_APPLICABLE
    assert result["two"]["verdict"].startswith("supported in: whole image")
    assert result["two"]["multi_vs_ensemble"]["psnr"]["share"] == 1.0
    assert result["two"]["ensemble_vs_single"]["psnr"]["share"] == 1.0
    text = ES.summary_markdown(result, ["one", "two"], [], {})
    assert "| one ensemble control |" in text and "| two ensemble control |" in text
    table = text.split("beat the ensemble control")[1].split("\n\n")[1]
    one = next(line for line in table.splitlines() if line.startswith("| one |"))
    assert "not applicable: one cluster (1 cluster decoder)" in one
    # ... and in the multi-vs-single table too, instead of a verdict
    first = text.split("beat the single decoder (control)")[1].split("\n\n")[1]
    assert "not applicable: one cluster" in next(line for line in first.splitlines() if line.startswith("| one |"))


def test_every_row_is_timed_on_one_image_of_one_size(tmp_path, workdir):
    """evaluate.speed_size: each row (networks' every mode, classical, oracle) restores the
    same degraded image once more, and its Mpx/s is a column of both tables."""
    saved, summary, _ = _run(workdir, tmp_path, classical=["tv", "bm3d"], oracle=True, anchor_images=3, speed_size=32)
    sp = saved["speed"]
    assert sp["size"] == 32 and sp["threads"] >= 1
    rows = {f"conv_ae.{m}" for m in ("base", "single", "multi", "ensemble")} | {"tv", "bm3d", "oracle"}
    assert set(sp["megapixels_per_s"]) == rows
    assert all(np.isfinite(v) and v > 0 for v in sp["megapixels_per_s"].values())
    assert summary.count("Mpx/s, one 32 px image |") == 2  # the whole split's table and the anchor subset's
    assert "on one 32 px image)" in summary  # the oracle's line


def test_speed_image_is_the_tasks_damage_and_timing_keeps_the_fastest(monkeypatch):
    from aerestore import evaluate_inputs as ES
    from pathlib import Path

    from aerestore.params import load_params, parse_params

    ops = load_params(Path(__file__).resolve().parents[1] / "params.yaml").prepare.degrade  # the default task
    clean, degraded, mask = ES.speed_image(64, 3, ops, seed=1)
    assert clean.shape == degraded.shape == (64, 64, 3) and mask.shape[:2] == (64, 64)
    assert (degraded != clean).any() and mask.max() > 0
    again = ES.speed_image(64, 3, ops, seed=1)
    assert all(np.array_equal(a, b) for a, b in zip((clean, degraded, mask), again))  # seeded
    grey = ES.speed_image(32, 1, [], seed=1)
    assert grey[1].shape == (32, 32, 1) and np.array_equal(grey[0], grey[1]) and grey[2].max() == 0
    with pytest.raises(ValueError, match="evaluate.speed_size"):
        ES.speed_image(600, 3, ops, seed=1)
    with pytest.raises(Exception, match="speed_size"):
        parse_params({"evaluate": {"speed_size": 8}})
    # a fast row: three calls, the fastest kept; a slow row: its one call
    for durations, calls, expected in (([0.3, 0.1, 0.2], 3, 0.1), ([2.0, 0.1, 0.1], 1, 2.0)):
        clock, ticks = [0.0], iter(durations)

        def fn(_):
            clock[0] += next(ticks)

        monkeypatch.setattr(ES.time, "perf_counter", lambda: clock[0])
        assert ES.time_row(fn, None) == pytest.approx(expected)
        assert len(durations) - sum(1 for _ in ticks) == calls


def test_damage_draws_score_each_test_image_under_other_damage(tmp_path, workdir, test_split):
    """evaluate.draws = 2: the prepared split as it is, then every clean test image degraded
    anew (seeded): every row covers both draws, draw 0 exactly as with draws = 1."""
    from pathlib import Path

    from aerestore.evaluate_inputs import redegrade
    from aerestore.params import load_params

    ops = load_params(Path(__file__).resolve().parents[1] / "params.yaml").prepare.degrade
    prepare = {"degrade": [op.model_dump() for op in ops]}
    one, _, d1 = _run(workdir, tmp_path / "one", prepare=prepare, classical=["tv"])
    two, summary, d2 = _run(workdir, tmp_path / "two", prepare=prepare, classical=["tv"], draws=2)
    clean, degraded, _ = test_split
    assert two["images"] == 2 * one["images"] == 12 and two["draws"] == 2 and "draws" not in one
    assert "6 test images x 2 damage draws = 12 scored" in summary
    for row in ("degraded", "conv_ae.multi", "conv_ae.single"):
        first, second = d2["per_image"][row]["psnr"][:6], d2["per_image"][row]["psnr"][6:]
        if row == "degraded":
            assert first == d1["per_image"][row]["psnr"]  # draw 0: the prepared split, to the bit
        else:  # a network's batch now holds both draws: with AVX2-only kernels its sums run in
            # another order than with 6 images, so the last bits may differ (not another damage)
            assert first == pytest.approx(d1["per_image"][row]["psnr"], rel=1e-7, abs=1e-6)
        assert second != first
    again, masks = redegrade(clean, ops, seed=42, draw=1)
    assert d2["per_image"]["degraded"]["psnr"][6:] == pytest.approx(list(M.batch_metrics(again, clean)["psnr"]))
    assert masks.max() > 0 and not np.array_equal(again, degraded)
    assert np.array_equal(redegrade(clean, ops, seed=42, draw=2)[0], redegrade(clean, ops, seed=42, draw=2)[0])
    assert not np.array_equal(redegrade(clean, ops, seed=42, draw=2)[0], again)
    with pytest.raises(Exception, match="evaluate.draws"):
        parse_params({"evaluate": {"draws": 2}})  # no prepare.degrade to draw from
