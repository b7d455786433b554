"""MLflow with the real pipeline: a tracked `dvc repro`, then two queued experiments run
two at a time. Every run lands in the main store with its tags; none is lost."""

from __future__ import annotations

import csv
import json
import re

import pytest
import yaml

from pipeline_utils import make_repo, run, start_queue, wait_for_queue

pytestmark = pytest.mark.pipeline

STAGES = {"train@conv_ae", "cluster@conv_ae", "decoders@conv_ae", "evaluate"}


def client_for(repo):
    import mlflow
    from mlflow import MlflowClient

    uri = f"sqlite:///{repo / 'mlflow.db'}"
    mlflow.set_tracking_uri(uri)
    return MlflowClient(uri)


def runs_of(repo, experiment="aerestore"):
    client = client_for(repo)
    exp = client.get_experiment_by_name(experiment)
    assert exp is not None, "the experiment was not created"
    assert exp.artifact_location.startswith((repo / "mlruns").as_uri())
    return client, client.search_runs([exp.experiment_id], max_results=1000)


@pytest.fixture(scope="module")
def tracked(tmp_path_factory):
    repo = make_repo(tmp_path_factory.mktemp("tracked") / "repo", {
        "architectures": ["conv_ae"],
        "mlflow": {"enabled": True, "register_models": True},
    })
    run(["aerestore", "init-store"], repo)
    run(["dvc", "repro"], repo)
    return repo


def test_every_stage_execution_is_one_run_with_params_metrics_tags(tracked):
    client, runs = runs_of(tracked)
    by_name = {r.info.run_name: r for r in runs}
    assert set(by_name) >= STAGES
    assert all(r.info.status == "FINISHED" for r in runs)
    pipeline_ids = {r.data.tags["aerestore.pipeline_id"] for r in runs}
    assert len(pipeline_ids) == 1  # one dvc repro = one pipeline id
    train = by_name["train@conv_ae"]
    assert train.data.tags["arch"] == "conv_ae"
    assert train.data.tags["dvc.stage"] == "train@conv_ae"
    assert train.data.tags["dvc.exp_name"] == "workspace"
    assert len(train.data.tags["git.commit"]) == 40
    assert train.data.params["latent"] == "8" and "train.lr" in train.data.params
    assert "cluster.k" not in train.data.params  # only the params the stage depends on
    saved = json.loads((tracked / "metrics/train/conv_ae.json").read_text())
    assert train.data.metrics["best_val_loss"] == pytest.approx(saved["best_val_loss"])
    history = client.get_metric_history(train.info.run_id, "val_loss")
    assert [m.step for m in history] == list(range(1, saved["epochs_run"] + 1))
    evaluate = by_name["evaluate"]
    result = json.loads((tracked / "metrics/evaluate.json").read_text())
    assert evaluate.data.metrics["conv_ae.multi.psnr"] == pytest.approx(result["conv_ae"]["multi"]["psnr"])
    artifacts = {a.path for a in client.list_artifacts(evaluate.info.run_id)}
    assert "summary.md" in artifacts
    # the UI's model-training view, descriptions
    exp = client.get_experiment(train.info.experiment_id)
    assert exp.tags["mlflow.experimentKind"] == "custom_model_development" and exp.tags["mlflow.note.content"]
    assert all(r.data.tags["mlflow.note.content"].startswith(f"**DVC stage `{r.info.run_name}`**") for r in runs)
    assert "| restorer | PSNR (dB)" in evaluate.data.tags["mlflow.note.content"]  # the summary table
    # each run's data: DVC's md5 of each data dep, as dvc.lock records it after the run
    lock = yaml.safe_load((tracked / "dvc.lock").read_text())["stages"]
    for r in runs:
        recorded = {d["path"]: d["md5"] for d in lock[r.info.run_name]["deps"]}
        inputs = {d.dataset.name: d.dataset.digest for d in r.inputs.dataset_inputs}
        assert inputs and all(recorded[path] == md5 for path, md5 in inputs.items()), r.info.run_name
    assert {d.dataset.name for d in train.inputs.dataset_inputs} == {"data/blocks", "data/prepared"}
    assert {d.dataset.name for d in evaluate.inputs.dataset_inputs} == {"data/prepared", "models"}
    # the params of each run are the keys `dvc params diff` shows for what the stage lists
    # in dvc.lock (a list of sections, prepare.degrade, is one key there)
    diff = json.loads(run(["dvc", "params", "diff", "--all", "--json"], tracked).stdout)["params.yaml"]
    for r in runs:
        listed = lock[r.info.run_name]["params"]["params.yaml"]
        expected = {k for k in diff if any(k == p or k.startswith(p + ".") for p in listed)}
        logged = {re.sub(r"\.\d+(\..*)?$", "", k) for k in r.data.params}
        if r.info.run_name == "evaluate":  # MLflow logs a pyfunc model's model_config as params
            logged -= {"routing", "max_pixels"}  # the routing and the served size limit (mlflow_model)
        assert logged == expected, r.info.run_name


def test_the_restorer_is_registered(tracked):
    client, _ = runs_of(tracked)
    versions = client.search_model_versions("name='aerestore-conv_ae'")
    assert versions and versions[0].status == "READY"
    # tagged with its test figures, champion of its architecture and the best overall
    result = json.loads((tracked / "metrics/evaluate.json").read_text())
    champion = client.get_model_version_by_alias("aerestore-conv_ae", "champion")
    assert float(champion.tags["test.psnr"]) == pytest.approx(result["conv_ae"]["multi"]["psnr"], abs=1e-4)
    assert champion.tags["test.images"] == str(result["images"]) and champion.description
    # chosen on its validation PSNR (the val split of data/prepared), logged on the evaluate run
    evaluate = next(r for r in runs_of(tracked)[1] if r.info.run_name == "evaluate")
    assert float(champion.tags["val.psnr"]) == pytest.approx(evaluate.data.metrics["val.conv_ae.psnr"], abs=1e-4)
    assert int(champion.tags["val.images"]) > 0
    model = client.get_registered_model("aerestore-conv_ae")
    assert model.description and model.tags["best_overall"] == "true"


def test_the_trained_network_is_logged_and_predicts_like_the_stage_output(tracked):
    import mlflow
    import numpy as np
    import torch

    from aerestore.models import load_model

    client, runs = runs_of(tracked)
    train = next(r for r in runs if r.info.run_name == "train@conv_ae")
    logged = [m for m in mlflow.search_logged_models(experiment_ids=[train.info.experiment_id],
                                                     output_format="list")
              if m.source_run_id == train.info.run_id]
    assert [m.name for m in logged] == ["model"]
    loaded = mlflow.pyfunc.load_model(logged[0].model_uri)
    model, _ = load_model(tracked / "models/conv_ae/model.pt")
    model.eval()
    x = np.random.default_rng(0).random((3, 3, 16, 16), dtype=np.float32)
    with torch.no_grad():
        expected = model(torch.from_numpy(x))
    expected = (expected[0] if isinstance(expected, (tuple, list)) else expected).numpy()
    np.testing.assert_allclose(np.asarray(loaded.predict(x)), expected, atol=1e-5)


def test_rest_api_of_a_server_on_the_pipeline_store(tracked, tmp_path):
    import requests

    from helpers import mlflow_server

    with mlflow_server(f"sqlite:///{tracked / 'mlflow.db'}", tmp_path) as url:
        api = f"{url}/api/2.0/mlflow"
        exp = requests.get(f"{api}/experiments/get-by-name", params={"experiment_name": "aerestore"},
                           timeout=30).json()["experiment"]
        runs = requests.post(f"{api}/runs/search", json={"experiment_ids": [exp["experiment_id"]]},
                             timeout=30).json()["runs"]
        by_name = {r["info"]["run_name"]: r for r in runs}
        assert set(by_name) >= STAGES
        tags = {t["key"]: t["value"] for t in by_name["train@conv_ae"]["data"]["tags"]}
        assert tags["arch"] == "conv_ae" and tags["dvc.stage"] == "train@conv_ae"
        metrics = {m["key"] for m in by_name["evaluate"]["data"]["metrics"]}
        assert {"conv_ae.multi.psnr", "conv_ae.single.psnr", "degraded.psnr"} <= metrics
        params = {p["key"]: p["value"] for p in by_name["train@conv_ae"]["data"]["params"]}
        assert params["seed"] == "42" and params["latent"] == "8"
        assert by_name["train@conv_ae"]["info"]["status"] == "FINISHED"
        # the per-epoch curve is the one the stage wrote for `dvc plots`
        history = requests.get(f"{api}/metrics/get-history", timeout=30, params={
            "run_id": by_name["train@conv_ae"]["info"]["run_id"], "metric_key": "train_loss"}).json()
        with open(tracked / "metrics/curves/train_conv_ae.csv") as f:
            curve = list(csv.DictReader(f))
        assert [(m["step"], m["value"]) for m in history["metrics"]] == [
            (int(row["epoch"]), pytest.approx(float(row["train_loss"]))) for row in curve]
        files = requests.get(f"{api}/artifacts/list", timeout=30,
                             params={"run_id": by_name["evaluate"]["info"]["run_id"]}).json()
        assert "summary.md" in {f["path"] for f in files.get("files", [])}
        models = requests.get(f"{api}/registered-models/search", timeout=30).json()["registered_models"]
        restorer = next(m for m in models if m["name"] == "aerestore-conv_ae")
        assert restorer["latest_versions"][0]["run_id"] == by_name["evaluate"]["info"]["run_id"]


@pytest.mark.team  # two experiments at once on one store, ~2 min: run with the team set-up tests (-m team)
def test_queued_experiments_two_at_a_time_lose_no_run(tracked):
    run(["git", "add", "-A"], tracked)
    run(["git", "commit", "-qm", "baseline results"], tracked)
    _, before = runs_of(tracked)
    run(["dvc", "exp", "run", "--queue", "-S", "latent=6,10"], tracked)
    start_queue(tracked, jobs=2)
    status = wait_for_queue(tracked, jobs=2)
    assert status.count("Success") == 2, status
    logs = "".join(run(["dvc", "queue", "logs", line.split()[0]], tracked, check=False).stdout
                   for line in status.splitlines() if "Success" in line)
    assert "database is locked" not in logs
    _, after = runs_of(tracked)
    new = [r for r in after if r.info.run_id not in {b.info.run_id for b in before}]
    exp_names = {r.data.tags.get("dvc.exp_name") for r in new}
    assert len(exp_names) == 2 and "workspace" not in exp_names
    for name in exp_names:
        mine = [r for r in new if r.data.tags.get("dvc.exp_name") == name]
        assert {r.info.run_name for r in mine} == STAGES, name
        assert all(r.info.status == "FINISHED" for r in mine)
        assert len({r.data.tags["aerestore.pipeline_id"] for r in mine}) == 1
    latents = {r.data.params["latent"] for r in new if r.info.run_name == "train@conv_ae"}
    assert latents == {"6", "10"}
