"""Where the MLflow runs go, the store's creation, and the store's errors.

Where the runs go
-----------------
The store is ``sqlite:///<repo root>/mlflow.db`` and the artifacts go to
``<repo root>/mlruns/<experiment>/`` (``MLFLOW_TRACKING_URI`` overrides the store,
e.g. a server).
The repository root is ``DVC_ROOT`` when DVC runs the stage: DVC sets it to the
*main* repository even for ``dvc exp run --temp`` / ``--queue``, whose stages run in a
throw-away copy under ``.dvc/tmp/exps/`` that is deleted afterwards. A store inside
that copy would be lost, so the root is never taken from the copy.

A store that is locked or corrupt, or a server that refuses us, stops the stage with one
line naming it (:class:`TrackingError`), before the stage writes anything.
"""

from __future__ import annotations

import os
import re
import subprocess
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator
from urllib.parse import quote

from aerestore.stage import StageError
from aerestore.tracking.notes import EXPERIMENT_KIND, EXPERIMENT_KIND_TAG, EXPERIMENT_NOTE, NOTE_TAG

DB_FILE = "mlflow.db"
ARTIFACT_DIR = "mlruns"
LOCK_FILE = ".mlflow.lock"
DEFAULT_EXPERIMENT = "aerestore"


# ----------------------------------------------------------------------------- where
def repo_root() -> Path:
    """The repository whose ``mlflow.db`` and ``mlruns/`` hold the runs.

    In order: ``DVC_ROOT`` (set by DVC for every stage, always the main repository);
    the part of the working directory before ``/.dvc/tmp/exps/`` (a DVC temp
    workspace run by hand); the nearest folder holding ``.dvc/``; the git top level;
    the working directory.
    """
    env = os.environ.get("DVC_ROOT")
    if env:
        return Path(env).resolve()
    cwd = Path.cwd().resolve()
    parts = cwd.parts
    for i in range(1, len(parts) - 2):
        if parts[i : i + 3] == (".dvc", "tmp", "exps"):
            return Path(*parts[:i])
    for folder in (cwd, *cwd.parents):
        if (folder / ".dvc").is_dir():
            return folder
    try:
        top = subprocess.run(
            ["git", "rev-parse", "--show-toplevel"],
            cwd=cwd, capture_output=True, text=True, timeout=10,
        )
        if top.returncode == 0 and top.stdout.strip():
            return Path(top.stdout.strip()).resolve()
    except (OSError, subprocess.TimeoutExpired):
        pass
    return cwd


def tracking_uri() -> str:
    """``MLFLOW_TRACKING_URI`` when set, else ``sqlite:///<abs repo root>/mlflow.db``."""
    env = os.environ.get("MLFLOW_TRACKING_URI", "").strip()
    if env:
        return env
    return f"sqlite:///{repo_root() / DB_FILE}"


def artifact_location() -> str:
    """``file://<abs repo root>/mlruns``: where the experiment we create keeps artifacts."""
    return (repo_root() / ARTIFACT_DIR).as_uri()


def _is_db_uri(uri: str) -> bool:
    return uri.split(":", 1)[0].split("+", 1)[0] in ("sqlite", "postgresql", "mysql", "mssql")


def _prepare_db(uri: str) -> None:
    """Create the tables of a fresh database, or migrate an old one.

    A fresh database gets the "Default" experiment with its artifacts in the
    repository (not in whatever folder this process runs in). An old one is migrated
    as ``mlflow db upgrade`` would, after an SQLite file is copied to
    ``mlflow.db.bak-<old schema revision>``. The caller holds the lock.
    """
    import shutil

    import mlflow.store.db.utils as dbu

    engine = dbu.create_sqlalchemy_engine_with_retry(uri)
    try:
        fresh = dbu._is_empty_database(engine)
        current = None if fresh else dbu._get_schema_version(engine)
        if not fresh and current != dbu._get_latest_schema_revision():
            if uri.startswith("sqlite:///"):
                db = Path(uri.removeprefix("sqlite:///"))
                shutil.copy2(db, db.with_name(f"{db.name}.bak-{current}"))
            dbu._upgrade_db(engine)
    finally:
        engine.dispose()
    if fresh:
        from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore

        SqlAlchemyStore(uri, (repo_root() / ARTIFACT_DIR).as_uri())  # runs every migration


def init_store(experiment: str = DEFAULT_EXPERIMENT) -> str:
    """Create (or migrate) the store and the experiment; return the experiment id.

    Safe to call from several processes at once: everything happens under a file
    lock at ``<repo root>/.mlflow.lock`` (two processes creating a fresh SQLite
    database at the same time would otherwise both run the migrations). Calling it
    on an existing store costs what opening the store costs anyway (MLflow checks
    the schema version) plus one query. An out-of-date database is migrated, as
    ``mlflow db upgrade`` would, after a backup copy. The experiment is tagged as
    model training (``mlflow.experimentKind``) and gets a description, also when it
    exists without them. A locked (for
    more than :data:`DB_TIMEOUT_S`) or corrupt ``mlflow.db`` raises
    :class:`TrackingError`, naming the file.
    """
    # Imported before taking the lock, so that processes waiting for it do not then
    # import one after the other (seconds each).
    import mlflow.store.db.utils  # noqa: F401
    import mlflow.store.tracking.sqlalchemy_store  # noqa: F401
    from filelock import FileLock
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    uri = tracking_uri()
    root = repo_root()
    with FileLock(str(root / LOCK_FILE), timeout=600), _store_errors(uri):
        _check_sqlite(uri)  # a locked or corrupt mlflow.db: one clear line, at once
        if _is_db_uri(uri):
            _prepare_db(uri)
        client = MlflowClient(tracking_uri=uri)  # the store the fluent API will use too
        exp = client.get_experiment_by_name(experiment)
        if exp is None:
            # A server picks its own artifact store; a database we own gets the
            # repository's mlruns/<experiment>/ (runs then sit in mlruns/<experiment>/<run id>).
            location = f"{artifact_location()}/{quote(experiment, safe='')}" if _is_db_uri(uri) else None
            try:
                client.create_experiment(experiment, artifact_location=location,
                                         tags={EXPERIMENT_KIND_TAG: EXPERIMENT_KIND, NOTE_TAG: EXPERIMENT_NOTE})
            except MlflowException:  # created meanwhile by another machine (a shared server)
                pass
            exp = client.get_experiment_by_name(experiment)
            if exp is None:
                raise TrackingError(f"MLflow store {_store_name(uri)}: cannot create the experiment {experiment!r}")
        if exp.lifecycle_stage == "deleted":
            client.restore_experiment(exp.experiment_id)
        # Model training, not GenAI: MLflow's API and UIs before 3.17 read the kind from
        # this tag (3.17's UI takes its "GenAI / Model training" switch instead, or
        # ?workflowType=machine_learning in the URL). A description the user wrote is kept.
        if exp.tags.get(EXPERIMENT_KIND_TAG) != EXPERIMENT_KIND:
            client.set_experiment_tag(exp.experiment_id, EXPERIMENT_KIND_TAG, EXPERIMENT_KIND)
        if not exp.tags.get(NOTE_TAG):
            client.set_experiment_tag(exp.experiment_id, NOTE_TAG, EXPERIMENT_NOTE)
        return exp.experiment_id


# ------------------------------------------------------------------- store errors
#: How long a stage waits for a locked ``mlflow.db`` before it stops with a clear error.
DB_TIMEOUT_S = 60.0


class TrackingError(StageError):
    """The MLflow store cannot be used (locked, corrupt, unreachable). The message names
    the store; ``stage.main`` prints it as ``error in stage X: ...`` and exits 2."""


def _store_name(uri: str) -> str:
    """The SQLite file, or the URI without its password."""
    if uri.startswith("sqlite:///"):
        return uri.removeprefix("sqlite:///")
    return re.sub(r"//([^:/@]+):[^@/]*@", r"//\1:***@", uri)


def _check_sqlite(uri: str) -> None:
    """Read an existing SQLite store once, waiting up to :data:`DB_TIMEOUT_S` for a lock.

    MLflow itself would wait 5 s per statement and then retry opening the database for
    minutes, with a traceback of SQL; this says in one line which file is locked or is
    not a database, before the stage has written anything.
    """
    if not uri.startswith("sqlite:///"):
        return
    path = Path(uri.removeprefix("sqlite:///"))
    if not path.exists():
        return  # created by init_store
    import sqlite3

    try:
        con = sqlite3.connect(path, timeout=DB_TIMEOUT_S)
        try:
            con.execute("SELECT count(*) FROM sqlite_master").fetchone()
        finally:
            con.close()
    except sqlite3.Error as exc:
        raise TrackingError(_store_problem(uri, exc, waited=DB_TIMEOUT_S)) from None


#: The variables MLflow's client sends to a server as HTTP basic auth (README: A team).
CREDENTIAL_VARS = ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD")


def _http_status(exc: BaseException) -> int | None:
    """401 or 403 when ``exc`` is a tracking server refusing a request, else None.

    MLflow's REST client raises an ``MlflowException`` whose ``error_code`` is the HTTP
    status's name (``UNAUTHENTICATED``, ``PERMISSION_DENIED``) and whose text says
    ``failed with error code 401``; the basic-auth app answers with those two."""
    code = getattr(exc, "error_code", None)
    if code == "UNAUTHENTICATED" or "error code 401" in str(exc):
        return 401
    if code == "PERMISSION_DENIED" or "error code 403" in str(exc):
        return 403
    return None


def _auth_problem(uri: str, status: int) -> str:
    """One line for a server that refused us: which variable is missing or wrong, or
    which permission the user lacks."""
    from mlflow.utils.credentials import read_mlflow_creds

    creds = read_mlflow_creds()  # the environment, else ~/.mlflow/credentials, as MLflow sends them
    off = "or run without tracking: dvc exp run -S mlflow.enabled=false"
    if status == 403:
        return (f"MLflow server {uri} refused user {creds.username!r} this request (403 permission "
                f"denied): logging runs and registering models needs edit permission; ask the "
                f"server's admin (aerestore team-users --user {creds.username}=edit), {off}")
    unset = [var for var, value in zip(CREDENTIAL_VARS, (creds.username, creds.password)) if not value]
    if unset:
        return (f"MLflow server {uri} requires a login (401 not authenticated): {' and '.join(unset)} "
                f"{'is' if len(unset) == 1 else 'are'} not set; export {CREDENTIAL_VARS[0]} and "
                f"{CREDENTIAL_VARS[1]} (your user on that server), {off}")
    return (f"MLflow server {uri} rejected the login of {creds.username!r} (401 not authenticated): "
            f"wrong {CREDENTIAL_VARS[0]} or {CREDENTIAL_VARS[1]}; check both, or ask the server's "
            f"admin to reset the password, {off}")


def _store_problem(uri: str, exc: BaseException, waited: float | None = None) -> str:
    """One line naming the store and saying what is wrong with it and what to do."""
    status = _http_status(exc) if uri.startswith(("http://", "https://")) else None
    if status is not None:
        return _auth_problem(uri, status)
    name = _store_name(uri)
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    text = re.sub(r"^\((?:sqlite3|psycopg\d?)\.\w+\)\s*", "", text)
    off = "or run without tracking: dvc exp run -S mlflow.enabled=false"
    if "database is locked" in text:
        held = f" for more than {waited:g} s" if waited else ""
        return (f"MLflow store {name} is locked: another process held it{held} ({text}); "
                f"let it finish or stop it, then rerun, {off}")
    if "not a database" in text or "malformed" in text or "corrupt" in text:
        return (f"MLflow store {name} is corrupt ({text}); move it away (mv {name} "
                f"{name}.corrupt) to start a new store, or put a backup in its place, {off}")
    return f"MLflow store {name}: {text}"


def _is_store_error(exc: BaseException) -> bool:
    import sqlite3

    from mlflow.exceptions import MlflowException

    try:
        from sqlalchemy.exc import SQLAlchemyError
    except ImportError:  # pragma: no cover - mlflow depends on it
        SQLAlchemyError = ()  # noqa: N806
    return isinstance(exc, (MlflowException, SQLAlchemyError, sqlite3.Error))


@contextmanager
def _store_errors(uri: str) -> Iterator[None]:
    """Turn an error of the MLflow store into a :class:`TrackingError` naming the store.
    Wraps our calls to MLflow only, never the stage's own work."""
    try:
        yield
    except TrackingError:
        raise
    except Exception as exc:
        if not _is_store_error(exc):
            raise
        raise TrackingError(_store_problem(uri, exc)) from exc
