"""Sphinx configuration of the aerestore documentation site (MyST Markdown pages).

Build: ``./run.sh docs`` (sets up .venv with the docs extra), or
``sphinx-build -W -b html docs docs/_build/html`` in the activated venv. No network is
needed: no intersphinx, no remote images.
"""

import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))
# albumentations' import would check the network for updates
os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

project = "aerestore"
author = "the aerestore authors"
copyright = "the aerestore authors, MIT licence"

extensions = [
    "myst_parser",
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.napoleon",
]

source_suffix = {".md": "markdown", ".rst": "restructuredtext"}
root_doc = "index"
exclude_patterns = ["_build", "Thumbs.db", ".DS_Store", "peers/*.md", "faces_run/*.md", "benchmarks/*.md"]  # raw tables: every .md under peers/ is a benchmark's (shown on peers.md), the faces run (results.md), benchmarks/ (evaluation.md)

# MyST: GitHub-style anchors on headings down to ###, so that `page.md#anchor` links
# (the same ones GitHub resolves) resolve in the site too
myst_heading_anchors = 3
myst_enable_extensions = ["colon_fence"]

# the pages' code blocks are shell sessions and tables, not Python
highlight_language = "none"
# a shell line with a placeholder (`<the recipe's other -S>`) is still shown, unhighlighted
suppress_warnings = ["misc.highlighting_failure"]

# API reference: autosummary writes one page per module into api/ at build time
autosummary_generate = True
autosummary_imported_members = False
# ignore-module-all: a package that re-exports its submodules' names in __all__ (aerestore.params)
# would document them twice and make every cross-reference to them ambiguous
autodoc_default_options = {"members": True, "show-inheritance": True, "ignore-module-all": True}
autodoc_member_order = "bysource"
autodoc_typehints = "description"
# not the docstrings of other packages' base classes (MLflow's refer to its own site)
autodoc_inherit_docstrings = False
add_module_names = False

html_theme = "alabaster"
html_title = "aerestore"
html_theme_options = {"description": "Autoencoders that restore degraded images"}


def _blank_line_before_lists(app, what, name, obj, options, lines):
    """Docstrings write Markdown-style lists straight after their ``Modes:`` line; reST
    needs a blank line there. Inserted here rather than in the modules: a module's text is
    a DVC dependency of its stages, so editing it would make them rerun."""
    i = 1
    while i < len(lines):
        if lines[i].lstrip().startswith(("- ", "* ")) and lines[i - 1].rstrip().endswith(":"):
            lines.insert(i, "")
            i += 1
        i += 1


def setup(app):
    app.connect("autodoc-process-docstring", _blank_line_before_lists)
