"""MLflow tracking of the stages: where the store is, its creation under concurrency,
the params and data DVC gives for a stage, the runs stage_run logs, stale runs of killed
stages, a locked or corrupt store, and the pipeline id."""

from __future__ import annotations

import json
import multiprocessing
import os
import shutil
import socket
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path

import mlflow
import pytest
import yaml
from mlflow.tracking import MlflowClient

from aerestore.params import Params, ParamsError, parse_params
from aerestore.stage import main as stage_main
from aerestore.tracking import (
    DvcStageIO,
    StageRun,
    TrackingError,
    artifact_location,
    dvc_stage_io,
    dvc_stage_params,
    init_store,
    pipeline_id,
    repo_root,
    stage_params,
    stage_run,
    tracking_uri,
)
from aerestore.tracking import pipeline, stale, store

DVC_ENV = ("DVC_ROOT", "DVC_EXP_NAME", "DVC_EXP_BASELINE_REV", "DVC_STAGE", "MLFLOW_TRACKING_URI")


# ------------------------------------------------------------------- shared fixtures
def template_db(base: Path) -> Path:
    """A freshly created, migrated ``mlflow.db`` made once per test session (creating
    one runs every MLflow migration, ~7 s); tests copy it instead of creating their own."""
    from filelock import FileLock

    folder = base / "mlflow-template"
    folder.mkdir(exist_ok=True)
    db = folder / "mlflow.db"
    with FileLock(str(folder / "make.lock")):
        if not db.exists():
            (folder / ".dvc").mkdir(exist_ok=True)
            with pytest.MonkeyPatch.context() as mp:
                for name in DVC_ENV:
                    mp.delenv(name, raising=False)
                mp.setenv("DVC_ROOT", str(folder))
                store._prepare_db(tracking_uri())
    return db


def make_repo(path: Path, template: Path | None, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A folder that looks like a DVC repository (``.dvc/``), made the working
    directory, with the DVC variables cleared and, if given, a copy of the template db."""
    path.mkdir(parents=True, exist_ok=True)
    (path / ".dvc").mkdir(exist_ok=True)
    # a DVC repository outside git, as `dvc init --no-scm` makes (DVC's API needs the config)
    (path / ".dvc" / "config").write_text("[core]\n    no_scm = True\n")
    if template is not None:
        shutil.copy2(template, path / "mlflow.db")
    for name in DVC_ENV:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(path)
    return path.resolve()


@pytest.fixture
def repo(tmp_path, tmp_path_factory, monkeypatch):
    root = make_repo(tmp_path / "repo", template_db(tmp_path_factory.getbasetemp()), monkeypatch)
    yield root
    while mlflow.active_run() is not None:
        mlflow.end_run()
    mlflow.set_tracking_uri(None)  # mlflow keeps a global; monkeypatch then restores the env


DVC_YAML = textwrap.dedent(
    """\
    stages:
      prepare:
        cmd: python stages/prepare.py
        params:
          - seed
          - prepare
      blocks:
        cmd: python stages/blocks.py
        deps:
          - stages/blocks.py
        outs:
          - data/blocks
      train:
        matrix:
          arch: ${architectures}
        cmd: python stages/train.py ${item.arch}
        deps:
          - stages/train.py
          - data/blocks
        params:
          - seed
          - latent
          - train
          - arch.${item.arch}
          - blocks.size
        outs:
          - models/${item.arch}/model.pt
      cluster:
        foreach: ${architectures}
        do:
          cmd: python stages/cluster.py ${item}
          params:
            - cluster
            - params.yaml:
                - arch.${item}.latent
            - other.yaml:
                - something
      sweep:
        matrix:
          arch: [conv_ae]
          lr: [0.1, 0.01]
        cmd: echo ${item.arch} ${item.lr}
        params:
          - arch.${item.arch}.train
    """
)

PARAMS_YAML = {
    "seed": 7,
    "architectures": ["conv_ae", "vae"],
    "latent": 8,
    "train": {"lr": 0.002, "blocks": {"epochs": 3}},
    "blocks": {"size": 16},
    "arch": {"conv_ae": {"latent": 4, "model": {}, "train": {"lr": 0.01}}, "vae": {"model": {"hidden": 16}}},
    "prepare": {"degrade": [{"op": "gaussian_blur", "sigma": [0.5, 2.0]}, {"op": "grayscale", "prob": 0.5}]},
}

#: What params.yaml holds for train@conv_ae, as DVC reads it (keys it lacks are left out).
TRAIN_KEYS = ["seed", "latent", "train.lr", "train.blocks.epochs", "arch.conv_ae.latent", "arch.conv_ae.train.lr",
              "blocks.size"]  # arch.conv_ae.model is {}: no key, as in `dvc params diff`


def write_project(root: Path) -> Params:
    (root / "dvc.yaml").write_text(DVC_YAML)
    (root / "params.yaml").write_text(yaml.safe_dump(PARAMS_YAML))
    (root / "other.yaml").write_text("something: 3\n")
    return parse_params(PARAMS_YAML)


def write_blocks(root: Path) -> None:
    """The code and data that train@conv_ae depends on, as a pipeline would leave them."""
    (root / "stages").mkdir(exist_ok=True)
    for name in ("blocks", "train"):
        (root / "stages" / f"{name}.py").write_text(f"# {name}\n")
    (root / "data" / "blocks").mkdir(parents=True, exist_ok=True)
    for i in range(3):
        (root / "data" / "blocks" / f"part{i}.bin").write_bytes(bytes([i]) * (100 + i))


# ------------------------------------------------------------------- where the store is
def test_tracking_uri_is_the_repository_db(tmp_path, monkeypatch):
    root = make_repo(tmp_path / "repo", None, monkeypatch)
    (root / "sub").mkdir()
    monkeypatch.chdir(root / "sub")
    assert repo_root() == root
    assert tracking_uri() == f"sqlite:///{root}/mlflow.db"
    assert artifact_location() == (root / "mlruns").as_uri()


def test_temp_experiment_workspace_uses_the_main_repository(tmp_path, monkeypatch):
    root = make_repo(tmp_path / "repo", None, monkeypatch)
    temp = root / ".dvc" / "tmp" / "exps" / "run" / "tmpab12cd"
    (temp / ".dvc").mkdir(parents=True)  # the temp copy is a repository of its own
    monkeypatch.chdir(temp)
    # DVC_ROOT, which DVC sets for every stage, wins...
    other = tmp_path / "elsewhere"
    other.mkdir()
    monkeypatch.setenv("DVC_ROOT", str(other))
    assert tracking_uri() == f"sqlite:///{other.resolve()}/mlflow.db"
    monkeypatch.setenv("DVC_ROOT", str(root))
    assert tracking_uri() == f"sqlite:///{root}/mlflow.db"
    # ...and without it the temp copy is still not taken for the repository.
    monkeypatch.delenv("DVC_ROOT")
    assert repo_root() == root


def test_git_top_level_without_dvc(tmp_path, monkeypatch):
    root = tmp_path / "gitrepo"
    (root / "a" / "b").mkdir(parents=True)
    subprocess.run(["git", "init", "-q", str(root)], check=True)
    for name in DVC_ENV:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(root / "a" / "b")
    assert repo_root() == root.resolve()


def test_env_overrides_the_tracking_uri(tmp_path, monkeypatch):
    make_repo(tmp_path / "repo", None, monkeypatch)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:5999")
    assert tracking_uri() == "http://127.0.0.1:5999"


# ------------------------------------------------------------------- init_store
def _init_in_child(root: str, barrier, results) -> None:
    import os

    os.environ["DVC_ROOT"] = root
    os.environ.pop("MLFLOW_TRACKING_URI", None)
    import mlflow  # noqa: F401  (the slow import happens before the race starts)

    from aerestore.tracking import init_store

    barrier.wait(timeout=120)
    try:
        results.put(("ok", init_store("race")))
    except BaseException as exc:  # noqa: BLE001 - reported to the parent
        results.put(("error", repr(exc)))


def test_init_store_is_safe_from_parallel_processes(tmp_path, monkeypatch):
    root = make_repo(tmp_path / "repo", None, monkeypatch)
    ctx = multiprocessing.get_context("spawn")
    barrier, results = ctx.Barrier(3), ctx.Queue()
    procs = [ctx.Process(target=_init_in_child, args=(str(root), barrier, results)) for _ in range(3)]
    for p in procs:
        p.start()
    outcomes = [results.get(timeout=300) for _ in procs]
    for p in procs:
        p.join(timeout=60)
    assert [kind for kind, _ in outcomes] == ["ok"] * 3, outcomes
    assert len({value for _, value in outcomes}) == 1
    client = MlflowClient(f"sqlite:///{root}/mlflow.db")
    experiments = {e.name: e for e in client.search_experiments()}
    assert set(experiments) == {"Default", "race"}
    assert experiments["race"].artifact_location == f"{(root / 'mlruns').as_uri()}/race"
    assert experiments["Default"].artifact_location.startswith((root / "mlruns").as_uri())


def test_init_store_tags_an_existing_experiment_and_keeps_its_description(repo):
    client = MlflowClient(tracking_uri())
    old = client.create_experiment("older", tags={"mlflow.note.content": "mine"})
    assert init_store("older") == old
    tags = client.get_experiment(old).tags
    assert tags["mlflow.experimentKind"] == "custom_model_development"
    assert tags["mlflow.note.content"] == "mine"


def test_init_store_again_returns_the_same_experiment(repo):
    first = init_store("again")
    MlflowClient(tracking_uri()).delete_experiment(first)
    assert init_store("again") == first  # a deleted experiment is restored, not duplicated
    exp = MlflowClient(tracking_uri()).get_experiment(first)
    assert exp.lifecycle_stage == "active"
    assert init_store("other") != first


def test_init_store_migrates_an_old_database_after_a_backup(repo):
    import mlflow.store.db.utils as dbu
    from alembic import command

    uri = tracking_uri()
    engine = dbu.create_sqlalchemy_engine_with_retry(uri)
    config = dbu._get_alembic_config(uri)
    with engine.begin() as connection:  # take the schema one migration back
        config.attributes["connection"] = connection
        command.downgrade(config, "-1")
    old = dbu._get_schema_version(engine)
    assert old != dbu._get_latest_schema_revision()
    engine.dispose()

    init_store("migrated")

    engine = dbu.create_sqlalchemy_engine_with_retry(uri)
    assert dbu._get_schema_version(engine) == dbu._get_latest_schema_revision()
    engine.dispose()
    assert (repo / f"mlflow.db.bak-{old}").is_file()


# ------------------------------------------------------------------- dvc.yaml params
def test_dvc_stage_params_come_from_dvc_with_matrix_and_foreach(tmp_path, monkeypatch):
    root = make_repo(tmp_path / "repo", None, monkeypatch)
    write_project(root)
    assert dvc_stage_params("prepare") == ["seed", "prepare.degrade"]
    assert sorted(dvc_stage_params("train@conv_ae")) == sorted(TRAIN_KEYS)
    assert "arch.vae.model.hidden" in dvc_stage_params("train@vae")
    # several matrix keys: DVC joins the values with '-'
    assert dvc_stage_params("sweep@conv_ae-0.01") == ["arch.conv_ae.train.lr"]
    # params_show merges the params files: a key of other.yaml comes back too, and is
    # refused by name, since Params (params.yaml) has no such key
    keys = dvc_stage_params("cluster@vae")
    assert keys == ["something"]  # arch.vae.latent is listed but not in params.yaml
    with pytest.raises(ParamsError, match="'something'"):
        stage_params(parse_params(PARAMS_YAML), keys)


def test_dvc_stage_params_of_another_folder(tmp_path, monkeypatch):
    root = make_repo(tmp_path / "repo", None, monkeypatch)
    write_project(root)
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")
    assert sorted(dvc_stage_params("train@conv_ae", root)) == sorted(TRAIN_KEYS)


@pytest.mark.parametrize("stage", ["nope", "train@resnet", "prepare@x"])
def test_dvc_stage_params_names_a_wrong_stage(tmp_path, monkeypatch, stage):
    root = make_repo(tmp_path / "repo", None, monkeypatch)
    write_project(root)
    with pytest.raises(ParamsError, match=f"stage {stage!r}.*not found"):
        dvc_stage_params(stage)


def test_stage_inputs_carry_the_md5_that_dvc_lock_records(tmp_path, monkeypatch):
    root = make_repo(tmp_path / "repo", None, monkeypatch)
    write_project(root)
    write_blocks(root)
    io = dvc_stage_io("train@conv_ae")
    assert [i.path for i in io.inputs] == ["data/blocks"]  # stages/train.py is code, not data
    [blocks] = io.inputs
    assert blocks.md5.endswith(".dir") and blocks.files == 3 and blocks.size == 303
    assert io.outputs == ["models/conv_ae/model.pt"]
    assert dvc_stage_io("prepare").inputs == [] and dvc_stage_io("nope") == DvcStageIO([], [])
    # what DVC writes to dvc.lock for the stage once it has run
    (root / "models" / "conv_ae").mkdir(parents=True)
    (root / "models" / "conv_ae" / "model.pt").write_bytes(b"weights")
    # in a process of its own, as a user runs it: in this one, DVC's logger may hold a stream
    # an earlier test's capture has closed (its handler then raises on the "Generating lock
    # file" line)
    subprocess.run([sys.executable, "-m", "dvc", "commit", "-f", "-q", "train@conv_ae"], cwd=root, check=True)
    lock = yaml.safe_load((root / "dvc.lock").read_text())
    recorded = {d["path"]: d["md5"] for d in lock["stages"]["train@conv_ae"]["deps"]}
    assert recorded["data/blocks"] == blocks.md5


def test_stage_params_flattens_each_listed_subtree():
    params = parse_params(PARAMS_YAML)
    flat = stage_params(params, ["seed", "train", "arch.conv_ae", "prepare.degrade", "architectures"])
    assert flat["seed"] == "7"
    assert flat["train.lr"] == "0.002" and flat["train.loss.recon"] == "mse" and "train.blocks.epochs" in flat
    assert flat["arch.conv_ae.latent"] == "4" and flat["arch.conv_ae.train.lr"] == "0.01"
    assert "arch.conv_ae.model" not in flat  # {}: no param, as in `dvc params diff`
    assert flat["prepare.degrade.0.op"] == "gaussian_blur"
    assert flat["prepare.degrade.0.sigma"] == "[0.5, 2.0]"
    assert flat["prepare.degrade.1.prob"] == "0.5"
    assert flat["architectures"] == '["conv_ae", "vae"]'
    assert not any(k.startswith(("latent", "cluster", "arch.vae")) for k in flat)
    assert all(isinstance(v, str) for v in flat.values())


def test_stage_params_cuts_long_values_and_refuses_unknown_keys():
    params = parse_params({"architectures": [f"arch_{i:04d}_" + "x" * 40 for i in range(200)]})
    value = stage_params(params, ["architectures"])["architectures"]
    assert len(value) == 6000 and value.endswith("…")
    with pytest.raises(ParamsError, match="'train.nope'"):
        stage_params(params, ["train.nope"])


# ------------------------------------------------------------------- stage_run
def test_stage_run_logs_params_metrics_and_tags(repo, monkeypatch):
    params = write_project(repo)
    write_blocks(repo)
    monkeypatch.setenv("DVC_EXP_NAME", "tiny-exp")
    monkeypatch.setenv("DVC_EXP_BASELINE_REV", "a" * 40)
    with stage_run("train@conv_ae", params, arch="conv_ae") as run:
        for epoch in range(3):
            run.log_metrics({"loss": 1.0 / (epoch + 1), "val": {"psnr": 20.0 + epoch, "bad": float("nan")},
                             "note": "text", "none": None}, step=epoch)
        run.log_metrics({"best_epoch": 2})
        run.log_text("hello", "notes/hello.txt")
        (repo / "curve.csv").write_text("epoch,loss\n0,1\n")
        run.log_artifact(repo / "curve.csv", "curves")

    client = MlflowClient(tracking_uri())
    got = client.get_run(run.run_id)
    assert got.info.status == "FINISHED"
    assert got.info.run_name == "train@conv_ae"
    exp = client.get_experiment(got.info.experiment_id)
    assert exp.name == "aerestore"
    assert got.info.artifact_uri.startswith((repo / "mlruns").as_uri())

    # exactly what params.yaml holds for the stage (DVC's view), not the schema's defaults
    assert got.data.params == stage_params(params, TRAIN_KEYS)
    assert got.data.params["arch.conv_ae.train.lr"] == "0.01" and "train.loss.recon" not in got.data.params

    # the stage's data: DVC's md5 of data/blocks as the dataset's digest
    [dataset] = got.inputs.dataset_inputs
    blocks = dvc_stage_io("train@conv_ae").inputs[0]
    assert (dataset.dataset.name, dataset.dataset.digest) == ("data/blocks", blocks.md5)
    assert dataset.dataset.source_type == "dvc"
    assert json.loads(dataset.dataset.source) == {"repo": str(repo), "path": "data/blocks", "rev": None}
    assert json.loads(dataset.dataset.profile) == {"dvc_md5": blocks.md5, "bytes": 303, "files": 3}
    assert {(t.key, t.value) for t in dataset.tags} == {("mlflow.data.context", "training")}

    history = client.get_metric_history(run.run_id, "val.psnr")
    assert [(m.step, m.value) for m in history] == [(0, 20.0), (1, 21.0), (2, 22.0)]
    assert got.data.metrics["loss"] == pytest.approx(1 / 3)
    assert got.data.metrics["best_epoch"] == 2
    assert not {"val.bad", "note", "none"} & set(got.data.metrics)

    tags = got.data.tags
    assert tags["arch"] == "conv_ae"
    assert tags["dvc.stage"] == "train@conv_ae"
    assert tags["dvc.exp_name"] == "tiny-exp"
    assert tags["dvc.baseline_rev"] == "a" * 40
    assert tags["aerestore.pipeline_id"] == "exp-tiny-exp"  # no dvc process above pytest
    assert tags["aerestore.host"] == socket.gethostname() and tags["aerestore.pid"] == str(os.getpid())
    assert float(tags["aerestore.pid_start"]) > 0
    note = tags["mlflow.note.content"]  # the run's description in the UI
    assert note.startswith("**DVC stage `train@conv_ae`**: Trains the `conv_ae` autoencoder")
    assert f"`data/blocks` `{blocks.md5}`" in note and "`models/conv_ae/model.pt`" in note
    # the experiment opens in the UI's model-training view, with a description
    assert exp.tags["mlflow.experimentKind"] == "custom_model_development"
    assert exp.tags["mlflow.note.content"].startswith("Image-restoration autoencoders")

    files = {f.path for f in client.list_artifacts(run.run_id)} | {
        f.path for f in client.list_artifacts(run.run_id, "notes")} | {
        f.path for f in client.list_artifacts(run.run_id, "curves")}
    assert {"notes/hello.txt", "curves/curve.csv"} <= files


def test_a_failing_stage_marks_the_run_failed(repo):
    params = write_project(repo)
    with pytest.raises(ZeroDivisionError):
        with stage_run("prepare", params) as run:
            run.log_metrics({"images": 3})
            1 / 0
    client = MlflowClient(tracking_uri())
    got = client.get_run(run.run_id)
    assert got.info.status == "FAILED"
    assert got.data.tags["error"] == "ZeroDivisionError: division by zero"
    text = Path(mlflow.artifacts.download_artifacts(run_id=run.run_id, artifact_path="error.txt",
                                                    tracking_uri=tracking_uri())).read_text()
    assert "Traceback" in text and "1 / 0" in text
    assert got.data.metrics == {"images": 3.0}
    assert mlflow.active_run() is None


def test_mlflow_disabled_logs_nothing(repo):
    params = parse_params({**PARAMS_YAML, "mlflow": {"enabled": False}})
    (repo / "mlflow.db").unlink()
    with stage_run("prepare", params) as run:
        run.log_metrics({"x": 1.0})
        run.log_text("x", "x.txt")
        run.log_artifact(repo / "nothing-here")  # not even checked
    assert run.run_id is None
    assert not (repo / "mlflow.db").exists() and not (repo / "mlruns").exists()


def test_log_torch_model_round_trips(repo):
    import numpy as np
    import torch

    params = write_project(repo)
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3, padding=1), torch.nn.Sigmoid())
    example = np.random.default_rng(0).random((2, 3, 8, 8), dtype=np.float32)
    with stage_run("prepare", params) as run:
        run.log_torch_model(model, "model", input_example=example)
    logged = mlflow.search_logged_models(experiment_ids=[init_store()], output_format="list")
    assert [m.name for m in logged] == ["model"] and logged[0].source_run_id == run.run_id
    loaded = mlflow.pyfunc.load_model(logged[0].model_uri)
    inputs = loaded.metadata.signature.inputs.to_dict()[0]
    assert inputs["tensor-spec"]["dtype"] == "float32"
    assert list(inputs["tensor-spec"]["shape"]) == [-1, 3, 8, 8]
    x = np.random.default_rng(1).random((3, 3, 8, 8), dtype=np.float32)
    with torch.no_grad():
        expected = model(torch.from_numpy(x)).numpy()
    np.testing.assert_array_equal(loaded.predict(x), expected)


# ------------------------------------------------------------------- killed stages
def test_a_run_whose_process_is_gone_is_marked_killed_by_the_next_run_of_its_stage(repo):
    from aerestore.tracking.stale import HOST_TAG, PID_START_TAG, PID_TAG

    params = write_project(repo)
    client = MlflowClient(tracking_uri())
    experiment = init_store()
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()  # its pid is free now
    host = socket.gethostname()

    def running(stage: str, **tags: str) -> str:
        return client.create_run(experiment, run_name=stage, tags={"dvc.stage": stage, **tags}).info.run_id

    killed = running("prepare", **{HOST_TAG: host, PID_TAG: str(gone.pid)})
    reused = running("prepare", **{HOST_TAG: host, PID_TAG: str(os.getpid()), PID_START_TAG: "1000.0"})
    alive = running("prepare", **stale._process_tags())  # this very process
    elsewhere = running("prepare", **{HOST_TAG: "another-host", PID_TAG: str(gone.pid)})
    untagged = running("prepare")
    other_stage = running("train@conv_ae", **{HOST_TAG: host, PID_TAG: str(gone.pid)})

    with stage_run("prepare", params) as run:
        pass

    def status(run_id: str) -> str:
        return client.get_run(run_id).info.status

    assert status(killed) == status(reused) == "KILLED"
    why = client.get_run(killed).data.tags["aerestore.stale"]
    assert f"process {gone.pid} on {host} is gone" in why and run.run_id in why
    assert "is now another process" in client.get_run(reused).data.tags["aerestore.stale"]
    for left in (alive, elsewhere, untagged, other_stage):
        assert status(left) == "RUNNING", left
    assert status(run.run_id) == "FINISHED"


# ------------------------------------------------------------------- a locked or corrupt store
def _stage_writing(out: Path):
    """A stage function like ours: its run open around the work, its output written in it."""
    def fn(params, args):
        with stage_run("prepare", params):
            out.write_text("new")
    return fn


def test_a_locked_store_stops_the_stage_with_the_file_named_and_nothing_written(repo, monkeypatch, capsys):
    write_project(repo)
    out = repo / "out.txt"
    out.write_text("previous")
    monkeypatch.setattr(store, "DB_TIMEOUT_S", 0.3)  # where _check_sqlite reads it
    holder = sqlite3.connect(repo / "mlflow.db", isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")  # another process writing, for longer than the timeout
    try:
        with pytest.raises(SystemExit) as stop:
            stage_main("prepare", _stage_writing(out), argv=[])
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert stop.value.code == 2
    err = capsys.readouterr().err
    assert f"error in stage prepare: MLflow store {repo / 'mlflow.db'} is locked" in err
    assert "for more than 0.3 s" in err
    assert "database is locked" in err and "mlflow.enabled=false" in err
    assert out.read_text() == "previous"
    # once the lock is gone the same stage runs
    stage_main("prepare", _stage_writing(out), argv=[])
    assert out.read_text() == "new"


def test_a_corrupt_store_stops_the_stage_with_the_file_named_and_nothing_written(repo, capsys):
    write_project(repo)
    out = repo / "out.txt"
    out.write_text("previous")
    (repo / "mlflow.db").write_bytes(b"\x00garbage, not SQLite\xff" * 100)
    with pytest.raises(SystemExit) as stop:
        stage_main("prepare", _stage_writing(out), argv=[])
    assert stop.value.code == 2
    err = capsys.readouterr().err
    assert f"error in stage prepare: MLflow store {repo / 'mlflow.db'} is corrupt" in err
    assert "file is not a database" in err and "mv " in err
    assert out.read_text() == "previous"


def test_tags_set_on_a_store_that_went_bad_name_the_store(repo):
    """StageRun.set_tags (the machine record's tags) goes through the same store errors."""
    db = repo / "mlflow.db"
    db.write_bytes(b"\x00garbage, not SQLite\xff" * 100)
    with pytest.raises(TrackingError, match=r"mlflow\.db is corrupt"):
        StageRun("0123", uri=f"sqlite:///{db}").set_tags({"machine.cpu": "x"})
    StageRun(None).set_tags({"machine.cpu": "x"})  # tracking off: nothing


def test_a_store_error_during_the_stage_names_the_store(repo):
    from mlflow.exceptions import MlflowException

    with pytest.raises(TrackingError, match=r"mlflow\.db is locked: another process held it \(database is locked\)"):
        with store._store_errors(tracking_uri()):
            raise MlflowException("(sqlite3.OperationalError) database is locked\n[SQL: SELECT ...]")
    with pytest.raises(ZeroDivisionError):  # the stage's own errors pass unchanged
        with store._store_errors(tracking_uri()):
            1 / 0


# ------------------------------------------------------------------- pipeline id
@pytest.mark.parametrize(
    "cmdline, is_dvc",
    [
        (["/venv/bin/python3", "/venv/bin/dvc", "repro"], True),
        (["dvc", "exp", "run"], True),
        (["python", "-m", "dvc", "queue", "start"], True),
        (["python", "-m", "pytest", "tests/test_dvc.py"], False),
        (["bash", "-c", "python stages/train.py dvc"], False),
        ([], False),
    ],
)
def test_recognises_dvc_command_lines(cmdline, is_dvc):
    assert pipeline._runs_dvc(cmdline) is is_dvc


FAKE_DVC = textwrap.dedent(
    """\
    # Stands in for `dvc repro`: launches "stages" the way DVC does (a shell running python).
    import shlex, subprocess, sys
    code = "from aerestore.tracking import pipeline_id; print(pipeline_id())"
    stage = shlex.join([sys.executable, "-c", code])
    for _ in range(2):
        subprocess.run(["sh", "-c", stage], check=True)
    subprocess.run([sys.executable, "-c", code], check=True)
    """
)


def test_pipeline_id_is_shared_within_one_dvc_process_only(tmp_path, monkeypatch):
    for name in DVC_ENV:
        monkeypatch.delenv(name, raising=False)
    fake = tmp_path / "bin" / "dvc"
    fake.parent.mkdir()
    fake.write_text(FAKE_DVC)

    def execution() -> list[str]:
        out = subprocess.run([sys.executable, str(fake), "repro"], capture_output=True, text=True,
                             check=True, cwd=tmp_path)
        return out.stdout.split()

    first, second = execution(), execution()
    assert len(first) == 3 and len(set(first)) == 1
    assert len(second) == 3 and len(set(second)) == 1
    assert first[0] != second[0]
    # <start time>-<pid of the dvc process>
    assert first[0].rsplit("-", 1)[1].isdigit()


def test_pipeline_id_without_dvc(monkeypatch):
    monkeypatch.delenv("DVC_EXP_NAME", raising=False)
    a, b = pipeline_id(), pipeline_id()
    assert a.startswith("run-") and a != b
    monkeypatch.setenv("DVC_EXP_NAME", "lucky-dip")
    assert pipeline_id() == "exp-lucky-dip"
