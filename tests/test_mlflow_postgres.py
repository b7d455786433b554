"""The team set-up for MLflow: a real PostgreSQL server (loopback, free port, temp folder)
as the backend store, an `mlflow server` in front of it with `--artifacts-destination`, and
the pipeline pointed at the server with MLFLOW_TRACKING_URI. A tiny tracked `dvc repro`,
then two queued experiments run two at a time (`dvc queue start -j 2`); MLflow's REST API
must then list every run, metric and registered model version: none lost."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

import postgres_server
from helpers import mlflow_server
from pipeline_utils import env as pipeline_env
from pipeline_utils import make_repo, run, start_queue, wait_for_queue

pytestmark = [pytest.mark.pipeline, pytest.mark.team]  # ./run.sh test -m team

STAGES = {"train@conv_ae", "cluster@conv_ae", "decoders@conv_ae", "evaluate"}


def _run(cmd: list[str], cwd: Path, uri: str) -> subprocess.CompletedProcess:
    return run(cmd, cwd, extra_env={"MLFLOW_TRACKING_URI": uri})


@pytest.mark.skipif(postgres_server.missing() is not None, reason=str(postgres_server.missing()))
def test_pipeline_and_parallel_queue_on_postgresql_lose_nothing(tmp_path):
    import requests

    repo = make_repo(tmp_path / "repo", {
        "architectures": ["conv_ae"],
        "data": {"limit": 20},
        "mlflow": {"enabled": True, "register_models": True},
    })
    artifacts = tmp_path / "artifacts"
    with (postgres_server.postgres() as store,
          mlflow_server(store, tmp_path, "--artifacts-destination", str(artifacts), workers=2) as url):
        _run(["aerestore", "init-store"], repo, url)
        _run(["dvc", "repro"], repo, url)
        _run(["git", "add", "-A"], repo, url)
        _run(["git", "commit", "-qm", "baseline"], repo, url)
        # two experiments at once, each rerunning decoders@conv_ae and evaluate
        _run(["dvc", "exp", "run", "--queue", "-S", "decoders.lr=0.0002,0.0005"], repo, url)
        start_queue(repo, jobs=2, extra_env={"MLFLOW_TRACKING_URI": url})
        status = wait_for_queue(repo, jobs=2, extra_env={"MLFLOW_TRACKING_URI": url})
        if status.count("Success") != 2:
            logs = "".join(subprocess.run(["dvc", "queue", "logs", line.split()[0]], cwd=repo, env=pipeline_env(),
                                          capture_output=True, text=True).stdout[-3000:]
                           for line in status.splitlines()[1:] if line.strip() and "Worker" not in line)
            pytest.fail(f"{status}\n{logs}")

        api = f"{url}/api/2.0/mlflow"
        exp = requests.get(f"{api}/experiments/get-by-name", params={"experiment_name": "aerestore"},
                           timeout=30).json()["experiment"]
        runs = requests.post(f"{api}/runs/search", json={"experiment_ids": [exp["experiment_id"]],
                                                          "max_results": 1000}, timeout=30).json()["runs"]

        def tag(r, key):
            return {t["key"]: t["value"] for t in r["data"].get("tags", [])}.get(key)

        by_exp: dict[str, list] = {}
        for r in runs:
            by_exp.setdefault(tag(r, "dvc.exp_name"), []).append(r)
        assert len(by_exp) == 3 and "workspace" in by_exp, sorted(by_exp)
        assert {r["info"]["run_name"] for r in by_exp.pop("workspace")} == STAGES
        for name, mine in by_exp.items():  # each queued experiment: its two stages, once each
            assert sorted(r["info"]["run_name"] for r in mine) == ["decoders@conv_ae", "evaluate"], name
        assert all(r["info"]["status"] == "FINISHED" for r in runs)
        lrs = {p["value"] for r in runs if r["info"]["run_name"] == "decoders@conv_ae"
               for p in r["data"]["params"] if p["key"] == "decoders.lr"}
        assert lrs == {"0.0001", "0.0002", "0.0005"}
        for r in runs:  # every run has its final metrics
            keys = {m["key"] for m in r["data"].get("metrics", [])}
            if r["info"]["run_name"] == "evaluate":
                assert {"conv_ae.multi.psnr", "conv_ae.single.psnr", "degraded.psnr"} <= keys
            if r["info"]["run_name"] == "decoders@conv_ae":
                assert "val_loss.multi" in keys or any(k.startswith("val_loss") for k in keys)
        # one registered version per evaluate run, each pointing at its run
        versions = requests.get(f"{api}/model-versions/search", params={"filter": "name='aerestore-conv_ae'"},
                                timeout=30).json()["model_versions"]
        evaluate_ids = {r["info"]["run_id"] for r in runs if r["info"]["run_name"] == "evaluate"}
        assert {v["run_id"] for v in versions} == evaluate_ids and len(versions) == 3
        assert all(v["status"] == "READY" for v in versions)
        # the artifacts went to the server's --artifacts-destination
        assert any((tmp_path / "artifacts").rglob("summary.md"))
