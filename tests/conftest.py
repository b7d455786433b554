"""Tests run with one torch thread: on tiny tensors extra threads only add contention
(and the suite itself may run in parallel processes)."""

import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))  # tests/helpers.py, tests/pipeline_utils.py


@pytest.fixture(autouse=True)
def _one_thread():
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def pytest_collection_modifyitems(config, items):
    """The pipeline tests first: each file is a minute-long chain on one worker, so
    starting them at once lets the unit tests fill the other worker and the gaps
    (``./run.sh test`` keeps this order with ``--no-loadscope-reorder``)."""
    items.sort(key=lambda item: item.get_closest_marker("pipeline") is None)
