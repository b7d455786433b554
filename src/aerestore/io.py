"""Atomic file writing and memory-mapped arrays.

Nothing a stage writes is left half-written: every file goes to a temporary name in
the same folder and is renamed into place only once it is complete.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
import uuid
from pathlib import Path
from typing import Any, Iterator

import numpy as np


def _umask_mode() -> int:
    """The mode a plain new file would get (mkstemp creates 0600 files)."""
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it onto ``path`` on success."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    os.chmod(tmp_path, _umask_mode())
    try:
        yield tmp_path
        os.replace(tmp_path, path)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


@contextlib.contextmanager
def atomic_dir(path: str | Path) -> Iterator[Path]:
    """Yield an empty temporary sibling of ``path``; on success it replaces ``path``.

    On an exception the temporary folder is removed and ``path`` is left untouched.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:12]}.tmp")
    tmp.mkdir()  # (not mkdtemp: its 0700 mode would outlive the rename)
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    old = None
    if path.exists() or path.is_symlink():
        old = path.with_name(f".{path.name}.old-{uuid.uuid4().hex[:8]}")
        os.replace(path, old)
    try:
        os.replace(tmp, path)
    except BaseException:
        if old is not None:
            os.replace(old, path)
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if old is not None:
        if old.is_dir() and not old.is_symlink():
            shutil.rmtree(old, ignore_errors=True)
        else:
            old.unlink()


def write_text(path: str | Path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, float) and not np.isfinite(obj):
        return None
    return obj


def write_json(path: str | Path, obj: Any) -> None:
    write_text(path, json.dumps(_jsonable(obj), indent=2, sort_keys=False) + "\n")


def read_json(path: str | Path) -> Any:
    return json.loads(Path(path).read_text())


class NpyWriter:
    """Write a ``.npy`` array of known shape incrementally, through a memory map.

    Peak memory is one chunk, not the whole array. The file appears under its final
    name only when :meth:`close` is called after every row was written.

    >>> with NpyWriter("x.npy", (n, h, w, c), np.uint8) as w:
    ...     w.write(0, chunk)
    """

    def __init__(self, path: str | Path, shape: tuple[int, ...], dtype: Any = np.uint8):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{self.path.name}.", suffix=".tmp", dir=self.path.parent)
        os.close(fd)
        self.tmp = Path(tmp)
        os.chmod(self.tmp, _umask_mode())
        self.shape = tuple(int(s) for s in shape)
        self.array = np.lib.format.open_memmap(self.tmp, mode="w+", dtype=dtype, shape=self.shape)
        self.written = 0

    def write(self, start: int, rows: np.ndarray) -> None:
        self.array[start : start + len(rows)] = rows
        self.written = max(self.written, start + len(rows))

    def append(self, rows: np.ndarray) -> None:
        self.write(self.written, rows)

    def close(self) -> None:
        if self.written != self.shape[0]:
            raise RuntimeError(f"{self.path}: wrote {self.written} of {self.shape[0]} rows")
        self.array.flush()
        del self.array
        os.replace(self.tmp, self.path)

    def abort(self) -> None:
        if hasattr(self, "array"):
            del self.array
        if self.tmp.exists():
            self.tmp.unlink()

    def __enter__(self) -> "NpyWriter":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()


def open_array(path: str | Path) -> np.ndarray:
    """Memory-map a ``.npy`` file read-only."""
    return np.load(path, mmap_mode="r")


def open_split(folder: str | Path, stage: str) -> dict[str, np.ndarray | None]:
    """The ``degraded``, ``clean`` and ``mask`` arrays of one split folder, memory-mapped;
    ``mask`` is None when the file is missing, the others raise ``FileNotFoundError``
    naming the file and the stage that writes it."""
    folder = Path(folder)
    arrays: dict[str, np.ndarray | None] = {}
    for name in ("degraded", "clean", "mask"):
        path = folder / f"{name}.npy"
        if path.exists():
            arrays[name] = open_array(path)
        elif name == "mask":
            arrays[name] = None
        else:
            raise FileNotFoundError(f"{path}: missing (run the {stage} stage)")
    return arrays


def write_csv(path: str | Path, rows: list[dict[str, Any]]) -> None:
    """Rows of dicts as CSV (columns in first-seen order), written atomically."""
    import csv

    columns: list[str] = []
    for row in rows:
        for key in row:
            if key not in columns:
                columns.append(key)
    with atomic_path(path) as tmp, open(tmp, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns)
        writer.writeheader()
        for row in rows:
            writer.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in row.items()})
