"""``aerestore team-users``: the users of the team's MLflow server and what each may do.

The server runs MLflow's basic-auth app (``mlflow server --app-name basic-auth``, README: A
team) with ``default_permission = NO_PERMISSIONS`` (``deploy/mlflow-basic-auth.ini``): a
user sees nothing until granted. This command, run by the admin, creates each listed user
and sets one of three levels on every experiment and registered model (MLflow's wildcard
grants, resource id ``*``, so experiments and models created later are covered too):

- ``read``: MLflow's READ: browse runs, metrics, artifacts and models; log or delete nothing;
- ``edit``: EDIT: also create runs in the team's experiments, log to them and register
  model versions (what ``dvc repro`` / ``dvc exp run`` with tracking need);
- ``manage``: MANAGE: also delete runs, experiments and models.

Everything goes through MLflow's own client for the auth app
(:class:`mlflow.server.auth.client.AuthServiceClient`, its REST API); nothing here
touches the auth database. A new user gets a random password, printed once (or appended
to ``--passwords-out``, a file only its owner can read); an existing user keeps theirs
unless ``--reset-passwords``, and gets the level listed (up or down).

The admin's credentials: ``MLFLOW_TRACKING_USERNAME`` / ``MLFLOW_TRACKING_PASSWORD`` (the
variables MLflow's client sends), or ``--admin-password-file``, which must not be a file
git could commit (the default place, ``.team/``, is git-ignored). ``--new-admin-password-file``
changes the admin's own password first (the server made the admin with
``MLFLOW_AUTH_ADMIN_PASSWORD``; this retires that value).
"""

from __future__ import annotations

import os
import re
import secrets
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

#: Our level -> MLflow's permission, granted on each resource type below.
LEVELS = {"read": "READ", "edit": "EDIT", "manage": "MANAGE"}
RESOURCE_TYPES = ("experiment", "registered_model")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@-]{0,63}$")


class TeamUsersError(ValueError):
    """Bad input or a refusal of the server, as one line for the user."""


@dataclass(frozen=True)
class Change:
    username: str
    level: str
    created: bool
    password: str | None  # set when created or reset


def parse_user(spec: str, where: str = "--user") -> tuple[str, str]:
    """``alice=edit`` -> ``('alice', 'edit')``, naming what is wrong otherwise."""
    name, sep, level = spec.partition("=")
    name, level = name.strip(), level.strip().lower()
    if not sep or not name:
        raise TeamUsersError(f"{where}: {spec!r} is not NAME=LEVEL (LEVEL: {', '.join(LEVELS)})")
    return check_user(name, level, where)


def check_user(name: str, level: str, where: str) -> tuple[str, str]:
    if not _NAME.match(name):
        raise TeamUsersError(f"{where}: user name {name!r}: letters, digits and . _ @ - only, 1-64 characters")
    if level not in LEVELS:
        raise TeamUsersError(f"{where}: user {name!r}: level {level!r} is not one of {', '.join(LEVELS)}")
    return name, level


def read_users_file(path: str | Path) -> dict[str, str]:
    """A YAML mapping ``users: {alice: edit, bob: read}`` (``deploy/team-users.example.yaml``)."""
    import yaml

    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text())
    except OSError as exc:
        raise TeamUsersError(f"{path}: cannot read it ({exc.strerror})") from None
    except yaml.YAMLError as exc:
        raise TeamUsersError(f"{path}: not valid YAML ({str(exc).splitlines()[0]})") from None
    users = data.get("users") if isinstance(data, dict) else None
    if not isinstance(users, dict) or not users:
        raise TeamUsersError(f"{path}: expected a mapping 'users:' of NAME: LEVEL ({', '.join(LEVELS)})")
    return dict(check_user(str(name), str(level).strip().lower(), str(path)) for name, level in users.items())


def git_could_commit(path: Path) -> bool:
    """Whether ``path`` lies in a git work tree and is tracked or not ignored: a secret
    there could end up in git. Outside git (``/etc/...``), or ignored: False."""
    folder = path.resolve().parent
    try:
        inside = subprocess.run(["git", "rev-parse", "--is-inside-work-tree"], cwd=folder,
                                capture_output=True, text=True, timeout=30)
        if inside.returncode != 0 or inside.stdout.strip() != "true":
            return False
        tracked = subprocess.run(["git", "ls-files", "--error-unmatch", path.name], cwd=folder,
                                 capture_output=True, timeout=30).returncode == 0
        ignored = subprocess.run(["git", "check-ignore", "-q", path.name], cwd=folder,
                                 capture_output=True, timeout=30).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False
    return tracked or not ignored


def _secret_file(path: str | Path, what: str) -> Path:
    path = Path(path)
    if git_could_commit(path):
        raise TeamUsersError(f"{what} {path} is in a git work tree and not git-ignored: keep secrets out "
                             f"of git (put it under .team/, which .gitignore lists, or outside the repository)")
    return path


def read_admin_password_file(path: str | Path, option: str = "--admin-password-file") -> str:
    path = _secret_file(path, option)
    try:
        password = path.read_text().strip()
    except OSError as exc:
        raise TeamUsersError(f"{option} {path}: cannot read it ({exc.strerror})") from None
    if not password:
        raise TeamUsersError(f"{option} {path} is empty")
    return password


def _server_error(exc: Exception, server: str, admin: str | None) -> TeamUsersError:
    from aerestore.tracking.store import CREDENTIAL_VARS, _http_status

    status = _http_status(exc)
    if status == 401:
        return TeamUsersError(f"MLflow server {server} rejected the admin login {admin!r} (401): set "
                              f"{CREDENTIAL_VARS[0]} and {CREDENTIAL_VARS[1]} to the admin's, or pass "
                              f"--admin-password-file")
    if status == 403:
        return TeamUsersError(f"MLflow server {server}: user {admin!r} is not an admin (403 permission denied)")
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return TeamUsersError(f"MLflow server {server}: {text}")


def check_server(server: str) -> None:
    """An http(s) address that answers, or one line saying why not (quickly: MLflow's
    client would retry a dead server for minutes)."""
    import requests

    if not server.startswith(("http://", "https://")):
        raise TeamUsersError(f"the server must be an http(s):// address of `mlflow server --app-name "
                             f"basic-auth`, not {server!r} (set MLFLOW_TRACKING_URI or --server)")
    try:
        requests.get(f"{server.rstrip('/')}/health", timeout=10)
    except requests.RequestException as exc:
        raise TeamUsersError(f"MLflow server {server} does not answer ({type(exc).__name__}): "
                             f"is `mlflow server` running there?") from None


def apply(server: str, users: dict[str, str], reset_passwords: bool = False) -> list[Change]:
    """Create the missing users and set each one's level; return what was done.

    The caller has put the admin's credentials in the environment (MLflow's client reads
    ``MLFLOW_TRACKING_USERNAME`` / ``MLFLOW_TRACKING_PASSWORD`` for every request)."""
    check_server(server)  # before importing the client, which imports MLflow's server (seconds)
    from mlflow.exceptions import MlflowException
    from mlflow.server.auth.client import AuthServiceClient

    admin = os.environ.get("MLFLOW_TRACKING_USERNAME")
    client = AuthServiceClient(server)
    changes: list[Change] = []
    try:
        for name, level in users.items():
            created, password = False, None
            try:
                client.get_user(name)
            except MlflowException as exc:
                if getattr(exc, "error_code", None) != "RESOURCE_DOES_NOT_EXIST":
                    raise
                password = secrets.token_urlsafe(18)
                client.create_user(name, password)
                created = True
            if reset_passwords and not created:
                password = secrets.token_urlsafe(18)
                client.update_user_password(name, password)
            for resource_type in RESOURCE_TYPES:
                _set_grant(client, name, resource_type, LEVELS[level])
            changes.append(Change(name, level, created, password))
    except MlflowException as exc:
        raise _server_error(exc, server, admin) from None
    return changes


def _set_grant(client, username: str, resource_type: str, permission: str) -> None:
    """The user's grant on every ``resource_type`` (id ``*``) becomes ``permission``.
    MLflow refuses a second grant on the same key (RESOURCE_ALREADY_EXISTS), so a changed
    level is a revoke, then a grant."""
    from mlflow.exceptions import MlflowException

    try:
        client.grant_user_permission(username, resource_type, "*", permission)
    except MlflowException as exc:
        if getattr(exc, "error_code", None) != "RESOURCE_ALREADY_EXISTS":
            raise
        current = client.get_user_permission(username, resource_type, "*").permission
        if current != permission:
            client.revoke_user_permission(username, resource_type, "*")
            client.grant_user_permission(username, resource_type, "*", permission)


def change_admin_password(server: str, new_password_file: str | Path) -> str:
    """Give the admin (the caller, ``MLFLOW_TRACKING_USERNAME``) the password in
    ``new_password_file``: MLflow's self-service change, which wants the current one too.
    Returns the admin's name."""
    from mlflow.exceptions import MlflowException
    from mlflow.server.auth.client import AuthServiceClient

    new = read_admin_password_file(new_password_file, "--new-admin-password-file")
    admin, current = os.environ.get("MLFLOW_TRACKING_USERNAME"), os.environ.get("MLFLOW_TRACKING_PASSWORD")
    if new == current:
        raise TeamUsersError(f"--new-admin-password-file {new_password_file} holds the current password")
    try:
        AuthServiceClient(server).update_user_password(admin, new, current_password=current)
    except MlflowException as exc:
        raise _server_error(exc, server, admin) from None
    os.environ["MLFLOW_TRACKING_PASSWORD"] = new  # the next requests of this process
    return admin


def write_passwords(path: str | Path, changes: Iterable[Change]) -> int:
    """Append ``NAME PASSWORD`` lines for the new passwords to ``path`` (mode 0600)."""
    path = _secret_file(path, "--passwords-out")
    lines = [f"{c.username} {c.password}\n" for c in changes if c.password]
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    with os.fdopen(fd, "a") as out:
        out.writelines(lines)
    os.chmod(path, 0o600)
    return len(lines)
