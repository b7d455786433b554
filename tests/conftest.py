"""Tests run with one torch thread: on tiny tensors extra threads only add contention
(and the suite itself may run in parallel processes)."""

import atexit
import os
import shutil
import sys
import tempfile
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))  # tests/helpers.py, tests/pipeline_utils.py

# unet_ae restorers run in PyTorch in the tests (and in the CLI and stages they start): each
# new set of weights would cost ~2 s of OpenVINO conversion. tests/test_ovruntime.py checks
# the OpenVINO path against this one. Its cache of converted graphs goes to a temporary folder,
# one per test process (the xdist controller and each worker import this file), removed when
# that process exits: before, every suite left three of them in /tmp.
os.environ["AERESTORE_RUNTIME"] = "torch"
os.environ["AERESTORE_CACHE"] = tempfile.mkdtemp(prefix="aerestore-test-cache-")
atexit.register(shutil.rmtree, os.environ["AERESTORE_CACHE"], ignore_errors=True)


@pytest.fixture(autouse=True)
def _one_thread():
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


# Seconds a file takes on one worker of a quiet 2-core machine (`--durations=0`, this
# round), for the files over 5 s: the longest start first, so that no long file is left
# for the end while the other worker idles. Files not listed count as short.
SECONDS = {
    "test_faults.py": 43, "test_restore_quality.py": 30, "test_distributed.py": 27,
    "test_tracking.py": 25, "test_mlflow_model.py": 14, "test_chain.py": 12,
    "test_latent_sizes.py": 9, "test_seeds.py": 6, "test_damage_head.py": 6, "test_ovruntime.py": 18,
    "test_explore_stage.py": 8, "test_mlflow_auth.py": 70,  # a team file: before the shorter test_dvc_remote.py
}


def pytest_collection_modifyitems(config, items):
    """The pipeline tests first: each file is a minute-long chain on one worker, so
    starting them at once lets the unit tests fill the other worker and the gaps; then
    the other files, longest first (``./run.sh test`` keeps this order with
    ``--no-loadscope-reorder``; sorting is stable, so a file's tests keep their order)."""
    items.sort(key=lambda item: (item.get_closest_marker("pipeline") is None,
                                 -SECONDS.get(item.path.name, 0)))
