"""MLflow tracking of the stages: where the store is, its creation under concurrency,
the params dvc.yaml lists, the runs stage_run logs, and the pipeline id."""

from __future__ import annotations

import multiprocessing
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import mlflow
import pytest
import yaml
from mlflow.tracking import MlflowClient

from aerestore import tracking
from aerestore.params import Params, ParamsError, parse_params
from aerestore.tracking import (
    dvc_stage_params,
    init_store,
    pipeline_id,
    repo_root,
    stage_params,
    stage_run,
    tracking_uri,
)

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
                tracking._prepare_db(tracking.tracking_uri())
    return db


def make_repo(path: Path, template: Path | None, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A folder that looks like a DVC repository (``.dvc/``), made the working
    directory, with the DVC variables cleared and, if given, a copy of the template db."""
    path.mkdir(parents=True, exist_ok=True)
    (path / ".dvc").mkdir(exist_ok=True)
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
      train:
        matrix:
          arch: ${architectures}
        cmd: python stages/train.py ${item.arch}
        params:
          - seed
          - latent
          - train
          - arch.${item.arch}
          - blocks.size
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
    "architectures": ["conv_ae", "vae"],
    "latent": 8,
    "arch": {"conv_ae": {"latent": 4, "train": {"lr": 0.01}}, "vae": {"model": {"hidden": 16}}},
    "prepare": {"degrade": [{"op": "gaussian_blur", "sigma": [0.5, 2.0]}, {"op": "grayscale", "prob": 0.5}]},
}


def write_project(root: Path) -> Params:
    (root / "dvc.yaml").write_text(DVC_YAML)
    (root / "params.yaml").write_text(yaml.safe_dump(PARAMS_YAML))
    return parse_params(PARAMS_YAML)


# ------------------------------------------------------------------- where the store is
def test_tracking_uri_is_the_repository_db(tmp_path, monkeypatch):
    root = make_repo(tmp_path / "repo", None, monkeypatch)
    (root / "sub").mkdir()
    monkeypatch.chdir(root / "sub")
    assert repo_root() == root
    assert tracking_uri() == f"sqlite:///{root}/mlflow.db"
    assert tracking.artifact_location() == (root / "mlruns").as_uri()


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
def test_dvc_stage_params_resolves_matrix_and_foreach(tmp_path):
    write_project(tmp_path)
    assert dvc_stage_params("prepare", tmp_path) == ["seed", "prepare"]
    assert dvc_stage_params("train@conv_ae", tmp_path) == ["seed", "latent", "train", "arch.conv_ae", "blocks.size"]
    assert dvc_stage_params("train@vae", tmp_path)[3] == "arch.vae"
    # a params.yaml mapping is kept, other files are not in Params
    assert dvc_stage_params("cluster@vae", tmp_path) == ["cluster", "arch.vae.latent"]
    # several matrix keys: DVC joins the values with '-'
    assert dvc_stage_params("sweep@conv_ae-0.01", tmp_path) == ["arch.conv_ae.train"]


def test_dvc_stage_params_finds_dvc_yaml_above_the_working_directory(tmp_path, monkeypatch):
    write_project(tmp_path)
    (tmp_path / "deep").mkdir()
    monkeypatch.chdir(tmp_path / "deep")
    assert dvc_stage_params("train@vae") == ["seed", "latent", "train", "arch.vae", "blocks.size"]


@pytest.mark.parametrize(
    "stage, message",
    [("nope", "no stage 'nope'"), ("train@resnet", "not generated by 'train'"), ("prepare@x", "no matrix or foreach")],
)
def test_dvc_stage_params_names_a_wrong_stage(tmp_path, stage, message):
    write_project(tmp_path)
    with pytest.raises(ParamsError, match=message):
        dvc_stage_params(stage, tmp_path)


def test_stage_params_flattens_each_listed_subtree():
    params = parse_params(PARAMS_YAML)
    flat = stage_params(params, ["seed", "train", "arch.conv_ae", "prepare.degrade", "architectures"])
    assert flat["seed"] == "42"
    assert flat["train.lr"] == "0.001" and flat["train.recon"] == "mse" and "train.epochs" in flat
    assert flat["arch.conv_ae.latent"] == "4" and flat["arch.conv_ae.train.lr"] == "0.01"
    assert flat["arch.conv_ae.model"] == "{}"
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

    expected = stage_params(params, ["seed", "latent", "train", "arch.conv_ae", "blocks.size"])
    assert got.data.params == expected
    assert got.data.params["arch.conv_ae.train.lr"] == "0.01"

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
    assert tracking._runs_dvc(cmdline) is is_dvc


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
