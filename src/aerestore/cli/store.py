"""The MLflow store and the team's server: ``init-store``, ``ui``, ``team-users``."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

from aerestore.cli.common import CliError


# --------------------------------------------------------------------- init-store
def add_init_store(sub: Any) -> None:
    p = sub.add_parser(
        "init-store",
        help="create or migrate the MLflow store and the experiment",
        description="Create (or migrate) the MLflow database and the experiment. Run once "
        "before stages that may run in parallel; safe to run again.",
    )
    p.add_argument("--experiment", default=None,
                   help="experiment name (default: mlflow.experiment of params.yaml, or 'aerestore')")
    p.add_argument("--params", default="params.yaml", help="params file (default: params.yaml)")
    p.set_defaults(func=cmd_init_store)


def _experiment_name(given: str | None, params_file: str) -> str:
    """``given``, else ``mlflow.experiment`` of the params file, else the default."""
    from aerestore.tracking import DEFAULT_EXPERIMENT

    if given is not None:
        return given
    if Path(params_file).is_file():
        from aerestore.params import load_params

        return load_params(params_file).mlflow.experiment
    return DEFAULT_EXPERIMENT


def cmd_init_store(args: argparse.Namespace) -> int:
    from aerestore.tracking import artifact_location, init_store, tracking_uri

    experiment = _experiment_name(args.experiment, args.params)
    experiment_id = init_store(experiment)
    print(f"tracking URI: {tracking_uri()}")
    print(f"experiment:   {experiment} (id {experiment_id})")
    print(f"artifacts:    {artifact_location()}")
    return 0


# ----------------------------------------------------------------------------- ui
def ui_command(port: int = 5000, host: str = "127.0.0.1") -> list[str]:
    """``mlflow ui`` on this repository's store (runs keep their own artifact URIs)."""
    from aerestore.tracking import tracking_uri

    return ["mlflow", "ui", "--backend-store-uri", tracking_uri(), "--host", host, "--port", str(port)]


def ui_url(port: int, host: str, experiment: str) -> str:
    """The address that opens ``experiment`` in the UI's model-training view.

    MLflow 3.17's UI opens experiments in its GenAI view whatever their
    ``mlflow.experimentKind`` tag; ``workflowType=machine_learning`` picks the other one.
    The experiment is looked up without creating anything: with no store yet, or no such
    experiment, the address is the UI's front page."""
    base = f"http://{host}:{port}/"
    from aerestore.tracking import tracking_uri

    uri = tracking_uri()
    if uri.startswith("sqlite:///") and not Path(uri.removeprefix("sqlite:///")).is_file():
        return base
    try:
        from mlflow.tracking import MlflowClient

        exp = MlflowClient(tracking_uri=uri).get_experiment_by_name(experiment)
    except Exception:  # noqa: BLE001 - a server that is down, a store of another version: the front page
        return base
    return base if exp is None else f"{base}#/experiments/{exp.experiment_id}?workflowType=machine_learning"


def add_ui(sub: Any) -> None:
    p = sub.add_parser("ui", help="print (or run) the `mlflow ui` command for this store")
    p.add_argument("--port", type=int, default=5000)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--experiment", default=None,
                   help="experiment to open (default: mlflow.experiment of params.yaml, or 'aerestore')")
    p.add_argument("--params", default="params.yaml", help="params file (default: params.yaml)")
    p.add_argument("--run", action="store_true", help="start it instead of printing it")
    p.set_defaults(func=cmd_ui)


def cmd_ui(args: argparse.Namespace) -> int:
    import shlex

    cmd = ui_command(args.port, args.host)
    url = ui_url(args.port, args.host, _experiment_name(args.experiment, args.params))
    print(f"then open {url}", file=sys.stderr)
    if args.run:
        os.execvp(cmd[0], cmd)  # replaces this process; does not return
    print(shlex.join(cmd))
    return 0



# --------------------------------------------------------------------- team-users
def add_team_users(sub: Any) -> None:
    p = sub.add_parser(
        "team-users",
        help="create the team MLflow server's users with read / edit / manage permission",
        description="Create users on an `mlflow server --app-name basic-auth` (README: A team) and "
        "set each one's level on every experiment and registered model: read (browse), edit "
        "(log runs, register models), manage (also delete). Runs as the server's admin: "
        "MLFLOW_TRACKING_USERNAME / MLFLOW_TRACKING_PASSWORD, or --admin-password-file. New "
        "users' passwords are random, printed once (or appended to --passwords-out).",
    )
    p.add_argument("--users", metavar="FILE", help="YAML 'users: {NAME: LEVEL}' (deploy/team-users.example.yaml)")
    p.add_argument("--user", action="append", default=[], metavar="NAME=LEVEL",
                   help="a user and their level (read, edit, manage); repeatable; after --users")
    p.add_argument("--server", default=None, help="the server (default: MLFLOW_TRACKING_URI)")
    p.add_argument("--admin-user", default=None,
                   help="the admin's name with --admin-password-file (default: MLFLOW_TRACKING_USERNAME, else admin)")
    p.add_argument("--admin-password-file", metavar="FILE",
                   help="the admin's password (a git-ignored file, e.g. .team/admin-password; "
                   "default: MLFLOW_TRACKING_PASSWORD)")
    p.add_argument("--passwords-out", metavar="FILE",
                   help="append 'NAME PASSWORD' of new users here (mode 600, git-ignored) instead of printing them")
    p.add_argument("--reset-passwords", action="store_true", help="give the listed existing users new passwords too")
    p.add_argument("--new-admin-password-file", metavar="FILE",
                   help="first change the admin's own password to this file's (git-ignored, e.g. "
                   ".team/new-admin-password); then use it")
    p.set_defaults(func=cmd_team_users)


def cmd_team_users(args: argparse.Namespace) -> int:
    from aerestore import team_users as T  # noqa: N812

    users: dict[str, str] = T.read_users_file(args.users) if args.users else {}
    users.update(T.parse_user(spec) for spec in args.user)
    if not users and not args.new_admin_password_file:
        raise CliError("no users: give --users FILE and/or --user NAME=LEVEL")
    server = args.server or os.environ.get("MLFLOW_TRACKING_URI", "").strip()
    if not server:
        raise CliError("no server: set MLFLOW_TRACKING_URI or --server http://HOST:PORT")
    if args.admin_password_file:
        os.environ["MLFLOW_TRACKING_USERNAME"] = args.admin_user or os.environ.get("MLFLOW_TRACKING_USERNAME") or "admin"
        os.environ["MLFLOW_TRACKING_PASSWORD"] = T.read_admin_password_file(args.admin_password_file)
    else:
        if args.admin_user:
            os.environ["MLFLOW_TRACKING_USERNAME"] = args.admin_user
        unset = [v for v in ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD") if not os.environ.get(v)]
        if unset:
            raise CliError(f"the admin's credentials: {' and '.join(unset)} not set (or pass --admin-password-file)")
    if args.new_admin_password_file:
        T.check_server(server)
        admin = T.change_admin_password(server, args.new_admin_password_file)
        print(f"{admin}: password changed to the one in {args.new_admin_password_file}", file=sys.stderr)
    changes = T.apply(server, users, reset_passwords=args.reset_passwords) if users else []
    for c in changes:
        print(f"{c.username}: {c.level}{' (new user)' if c.created else ''}", file=sys.stderr)
    if args.passwords_out:
        n = T.write_passwords(args.passwords_out, changes)
        print(f"{n} new password(s) appended to {args.passwords_out}", file=sys.stderr)
    else:
        for c in changes:
            if c.password:
                print(f"{c.username} {c.password}")
    return 0

