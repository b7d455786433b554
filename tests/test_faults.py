"""Faults while the pipeline runs: a loss that diverges, a full disk, a stage killed with
``kill -9``, two ``dvc repro`` at once. Each fails with a message that names the culprit,
and nothing already written is lost.

The loops and writers are tested directly (seconds); one tiny pipeline (one architecture,
up to ``train@conv_ae``) runs the real ``dvc repro`` for what only the whole chain can
show: the stage's MLflow run, DVC's lock, and the rerun after a kill.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch

from aerestore import io as aio
from aerestore.losses import LossDiverged
from aerestore.params import RuntimeParams, TrainParams

# ------------------------------------------------------------------ a diverging loss


def nan_at(model, call: int, term: str, value: float = float("nan")):
    """Make ``model.loss`` return ``value`` for ``term`` from its ``call``-th call on."""
    loss, calls = model.loss, [0]

    def patched(batch):
        calls[0] += 1
        terms = loss(batch)
        if calls[0] >= call:
            terms[term] = terms[term] * value
            terms["loss"] = terms["loss"] + terms[term]
        return terms

    model.loss = patched
    return model


def test_block_training_stops_at_the_batch_and_term_that_diverged():
    from helpers import block_data, tiny_model

    from aerestore.tracks.blocks.train import fit

    data = block_data()
    cfg = TrainParams(batch_size=16, blocks={"epochs": 3})  # 5 batches an epoch
    model = nan_at(tiny_model("vae"), call=7, term="kl", value=float("inf"))
    with pytest.raises(LossDiverged, match=r"vae epoch 2, batch 1 of 5: loss term 'kl' is inf .*train\.lr"):
        fit(model, data, data, cfg, seed=0, progress=False, runtime=RuntimeParams(threads=1))
    # a real divergence: a learning rate far too high
    with pytest.raises(LossDiverged, match=r"conv_ae epoch 1, batch 2 of 5: loss term 'recon' is nan"):
        fit(tiny_model(), data, data, TrainParams(batch_size=16, lr=1e30, blocks={"epochs": 1}), seed=0,
            progress=False, runtime=RuntimeParams(threads=1))


def test_crop_training_stops_at_the_step_and_term_that_diverged():
    from test_unet_ae import images, small

    from aerestore.tracks.images.train import fit_crops

    cfg = TrainParams(batch_size=2, crops={"size": 16, "steps": 4, "eval_every": 4})
    from aerestore.losses import LossConfig

    model = nan_at(small(loss=LossConfig(damage_weight=0.1)), call=3, term="damage")
    with pytest.raises(LossDiverged, match=r"unet_ae step 3 of 4: loss term 'damage' is nan"):
        fit_crops(model, images(), images(2, seed=1), cfg, seed=0, progress=False, runtime=RuntimeParams(threads=1))


def test_decoder_fine_tuning_stops_at_the_update_that_diverged():
    from aerestore.tracks.blocks.decoders import train_decoder

    torch.manual_seed(0)
    decoder = torch.nn.Sequential(torch.nn.Linear(4, 3 * 4 * 4), torch.nn.Unflatten(1, (3, 4, 4)))
    z = torch.randn(32, 4)
    clean = np.random.default_rng(0).integers(0, 256, (32, 3, 4, 4), dtype=np.uint8)
    with pytest.raises(LossDiverged, match=r"decoder 0, block update 16: loss term 'mse' is inf.*decoders\.lr \(1e\+30\)"):
        train_decoder(decoder, z, clean, 64, 8, 1e30, np.random.default_rng(0), None, 64, "decoder 0", False)


def test_map_decoder_and_gate_fine_tuning_stop_at_the_step_that_diverged(monkeypatch, tmp_path):
    from test_unet_ae import _save, images, small

    import aerestore.gate as G
    import aerestore.tracks.images.decoders as MD
    import aerestore.tracks.images.gate_decoders as GD
    from aerestore.restore import Restorer

    data = images()
    k = _save(tmp_path, small().eval(), data, "damage_head")
    restorer = Restorer.load(tmp_path, decoders=False)
    recon = MD.weighted_recon
    calls = [0]

    def diverging(*args, **kw):
        calls[0] += 1
        # the 2k + 1 decoders (clusters, ensemble, control) step in lockstep: call 2k + 2 is
        # decoder 0's second step
        return recon(*args, **kw) * (float("nan") if calls[0] >= 2 * k + 2 else 1.0)

    monkeypatch.setattr(MD, "weighted_recon", diverging)
    with pytest.raises(LossDiverged, match=r"decoder 0, step 2 of 3: loss term 'psnr' is nan"):
        MD.train_map_decoders(restorer.model, restorer.route_maps, k, data, images(2, seed=1), steps=3, lr=1e-3,
                              batch_size=2, crop=16, eval_every=3, min_locations=1, seed=0, sizes=[10] * k,
                              progress=False, recon="psnr")
    monkeypatch.setattr(MD, "weighted_recon", recon)
    monkeypatch.setattr(G, "balance_loss", lambda g: g.sum() * float("inf"))
    with pytest.raises(LossDiverged, match=r"gate \+ 3 decoders, step 1 of 3: loss term 'balance' is inf"
                                           r".*decoders\.gate_lr"):
        GD.train_gate_decoders(restorer.model, G.Gate.from_damage_head(restorer.model), data, images(2, seed=1),
                               steps=3, lr=1e-3, gate_lr=1e-2, balance=0.01, batch_size=2, crop=16, eval_every=3,
                               seed=0, progress=False)


# ------------------------------------------------------------------ a full disk


def no_space(*args, **kwargs):
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def leftovers(folder) -> list[str]:
    return sorted(p.name for p in folder.rglob("*") if p.name.endswith((".tmp", ".old")))


def test_full_disk_while_saving_a_model_keeps_the_previous_one(tmp_path, monkeypatch, capsys):
    from helpers import tiny_model

    from aerestore.models import save_model

    path = tmp_path / "models" / "conv_ae" / "model.pt"
    save_model(tiny_model(), path, extra={"arch": "conv_ae"})
    before = path.read_bytes()
    monkeypatch.setattr(torch, "save", no_space)
    with pytest.raises(OSError, match=rf"disk is full while writing {path}; the previous model.pt") as err:
        save_model(tiny_model(seed=1), path, extra={"arch": "conv_ae"})
    assert err.value.errno == errno.ENOSPC
    assert path.read_bytes() == before and leftovers(tmp_path) == []

    # torch's own writer reports a full disk as a RuntimeError: named as one when the disk is full
    def torch_full(obj, f, *args, **kwargs):
        raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 704 vs 598")

    monkeypatch.setattr(torch, "save", torch_full)
    monkeypatch.setattr(aio.shutil, "disk_usage", lambda folder: type("U", (), {"free": 4096})())
    # what the stage prints (relative paths, as the stages write them)
    from aerestore.stage import main
    from pipeline_utils import REPO

    monkeypatch.setenv("AERESTORE_PARAMS", str(REPO / "params.yaml"))
    monkeypatch.delenv("AERESTORE_DEBUG", raising=False)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as exit_:
        main("train", lambda params, args: save_model(tiny_model(seed=1), path.relative_to(tmp_path)), [])
    assert exit_.value.code == 2
    assert capsys.readouterr().err.splitlines()[0] == (
        "error in stage train: OSError: [Errno 28] No space left on device: the disk is full while writing "
        "models/conv_ae/model.pt; the previous model.pt, if any, is kept (free some space and rerun)")
    assert path.read_bytes() == before and leftovers(tmp_path) == []


def test_full_disk_while_writing_json_metrics_keeps_the_previous_file(tmp_path, monkeypatch):
    path = tmp_path / "metrics" / "train" / "conv_ae.json"
    aio.write_json(path, {"best_val_loss": 0.01})
    monkeypatch.setattr(aio.Path, "write_text", no_space)
    with pytest.raises(OSError, match=rf"\[Errno 28\] No space left on device: the disk is full while writing "
                                      rf"{path}; the previous conv_ae.json, if any, is kept"):
        aio.write_json(path, {"best_val_loss": 0.02})
    assert json.loads(path.read_text()) == {"best_val_loss": 0.01} and leftovers(tmp_path) == []


def test_full_disk_while_writing_a_folder_keeps_the_previous_folder(tmp_path, monkeypatch):
    out = tmp_path / "data" / "blocks"
    with aio.atomic_dir(out) as tmp:
        np.save(tmp / "clean.npy", np.arange(4))
    # NpyWriter reserves its file when opened: a full disk fails there, not as SIGBUS mid-write
    monkeypatch.setattr(aio.os, "posix_fallocate", no_space)
    with pytest.raises(OSError, match=rf"disk is full while writing {out} \(at train/clean.npy\); "
                                      r"the previous blocks, if any, is kept"):
        with aio.atomic_dir(out) as tmp:
            with aio.NpyWriter(tmp / "train" / "clean.npy", (8, 3)) as w:
                w.write(0, np.zeros((8, 3), np.uint8))
    assert sorted(p.name for p in out.iterdir()) == ["clean.npy"]
    assert np.load(out / "clean.npy").tolist() == [0, 1, 2, 3] and leftovers(tmp_path) == []


# ------------------------------------------------------------------ kill -9 while writing

WRITER = """
import os, signal, sys
sys.path.insert(0, {src!r})
from aerestore import io
with io.atomic_path({file!r}) as tmp:
    tmp.write_bytes(b"half")
    with io.atomic_dir({folder!r}) as d:
        (d / "x").write_text("half")
        os.kill(os.getpid(), signal.SIGKILL)
"""
# killed between atomic_dir's two renames: the previous folder moved aside, the new one not yet in place
BETWEEN_RENAMES = """
import os, signal, sys
sys.path.insert(0, {src!r})
from aerestore import io
replace = os.replace
def killed_at_the_second(src, dst):
    if str(src).endswith(".tmp"):
        os.kill(os.getpid(), signal.SIGKILL)
    replace(src, dst)
io.os.replace = killed_at_the_second
with io.atomic_dir({folder!r}) as d:
    (d / "a.png").write_text("new")
"""


def test_a_writer_killed_mid_write_leaves_the_output_and_its_leftovers_are_swept(tmp_path):
    from pathlib import Path

    src = str(Path(aio.__file__).parents[1])
    target, folder = tmp_path / "model.pt", tmp_path / "plots"
    target.write_bytes(b"previous")
    folder.mkdir()
    (folder / "a.png").write_bytes(b"previous")

    def killed(script: str) -> int:
        proc = subprocess.Popen([sys.executable, "-c", script.format(src=src, file=str(target), folder=str(folder))])
        assert proc.wait() == -signal.SIGKILL
        return proc.pid

    pid = killed(WRITER)
    assert target.read_bytes() == b"previous" and (folder / "a.png").read_bytes() == b"previous"
    left = leftovers(tmp_path)
    assert len(left) == 2 and all(f"-{pid}." in name for name in left)  # a temp file and a temp folder
    mine = tmp_path / f".model.pt.{aio._owner()}.live.tmp"  # a live writer's (this process): kept
    mine.write_bytes(b"in progress")
    assert sorted(p.name for p in aio.sweep_leftovers(tmp_path)) == left
    assert leftovers(tmp_path) == [mine.name]
    assert target.read_bytes() == b"previous" and (folder / "a.png").read_bytes() == b"previous"

    killed(BETWEEN_RENAMES)
    assert not folder.exists() and len(leftovers(tmp_path)) == 3  # .old, the new .tmp, and mine
    aio.sweep_leftovers(tmp_path)  # the previous folder goes back
    assert (folder / "a.png").read_bytes() == b"previous" and leftovers(tmp_path) == [mine.name]


# ------------------------------------------------------------------ the real pipeline
# (MLflow only where a test reads it: a tracked stage takes seconds longer)

KILLED: dict[str, str] = {}  # the run of the stage killed by test_kill_9_..., for the test after the next run


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory):
    """A tiny pipeline run up to the blocks: the tests below train (the first one kills it)."""
    from pipeline_utils import make_repo, repro

    repo = make_repo(tmp_path_factory.mktemp("faults") / "repo",
                     {"architectures": ["conv_ae"], "prepare": {"workers": 1}})
    assert repro(repo, "blocks") == {"download", "prepare", "blocks"}
    return repo


def train_runs(repo):
    """The MLflow client and the runs of train@conv_ae, oldest first."""
    from mlflow import MlflowClient

    client = MlflowClient(f"sqlite:///{repo / 'mlflow.db'}")
    exp = client.get_experiment_by_name("aerestore")
    if exp is None:
        return client, []
    runs = client.search_runs([exp.experiment_id], "tags.`dvc.stage` = 'train@conv_ae'",
                              order_by=["attributes.start_time ASC"])
    return client, runs


def outputs(repo) -> dict[str, bytes | None]:
    """train@conv_ae's model and metrics, and the lock, as bytes (None: no such file)."""
    return {name: (repo / name).read_bytes() if (repo / name).exists() else None
            for name in ("models/conv_ae/model.pt", "metrics/train/conv_ae.json", "dvc.lock")}


def locked_epochs(repo) -> int:
    """train.blocks.epochs as dvc.lock records it for train@conv_ae (its last complete run)."""
    import yaml

    lock = yaml.safe_load((repo / "dvc.lock").read_text())
    return lock["stages"]["train@conv_ae"]["params"]["params.yaml"]["train.blocks"]["epochs"]


def stage_process(dvc: subprocess.Popen, script: str, timeout: float = 120):
    """The stage process (``python stages/<script>``) that ``dvc`` runs, once it exists."""
    import psutil

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for child in psutil.Process(dvc.pid).children(recursive=True):
            try:
                if any(arg.endswith(f"stages/{script}") for arg in child.cmdline()):
                    return child
            except psutil.NoSuchProcess:
                continue
        assert dvc.poll() is None, "dvc exited before its stage started"
        time.sleep(0.05)
    pytest.fail(f"no stages/{script} process within {timeout} s")


def wait_for_an_epoch(db, timeout: float = 120) -> str:
    """The id of the RUNNING run that has logged a first epoch (``val_loss``), once there is one.

    Read with sqlite3, read-only: an MLflow client would create the store's tables if the
    stage had not yet, racing it."""
    import sqlite3

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with contextlib.closing(sqlite3.connect(f"{db.as_uri()}?mode=ro", uri=True)) as con:
                row = con.execute("SELECT r.run_uuid FROM runs r JOIN metrics m ON m.run_uuid = r.run_uuid "
                                  "WHERE r.status = 'RUNNING' AND m.key = 'val_loss' LIMIT 1").fetchone()
            if row:
                return row[0]
        except sqlite3.OperationalError:  # no store yet, or no tables yet
            pass
        time.sleep(0.2)
    pytest.fail(f"no run logged an epoch within {timeout} s")


@contextlib.contextmanager
def background_repro(repo, log_path, target: str = "train@conv_ae"):
    """``dvc repro target`` started in the background (killed if still running at the end)."""
    from pipeline_utils import env

    with open(log_path, "w") as log:
        proc = subprocess.Popen(["dvc", "repro", target], cwd=repo, env=env(), stdout=log,
                                stderr=subprocess.STDOUT, start_new_session=True)
        try:
            yield proc
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()


def test_kill_9_mid_training_loses_nothing_and_the_next_repro_reruns_the_stage(pipeline, tmp_path):
    from pipeline_utils import repro, set_params

    lock = (pipeline / "dvc.lock").read_bytes()
    set_params(pipeline, {"train": {"blocks": {"epochs": 400, "patience": 0}}, "mlflow": {"enabled": True}})  # minutes
    with background_repro(pipeline, tmp_path / "dvc.log") as dvc:
        stage = stage_process(dvc, "train.py")
        running = wait_for_an_epoch(pipeline / "mlflow.db")
        os.kill(stage.pid, signal.SIGKILL)
        code = dvc.wait(timeout=60)
    said = (tmp_path / "dvc.log").read_text()
    assert code != 0 and "failed to reproduce 'train@conv_ae'" in said, said[-3000:]
    # no model, metrics or curve appears, nothing half-written either, and the lock is as it was
    # (a previous model stays too: test_a_diverging_stage_...)
    assert not (pipeline / "models/conv_ae/model.pt").exists()
    assert not list((pipeline / "metrics").glob("**/*conv_ae*"))
    assert leftovers(pipeline / "models") == leftovers(pipeline / "metrics") == []
    assert (pipeline / "dvc.lock").read_bytes() == lock
    KILLED["run_id"] = running  # RUNNING until the stage's next tracked run
    # the next repro reruns the stage (fewer epochs than the killed one's 400, to keep it short)
    set_params(pipeline, {"train": {"blocks": {"epochs": 2, "patience": 3}}, "mlflow": {"enabled": False}})
    assert repro(pipeline, "train@conv_ae") == {"train@conv_ae"}
    assert json.loads((pipeline / "metrics/train/conv_ae.json").read_text())["epochs_run"] == 2
    assert locked_epochs(pipeline) == 2


def test_a_diverging_stage_fails_its_run_and_writes_no_model(pipeline):
    from pipeline_utils import run, set_params

    before = outputs(pipeline)
    set_params(pipeline, {"train": {"lr": 1e30}, "mlflow": {"enabled": True}})
    proc = run(["dvc", "repro", "train@conv_ae"], pipeline, check=False)
    set_params(pipeline, {"train": {"lr": 0.001}, "mlflow": {"enabled": False}})
    assert proc.returncode != 0
    assert ("error in stage train: LossDiverged: training diverged at conv_ae epoch 1, batch 2 of "
            in proc.stderr), proc.stderr[-3000:]
    assert "loss term 'recon' is nan" in proc.stderr and "lower train.lr (1e+30)" in proc.stderr
    assert outputs(pipeline) == before  # the model of the run before (the kill test's), or still none
    client, runs = train_runs(pipeline)
    failed = runs[-1]
    assert failed.info.status == "FAILED"
    assert "LossDiverged: training diverged at conv_ae epoch 1" in failed.data.tags["error"]
    assert not failed.outputs.model_outputs  # no model logged, so none to register


def test_the_killed_stage_s_run_is_marked_killed_when_the_stage_next_runs_tracked(pipeline):
    """The run test_kill_9_... left RUNNING: the next tracked run of train@conv_ae (the
    diverging one of the test before) found its process gone and ended it KILLED."""
    if "run_id" not in KILLED:
        pytest.skip("needs test_kill_9_mid_training_... and test_a_diverging_stage_... before it")
    client, runs = train_runs(pipeline)
    assert client.get_run(KILLED["run_id"]).info.status == "KILLED"
    assert [r.info.status for r in runs] == ["KILLED", "FAILED"]


def test_a_second_repro_is_refused_while_the_first_runs_and_the_first_finishes(pipeline, tmp_path):
    """Any stage will do: the download, the cheapest."""
    import yaml

    from pipeline_utils import out_of_date, run, set_params

    set_params(pipeline, {"data": {"limit": 29}})
    before = (pipeline / "data/raw/manifest.csv").read_text()
    with background_repro(pipeline, tmp_path / "first.log", "download") as first:
        stage = stage_process(first, "download.py")
        stage.suspend()  # the first repro is mid-stage however fast this machine is
        try:
            second = run(["dvc", "repro"], pipeline, check=False)
        finally:
            stage.resume()
        code = first.wait(timeout=120)
    assert second.returncode != 0
    assert "is busy, it is being blocked by:" in second.stderr, second.stderr
    assert f"(PID {first.pid}): " in second.stderr and "dvc repro download" in second.stderr
    said = (tmp_path / "first.log").read_text()
    assert code == 0 and "Running stage 'download'" in said, said[-3000:]
    manifest = (pipeline / "data/raw/manifest.csv").read_text()
    assert manifest != before and len(manifest.splitlines()) == 1 + 29
    lock = yaml.safe_load((pipeline / "dvc.lock").read_text())["stages"]["download"]
    assert lock["params"]["params.yaml"]["data.limit"] == 29
    assert "download" not in out_of_date(pipeline)  # its outputs are the ones its lock records
