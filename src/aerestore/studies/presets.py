"""Study presets: each study's setting as a committed file of param overrides (``presets/``).

A preset file (``presets/<name>.yaml``) holds:

* ``description``, ``study`` (which text and section) and ``data`` (what the run needs: a source
  the download stage fetches and checks, or a local copy named by ``data.path``);
* ``params``: the overrides of ``params.yaml`` for the full-scale setting (nested as in
  ``params.yaml``);
* ``sample``: more overrides, applied on top, that scale the setting down to the offline sample
  tiles (``data.source: sample``), so every preset also runs in a few minutes with no network.

DVC cannot swap ``params.yaml`` for another file, but ``dvc exp run -S`` applies Hydra
overrides to it inside the experiment (the workspace's ``params.yaml`` is left alone), so a
preset is one ``dvc exp run`` whose ``-S`` list is generated from the file
(:func:`dvc_command`): ``aerestore preset NAME`` prints it, ``--run`` runs it. Keys that
``params.yaml`` does not have (e.g. ``arch.conv_ae.model.code``) are written ``++key=value``
(Hydra's "add or override"). The overrides are validated against :mod:`aerestore.params` by
:func:`resolve` (what the experiment's ``params.yaml`` will be), with DVC's own Hydra code
(``dvc.utils.hydra.apply_overrides``) in the tests.
"""

from __future__ import annotations

import copy
import re
import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

PRESETS_DIR = Path("presets")
FIELDS = ("description", "study", "data", "params", "sample")
_BARE = re.compile(r"^[A-Za-z_][A-Za-z0-9_\-./]*$")


@dataclass(frozen=True)
class StudyPreset:
    name: str
    description: str
    study: str
    data: str
    params: dict[str, Any]
    sample: dict[str, Any]
    path: Path

    def overrides(self, sample: bool = False) -> dict[str, Any]:
        """The nested overrides: ``params``, plus ``sample`` on top when ``sample``."""
        from ..params import deep_update

        out = copy.deepcopy(self.params)
        return deep_update(out, self.sample) if sample else out


def load_preset(path: str | Path) -> StudyPreset:
    """Read one preset file; a missing or unknown field raises ``ValueError`` naming it."""
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise ValueError(f"{path}: not valid YAML: {exc}") from None
    if not isinstance(raw, dict):
        raise ValueError(f"{path}: expected a mapping with keys {list(FIELDS)}")
    unknown = sorted(set(raw) - set(FIELDS))
    missing = [k for k in FIELDS if k not in raw]
    if unknown or missing:
        raise ValueError(f"{path}: " + "; ".join(
            ([f"unknown key(s) {unknown}"] if unknown else []) + ([f"missing {missing}"] if missing else [])))
    for key in ("params", "sample"):
        if not isinstance(raw[key], dict):
            raise ValueError(f"{path}: '{key}' must be a mapping of params.yaml overrides")
    return StudyPreset(path.stem, str(raw["description"]), str(raw["study"]), str(raw["data"]),
                       raw["params"], raw["sample"], path)


def list_presets(folder: str | Path = PRESETS_DIR) -> list[StudyPreset]:
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder}: no presets folder (run from the repository root)")
    return [load_preset(p) for p in sorted(folder.glob("*.yaml"))]


def find_preset(name: str, folder: str | Path = PRESETS_DIR) -> StudyPreset:
    path = Path(folder) / f"{name}.yaml"
    if not path.is_file():
        known = [p.stem for p in sorted(Path(folder).glob("*.yaml"))]
        raise ValueError(f"no preset {name!r} ({path}); known: {', '.join(known)}")
    return load_preset(path)


def resolve(preset: StudyPreset, base: dict, sample: bool = False):
    """The validated :class:`aerestore.params.Params` of ``base`` (params.yaml) with the
    preset applied (``ParamsError`` names the preset and the key)."""
    from ..params import deep_update, parse_params

    raw = deep_update(copy.deepcopy(base), preset.overrides(sample))
    return parse_params(raw, source=f"{preset.path}{' (sample)' if sample else ''}")


def hydra_value(v: Any) -> str:
    """A value in Hydra's override grammar (what ``dvc exp run -S`` parses)."""
    if v is None:
        return "null"
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v)
    if isinstance(v, str):
        if _BARE.match(v) and v.lower() not in ("null", "true", "false"):
            return v
        return '"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(v, (list, tuple)):
        return "[" + ",".join(hydra_value(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{" + ",".join(f"{k}:{hydra_value(x)}" for k, x in v.items()) + "}"
    raise TypeError(f"cannot write {type(v).__name__} {v!r} as a Hydra override")


def _leaves(obj: dict, prefix: str = "") -> list[tuple[str, Any]]:
    out: list[tuple[str, Any]] = []
    for k, v in obj.items():
        key = f"{prefix}.{k}" if prefix else str(k)
        if isinstance(v, dict) and v:
            out += _leaves(v, key)
        else:
            out.append((key, v))
    return out


def _has(base: dict, key: str) -> bool:
    cur: Any = base
    for part in key.split("."):
        if not isinstance(cur, dict) or part not in cur:
            return False
        cur = cur[part]
    return True


def set_params(preset: StudyPreset, base: dict, sample: bool = False) -> list[str]:
    """The ``-S`` overrides of the preset: ``key=value`` for keys of ``base``, ``++key=value``
    for new ones."""
    return [f"{'' if _has(base, k) else '++'}{k}={hydra_value(v)}"
            for k, v in _leaves(preset.overrides(sample))]


def is_sweep(override: str) -> bool:
    """Whether a ``-S`` value is a sweep (``seed=1,2,3``: a comma outside brackets and quotes)."""
    depth, quote = 0, ""
    for ch in override.partition("=")[2]:
        if quote:
            quote = "" if ch == quote else quote
        elif ch in "'\"":
            quote = ch
        elif ch in "[{":
            depth += 1
        elif ch in "]}":
            depth -= 1
        elif ch == "," and depth == 0:
            return True
    return False


def dvc_command(preset: StudyPreset, base: dict, sample: bool = False, queue: bool = False,
                extra: list[str] | None = None, name: str | None = None) -> list[str]:
    """``dvc exp run [--queue] [-n <name>[-sample]] -S key=value...`` (validated first), with the
    ``extra`` ``-S`` overrides last (they win); ``name`` replaces the experiment's name (the
    preset's, by default: a second run of it, e.g. its control, needs another); a sweep among
    the overrides (``seed=1,2,3``) drops the name, which one experiment only can take."""
    resolve(preset, base, sample)
    extra = list(extra or [])
    name = name or preset.name + ("-sample" if sample else "")
    cmd = ["dvc", "exp", "run", *(["--queue"] if queue else [])]
    if not any(is_sweep(e) for e in extra):
        cmd += ["-n", name]
    for s in set_params(preset, base, sample) + extra:
        cmd += ["-S", s]
    return cmd


def shell_line(cmd: list[str]) -> str:
    return " ".join(shlex.quote(c) for c in cmd)
