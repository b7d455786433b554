"""What DVC says about a stage: the params ``dvc.yaml`` lists for it (as MLflow params),
the data it reads with DVC's md5 of each, the outputs it writes, and those data as MLflow
dataset inputs."""

from __future__ import annotations

import json
import os
import re
import sys
import tempfile
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any, Mapping

from aerestore.params import Params, ParamsError

# MLflow refuses longer param values (mlflow.utils.validation.MAX_PARAM_VAL_LENGTH).
_MAX_PARAM_LEN = 6000
# Characters MLflow accepts in param and metric names (see validate_param_and_metric_name).
_BAD_NAME_CHARS = re.compile(r"[^/\w.\- :]")


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
