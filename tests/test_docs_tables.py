"""The results tables of README.md and docs/results.md are the committed metrics
(issue 23: "the README's results tables are generated from the metrics files by a command,
and a test checks that every figure in those tables equals the committed metrics")."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
import yaml

from aerestore import cli, docs_tables
from aerestore.studies.revisions import read_revision

ROOT = Path(__file__).resolve().parents[1]
SUMMARY = ROOT / "metrics/summary.md"


def test_the_summary_is_the_evaluate_stage_output_that_dvc_lock_records():
    """A hand-edited or stale summary.md (not the one the last `dvc repro` wrote and locked)
    fails here, so the tables below can only hold figures a pipeline run computed."""
    lock = yaml.safe_load((ROOT / "dvc.lock").read_text())
    outs = {o["path"]: o for o in lock["stages"]["evaluate"]["outs"]}
    for rel in ("metrics/summary.md", "metrics/evaluate.json"):
        assert hashlib.md5((ROOT / rel).read_bytes()).hexdigest() == outs[rel]["md5"], rel


def committed_summary() -> str:
    """metrics/summary.md as committed (git HEAD). The README's two commands run `dvc repro`
    before the tests, and a rerun of evaluate on another machine rewrites the workspace's
    summary with that machine's speeds (Mpx/s): the docs hold the committed figures, so they
    are compared with the committed file. Outside a git checkout: the file on disk."""
    try:  # the project's one revision reader (DVC's API over git)
        return read_revision("HEAD", ["metrics/summary.md"], ROOT)[1]["metrics/summary.md"]
    except ValueError:  # not a git checkout
        return SUMMARY.read_text()


@pytest.mark.parametrize("page", docs_tables.PAGES)
def test_every_results_table_equals_the_committed_summary(page):
    text = (ROOT / page).read_text()
    assert docs_tables.BLOCK.search(text), f"{page} has no generated results block"
    assert docs_tables.sync(text, committed_summary()) == text, (
        f"{page}: its results table is not metrics/summary.md's: run `aerestore summary --sync-docs`")


SUMMARY_TEXT = """## aerestore: 3 test images

| restorer | PSNR |
|---|---:|
| a | 1.00 |

Best classical: **tv**.

| architecture | psnr |
|---|---:|
| x | 60% |
"""


def test_blocks_take_the_first_tables_or_all_and_a_changed_figure_is_caught(tmp_path, monkeypatch):
    (tmp_path / "docs").mkdir()
    summary = tmp_path / "summary.md"
    summary.write_text(SUMMARY_TEXT)
    (tmp_path / "README.md").write_text("intro\n<!-- summary:begin tables=1 -->\nold\n<!-- summary:end -->\nafter\n")
    (tmp_path / "docs/results.md").write_text("<!-- summary:begin tables=all -->\n<!-- summary:end -->\n")
    monkeypatch.chdir(tmp_path)
    assert cli.main(["summary", "--path", str(summary), "--check"]) == 1
    assert cli.main(["summary", "--path", str(summary), "--sync-docs"]) == 0
    assert (tmp_path / "README.md").read_text() == (
        "intro\n<!-- summary:begin tables=1 -->\n| restorer | PSNR |\n|---|---:|\n| a | 1.00 |\n"
        "<!-- summary:end -->\nafter\n")
    assert "Best classical: **tv**." in (tmp_path / "docs/results.md").read_text()
    assert "## aerestore" not in (tmp_path / "docs/results.md").read_text()
    assert cli.main(["summary", "--path", str(summary), "--check"]) == 0
    # a figure typed by hand into the README is caught
    readme = tmp_path / "README.md"
    readme.write_text(readme.read_text().replace("1.00", "1.50"))
    assert docs_tables.stale_pages(tmp_path, summary) == ["README.md"]


def test_a_block_asking_for_more_tables_than_the_summary_has_names_it():
    with pytest.raises(ValueError, match="has 2 table"):
        docs_tables.block_text(SUMMARY_TEXT, "3")
