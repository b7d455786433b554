"""Atomic file writing and memory-mapped arrays.

Nothing a stage writes is left half-written: every file goes to a temporary name in
the same folder and is renamed into place only once it is complete.

- **A full disk** (``ENOSPC``, or a quota) while writing raises ``OSError`` saying so and
  naming the output; the temporary file is removed and the previous output is untouched.
  ``torch.save`` reports a full disk as a ``RuntimeError`` from its C++ writer; that too
  becomes the disk-full error when the folder has (almost) no space left.
  :class:`NpyWriter` reserves its whole file up front (``posix_fallocate``), so a full
  disk is reported when it is opened, not as a ``SIGBUS`` half-way through a memory map.
- **A killed writer** (``kill -9``, the OOM killer, a power cut) cannot clean up: its
  temporary files and folders stay beside the output. Their names carry the writer's host
  and process id (``.<name>.<host>-<pid>.<random>.tmp``), so the next write in that folder
  removes those of processes that no longer exist (and puts a folder replaced half-way
  back), and a folder dependency such as ``models`` does not keep a stray file for ever.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import re
import shutil
import socket
import tempfile
import uuid
from pathlib import Path
from typing import Any, Iterator

import numpy as np

# the writer's host (hashed: any host name fits) and process id, in every temporary name
_HOST = hashlib.sha1(socket.gethostname().encode()).hexdigest()[:8]
_LEFTOVER = re.compile(r"^\.(?P<name>.+)\.(?P<host>[0-9a-f]{8})-(?P<pid>\d+)\.(?P<rand>[A-Za-z0-9_]+)\.(?P<kind>tmp|old)$")
# less free space than this after a failed write: the disk is what is full
_FULL_BYTES = 1 << 20
_swept: set[str] = set()  # folders already cleared of dead writers' leftovers by this process


def _umask_mode() -> int:
    """The mode a plain new file would get (mkstemp creates 0600 files)."""
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


def _owner() -> str:
    return f"{_HOST}-{os.getpid()}"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def sweep_leftovers(folder: str | Path) -> list[Path]:
    """Remove from ``folder`` the temporary files and folders of writers on this host that
    no longer run (killed before they could clean up); a folder that :func:`atomic_dir` had
    moved aside but not yet replaced goes back in place. Returns what was removed. Done
    once per folder and process by every writer here (cheap: one listing)."""
    folder = Path(folder)
    removed: list[Path] = []
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return removed
    for entry in entries:
        m = _LEFTOVER.match(entry.name)
        if not m or m["host"] != _HOST or _alive(int(m["pid"])):
            continue
        leftover = folder / entry.name
        target = folder / m["name"]
        if m["kind"] == "old" and not (target.exists() or target.is_symlink()):
            os.replace(leftover, target)  # killed between the two renames: the previous output back
            continue
        if leftover.is_dir() and not leftover.is_symlink():
            shutil.rmtree(leftover, ignore_errors=True)
        else:
            leftover.unlink(missing_ok=True)
        removed.append(leftover)
    return removed


def _prepare(path: Path) -> None:
    """Create ``path``'s folder and, once per process, clear it of dead writers' leftovers."""
    path.parent.mkdir(parents=True, exist_ok=True)
    key = os.path.abspath(path.parent)
    if key not in _swept:
        sweep_leftovers(path.parent)
        _swept.add(key)


def _disk_full(exc: BaseException, folder: Path) -> bool:
    """Whether ``exc`` (or an error it came from) means that the disk or quota is full."""
    e: BaseException | None = exc
    while e is not None:
        if isinstance(e, OSError) and e.errno in (errno.ENOSPC, errno.EDQUOT):
            return True
        e = e.__cause__ or e.__context__
    if isinstance(exc, RuntimeError):  # torch.save's C++ writer: "unexpected pos", "file write failed"
        try:
            return shutil.disk_usage(folder).free < _FULL_BYTES
        except OSError:
            return False
    return False


def _full_error(path: Path, part: str | None = None) -> OSError:
    where = f"{path} (at {part})" if part else str(path)
    err = OSError(errno.ENOSPC, f"No space left on device: the disk is full while writing {where}; "
                                f"the previous {path.name}, if any, is kept (free some space and rerun)")
    err.output = path  # type: ignore[attr-defined]  (read by an enclosing atomic_dir)
    return err


def _temp_file(path: Path) -> Path:
    """A new empty file beside ``path``, named for this writer, with a plain file's mode."""
    _prepare(path)
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.{_owner()}.", suffix=".tmp", dir=path.parent)
    except OSError as exc:
        if _disk_full(exc, path.parent):
            raise _full_error(path) from exc
        raise
    os.close(fd)
    os.chmod(tmp, _umask_mode())
    return Path(tmp)


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it onto ``path`` on success.

    On an exception the temporary file is removed and ``path`` is left untouched; a full
    disk becomes an ``OSError`` (``ENOSPC``) that names ``path``."""
    path = Path(path)
    tmp_path = _temp_file(path)
    try:
        yield tmp_path
        os.replace(tmp_path, path)
    except Exception as exc:
        if _disk_full(exc, path.parent):  # before the temporary file frees its space
            raise _full_error(path) from exc
        raise
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


@contextlib.contextmanager
def atomic_dir(path: str | Path) -> Iterator[Path]:
    """Yield an empty temporary sibling of ``path``; on success it replaces ``path``.

    On an exception the temporary folder is removed and ``path`` is left untouched; a full
    disk becomes an ``OSError`` (``ENOSPC``) that names ``path`` and the file being written.
    """
    path = Path(path)
    _prepare(path)
    tmp = path.with_name(f".{path.name}.{_owner()}.{uuid.uuid4().hex[:12]}.tmp")
    tmp.mkdir()  # (not mkdtemp: its 0700 mode would outlive the rename)
    try:
        yield tmp
    except BaseException as exc:
        full = isinstance(exc, Exception) and _disk_full(exc, path.parent)
        shutil.rmtree(tmp, ignore_errors=True)
        if full:
            inner = getattr(exc, "output", None)
            part = os.path.relpath(inner, tmp) if inner is not None and Path(inner).is_relative_to(tmp) else None
            raise _full_error(path, part) from exc
        raise
    old = None
    if path.exists() or path.is_symlink():
        old = path.with_name(f".{path.name}.{_owner()}.{uuid.uuid4().hex[:8]}.old")
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


def write_torch(path: str | Path, obj: Any) -> None:
    """``torch.save(obj)`` to ``path`` atomically, the same bytes for the same ``obj``.

    Through an open file: given a path, ``torch.save`` names the archive's folder after the
    file, here a random temporary name, so two saves of the same weights would differ byte
    for byte and DVC would rerun every stage after a retrain that changed nothing."""
    import torch

    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        torch.save(obj, f)


def _reserve(path: Path) -> None:
    """Allocate every block of ``path`` now: a memory map written on a full disk gets
    ``SIGBUS`` (the process dies), an allocation up front gets ``ENOSPC``."""
    with open(path, "r+b") as f:
        try:
            os.posix_fallocate(f.fileno(), 0, os.fstat(f.fileno()).st_size)
        except OSError as exc:
            if exc.errno not in (errno.EOPNOTSUPP, errno.EINVAL, errno.ENOSYS):  # no such call there: as before
                raise


class NpyWriter:
    """Write a ``.npy`` array of known shape incrementally, through a memory map.

    Peak memory is one chunk, not the whole array. The file appears under its final
    name only when :meth:`close` is called after every row was written.

    >>> with NpyWriter("x.npy", (n, h, w, c), np.uint8) as w:
    ...     w.write(0, chunk)
    """

    def __init__(self, path: str | Path, shape: tuple[int, ...], dtype: Any = np.uint8):
        self.path = Path(path)
        self.tmp = _temp_file(self.path)
        self.shape = tuple(int(s) for s in shape)
        try:
            self.array = np.lib.format.open_memmap(self.tmp, mode="w+", dtype=dtype, shape=self.shape)
            _reserve(self.tmp)
        except Exception as exc:
            self.abort()
            if _disk_full(exc, self.path.parent):
                raise _full_error(self.path) from exc
            raise
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
