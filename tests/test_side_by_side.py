"""The studies' headline figures beside ours (aerestore.studies.side_by_side, `aerestore
side-by-side`): the figures quoted from the texts, our values read from a run, the verdicts."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from aerestore.cli import main
from aerestore.studies import side_by_side as SB

STUDIES = Path("/work/shared/studies")
TEXTS = {SB.CELEBA: "001_c49bd315ba67f4a2.txt", SB.BOTTLENECK: "004_d67dddc4407ba9e7.txt"}


def test_every_headline_figure_of_issue_26_has_a_row():
    named = {11.37, 0.5593, 0.5965, 29.07, 0.8428, 0.9763, 93.33, 100.0, 94.7, 10.37, 96.3, 0.0058, 0.00668, 0.0037}
    assert {f.value for f in SB.FIGURES} == named
    # each share of the study against both readings of its "single decoder"
    shares = [f for f in SB.FIGURES if f.unit == "%"]
    assert {f.path[0] for f in shares} == {"conv_ae", "vae", "share"} and len(shares) == 8
    assert {f.setting for f in SB.FIGURES} <= set(SB.SETTINGS)


@pytest.mark.parametrize("figure", SB.FIGURES, ids=lambda f: f.what)
def test_each_value_is_quoted_from_its_study(figure):
    """The quote holds the value, and (where the texts are at hand) stands in the study."""
    assert f"{figure.value:g}" in figure.quote.replace("%", "") or figure.quote.startswith(f"{figure.value:g}")
    path = STUDIES / TEXTS[figure.study]
    if path.is_file():
        assert figure.quote in " ".join(path.read_text().split()), f"not in {path.name}: {figure.quote!r}"


def _run(rev: str, multi_psnr: float = 28.5, share: float = 0.9, per_image_psnr=(20.0, 30.0)) -> dict:
    evaluate = {"degraded": {"psnr": 11.2, "ssim": 0.40, "uqi": 0.58},
                "conv_ae": {"multi": {"psnr": multi_psnr, "ssim": 0.80, "uqi": 0.97},
                            "multi_vs_single": {"psnr": {"share": share}, "ssim": {"share": 0.5},
                                                "uqi": {"share": 0.95}}}}
    as_trained = {m: [0.1, 0.2, 0.3, 0.4] for m in ("psnr", "ssim", "uqi")}
    filters = {m: [0.5, 0.5, 0.5, 0.4] for m in ("psnr", "ssim", "uqi")}  # better on 3, a tie on 1
    details = {"per_image": {"ccp_ae.base": {"psnr": list(per_image_psnr)},
                             "conv_ae.base": as_trained, "conv_ae.multi": filters}}
    return {"rev": rev, "sha": "a" * 40, "evaluate": evaluate, "details": details}


def test_rows_verdicts_and_what_is_not_run():
    rows = SB.side_by_side({"celeba-256-noise": "exp-a"}, reader=lambda rev: _run(rev))
    by = {r["what"]: r for r in rows}
    assert len(rows) == len(SB.FIGURES)
    psnr = by["conv AE (per-cluster filters), PSNR"]
    assert psnr["ours"] == 28.5 and psnr["difference"] == pytest.approx(28.5 - 29.07)
    assert psnr["verdict"] == "reproduced" and psnr["run"]["rev"] == "exp-a"  # within 1 dB
    ssim = by["noisy input, SSIM"]
    assert ssim["verdict"] == "not reproduced" and ssim["why"]  # 0.40 vs 0.5593: beyond 0.05, with a reason
    share = by["per-cluster better than single, share of images (PSNR)"]
    assert share["ours"] == pytest.approx(90.0) and share["verdict"] == "reproduced"  # a share in %
    vae = by["VAE, PSNR"]
    assert vae["ours"] is None and vae["verdict"] == "not run here"
    assert "architectures=[vae]" in vae["why"]  # the command that runs it


def test_shares_against_the_network_as_trained_come_from_the_per_image_values():
    rows = SB.side_by_side({"celeba-256-noise": "exp-a"}, reader=_run)
    share = next(r for r in rows if r["what"] == "per-cluster better than the network as trained, share of images (PSNR)")
    assert share["ours"] == pytest.approx(87.5)  # 3 of 4 images better, one tie counted half
    assert share["verdict"] == "reproduced"  # 93.33 within 10 points
    missing = _run("b")
    del missing["details"]["per_image"]["conv_ae.base"]
    with pytest.raises(KeyError, match="conv_ae.multi"):
        SB.side_by_side({"celeba-256-noise": "b"}, reader=lambda rev: missing)


def test_a_rigged_tolerance_or_value_changes_the_verdict():
    far = SB.side_by_side({"celeba-256-noise": "x"}, reader=lambda rev: _run(rev, multi_psnr=27.9))
    row = next(r for r in far if r["what"] == "conv AE (per-cluster filters), PSNR")
    assert row["verdict"] == "not reproduced"  # 1.17 dB off: beyond the stated 1 dB


def test_mse_figures_come_from_the_per_image_psnr():
    rows = SB.side_by_side({"animal-all": "y"}, reader=lambda rev: _run(rev, per_image_psnr=(20.0, 30.0)))
    row = next(r for r in rows if r["setting"] == "animal-all")
    assert row["ours"] == pytest.approx((0.01 + 0.001) / 2)  # MSE = 10^(-PSNR/10), averaged per image
    assert row["verdict"] == "reproduced"  # 0.0055 vs 0.00668: within 25 % (0.00167)
    far = SB.side_by_side({"animal-all": "y"}, reader=lambda rev: _run(rev, per_image_psnr=(20.0, 20.0)))
    assert next(r for r in far if r["setting"] == "animal-all")["verdict"] == "not reproduced"  # 0.01: beyond


def test_bad_settings_and_missing_figures_are_named():
    with pytest.raises(ValueError, match="unknown setting"):
        SB.side_by_side({"celeba-64": "x"}, reader=_run)
    broken = _run("z")
    del broken["evaluate"]["conv_ae"]
    with pytest.raises(KeyError, match="conv_ae.multi.psnr"):
        SB.side_by_side({"celeba-256-noise": "z"}, reader=lambda rev: broken)
    empty = _run("z")
    empty["details"] = {"per_image": {}}
    with pytest.raises(KeyError, match="fcn_ae.base"):
        SB.side_by_side({"animal-fcn": "z"}, reader=lambda rev: {**empty, "details": {"per_image": {}}})


def test_written_files(tmp_path):
    rows = SB.side_by_side({"celeba-256-noise": "exp-a"}, reader=_run)
    md, js = SB.write(rows, tmp_path)
    text = md.read_text()
    assert "| study | figure | theirs | ours |" in text and "**not run here**" in text
    assert "`celeba-256-noise`: exp-a (aaaaaaa)" in text
    data = json.loads(js.read_text())
    assert len(data["rows"]) == len(SB.FIGURES)
    assert all(r["ours"] is None or math.isfinite(r["ours"]) for r in data["rows"])


def test_cli_refuses_a_malformed_run(tmp_path, capsys):
    assert main(["side-by-side", "--run", "celeba-256-noise", "--out", str(tmp_path)]) == 2
    assert "expected SETTING=REV" in capsys.readouterr().err
    assert main(["side-by-side", "--run", "nope=abc", "--out", str(tmp_path)]) == 2
    assert "unknown setting" in capsys.readouterr().err
    assert not (tmp_path / "side_by_side.md").exists()  # nothing written


def test_cli_without_runs_lists_every_figure_as_not_run(tmp_path, capsys):
    assert main(["side-by-side", "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert out.count("not run here") == len(SB.FIGURES)
    assert np.all([line.strip() for line in out.splitlines()])


def test_the_docs_show_the_committed_table():
    """docs/studies.md holds reports/side_by_side.md's table as written (no hand-edited figure)."""
    repo = Path(__file__).resolve().parents[1]
    md = (repo / "reports" / "side_by_side.md").read_text()
    table = md[md.index("| study |"):md.index("\n\nRuns:")]
    assert table in (repo / "docs" / "studies.md").read_text()
    rows = json.loads((repo / "reports" / "side_by_side.json").read_text())["rows"]
    assert [r["what"] for r in rows] == [f.what for f in SB.FIGURES]  # written by the figures now
