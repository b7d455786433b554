"""Reproducibility (README "Reproducibility"): the thread count a stage computes with is
fixed by ``runtime.threads``, not by the machine's cores; every stage that computes records
the machine; two trainings with the same seed and threads give bit-identical weights."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import pytest
import torch
import yaml

from aerestore import stage as S
from aerestore.params import RuntimeParams, TrainParams

ROOT = Path(__file__).resolve().parents[1]
# the stages that compute with floats, and the file each records its machine in
COMPUTING = {"train": "train_${item.arch}", "cluster": "cluster_${item.arch}",
             "decoders": "decoders_${item.arch}", "evaluate": "evaluate",
             "explore": "explore_${item.arch}"}  # its chained AE (explore.chain) trains


@pytest.fixture
def cores(monkeypatch):
    """Pretend the machine has ``n`` cores: ``cores(16)``."""
    import aerestore.tracks.blocks.train as T

    def set_cores(n: int) -> None:
        monkeypatch.setattr(S.os, "sched_getaffinity", lambda pid: set(range(n)), raising=False)
        monkeypatch.setattr(S, "cpu_count", lambda: n)
        monkeypatch.setattr(T, "cpu_count", lambda: n)

    return set_cores


def test_the_default_thread_count_is_fixed_in_params_and_schema():
    committed = yaml.safe_load((ROOT / "params.yaml").read_text())["runtime"]["threads"]
    assert committed == RuntimeParams().threads == 2


@pytest.mark.parametrize("n", [1, 2, 16])
def test_a_stage_uses_the_same_threads_on_any_number_of_cores(cores, n):
    cores(n)
    assert S.cpu_count() == n
    assert S.set_threads(RuntimeParams().threads) == 2 and torch.get_num_threads() == 2
    assert S.machine_info()["threads"] == 2 and S.machine_info()["cores"] == n
    # 0 still means every core (the results then depend on the machine)
    assert S.set_threads(0) == n


def test_training_uses_the_param_not_the_cores(cores):
    from helpers import block_data, tiny_model

    from aerestore.tracks.blocks.train import fit

    data = block_data(n_images=1)
    cores(16)
    fit(tiny_model(), data, data, TrainParams(batch_size=32, blocks={"epochs": 1, "per_epoch": 32}), seed=0, progress=False,
        runtime=RuntimeParams())
    assert torch.get_num_threads() == 2


def test_every_computing_stage_sets_the_threads_records_the_machine_and_declares_both():
    """The stages' library functions (aerestore.pipeline, which the scripts call) call
    set_threads with the param (training: inside fit / fit_crops) and record_machine;
    dvc.yaml lists runtime.threads as a param of each and the record as an out."""
    dvc = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    for stage, record in COMPUTING.items():
        script = (ROOT / "src/aerestore/pipeline" / f"{stage}.py").read_text()
        if stage == "train":
            for lib in ("tracks/blocks/train.py", "tracks/images/train.py"):
                assert re.search(r"set_threads\(process_threads\(runtime\.threads", (ROOT / "src/aerestore" / lib).read_text()), lib
        else:
            assert re.search(r"set_threads\(params\.runtime\.threads\)", script), stage
        calls = re.findall(r"record_machine\(f?\"([^\"]+)\"", script)
        assert calls and set(calls) == {record.replace("${item.arch}", "{arch}")}, (stage, calls)
        declared = [p if isinstance(p, str) else next(iter(p)) for p in dvc[stage]["params"]]
        assert "runtime.threads" in declared, stage
        outs = [next(iter(o)) if isinstance(o, dict) else o for o in dvc[stage]["outs"]]
        assert f"metrics/machine/{record}.json" in outs, stage


def test_the_machine_record_is_written_and_tagged(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    tagged = {}

    class Run:  # aerestore.tracking.StageRun, as far as record_machine uses it
        run_id = "r1"

        def set_tags(self, tags):
            tagged.update({k: str(v) for k, v in tags.items()}, run_id=self.run_id)

    S.set_threads(2)
    info = S.record_machine("train_conv_ae", Run())
    written = json.loads((tmp_path / "metrics/machine/train_conv_ae.json").read_text())
    assert written == info
    for key in ("cpu", "isa", "cores", "threads", "torch", "numpy", "python"):
        assert key in info, key
    assert info["threads"] == 2 and info["torch"] == torch.__version__
    assert tagged["run_id"] == "r1" and tagged["machine.cpu"] == info["cpu"] and tagged["machine.threads"] == "2"
    # the same machine writes the same record (no time stamps): a rerun changes nothing in git
    S.record_machine("again", None)
    assert (tmp_path / "metrics/machine/again.json").read_bytes() == (
        tmp_path / "metrics/machine/train_conv_ae.json").read_bytes()


def _train_blocks(threads: int, before_fit=None) -> dict[str, torch.Tensor]:
    from helpers import block_data, tiny_model

    from aerestore.tracks.blocks.train import fit

    data = block_data(n_images=2)
    model = tiny_model(latent=16)  # its dummy forward pass runs with the caller's threads
    if before_fit:
        before_fit()
    fit(model, data, data, TrainParams(batch_size=32, blocks={"epochs": 2, "patience": 0}), seed=5,
        progress=False, runtime=RuntimeParams(threads=threads))
    return model.state_dict()


def _train_crops(threads: int) -> dict[str, torch.Tensor]:
    from test_unet_ae import images, small

    from aerestore.tracks.images.train import fit_crops

    model = small()
    cfg = TrainParams(batch_size=6, lr=2e-3, crops={"size": 16, "steps": 6, "eval_every": 3})
    fit_crops(model, images(), images(2, seed=1), cfg, seed=3, progress=False,
              runtime=RuntimeParams(threads=threads, device="cpu"))
    return model.state_dict()


@pytest.mark.parametrize("train", [_train_blocks, _train_crops], ids=["blocks", "crops"])
def test_same_seed_and_threads_give_bit_identical_weights(train):
    a, b = train(2), train(2)
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key  # bit for bit, not approximately


@pytest.mark.parametrize("threads", [1, 2])
def test_training_computes_with_the_thread_count_it_is_given(threads, monkeypatch):
    """What the code promises: ``fit`` computes with exactly ``runtime.threads`` threads,
    whatever the process had before (the conftest sets 1), so that the count is fixed by
    the param and recorded, not by the machine."""
    seen: list[int] = []
    real = torch.nn.Module.__call__

    def spy(self, *args, **kwargs):
        seen.append(torch.get_num_threads())
        return real(self, *args, **kwargs)

    def watch():
        torch.set_num_threads(3 - threads)  # the other count, so that the test sees a change
        monkeypatch.setattr(torch.nn.Module, "__call__", spy)

    _train_blocks(threads, before_fit=watch)
    assert seen and set(seen) == {threads}


def test_another_thread_count_gives_the_same_weights_up_to_rounding():
    """Another thread count may split the sums differently (on AVX-512 machines 1 and 2
    threads differ by ~1e-7; on some AVX2-only CPUs they are bit-identical): which of the
    two happens is a property of the CPU and its BLAS, not of our code, so it is not
    asserted. What holds on any CPU is that the difference is rounding, not another
    training."""
    a, b = _train_blocks(1), _train_blocks(2)
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-4, atol=1e-5)


def test_the_same_weights_give_the_same_model_file_bytes(tmp_path):
    """DVC hashes model.pt: a retrain that changes no weight must not change the file (and
    rerun everything after it). torch.save given a path would name its archive after the
    random temporary name."""
    from helpers import tiny_model

    from aerestore.models import save_model

    model = tiny_model(latent=16)
    save_model(model, tmp_path / "a" / "model.pt")
    save_model(model, tmp_path / "b" / "model.pt")
    assert (tmp_path / "a" / "model.pt").read_bytes() == (tmp_path / "b" / "model.pt").read_bytes()
