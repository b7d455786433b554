#!/usr/bin/env bash
# aerestore in one command, on a fresh clone:
#   ./run.sh repro   set up .venv, then `dvc repro` the pipeline and print the summary table
#   ./run.sh test    set up .venv (with the test extras), then run the whole test suite
#   ./run.sh docs    set up .venv (with the docs extra), then build the documentation site
#                    (sphinx-build -W: a warning, e.g. a broken link, fails) in docs/_build/html
# Extra arguments go to dvc repro / pytest. Set-up is skipped when nothing changed.
set -euo pipefail
cd "$(dirname "$0")"
export NO_ALBUMENTATIONS_UPDATE=1   # albumentations' import would check the network for updates

setup() {
  local py="${PYTHON:-}"
  if [ -z "$py" ]; then
    if command -v python3.11 >/dev/null; then py=python3.11; else py=python3; fi
  fi
  if [ ! -x .venv/bin/python ]; then
    echo "==> creating .venv with $($py --version)"
    "$py" -m venv .venv
  fi
  # shellcheck disable=SC1091
  . .venv/bin/activate
  local stamp=.venv/.aerestore-setup want
  want="$(cat pyproject.toml run.sh | sha256sum | cut -c1-16)"
  if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
    echo "==> installing torch 2.13.0 (CPU build) first, then aerestore and its dependencies"
    python -m pip install -q --upgrade pip
    # torch first, pinned: an open range would pull several GB of CUDA packages
    python -m pip install -q torch==2.13.0
    python -m pip install -q -e '.[test,bm3d]'
    echo "$want" > "$stamp"
  fi
  if [ ! -d .git ]; then
    echo "error: $(pwd) is not a git clone; DVC experiments need git (git init && git add -A && git commit)" >&2
    exit 1
  fi
  # one process creates the MLflow database before stages can run in parallel
  aerestore init-store
}

cmd="${1:-}"
[ $# -gt 0 ] && shift
case "$cmd" in
  repro)
    setup
    dvc repro "$@"
    echo
    aerestore summary
    echo
    echo "Next: source .venv/bin/activate, then dvc exp run -S latent=1000, dvc exp show, dvc metrics diff, dvc plots show"
    ;;
  test)
    setup
    # two workers; a test file stays on one worker (the pipeline tests share a module
    # fixture), in collection order: the long pipeline files first (tests/conftest.py)
    python -m pytest -n "${PYTEST_WORKERS:-2}" --dist loadfile --no-loadscope-reorder "$@"
    ;;
  docs)
    setup
    # the docs extra (Sphinx, MyST) on top of the set-up, once per pyproject.toml
    docs_stamp=.venv/.aerestore-docs
    docs_want="$(sha256sum pyproject.toml | cut -c1-16)"
    if [ "$(cat "$docs_stamp" 2>/dev/null)" != "$docs_want" ]; then
      echo "==> installing the docs extra (sphinx, myst-parser)"
      python -m pip install -q -e '.[docs]'
      echo "$docs_want" > "$docs_stamp"
    fi
    # from scratch each time, so that a warning of an unchanged page is not hidden
    rm -rf docs/_build docs/api
    python -m sphinx -W --keep-going -b html docs docs/_build/html "$@"
    echo "==> open docs/_build/html/index.html"
    ;;
  *)
    echo "usage: ./run.sh repro [dvc repro args] | ./run.sh test [pytest args] | ./run.sh docs [sphinx-build args]" >&2
    exit 2
    ;;
esac
