"""MLflow tracking for the DVC stages.

Every stage script wraps its work in :func:`stage_run`::

    with stage_run("train@conv_ae", params, arch="conv_ae") as run:
        ...
        run.log_metrics({"loss": 0.01, "val": {"psnr": 27.3}}, step=epoch)
        run.log_torch_model(model, "autoencoder", input_example=blocks[:4])

That opens one MLflow run named after the DVC stage, logs the params the stage
lists in ``dvc.yaml`` (exactly those, so MLflow and ``dvc params diff`` agree), and
tags the run with the DVC experiment, the git commit and a *pipeline id* shared by
every stage of one ``dvc repro`` / ``dvc exp run`` execution.

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
import subprocess
import time
import traceback
import uuid
from contextlib import contextmanager
from itertools import product
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator, Mapping
from urllib.parse import quote

import yaml

from aerestore.params import Params, ParamsError

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
    ``mlflow db upgrade`` would, after a backup copy.
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
    with FileLock(str(root / LOCK_FILE), timeout=600):
        if _is_db_uri(uri):
            _prepare_db(uri)
        client = MlflowClient(tracking_uri=uri)  # the store the fluent API will use too
        exp = client.get_experiment_by_name(experiment)
        if exp is not None:
            if exp.lifecycle_stage == "deleted":
                client.restore_experiment(exp.experiment_id)
            return exp.experiment_id
        # A server picks its own artifact store; a database we own gets the
        # repository's mlruns/<experiment>/ (runs then sit in mlruns/<experiment>/<run id>).
        location = f"{artifact_location()}/{quote(experiment, safe='')}" if _is_db_uri(uri) else None
        try:
            return client.create_experiment(experiment, artifact_location=location)
        except MlflowException:  # created meanwhile by another machine (a shared server)
            exp = client.get_experiment_by_name(experiment)
            if exp is None:
                raise
            return exp.experiment_id


# ------------------------------------------------------------------- dvc.yaml params
_INTERP = re.compile(r"\$\{\s*([^}]*?)\s*\}")


def _lookup(ctx: Mapping[str, Any], expr: str, where: str) -> Any:
    cur: Any = ctx
    for part in re.split(r"\.|\[(\d+)\]", expr):
        if part is None or part == "":
            continue
        try:
            cur = cur[int(part)] if isinstance(cur, list) else cur[part]
        except (KeyError, IndexError, TypeError, ValueError):
            raise ParamsError(f"{where}: cannot resolve ${{{expr}}}") from None
    return cur


def _to_str(value: Any) -> str:
    # DVC writes booleans the YAML way in generated stage names.
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _interpolate(value: Any, ctx: Mapping[str, Any], where: str) -> Any:
    """Substitute ``${...}`` in strings (recursively in lists and dicts)."""
    if isinstance(value, str):
        whole = _INTERP.fullmatch(value)
        if whole:  # "${architectures}" is the value itself, possibly a list
            return _lookup(ctx, whole.group(1), where)
        return _INTERP.sub(lambda m: _to_str(_lookup(ctx, m.group(1), where)), value)
    if isinstance(value, list):
        return [_interpolate(v, ctx, where) for v in value]
    if isinstance(value, dict):
        return {_interpolate(k, ctx, where): _interpolate(v, ctx, where) for k, v in value.items()}
    return value


def _load_vars(dvc_yaml: Path, doc: Mapping[str, Any]) -> dict[str, Any]:
    """Values ``${...}`` can refer to: params.yaml beside dvc.yaml, then ``vars:``."""
    ctx: dict[str, Any] = {}
    folder = dvc_yaml.parent

    def load_file(spec: str) -> None:
        name, _, keys = spec.partition(":")
        path = folder / name
        try:
            data = yaml.safe_load(path.read_text()) or {}
        except FileNotFoundError:
            raise ParamsError(f"{dvc_yaml}: vars file {path} not found") from None
        if keys:
            data = {k: _lookup(data, k, str(path)) for k in keys.split(",")}
        ctx.update(data)

    if (folder / "params.yaml").exists():
        load_file("params.yaml")
    for item in doc.get("vars", None) or []:
        if isinstance(item, str):
            load_file(item)
        elif isinstance(item, dict):
            ctx.update(item)
    return ctx


def _generated(name: str, body: Mapping[str, Any], ctx: Mapping[str, Any], where: str):
    """Yield ``(generated name, item context)`` for a ``matrix``/``foreach`` stage."""
    if "matrix" in body:
        matrix = {k: _interpolate(v, ctx, f"{where}.matrix.{k}") for k, v in body["matrix"].items()}
        for key, values in matrix.items():
            if not isinstance(values, list):
                raise ParamsError(f"{where}.matrix.{key}: expected a list, got {values!r}")
        for combo in product(*(list(enumerate(v)) for v in matrix.values())):
            item, fragments = {}, []
            for key, (i, v) in zip(matrix, combo):
                item[key] = v
                fragments.append(f"{key}{i}" if isinstance(v, (dict, list)) else _to_str(v))
            yield f"{name}@{'-'.join(fragments)}", {"item": item}
    elif "foreach" in body:
        data = _interpolate(body["foreach"], ctx, f"{where}.foreach")
        if isinstance(data, dict):
            for key, value in data.items():
                yield f"{name}@{_to_str(key)}", {"item": value, "key": key}
        elif any(isinstance(v, (dict, list)) for v in data):
            for i, value in enumerate(data):
                yield f"{name}@{i}", {"item": value}
        else:
            for value in data:
                yield f"{name}@{_to_str(value)}", {"item": value}


def _find_dvc_yaml(root: Path | None) -> Path:
    if root is not None:
        return Path(root) / "dvc.yaml"
    cwd = Path.cwd().resolve()
    for folder in (cwd, *cwd.parents):
        if (folder / "dvc.yaml").is_file():
            return folder / "dvc.yaml"
    raise ParamsError(f"no dvc.yaml in {cwd} or above it")


def dvc_stage_params(stage: str, root: Path | None = None) -> list[str]:
    """The ``params:`` keys that ``dvc.yaml`` lists for ``stage``, templates resolved.

    ``stage`` is DVC's name of the stage: ``prepare``, or ``train@conv_ae`` for the
    ``conv_ae`` member of a ``matrix: {arch: ${architectures}}`` (or ``foreach``)
    stage, whose ``params:`` entries such as ``arch.${item.arch}`` become
    ``arch.conv_ae``. Keys of files other than ``params.yaml`` are left out (they
    are not in :class:`Params`). ``root`` is the folder holding ``dvc.yaml``; by
    default the nearest one at or above the working directory (the workspace the
    stage runs in, which for a temp experiment is the temporary copy).
    """
    path = _find_dvc_yaml(root)
    try:
        doc = yaml.safe_load(path.read_text()) or {}
    except FileNotFoundError:
        raise ParamsError(f"{path}: not found") from None
    stages = doc.get("stages") or {}
    base = stage.split("@", 1)[0]
    if base not in stages:
        raise ParamsError(f"{path}: no stage {base!r} (stages: {', '.join(stages) or 'none'})")
    body = stages[base]
    where = f"{path}: stages.{base}"
    ctx = _load_vars(path, doc)
    if "matrix" in body or "foreach" in body:
        members = dict(_generated(base, body, ctx, where))
        if stage not in members:
            raise ParamsError(f"{path}: stage {stage!r} is not generated by {base!r} "
                              f"(it generates: {', '.join(members)})")
        ctx = {**ctx, **members[stage]}
        body = body.get("do", body)
    elif stage != base:
        raise ParamsError(f"{path}: stage {base!r} has no matrix or foreach, so no {stage!r}")
    keys: list[str] = []
    for entry in body.get("params") or []:
        entry = _interpolate(entry, ctx, f"{where}.params")
        if isinstance(entry, str):
            keys.append(entry)
        elif isinstance(entry, dict):
            for file, listed in entry.items():
                if Path(str(file)).name != "params.yaml":
                    continue
                if not listed:  # the whole file
                    keys.extend(Params.model_fields)
                else:
                    keys.extend(str(k) for k in listed)
    return keys


def _param_str(value: Any) -> str:
    """Strings as they are; everything else as JSON (so YAML reads it back)."""
    text = value if isinstance(value, str) else json.dumps(value)
    if len(text) > _MAX_PARAM_LEN:
        text = text[: _MAX_PARAM_LEN - 1] + "…"
    return text


def _flatten_value(value: Any, key: str, out: dict[str, str]) -> None:
    if isinstance(value, dict) and value:
        for k, v in value.items():
            _flatten_value(v, f"{key}.{k}", out)
    elif isinstance(value, list) and any(isinstance(v, dict) for v in value):
        for i, v in enumerate(value):  # e.g. prepare.degrade.0.op = gaussian_blur
            _flatten_value(v, f"{key}.{i}", out)
    else:
        out[_BAD_NAME_CHARS.sub("_", key)] = _param_str(value)


def stage_params(params: Params, keys: list[str]) -> dict[str, str]:
    """Flatten each key's subtree to MLflow params.

    ``'train'`` -> ``{'train.lr': '0.001', 'train.epochs': '10', ...}``; lists of
    sections get an index (``prepare.degrade.0.op``); other values are JSON text
    (``true``, ``[0.5, 2.0]``), cut at MLflow's limit of 6000 characters.
    """
    dump = params.model_dump(mode="json")
    out: dict[str, str] = {}
    for key in keys:
        try:
            value = _lookup(dump, key, "params.yaml")
        except ParamsError:
            raise ParamsError(f"params.yaml: dvc.yaml lists {key!r}, which is not a key of params") from None
        _flatten_value(value, key, out)
    return out


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
    method does nothing, so stage scripts need no ``if``."""

    def __init__(self, run_id: str | None):
        self.run_id = run_id

    @property
    def active(self) -> bool:
        return self.run_id is not None

    def log_metrics(self, metrics: Mapping[str, Any], step: int | None = None) -> None:
        """Log numbers; nested dicts become ``a.b`` names. None, NaN, inf and
        non-numbers (strings) are skipped: MLflow cannot plot them."""
        if not self.active:
            return
        import mlflow

        flat = _flat_metrics(metrics)
        if flat:
            mlflow.log_metrics(flat, step=step, run_id=self.run_id)

    def log_artifact(self, path: str | Path, artifact_path: str | None = None) -> None:
        """Copy a file, or a folder's content, into the run's artifacts."""
        if not self.active:
            return
        import mlflow

        path = Path(path)
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

        mlflow.log_text(text, name, run_id=self.run_id)

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

    def log_restorer(self, model_dir: str | Path, arch: str, register: bool, routing: str | None = None) -> None:
        """Log the restorer in ``model_dir`` as an MLflow pyfunc model named
        ``restorer-<arch>``; registered as ``aerestore-<arch>`` (a new version) when
        ``register``. ``routing`` is the model's default routing (``hard`` if None)."""
        if not self.active:
            return
        from aerestore.mlflow_model import log_restorer

        log_restorer(model_dir, arch=arch, register=register, routing=routing)


@contextmanager
def stage_run(
    stage: str,
    params: Params,
    arch: str | None = None,
    keys: list[str] | None = None,
) -> Iterator[StageRun]:
    """One MLflow run for one DVC stage (a no-op when ``mlflow.enabled`` is false).

    The run is named ``stage`` and gets the stage's params (``keys``, by default
    those ``dvc.yaml`` lists for it) and the tags ``arch``, ``dvc.stage``,
    ``dvc.exp_name`` (``DVC_EXP_NAME`` or ``workspace``), ``dvc.baseline_rev``,
    ``dvc.command``, ``git.commit`` and ``aerestore.pipeline_id``. If the body raises,
    the run ends FAILED (KILLED on Ctrl-C) with the error in the tag ``error`` and
    the traceback in ``error.txt``, and the exception propagates.
    """
    if not params.mlflow.enabled:
        yield StageRun(None)
        return
    import mlflow

    logged = stage_params(params, keys if keys is not None else dvc_stage_params(stage))
    experiment_id = init_store(params.mlflow.experiment)
    mlflow.set_tracking_uri(tracking_uri())
    tags = {
        "dvc.stage": os.environ.get("DVC_STAGE", stage),
        "dvc.exp_name": os.environ.get("DVC_EXP_NAME") or "workspace",
        PIPELINE_TAG: pipeline_id(),
    }
    optional = {
        "arch": arch,
        "dvc.baseline_rev": os.environ.get("DVC_EXP_BASELINE_REV"),
        "dvc.command": _dvc_command(),
        "git.commit": _git_commit(Path.cwd()),
    }
    tags.update({k: v for k, v in optional.items() if v})
    run = mlflow.start_run(experiment_id=experiment_id, run_name=stage, tags=tags)
    handle = StageRun(run.info.run_id)
    try:
        if logged:
            mlflow.log_params(logged, run_id=handle.run_id)
        yield handle
    except BaseException as exc:
        status = "KILLED" if isinstance(exc, KeyboardInterrupt) else "FAILED"
        try:
            text = f"{type(exc).__name__}: {exc}"
            mlflow.set_tag("error", text[:_MAX_TAG_LEN])
            mlflow.log_text("".join(traceback.format_exception(exc)), "error.txt")
        finally:
            mlflow.end_run(status)
        raise
    else:
        mlflow.end_run("FINISHED")
