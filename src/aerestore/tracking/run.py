"""The MLflow run of one stage: :func:`~aerestore.tracking.run.stage_run` opens it,
:class:`~aerestore.tracking.run.StageRun` logs to it."""

from __future__ import annotations

import math
import os
import sys
import traceback
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator, Mapping

from aerestore.params import Params
from aerestore.tracking.dvcinfo import (
    _BAD_NAME_CHARS,
    DvcInput,
    _dvc_dataset_classes,
    _input_context,
    dvc_stage_io,
    dvc_stage_params,
    stage_params,
)
from aerestore.tracking.notes import _MAX_NOTE_LEN, NOTE_TAG, stage_note
from aerestore.tracking.pipeline import PIPELINE_TAG, _dvc_command, _git_commit, pipeline_id
from aerestore.tracking.stale import _process_tags, close_stale_runs
from aerestore.tracking.store import TrackingError, _store_errors, init_store, repo_root, tracking_uri

if TYPE_CHECKING:  # heavy imports only where they are used
    import numpy as np
    import torch

_MAX_TAG_LEN = 8000  # MLflow's limit for a tag stored in SQL


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
    corrupt) raises :class:`~aerestore.tracking.store.TrackingError`, naming it."""

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
    DVC's md5 as digest (:func:`~aerestore.tracking.dvcinfo.dvc_stage_io`), a
    description (what the stage does, its inputs and outputs) and the tags ``arch``,
    ``dvc.stage``, ``dvc.exp_name`` (``DVC_EXP_NAME`` or ``workspace``),
    ``dvc.baseline_rev``, ``dvc.command``, ``git.commit``, ``aerestore.pipeline_id`` and
    ``aerestore.host`` / ``.pid`` / ``.pid_start``. Earlier RUNNING runs of the same
    stage whose process is gone are marked KILLED
    (:func:`~aerestore.tracking.stale.close_stale_runs`). If the body raises, the run
    ends FAILED (KILLED on Ctrl-C) with the error in the tag ``error`` and the traceback
    in ``error.txt``, and the exception propagates. A store that is locked or corrupt
    raises :class:`~aerestore.tracking.store.TrackingError` before the body runs, so the
    stage writes nothing.
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
