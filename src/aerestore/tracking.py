"""MLflow tracking for the DVC stages.

Every stage script wraps its work in :func:`stage_run`::

    with stage_run("train@conv_ae", params, arch="conv_ae") as run:
        ...
        run.log_metrics({"loss": 0.01, "val": {"psnr": 27.3}}, step=epoch)
        run.log_torch_model(model, "autoencoder", input_example=blocks[:4])

That opens one MLflow run named after the DVC stage, logs the params the stage
lists in ``dvc.yaml`` (as DVC's API resolves them, so MLflow and ``dvc params diff``
agree), logs the stage's data deps as MLflow datasets whose digest is DVC's md5,
describes the run, and tags it with the DVC experiment, the git commit, the process
(to find runs of killed stages) and a *pipeline id* shared by every stage of one
``dvc repro`` / ``dvc exp run`` execution. A store that is locked or corrupt stops the
stage with one line naming it (:class:`TrackingError`), before the stage writes anything.

Where the runs go
-----------------
The store is ``sqlite:///<repo root>/mlflow.db`` and the artifacts go to
``<repo root>/mlruns/<experiment>/`` (``MLFLOW_TRACKING_URI`` overrides the store,
e.g. a server).
The repository root is ``DVC_ROOT`` when DVC runs the stage: DVC sets it to the
*main* repository even for ``dvc exp run --temp`` / ``--queue``, whose stages run in a
throw-away copy under ``.dvc/tmp/exps/`` that is deleted afterwards. A store inside
that copy would be lost, so the root is never taken from the copy.

A stage that DVC restores from its run cache does not execute, so it logs no new
MLflow run; its earlier run is still in the store.
"""

from __future__ import annotations

import json
import math
import os
import re
import socket
import subprocess
import sys
import tempfile
import time
import traceback
import uuid
from contextlib import contextmanager
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator, Mapping
from urllib.parse import quote

from aerestore.params import Params, ParamsError
from aerestore.stage import StageError

if TYPE_CHECKING:  # heavy imports only where they are used
    import numpy as np
    import psutil
    import torch

DB_FILE = "mlflow.db"
ARTIFACT_DIR = "mlruns"
LOCK_FILE = ".mlflow.lock"
DEFAULT_EXPERIMENT = "aerestore"
PIPELINE_TAG = "aerestore.pipeline_id"

# MLflow refuses longer param values (mlflow.utils.validation.MAX_PARAM_VAL_LENGTH).
_MAX_PARAM_LEN = 6000
_MAX_TAG_LEN = 8000
_MAX_NOTE_LEN = 5000  # a run tag's value (MLflow's limit for tags stored in SQL: 8000)
# Characters MLflow accepts in param and metric names (see validate_param_and_metric_name).
_BAD_NAME_CHARS = re.compile(r"[^/\w.\- :]")


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


# ------------------------------------------------------------------- dvc.yaml params
def _dvc_target(stage: str, root: Path | None) -> str:
    """DVC's address of ``stage``: its name, or ``<root>/dvc.yaml:<name>`` when the
    ``dvc.yaml`` is not the one DVC finds from the working directory."""
    return f"{Path(root) / 'dvc.yaml'}:{stage}" if root is not None else stage


def _leaf_keys(tree: Mapping[str, Any], prefix: str = "") -> list[str]:
    """``{'train': {'lr': 0.1}, 'latent': 8}`` -> ``['train.lr', 'latent']``, the keys
    ``dvc params diff`` shows: a list is a leaf (flattened further by
    :func:`stage_params`), an empty mapping is dropped."""
    keys: list[str] = []
    for key, value in tree.items():
        name = f"{prefix}.{key}" if prefix else str(key)
        if isinstance(value, Mapping):
            keys.extend(_leaf_keys(value, name))
        else:
            keys.append(name)
    return keys


def dvc_stage_params(stage: str, root: Path | None = None) -> list[str]:
    """The params keys ``stage`` depends on, as DVC resolves them from ``dvc.yaml``.

    ``stage`` is DVC's name of the stage: ``prepare``, or ``train@conv_ae`` for a member
    of a ``matrix`` / ``foreach`` stage. ``dvc.api.params_show(stages=[stage],
    deps=True)`` does the templating (``arch.${item.arch}``) and the matrix expansion;
    its answer (the params' values, nested) is turned into dotted leaf keys
    (``train.lr``, ``arch.conv_ae.model``, ``prepare.degrade``) that
    :func:`stage_params` reads from the validated params. Keys the stage lists but
    ``params.yaml`` lacks are left out, as ``dvc params diff`` leaves them out.
    ``params_show`` merges every params file into one mapping: all of ours are in
    ``params.yaml``; a key from another file is not a key of :class:`Params`, so
    :func:`stage_params` refuses it by name. ``root`` is the folder holding
    ``dvc.yaml``; by default DVC finds the repository from the working directory (the
    workspace the stage runs in, which for a temp experiment is the temporary copy).
    """
    from dvc.api import params_show
    from dvc.exceptions import DvcException

    try:
        shown = params_show(stages=[_dvc_target(stage, root)], deps=True,
                            repo=str(root) if root is not None else None)
    except (DvcException, OSError) as exc:  # no such stage, a params file missing
        where = Path(root) / "dvc.yaml" if root is not None else "dvc.yaml"
        raise ParamsError(f"{where}: cannot read the params of stage {stage!r}: {exc}") from None
    return _leaf_keys(shown)


def _lookup(tree: Mapping[str, Any], key: str) -> Any:
    cur: Any = tree
    for part in key.split("."):
        if not isinstance(cur, Mapping) or part not in cur:
            raise KeyError(key)
        cur = cur[part]
    return cur


def _param_str(value: Any) -> str:
    """Strings as they are; everything else as JSON (so YAML reads it back)."""
    text = value if isinstance(value, str) else json.dumps(value)
    if len(text) > _MAX_PARAM_LEN:
        text = text[: _MAX_PARAM_LEN - 1] + "…"
    return text


def _flatten_value(value: Any, key: str, out: dict[str, str]) -> None:
    if isinstance(value, dict):  # an empty one ({}: no overrides) is no param, as in `dvc params diff`
        for k, v in value.items():
            _flatten_value(v, f"{key}.{k}", out)
    elif isinstance(value, list) and any(isinstance(v, dict) for v in value):
        for i, v in enumerate(value):  # e.g. prepare.degrade.0.op = gaussian_blur
            _flatten_value(v, f"{key}.{i}", out)
    else:
        out[_BAD_NAME_CHARS.sub("_", key)] = _param_str(value)


def stage_params(params: Params, keys: list[str]) -> dict[str, str]:
    """Flatten each key's subtree to MLflow params.

    ``'train'`` -> ``{'train.lr': '0.001', 'train.blocks.epochs': '10', ...}``; lists of
    sections get an index (``prepare.degrade.0.op``); other values are JSON text
    (``true``, ``[0.5, 2.0]``), cut at MLflow's limit of 6000 characters; an empty
    section (``arch.conv_ae.model: {}``) gives nothing. So the names are those of
    ``dvc params diff``, a list of sections apart (``prepare.degrade`` there).
    """
    dump = params.model_dump(mode="json")
    out: dict[str, str] = {}
    for key in keys:
        try:
            value = _lookup(dump, key)
        except KeyError:
            raise ParamsError(f"params.yaml: dvc.yaml lists {key!r}, which is not a key of params") from None
        _flatten_value(value, key, out)
    return out


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


# ------------------------------------------------------------------- the stage's data
@dataclass(frozen=True)
class DvcInput:
    """A data dependency of a stage and its hash as DVC computes it (``md5`` is what
    ``dvc.lock`` records for that dep once the stage has run: ``<md5>.dir`` for a folder)."""

    path: str
    md5: str
    size: int | None
    files: int | None


@dataclass(frozen=True)
class DvcStageIO:
    inputs: list[DvcInput]
    outputs: list[str]


def _overlaps(a: str, b: str) -> bool:
    return a == b or a.startswith(b.rstrip(os.sep) + os.sep) or b.startswith(a.rstrip(os.sep) + os.sep)


def dvc_stage_io(stage: str, root: Path | None = None) -> DvcStageIO:
    """The data a stage reads (with DVC's hash of each) and the outputs it writes.

    The data deps are the stage's deps that are, contain or lie inside an output of a
    pipeline stage (``data/blocks``, ``models/conv_ae/model.pt``, ``models``); code
    deps (``stages/``, ``src/``) are not data. Each is hashed with DVC's own function
    (``Dependency.get_hash``, the one ``dvc repro`` and ``dvc status`` use), so the
    value is what ``dvc.lock`` will record for this run; ``dvc.lock`` itself is written
    only after the stage and holds the previous run's hashes. Inside ``dvc repro`` the
    hashes come from DVC's state cache (DVC has just hashed the deps to decide that the
    stage must run): about 0.2 s in all. Without a DVC repository or a stage of that
    name (a script run outside the pipeline): no inputs, no outputs.
    """
    from dvc.dependency.param import ParamsDependency
    from dvc.exceptions import DvcException
    from dvc.repo import Repo

    try:
        repo = Repo(str(root) if root is not None else None)
    except DvcException:
        return DvcStageIO([], [])
    with repo:
        try:
            [found] = repo.stage.collect(_dvc_target(stage, root))
            produced = [out.fs_path for out in repo.index.outs]
        except (DvcException, ValueError):
            return DvcStageIO([], [])
        inputs = []
        for dep in found.deps:
            if isinstance(dep, ParamsDependency) or not any(_overlaps(dep.fs_path, p) for p in produced):
                continue
            try:
                meta, hash_info = dep._get_hash_meta()  # noqa: SLF001 - get_hash() without dropping meta
            except (DvcException, OSError) as exc:
                print(f"aerestore.tracking: cannot hash {dep.def_path}: {exc}", file=sys.stderr)
                continue
            if hash_info and hash_info.value:
                inputs.append(DvcInput(str(dep.def_path), hash_info.value, meta.size, meta.nfiles))
        outputs = [str(out.def_path) for out in found.outs]
    return DvcStageIO(inputs, outputs)


@cache
def _dvc_dataset_classes():
    """MLflow dataset classes for DVC-tracked data (built on first use: MLflow is
    imported only when tracking is on)."""
    from mlflow.data.dataset_source import DatasetSource
    from mlflow.data.meta_dataset import MetaDataset

    class DvcDatasetSource(DatasetSource):
        """A path in a DVC repository at a git commit: ``dvc get`` / ``DVCFileSystem``
        fetch it (for a run of an uncommitted workspace, the run's digest is the DVC
        md5 to look for in the cache)."""

        def __init__(self, repo: str, path: str, rev: str | None):
            self.repo, self.path, self.rev = repo, path, rev

        @staticmethod
        def _get_source_type() -> str:
            return "dvc"

        def load(self, dst_path: str | None = None) -> str:
            from dvc.api import DVCFileSystem

            dst = dst_path or tempfile.mkdtemp(prefix="aerestore-dvc-")
            DVCFileSystem(self.repo, rev=self.rev).get(self.path, dst, recursive=True)
            return dst

        @staticmethod
        def _can_resolve(raw_source: Any) -> bool:
            return False

        @classmethod
        def _resolve(cls, raw_source: Any) -> "DvcDatasetSource":
            raise NotImplementedError

        def to_dict(self) -> dict[str, Any]:
            return {"repo": self.repo, "path": self.path, "rev": self.rev}

        @classmethod
        def from_dict(cls, source_dict: dict[Any, Any]) -> "DvcDatasetSource":
            return cls(source_dict["repo"], source_dict["path"], source_dict.get("rev"))

    class DvcDataset(MetaDataset):
        """Metadata only: the name is the path, the digest DVC's md5, the profile the
        size and the number of files."""

        def __init__(self, item: DvcInput, repo: str, rev: str | None):
            self._item = item
            super().__init__(DvcDatasetSource(repo, item.path, rev), name=item.path,
                             digest=item.md5[:36])  # MLflow's limit; a DVC md5 with ".dir" is 36

        @property
        def profile(self) -> dict[str, Any] | None:
            profile = {"dvc_md5": self._item.md5, "bytes": self._item.size, "files": self._item.files}
            return {k: v for k, v in profile.items() if v is not None}

        def to_dict(self) -> dict[str, str]:
            return {**super().to_dict(), "profile": json.dumps(self.profile)}

    return DvcDatasetSource, DvcDataset


def _input_context(stage: str, path: str) -> str:
    """How MLflow's UI labels an input: ``model`` for a trained network, ``testing`` for
    the data ``evaluate`` restores, ``training`` for the data of the other stages."""
    if Path(path).parts[:1] == ("models",):
        return "model"
    return "testing" if stage.split("@", 1)[0] == "evaluate" else "training"


# ------------------------------------------------------------------- descriptions
EXPERIMENT_KIND_TAG = "mlflow.experimentKind"
EXPERIMENT_KIND = "custom_model_development"  # model training (not GenAI), see init_store
NOTE_TAG = "mlflow.note.content"  # the description of an experiment or a run in the UI

EXPERIMENT_NOTE = """\
Image-restoration autoencoders trained by the aerestore DVC pipeline
(download -> prepare -> blocks -> train@<arch> -> cluster@<arch> -> decoders@<arch> -> evaluate).

Each run is one execution of one DVC stage, named after it: its params are exactly those
dvc.yaml lists for the stage, its inputs are the stage's data with DVC's md5 as digest,
and its tags say which DVC experiment (`dvc.exp_name`), commit (`git.commit`) and pipeline
execution (`aerestore.pipeline_id`) it belongs to. `evaluate` registers each restorer as
`aerestore-<arch>`; the alias `champion` marks each architecture's best version by validation
PSNR (the test figures are tags that only report).
"""

#: What each stage does, for its run's description (``{arch}``: the stage's architecture).
STAGE_NOTES = {
    "download": "Downloads (or copies) the images and writes their manifest.",
    "prepare": "Resizes and augments the images, damages them (blur, noise, ...) and splits "
               "them into train / val / test with clean, degraded and mask arrays.",
    "blocks": "Cuts the prepared images into overlapping blocks.",
    "train": "Trains the `{arch}` autoencoder to restore degraded blocks (or crops, for a fully "
             "convolutional network) to the clean ones; logs the per-epoch curves and the network.",
    "cluster": "Encodes the training data with `{arch}`'s encoder and clusters the codes: one "
               "cluster per kind of damage, ideally.",
    "decoders": "Fine-tunes one decoder per cluster of `{arch}` (and a control decoder on all "
                "the data) from the shared decoder.",
    "evaluate": "Restores the test images with every architecture and with the classical "
                "restorers, compares them image by image, and registers each restorer as "
                "`aerestore-<arch>` (a new version, tagged with its test metrics).",
    "explore": "Interpolations, analogies and prior samples in `{arch}`'s latent space.",
}


def stage_note(stage: str, arch: str | None, io: DvcStageIO) -> str:
    """Markdown for the run's description: what the stage does, its inputs (with DVC's
    md5) and its outputs."""
    base = stage.split("@", 1)[0]
    what = STAGE_NOTES.get(base, "").format(arch=arch or stage.partition("@")[2] or "?")
    lines = [f"**DVC stage `{stage}`**" + (f": {what}" if what else "")]
    if io.inputs:
        lines += ["", "Inputs (DVC md5):"] + [f"- `{i.path}` `{i.md5}`" for i in io.inputs]
    if io.outputs:
        lines += ["", "Outputs: " + ", ".join(f"`{o}`" for o in io.outputs)]
    return "\n".join(lines)


# ------------------------------------------------------------------- stale runs
HOST_TAG = "aerestore.host"
PID_TAG = "aerestore.pid"
PID_START_TAG = "aerestore.pid_start"  # the process's start time (s since the epoch)
STALE_TAG = "aerestore.stale"


def _process_tags() -> dict[str, str]:
    """Who runs this stage: host, pid and the process's start time (a pid is reused)."""
    import psutil

    tags = {HOST_TAG: socket.gethostname(), PID_TAG: str(os.getpid())}
    try:
        tags[PID_START_TAG] = repr(psutil.Process().create_time())
    except psutil.Error:  # pragma: no cover - our own process
        pass
    return tags


def _gone(tags: Mapping[str, str]) -> str | None:
    """Why the process that opened a run is known to be gone, or None if it may be alive
    (alive, on another host, or a run without our tags)."""
    import psutil

    host, pid = tags.get(HOST_TAG), tags.get(PID_TAG)
    if host != socket.gethostname() or not pid or not pid.isdigit():
        return None
    try:
        started = psutil.Process(int(pid)).create_time()
    except psutil.NoSuchProcess:
        return f"its process {pid} on {host} is gone"
    except psutil.Error:  # alive, not ours to read
        return None
    recorded = tags.get(PID_START_TAG)
    try:
        if recorded is not None and abs(float(recorded) - started) > 1.0:
            return f"its process {pid} on {host} is gone (pid {pid} is now another process)"
    except ValueError:
        return None
    return None


def close_stale_runs(client: Any, experiment_id: str, stage: str, current: str | None = None) -> list[str]:
    """Mark KILLED the RUNNING runs of ``stage`` whose process is gone (killed by
    ``kill -9``, the machine rebooted): a run cannot end itself then, and would stay
    RUNNING for ever. Runs of live processes and of other hosts are left alone. Returns
    the ids marked."""
    runs = client.search_runs(
        [experiment_id], filter_string=f"attributes.status = 'RUNNING' and tags.`dvc.stage` = '{stage}'",
        max_results=1000,
    )
    marked = []
    for run in runs:
        if run.info.run_id == current:
            continue
        reason = _gone(run.data.tags)
        if reason is None:
            continue
        by = f" (found by run {current} of the same stage)" if current else ""
        client.set_tag(run.info.run_id, STALE_TAG, f"ended KILLED: {reason}{by}")
        client.set_terminated(run.info.run_id, "KILLED")
        marked.append(run.info.run_id)
    return marked


# ----------------------------------------------------------------------- pipeline id
def _runs_dvc(cmdline: list[str]) -> bool:
    """``dvc ...``, ``python /x/bin/dvc ...`` or ``python -m dvc ...``."""
    head = cmdline[:3]
    for i, arg in enumerate(head):
        name = os.path.basename(arg).lower().removesuffix(".exe")
        if name == "dvc":
            return True
        if arg == "-m" and i + 1 < len(cmdline) and cmdline[i + 1] == "dvc":
            return True
    return False


def dvc_process() -> "psutil.Process | None":
    """The nearest ancestor process that runs dvc, or None.

    Stages are children (through a shell) of the ``dvc repro`` / ``dvc exp run``
    process; a queued experiment's stages are children of its own
    ``dvc exp exec-run`` process, which the queue worker starts once per experiment.
    """
    import psutil

    try:
        parents = psutil.Process().parents()
    except psutil.Error:
        return None
    for proc in parents:
        try:
            if _runs_dvc(proc.cmdline()):
                return proc
        except psutil.Error:  # exited meanwhile, or not ours to read
            continue
    return None


def pipeline_id() -> str:
    """An id shared by the stages of one pipeline execution.

    ``<start time of the dvc process>-<its pid>`` (e.g. ``20250301-142233-81234``):
    the same for every stage one ``dvc repro``/``dvc exp run`` launches, different for
    the next execution, and for each experiment of ``dvc queue start -j 2`` (each runs
    in its own ``dvc exp exec-run`` process). Without a dvc ancestor (a stage run by
    hand): ``exp-<DVC_EXP_NAME>`` when that is set, else a random id.
    """
    proc = dvc_process()
    if proc is not None:
        try:
            started = proc.create_time()
            return f"{time.strftime('%Y%m%d-%H%M%S', time.localtime(started))}-{proc.pid}"
        except Exception:  # noqa: BLE001 - psutil.Error, the process is gone
            pass
    name = os.environ.get("DVC_EXP_NAME")
    if name:
        return f"exp-{name}"
    return f"run-{uuid.uuid4().hex[:12]}"


def _dvc_command() -> str | None:
    proc = dvc_process()
    if proc is None:
        return None
    try:
        args = proc.cmdline()
    except Exception:  # noqa: BLE001
        return None
    for i, arg in enumerate(args[:3]):
        if os.path.basename(arg).lower().removesuffix(".exe") == "dvc":
            return " ".join(["dvc", *args[i + 1 :]])
        if arg == "-m":
            return " ".join(args[i + 1 :])
    return None


def _git_commit(folder: Path) -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=folder, capture_output=True,
                             text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() if out.returncode == 0 and out.stdout.strip() else None


# ------------------------------------------------------------------------- the run
def _flat_metrics(metrics: Mapping[str, Any], prefix: str = "") -> dict[str, float]:
    out: dict[str, float] = {}
    for key, value in metrics.items():
        name = f"{prefix}.{key}" if prefix else str(key)
        if isinstance(value, Mapping):
            out.update(_flat_metrics(value, name))
            continue
        if value is None or isinstance(value, (str, bytes)):
            continue
        try:
            number = float(value)  # ints, numpy and 0-d torch scalars
        except (TypeError, ValueError):
            continue
        if math.isfinite(number):
            out[_BAD_NAME_CHARS.sub("_", name)] = number
    return out


class StageRun:
    """The MLflow run of one stage. With MLflow switched off (``run_id`` None) every
    method does nothing, so stage scripts need no ``if``. An error of the store (locked,
    corrupt) raises :class:`TrackingError`, naming it."""

    def __init__(self, run_id: str | None, uri: str | None = None, inputs: list[DvcInput] | None = None):
        self.run_id = run_id
        self.uri = uri or (tracking_uri() if run_id else "")
        self.inputs = list(inputs or [])  # the stage's data, with DVC's md5

    @property
    def active(self) -> bool:
        return self.run_id is not None

    def input_md5(self, path: str) -> str | None:
        """DVC's md5 of the stage's data dep ``path`` (``data/prepared``), if it has one."""
        return next((i.md5 for i in self.inputs if i.path == path), None)

    def log_metrics(self, metrics: Mapping[str, Any], step: int | None = None) -> None:
        """Log numbers; nested dicts become ``a.b`` names. None, NaN, inf and
        non-numbers (strings) are skipped: MLflow cannot plot them."""
        if not self.active:
            return
        import mlflow

        flat = _flat_metrics(metrics)
        if flat:
            with _store_errors(self.uri):
                mlflow.log_metrics(flat, step=step, run_id=self.run_id)

    def log_artifact(self, path: str | Path, artifact_path: str | None = None) -> None:
        """Copy a file, or a folder's content, into the run's artifacts."""
        if not self.active:
            return
        import mlflow

        path = Path(path)
        with _store_errors(self.uri):
            if path.is_dir():
                mlflow.log_artifacts(str(path), artifact_path, run_id=self.run_id)
            elif path.is_file():
                mlflow.log_artifact(str(path), artifact_path, run_id=self.run_id)
            else:
                raise FileNotFoundError(f"log_artifact: {path} does not exist")

    def log_text(self, text: str, name: str) -> None:
        if not self.active:
            return
        import mlflow

        with _store_errors(self.uri):
            mlflow.log_text(text, name, run_id=self.run_id)

    def set_tags(self, tags: Mapping[str, Any]) -> None:
        """Set tags on the run in one call (values as text)."""
        if not self.active:
            return
        from mlflow.entities import RunTag
        from mlflow.tracking import MlflowClient

        with _store_errors(self.uri):
            MlflowClient(self.uri).log_batch(self.run_id, tags=[RunTag(k, str(v)) for k, v in tags.items()])

    def add_note(self, text: str) -> None:
        """Append markdown to the run's description (``mlflow.note.content``)."""
        if not self.active:
            return
        from mlflow.tracking import MlflowClient

        with _store_errors(self.uri):
            client = MlflowClient(self.uri)
            old = client.get_run(self.run_id).data.tags.get(NOTE_TAG, "")
            client.set_tag(self.run_id, NOTE_TAG, (f"{old}\n\n{text}" if old else text)[:_MAX_NOTE_LEN])

    def log_torch_model(self, model: "torch.nn.Module", name: str, input_example: "np.ndarray") -> None:
        """``mlflow.pytorch.log_model`` with a signature from ``model(input_example)``.

        The model's first output (a tensor, or the first of a tuple) is the
        signature's output. Requirements are pinned from the installed packages,
        which skips MLflow's slow requirement inference.
        """
        if not self.active:
            return
        import mlflow.pytorch
        import numpy as np
        import torch
        from mlflow.models import infer_signature

        was_training = model.training
        model.eval()
        try:
            with torch.no_grad():
                out = model(torch.as_tensor(np.asarray(input_example)))
        finally:
            model.train(was_training)
        if isinstance(out, (tuple, list)):
            out = out[0]
        if isinstance(out, dict):
            out = {k: v.detach().cpu().numpy() for k, v in out.items()}
        else:
            out = out.detach().cpu().numpy()
        from aerestore.mlflow_model import pip_requirements

        signature = infer_signature(np.asarray(input_example), out)
        with _store_errors(self.uri):
            mlflow.pytorch.log_model(
                model,
                name=name,
                input_example=np.asarray(input_example),
                signature=signature,
                pip_requirements=pip_requirements(),
                # MLflow would reload the saved model to run the example (about a second
                # per stage); tests/test_tracking.py checks the round trip instead
                validate_serving_input=False,
            )

    def log_restorer(self, model_dir: str | Path, arch: str, register: bool, routing: str | None = None,
                     test_metrics: Mapping[str, Any] | None = None) -> Any:
        """Log the restorer in ``model_dir`` as an MLflow pyfunc model named
        ``restorer-<arch>``; registered as ``aerestore-<arch>`` (a new version) when
        ``register``. ``routing`` is the model's default routing (``hard`` if None).
        With ``test_metrics`` (``evaluate.json``'s section of the architecture) the new
        version is tagged with them and described, and becomes the architecture's
        ``champion`` if it is its best by validation PSNR (``test_metrics["validation"]``; see
        :func:`aerestore.mlflow_model.tag_version`). Returns MLflow's ``ModelInfo``."""
        if not self.active:
            return None
        from aerestore.mlflow_model import log_restorer, tag_version

        with _store_errors(self.uri):
            info = log_restorer(model_dir, arch=arch, register=register, routing=routing)
            version = getattr(info, "registered_model_version", None)
            if register and version is not None and test_metrics is not None:
                tag_version(arch, str(version), test_metrics, run_id=self.run_id,
                            test_data=self.input_md5("data/prepared"), uri=self.uri)
        return info

    def register_restorers(self, models: str | Path, archs: list[str], result: Mapping[str, Any],
                           routing: str | None = None, prepared: str | Path | None = None,
                           max_images: int = 0) -> str | None:
        """``evaluate``'s registration: each architecture's restorer in ``models/<arch>``
        as a new version of ``aerestore-<arch>``, tagged with its section of ``result``
        (``evaluate.json``) and with its PSNR on the validation split of ``prepared``
        (:func:`aerestore.mlflow_model.validation_figures`, the first ``max_images``; also
        logged as the run's metric ``val.<arch>.psnr``), on which the ``champion`` alias is
        chosen; then the registered model whose champion is best across architectures is
        marked (:func:`aerestore.mlflow_model.mark_best_overall`). Returns the best
        architecture."""
        if not self.active:
            return None
        from aerestore.mlflow_model import mark_best_overall, validation_figures

        for arch in archs:
            validation = (validation_figures(Path(models) / arch, prepared, routing=routing, max_images=max_images)
                          if prepared is not None else None)
            if validation is not None:
                self.log_metrics({f"val.{arch}.psnr": validation["psnr"]})
            self.log_restorer(Path(models) / arch, arch, register=True, routing=routing,
                              test_metrics={**result.get(arch, {}), "images": result.get("images"),
                                            "degraded": result.get("degraded", {}), "validation": validation})
        with _store_errors(self.uri):
            return mark_best_overall(archs, test_data=self.input_md5("data/prepared"), uri=self.uri)


def _log_inputs(run_id: str, stage: str, inputs: list[DvcInput], rev: str | None) -> None:
    if not inputs:
        return
    from mlflow.entities import DatasetInput, InputTag
    from mlflow.tracking import MlflowClient

    _, DvcDataset = _dvc_dataset_classes()  # noqa: N806
    root = str(repo_root())
    datasets = []
    for item in inputs:
        entity = DvcDataset(item, root, rev)._to_mlflow_entity()
        tags = [InputTag("mlflow.data.context", _input_context(stage, item.path))]
        datasets.append(DatasetInput(entity, tags))
    MlflowClient(tracking_uri()).log_inputs(run_id, datasets=datasets)


def _end_failed(uri: str, exc: BaseException) -> None:
    """End the active run FAILED (KILLED on Ctrl-C) with the error; if the store itself
    is what failed, say so on stderr instead (the next run of the stage marks the run
    KILLED: its process is gone)."""
    import mlflow

    status = "KILLED" if isinstance(exc, KeyboardInterrupt) else "FAILED"
    try:
        with _store_errors(uri):
            try:
                text = f"{type(exc).__name__}: {exc}"
                mlflow.set_tag("error", text[:_MAX_TAG_LEN])
                mlflow.log_text("".join(traceback.format_exception(exc)), "error.txt")
            finally:
                mlflow.end_run(status)
    except TrackingError as store:
        if mlflow.active_run() is not None:  # forget the run locally; it stays RUNNING in the store
            mlflow.tracking.fluent._active_run_stack.get().clear()  # noqa: SLF001
        print(f"aerestore.tracking: the run could not be ended {status}: {store}", file=sys.stderr)


@contextmanager
def stage_run(
    stage: str,
    params: Params,
    arch: str | None = None,
    keys: list[str] | None = None,
) -> Iterator[StageRun]:
    """One MLflow run for one DVC stage (a no-op when ``mlflow.enabled`` is false).

    The run is named ``stage`` and gets the stage's params (``keys``, by default
    those ``dvc.yaml`` lists for it, from DVC), its data deps as MLflow inputs with
    DVC's md5 as digest (:func:`dvc_stage_io`), a description (what the stage does,
    its inputs and outputs) and the tags ``arch``, ``dvc.stage``, ``dvc.exp_name``
    (``DVC_EXP_NAME`` or ``workspace``), ``dvc.baseline_rev``, ``dvc.command``,
    ``git.commit``, ``aerestore.pipeline_id`` and ``aerestore.host`` / ``.pid`` /
    ``.pid_start``. Earlier RUNNING runs of the same stage whose process is gone are
    marked KILLED (:func:`close_stale_runs`). If the body raises, the run ends FAILED
    (KILLED on Ctrl-C) with the error in the tag ``error`` and the traceback in
    ``error.txt``, and the exception propagates. A store that is locked or corrupt
    raises :class:`TrackingError` before the body runs, so the stage writes nothing.
    """
    if not params.mlflow.enabled:
        yield StageRun(None)
        return
    import mlflow
    from mlflow.tracking import MlflowClient

    name = os.environ.get("DVC_STAGE") or stage  # DVC's address of the running stage
    logged = stage_params(params, keys if keys is not None else dvc_stage_params(name))
    io = dvc_stage_io(name)
    uri = tracking_uri()
    commit = _git_commit(Path.cwd())
    tags = {
        "dvc.stage": name,
        "dvc.exp_name": os.environ.get("DVC_EXP_NAME") or "workspace",
        PIPELINE_TAG: pipeline_id(),
        NOTE_TAG: stage_note(name, arch, io)[:_MAX_NOTE_LEN],
        **_process_tags(),
    }
    optional = {
        "arch": arch,
        "dvc.baseline_rev": os.environ.get("DVC_EXP_BASELINE_REV"),
        "dvc.command": _dvc_command(),
        "git.commit": commit,
    }
    tags.update({k: v for k, v in optional.items() if v})
    with _store_errors(uri):
        experiment_id = init_store(params.mlflow.experiment)
        mlflow.set_tracking_uri(uri)
        run = mlflow.start_run(experiment_id=experiment_id, run_name=stage, tags=tags)
    handle = StageRun(run.info.run_id, uri, io.inputs)
    try:
        with _store_errors(uri):
            close_stale_runs(MlflowClient(uri), experiment_id, name, current=handle.run_id)
            if logged:
                mlflow.log_params(logged, run_id=handle.run_id)
            _log_inputs(handle.run_id, name, io.inputs, commit)
        yield handle
    except BaseException as exc:
        _end_failed(uri, exc)
        raise
    else:
        with _store_errors(uri):
            mlflow.end_run("FINISHED")
