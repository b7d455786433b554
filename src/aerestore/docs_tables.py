"""The results tables of README.md and docs/results.md, copied from the evaluate stage's
``metrics/summary.md`` by a command, never typed by hand.

A page holds a block between two markers::

    <!-- summary:begin tables=1 -->
    ...generated...
    <!-- summary:end -->

``tables=1`` copies the summary's first table (and the paragraph just above none: only
the table); ``tables=all`` copies the whole summary but its title line. ``aerestore summary
--sync-docs`` rewrites every block from the committed summary; ``--check`` says which block
is stale. ``tests/test_docs_tables.py`` fails when a block differs from the summary, and
when the summary is not the one ``dvc.lock`` records for the evaluate stage (so a figure in
the README can only come from a pipeline run of the committed code).
"""

from __future__ import annotations

import re
from pathlib import Path

PAGES = ("README.md", "docs/results.md")
BLOCK = re.compile(r"(<!-- summary:begin tables=(\w+) -->\n)(.*?)(<!-- summary:end -->)", re.S)


def tables(summary: str) -> list[str]:
    """The Markdown tables of ``summary``, each as its lines joined (a run of lines that
    start with ``|``)."""
    found, current = [], []
    for line in summary.splitlines():
        if line.startswith("|"):
            current.append(line)
        elif current:
            found.append("\n".join(current))
            current = []
    if current:
        found.append("\n".join(current))
    return found


def block_text(summary: str, which: str) -> str:
    """What a block with ``tables=<which>`` holds, from the summary's text."""
    if which == "all":
        lines = summary.splitlines()
        body = lines[1:] if lines and lines[0].startswith("#") else lines
        return "\n".join(body).strip("\n") + "\n"
    if which.isdigit() and int(which) >= 1:
        found = tables(summary)
        if len(found) < int(which):
            raise ValueError(f"the summary has {len(found)} table(s), a block asks for table {which}")
        return "\n\n".join(found[: int(which)]) + "\n"
    raise ValueError(f"unknown block kind tables={which!r}: a number of tables, or all")


def sync(text: str, summary: str) -> str:
    """``text`` with every block rewritten from ``summary``."""
    return BLOCK.sub(lambda m: m.group(1) + block_text(summary, m.group(2)) + m.group(4), text)


def stale_pages(root: Path, summary_path: Path) -> list[str]:
    """The pages (of :data:`PAGES`) whose blocks differ from the summary's."""
    summary = summary_path.read_text()
    stale = []
    for rel in PAGES:
        page = root / rel
        if page.exists() and BLOCK.search(page.read_text()) and sync(page.read_text(), summary) != page.read_text():
            stale.append(rel)
    return stale


def write_pages(root: Path, summary_path: Path) -> list[str]:
    """Rewrite the stale pages' blocks; -> the pages changed."""
    summary = summary_path.read_text()
    changed = stale_pages(root, summary_path)
    for rel in changed:
        page = root / rel
        page.write_text(sync(page.read_text(), summary))
    return changed
