"""The team MLflow server with authentication (README: A team): a real PostgreSQL server
(loopback, free port, temp folder) holding the tracking store and, in a database of its own,
the users of MLflow's basic-auth app; `mlflow server --app-name basic-auth` in front of it
with the repository's `deploy/mlflow-basic-auth.ini`; users made by `aerestore team-users`.
Then: no or wrong credentials get 401, a reader reads but cannot log or delete (403), a
writer runs an aerestore stage's tracking (a run, a registered model) with credentials from
the environment, and missing or wrong ones stop the stage with one line naming the
variables. Plus: DVC remote credentials go to the git-ignored `.dvc/config.local`. Two
tests need no server and run in the suite: `team-users`' refusals of bad input and our lines
for MLflow's 401/403 exceptions."""

from __future__ import annotations

import re
import secrets
import subprocess
from pathlib import Path
from types import SimpleNamespace

import mlflow
import numpy as np
import pytest
import requests

import postgres_server
from aerestore import cli
from aerestore.params import parse_params
from aerestore.tracking import TrackingError, init_store, stage_run
from helpers import mlflow_server, save_tiny_restorer
from test_tracking import make_repo

team = pytest.mark.team  # ./run.sh test -m team: they start real servers
needs_postgres = pytest.mark.skipif(postgres_server.missing() is not None, reason=str(postgres_server.missing()))

REPO = Path(__file__).resolve().parents[1]
CREDS = ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD")
EVALUATION = {"images": 5, "degraded": {"psnr": 20.25},
              "conv_ae": {"multi": {"psnr": 25.5, "ssim": 0.8125, "psnr_blur": 24.0},
                          "single": {"psnr": 25.0, "ssim": 0.75}}}


def _login(mp: pytest.MonkeyPatch, user: str | None, password: str | None) -> None:
    for var, value in zip(CREDS, (user, password)):
        if value is None:
            mp.delenv(var, raising=False)
        else:
            mp.setenv(var, value)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """PostgreSQL + `mlflow server --app-name basic-auth`; the admin's password random,
    given to the server in MLFLOW_AUTH_ADMIN_PASSWORD only; `aerestore team-users` makes
    reader (read), writer (edit) and boss (manage); the admin creates the experiment."""
    import psycopg

    tmp = tmp_path_factory.mktemp("auth")
    bootstrap, admin = secrets.token_urlsafe(16), secrets.token_urlsafe(16)
    with postgres_server.postgres() as store, pytest.MonkeyPatch.context() as mp:
        base = store.rsplit("/", 1)[0]
        with psycopg.connect(store, autocommit=True) as conn:
            conn.execute('CREATE DATABASE "mlflow_auth"')
        # the repository's config, but the test server's database
        ini = (REPO / "deploy" / "mlflow-basic-auth.ini").read_text()
        ini, n = re.subn(r"(?m)^database_uri = .*$", f"database_uri = {base}/mlflow_auth", ini)
        assert n == 1
        (tmp / "auth.ini").write_text(ini)
        env = {"MLFLOW_AUTH_CONFIG_PATH": str(tmp / "auth.ini"), "MLFLOW_AUTH_ADMIN_PASSWORD": bootstrap,
               "MLFLOW_FLASK_SERVER_SECRET_KEY": secrets.token_hex(16)}
        with mlflow_server(store, tmp, "--app-name", "basic-auth", "--artifacts-destination",
                           str(tmp / "artifacts"), env=env) as url:
            mp.setenv("MLFLOW_TRACKING_URI", url)
            (tmp / "users.yaml").write_text("users:\n  reader: read\n  writer: edit\n")
            (tmp / "admin-password").write_text(bootstrap + "\n")
            (tmp / "new-admin-password").write_text(admin + "\n")
            _login(mp, None, None)  # the admin's password from the file, then changed
            assert cli.main(["team-users", "--users", str(tmp / "users.yaml"), "--user", "boss=manage",
                             "--admin-password-file", str(tmp / "admin-password"),
                             "--new-admin-password-file", str(tmp / "new-admin-password"),
                             "--passwords-out", str(tmp / "passwords")]) == 0
            passwords = dict(line.split() for line in (tmp / "passwords").read_text().splitlines())
            _login(mp, "admin", admin)
            make_repo(tmp / "admin-repo", None, mp)
            mp.setenv("MLFLOW_TRACKING_URI", url)
            experiment_id = init_store()  # README: the admin runs `aerestore init-store` once
            mlflow.set_tracking_uri(None)  # (it also unsets MLFLOW_TRACKING_URI: tests set it again)
            yield SimpleNamespace(url=url, api=f"{url}/api/2.0/mlflow", admin=("admin", admin), bootstrap=bootstrap,
                                  passwords=passwords, experiment_id=experiment_id, tmp=tmp)


def _as(server, user: str) -> tuple[str, str]:
    return (user, server.passwords[user])


def _new_run(server, auth) -> str:
    r = requests.post(f"{server.api}/runs/create", json={"experiment_id": server.experiment_id}, auth=auth,
                      timeout=30)
    assert r.status_code == 200, r.text
    return r.json()["run"]["info"]["run_id"]


@team
@needs_postgres
def test_no_or_wrong_credentials_are_refused_401(server):
    search = f"{server.api}/experiments/search"
    assert requests.get(search, params={"max_results": 5}, timeout=30).status_code == 401
    assert requests.get(search, params={"max_results": 5}, auth=("reader", "not-the-password"),
                        timeout=30).status_code == 401
    # MLflow's old default admin password, and the one the server started with: not the admin's
    for retired in ("password1234", server.bootstrap):
        assert requests.get(search, params={"max_results": 5}, auth=("admin", retired),
                            timeout=30).status_code == 401
    assert requests.get(search, params={"max_results": 5}, auth=server.admin, timeout=30).status_code == 200
    assert requests.get(f"{server.url}/health", timeout=30).status_code == 200  # the probe stays open


@team
@needs_postgres
def test_team_users_made_the_users_and_sets_levels_again_without_new_passwords(server, monkeypatch, capsys):
    from mlflow.server.auth.client import AuthServiceClient

    assert sorted(server.passwords) == ["boss", "reader", "writer"]
    assert oct((server.tmp / "passwords").stat().st_mode & 0o777) == "0o600"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", server.url)
    _login(monkeypatch, *server.admin)
    auth = AuthServiceClient(server.url)
    levels = {u: auth.get_user_permission(u, "experiment", "*").permission for u in server.passwords}
    assert levels == {"reader": "READ", "writer": "EDIT", "boss": "MANAGE"}
    assert not any(auth.get_user(u).is_admin for u in server.passwords)
    # again, with a level changed and changed back: no new user, no password printed
    for level in ("edit", "read"):
        capsys.readouterr()
        assert cli.main(["team-users", "--user", f"reader={level}"]) == 0
        out = capsys.readouterr()
        assert out.out == "" and "new user" not in out.err
        assert auth.get_user_permission("reader", "registered_model", "*").permission == level.upper()
    r = requests.get(f"{server.api}/experiments/search", params={"max_results": 5}, auth=_as(server, "reader"),
                     timeout=30)
    assert r.status_code == 200  # the password still works


@team
@needs_postgres
def test_a_reader_reads_but_cannot_log_or_delete_403(server):
    run_id = _new_run(server, _as(server, "writer"))
    reader = _as(server, "reader")
    get = requests.get(f"{server.api}/runs/get", params={"run_id": run_id}, auth=reader, timeout=30)
    assert get.status_code == 200 and get.json()["run"]["info"]["run_id"] == run_id
    search = requests.post(f"{server.api}/runs/search", json={"experiment_ids": [server.experiment_id]},
                           auth=reader, timeout=30)
    assert run_id in {r["info"]["run_id"] for r in search.json()["runs"]}
    refused = {
        "create a run": ("post", "runs/create", {"experiment_id": server.experiment_id}),
        "log a metric": ("post", "runs/log-metric", {"run_id": run_id, "key": "m", "value": 1.0, "timestamp": 0}),
        "set a tag": ("post", "runs/set-tag", {"run_id": run_id, "key": "k", "value": "v"}),
        "delete the run": ("post", "runs/delete", {"run_id": run_id}),
        "delete the experiment": ("post", "experiments/delete", {"experiment_id": server.experiment_id}),
    }
    for what, (method, path, body) in refused.items():
        r = getattr(requests, method)(f"{server.api}/{path}", json=body, auth=reader, timeout=30)
        assert r.status_code == 403, (what, r.status_code, r.text[:200])
    # an editor logs but does not delete; a manager deletes
    writer = _as(server, "writer")
    assert requests.post(f"{server.api}/runs/delete", json={"run_id": run_id}, auth=writer, timeout=30).status_code == 403
    assert requests.post(f"{server.api}/runs/delete", json={"run_id": run_id}, auth=_as(server, "boss"),
                         timeout=30).status_code == 200


@team
@needs_postgres
def test_a_writer_runs_a_stage_s_tracking_and_registers_a_model_with_credentials_from_the_environment(
        server, tmp_path, monkeypatch):
    from mlflow.tracking import MlflowClient

    root = make_repo(tmp_path / "repo", None, monkeypatch)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", server.url)
    _login(monkeypatch, *_as(server, "writer"))
    save_tiny_restorer(root / "models" / "conv_ae")
    val = root / "data" / "prepared" / "val"  # the champion is chosen on the validation split
    val.mkdir(parents=True)
    rng = np.random.default_rng(3)
    np.save(val / "clean.npy", rng.integers(0, 256, (3, 16, 16, 3), dtype=np.uint8))
    np.save(val / "degraded.npy", rng.integers(0, 256, (3, 16, 16, 3), dtype=np.uint8))
    params = parse_params({"architectures": ["conv_ae"], "blocks": {"size": 16}})
    try:
        with stage_run("evaluate", params, keys=["evaluate"]) as run:
            run.log_metrics({"conv_ae": {"multi": {"psnr": 25.5}}})
            best = run.register_restorers(root / "models", ["conv_ae"], EVALUATION,
                                          prepared=root / "data" / "prepared")
    finally:
        mlflow.set_tracking_uri(None)
    assert best == "conv_ae"
    # what the writer logged, as the reader sees it
    _login(monkeypatch, *_as(server, "reader"))
    client = MlflowClient(server.url)
    got = client.get_run(run.run_id)
    assert got.info.status == "FINISHED" and got.info.experiment_id == server.experiment_id
    assert got.data.metrics["conv_ae.multi.psnr"] == 25.5
    [version] = client.search_model_versions("name = 'aerestore-conv_ae'")
    assert version.run_id == run.run_id and version.status == "READY"
    assert client.get_model_version_by_alias("aerestore-conv_ae", "champion").version == version.version
    r = requests.delete(f"{server.api}/registered-models/delete", json={"name": "aerestore-conv_ae"},
                        auth=_as(server, "reader"), timeout=30)
    assert r.status_code == 403


@team
@needs_postgres
def test_missing_wrong_or_too_weak_credentials_stop_a_stage_in_one_line(server, tmp_path, monkeypatch, capsys):
    make_repo(tmp_path / "repo", None, monkeypatch)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", server.url)
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.mlflow/credentials either
    params = parse_params({"architectures": ["conv_ae"]})
    cases = {
        "none": ((None, None), ["401", *CREDS, "are not set"]),
        "no password": (("writer", None), ["401", "MLFLOW_TRACKING_PASSWORD is not set"]),
        "wrong": (("writer", "not-the-password"), ["401", "'writer'", "wrong", *CREDS]),
        "reader": (_as(server, "reader"), ["403", "'reader'", "edit", "aerestore team-users --user reader=edit"]),
    }
    try:
        for case, (login, expected) in cases.items():
            _login(monkeypatch, *login)
            with pytest.raises(TrackingError) as err:
                with stage_run("evaluate", params, keys=["evaluate"]):
                    pytest.fail("the stage's body must not run")
            text = str(err.value)
            assert "\n" not in text and server.url in text, (case, text)
            assert all(e in text for e in expected), (case, text)
        _login(monkeypatch, None, None)  # the command, too: one line, exit code 2
        capsys.readouterr()
        assert cli.main(["init-store"]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and err.startswith("aerestore init-store: MLflow server") and CREDS[0] in err
    finally:
        mlflow.set_tracking_uri(None)  # (it also unsets MLFLOW_TRACKING_URI)


def test_team_users_refuses_bad_input_in_one_line(tmp_path, monkeypatch, capsys):
    """No server needed (in the suite): each refusal comes before any request, or from the
    quick look at a port where nothing listens."""
    # an admin password in a git repository, not ignored: refused before any request
    subprocess.run(["git", "init", "-q", str(tmp_path)], check=True)
    (tmp_path / "admin-password").write_text("s3cret-s3cret\n")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"http://127.0.0.1:{postgres_server._free_port()}")
    _login(monkeypatch, None, None)
    cases = {
        ("--user", "alice=admin"): "level 'admin' is not one of read, edit, manage",
        ("--user", "alice"): "'alice' is not NAME=LEVEL",
        ("--user", "alice=edit"): "MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD not set",
        ("--user", "alice=edit", "--admin-password-file", str(tmp_path / "admin-password")):
            "is in a git work tree and not git-ignored",
        ("--users", str(tmp_path / "missing.yaml")): "missing.yaml: cannot read it",
    }
    for argv, expected in cases.items():
        assert cli.main(["team-users", *argv]) == 2, argv
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and expected in err, (argv, err)
    # a server that does not answer
    _login(monkeypatch, "admin", "whatever-password")
    assert cli.main(["team-users", "--user", "alice=edit"]) == 2
    assert "does not answer" in capsys.readouterr().err


@team
def test_dvc_remote_credentials_stay_in_the_git_ignored_config_local(tmp_path):
    def run(*cmd):
        return subprocess.run(cmd, cwd=tmp_path, check=True, capture_output=True, text=True).stdout

    run("git", "init", "-q")
    run("dvc", "init", "-q")
    run("dvc", "remote", "add", "-d", "team", "https://dvc.lab.example/cache")
    run("dvc", "remote", "modify", "--local", "team", "user", "alice")
    run("dvc", "remote", "modify", "--local", "team", "password", "s3cret-dvc")
    shared, local = (tmp_path / ".dvc" / "config").read_text(), (tmp_path / ".dvc" / "config.local").read_text()
    assert "team" in shared and "s3cret-dvc" not in shared and "alice" not in shared
    assert "s3cret-dvc" in local
    run("git", "check-ignore", "-q", ".dvc/config.local")  # DVC's own .dvc/.gitignore
    run("git", "add", "-A")
    assert ".dvc/config.local" not in run("git", "status", "--porcelain")
    # and in this repository: its .dvc/.gitignore keeps config.local out of git too
    assert subprocess.run(["git", "check-ignore", "-q", ".dvc/config.local"], cwd=REPO).returncode == 0


def test_a_server_s_refusal_is_one_line_naming_the_variables_or_the_permission(monkeypatch, tmp_path):
    """Without a server (in the suite): MLflow's exceptions for 401 and 403 become our lines."""
    from mlflow.exceptions import MlflowException

    from aerestore.tracking.store import _store_problem

    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.mlflow/credentials
    url = "http://mlflow.lab.example:5000"
    refused = MlflowException("API request to endpoint /api/2.0/mlflow/experiments/get-by-name failed with "
                              "error code 401 != 200. Response body: 'You are not authenticated.'",
                              error_code="UNAUTHENTICATED")
    denied = MlflowException("failed with error code 403 != 200. Response body: 'Permission denied'",
                             error_code="PERMISSION_DENIED")
    cases = {
        ((None, None), refused): "MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD are not set",
        (("ann", None), refused): "MLFLOW_TRACKING_PASSWORD is not set",
        (("ann", "pw"), refused): "rejected the login of 'ann' (401 not authenticated): wrong",
        (("ann", "pw"), denied): "refused user 'ann' this request (403 permission denied)",
    }
    for (login, exc), expected in cases.items():
        _login(monkeypatch, *login)
        text = _store_problem(url, exc)
        assert "\n" not in text and text.startswith(f"MLflow server {url} ") and expected in text, text
    # a database store's errors are not mistaken for a server's
    assert _store_problem("sqlite:////x/mlflow.db", MlflowException("error code 401")).startswith("MLflow store")
