"""The documentation: a short README, and no broken link in it or in the pages of docs/.

Checks every relative link and ``#anchor`` of README.md, CHANGELOG.md and docs/*.md against
the files and the headings' GitHub-style anchors (the ones GitHub and MyST's
``myst_heading_anchors`` both give), so a broken link fails the tests even without Sphinx
installed; ``./run.sh docs`` (CI) builds the site with ``sphinx-build -W`` on top."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
DOCS = REPO / "docs"
PAGES = sorted([REPO / "README.md", REPO / "CHANGELOG.md", *DOCS.glob("*.md")])

FENCE = re.compile(r"^(```|~~~)")
HEADING = re.compile(r"^(#{1,6})\s+(.+?)\s*#*\s*$")
# [text](target) and ![alt](target); the text may span lines, the target may not
LINK = re.compile(r"\]\(([^()\s]+)(?:\s+\"[^\"]*\")?\)")
EXTERNAL = re.compile(r"^[a-z][a-z0-9+.-]*:", re.I)


def _prose(text: str) -> str:
    """The text without fenced code blocks and inline code (no links are read there)."""
    out, fenced = [], False
    for line in text.split("\n"):
        if FENCE.match(line.lstrip()):
            fenced = not fenced
            out.append("")
            continue
        out.append("" if fenced else line)
    return re.sub(r"`[^`\n]*`", "", "\n".join(out))


def github_slug(title: str) -> str:
    """GitHub's heading anchor (MyST's ``github`` slug): lowercase, spaces to hyphens,
    drop everything but word characters, hyphens and spaces; inline code keeps its text."""
    title = re.sub(r"`([^`]*)`", r"\1", title)
    title = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", title)  # a link keeps its text
    return re.sub(r"[^\w\u4e00-\u9fff\- ]", "", title.lower().replace(" ", "-"))


def anchors(path: Path) -> set[str]:
    """Every heading anchor of a Markdown file, with GitHub's -1, -2 for repeated titles."""
    seen: dict[str, int] = {}
    out = set()
    fenced = False
    for line in path.read_text().split("\n"):
        if FENCE.match(line.lstrip()):
            fenced = not fenced
            continue
        m = None if fenced else HEADING.match(line)
        if m:
            slug = github_slug(m.group(2))
            n = seen.get(slug, 0)
            seen[slug] = n + 1
            out.add(slug if n == 0 else f"{slug}-{n}")
    return out


def links(path: Path) -> list[str]:
    return LINK.findall(_prose(path.read_text()))


def test_readme_is_at_most_300_lines():
    lines = (REPO / "README.md").read_text().count("\n")
    assert lines <= 300, f"README.md has {lines} lines; move detail to a page of docs/"


def test_github_slugs():
    assert github_slug("Quick start: two commands") == "quick-start-two-commands"
    assert github_slug("Quality against training minutes (`bench_budget.py`)") == \
        "quality-against-training-minutes-bench_budgetpy"
    assert github_slug("`explore@<arch>`: the grids as DVC plots and in MLflow") == \
        "explorearch-the-grids-as-dvc-plots-and-in-mlflow"


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(REPO)))
def test_every_relative_link_and_anchor_resolves(page):
    broken = []
    for target in links(page):
        if EXTERNAL.match(target):
            continue
        file, _, anchor = target.partition("#")
        dest = (page.parent / file).resolve() if file else page
        if not dest.exists():
            broken.append(f"{target}: no file {dest.relative_to(REPO) if dest.is_relative_to(REPO) else dest}")
        elif anchor and dest.suffix == ".md" and anchor not in anchors(dest):
            broken.append(f"{target}: no heading with that anchor in {dest.relative_to(REPO)}")
        elif anchor and dest.suffix != ".md":
            broken.append(f"{target}: an anchor into a file that is not Markdown")
    assert not broken, f"{page.relative_to(REPO)}: broken links:\n" + "\n".join(broken)


def test_the_readme_map_lists_every_page_and_each_exists():
    readme = (REPO / "README.md").read_text()
    section = readme.split("## Documentation", 1)[1].split("\n## ", 1)[0]
    listed = {t.partition("#")[0] for t in LINK.findall(section) if t.startswith("docs/")}
    assert listed, "the README's map of the docs lists no page"
    for target in listed:
        assert (REPO / target).is_file(), f"the README's map lists {target}, which does not exist"
    pages = {f"docs/{p.name}" for p in DOCS.glob("*.md")} - {"docs/index.md", "docs/api.md", "docs/changelog.md"}
    assert pages <= listed, f"pages missing from the README's map: {sorted(pages - listed)}"


def test_the_site_index_lists_every_page():
    index = (DOCS / "index.md").read_text()
    toctree = set(re.findall(r"^([a-z0-9_]+)$", index, re.M))
    pages = {p.stem for p in DOCS.glob("*.md")} - {"index"}
    assert pages <= toctree, f"pages missing from docs/index.md's toctree: {sorted(pages - toctree)}"


def test_a_broken_link_is_caught(tmp_path):
    page = tmp_path / "page.md"
    page.write_text("# Title\n\n## A section\n\n[ok](#a-section) [bad](#no-such) [gone](missing.md)\n"
                    "```\n[in code](#not-checked)\n```\n")
    assert links(page) == ["#a-section", "#no-such", "missing.md"]
    assert anchors(page) == {"title", "a-section"}
