"""Safe extraction of ``.tar`` / ``.tar.gz`` / ``.tgz`` / ``.zip`` archives.

An archive from the network is untrusted input. :func:`safe_extract` first reads the
whole member list and refuses the archive, extracting nothing, if any member

* has an absolute name (``/etc/passwd``, ``C:\\x``, ``\\\\server\\x``),
* has a ``..`` component (``../../.bashrc``; backslashes count as separators too),
* is a symbolic or hard link (a later member could write through it),
* is a device, a FIFO, a socket or any other non-regular file,
* is encrypted (zip), or has a NUL byte or an empty name.

The error names *every* offending member with the reason, not just the first one.
It also refuses, before writing anything, an archive whose regular files add up to
more than ``max_bytes`` once unpacked (a zip bomb), or more than the free space at the
destination; the byte count is enforced again while writing, so a lying header cannot
get past it. Only regular files and folders are ever created, with fresh permissions
(0644 / 0755): owners, modes and timestamps stored in the archive are ignored.
"""

from __future__ import annotations

import re
import shutil
import stat
import tarfile
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Callable, Iterator

from tqdm import tqdm

# Unpacked size above which an archive is refused. CelebA's img_align_celeba.zip
# unpacks to 1.4 GB and LFW's lfw.tgz to 0.2 GB; 32 GiB leaves room for real data sets
# while stopping a bomb long before it fills a disk.
DEFAULT_MAX_BYTES = 32 * 2**30
# Members above which an archive is refused (CelebA has 202,599 files).
DEFAULT_MAX_MEMBERS = 5_000_000

ARCHIVE_SUFFIXES = (".tar.gz", ".tgz", ".tar", ".zip", ".tar.bz2", ".tbz2", ".tar.xz", ".txz")

_CHUNK = 1 << 20


class UnsafeArchiveError(ValueError):
    """The archive has members that could write outside the target folder, or special files."""

    def __init__(self, archive: Path, offending: list[tuple[str, str]]):
        self.archive = archive
        self.offending = offending
        lines = "\n".join(f"  - {name!r}: {why}" for name, why in offending)
        super().__init__(
            f"{archive}: refusing to extract the archive (nothing was extracted): "
            f"{len(offending)} unsafe member(s):\n{lines}"
        )


class ArchiveTooLargeError(ValueError):
    """The archive would unpack to more bytes (or members) than allowed or than the disk holds."""


@dataclass(frozen=True)
class Member:
    """One entry of an archive, in a format-independent form."""

    name: str  # as stored in the archive
    kind: str  # "file", "dir", "symlink", "hardlink", "device", "fifo", "socket", "other"
    size: int  # uncompressed bytes (files)
    target: str = ""  # link target (links)
    encrypted: bool = False


def archive_format(path: str | Path) -> str | None:
    """``"zip"``, ``"tar"`` or ``None``: by the file's name, else by its content."""
    name = Path(path).name.lower()
    if name.endswith(".zip"):
        return "zip"
    if any(name.endswith(s) for s in ARCHIVE_SUFFIXES):
        return "tar"
    path = Path(path)
    if not path.is_file():
        return None
    if zipfile.is_zipfile(path):
        return "zip"
    try:
        if tarfile.is_tarfile(path):
            return "tar"
    except (OSError, tarfile.TarError, EOFError):
        return None
    return None


# ----------------------------------------------------------------------- members
def _tar_kind(m: tarfile.TarInfo) -> str:
    if m.isdir():
        return "dir"
    if m.issym():
        return "symlink"
    if m.islnk():
        return "hardlink"
    if m.ischr() or m.isblk():
        return "device"
    if m.isfifo():
        return "fifo"
    if m.isfile():  # REGTYPE, AREGTYPE, CONTTYPE, GNU sparse
        return "file"
    return "other"


def _zip_kind(info: zipfile.ZipInfo) -> str:
    mode = info.external_attr >> 16  # the Unix mode, when the creator stored one
    fmt = stat.S_IFMT(mode)
    if fmt == stat.S_IFLNK:
        return "symlink"
    if fmt in (stat.S_IFCHR, stat.S_IFBLK):
        return "device"
    if fmt == stat.S_IFIFO:
        return "fifo"
    if fmt == stat.S_IFSOCK:
        return "socket"
    if info.is_dir() or fmt == stat.S_IFDIR:
        return "dir"
    return "file"


def list_members(path: str | Path) -> list[Member]:
    """Every entry of a tar or zip archive (reads the whole index; extracts nothing)."""
    path = Path(path)
    fmt = archive_format(path)
    if fmt == "zip":
        with zipfile.ZipFile(path) as zf:
            return [
                Member(i.filename, _zip_kind(i), i.file_size, "", bool(i.flag_bits & 0x1))
                for i in zf.infolist()
            ]
    if fmt == "tar":
        with tarfile.open(path, "r:*") as tf:
            return [Member(m.name, _tar_kind(m), m.size, m.linkname) for m in tf.getmembers()]
    raise ValueError(f"{path}: not a tar or zip archive")


def _name_problem(name: str) -> str | None:
    if "\x00" in name:
        return "NUL byte in the name"
    norm = name.replace("\\", "/")
    if norm.startswith("/") or re.match(r"^[A-Za-z]:", norm):
        return "absolute path"
    parts = norm.split("/")
    if ".." in parts:
        return "'..' in the path leads outside the target folder"
    if not [p for p in parts if p not in ("", ".")]:
        return "empty name"
    return None


def member_problem(m: Member) -> str | None:
    """Why ``m`` must not be extracted, or ``None`` when it is safe."""
    why = _name_problem(m.name)
    if m.kind == "dir" and why == "empty name":  # "./" entries of `tar -C dir .`
        return None
    if why:
        return why
    if m.kind == "symlink":
        return f"symbolic link (to {m.target!r})" if m.target else "symbolic link"
    if m.kind == "hardlink":
        return f"hard link (to {m.target!r})"
    if m.kind in ("device", "fifo", "socket"):
        return f"special file ({m.kind})"
    if m.kind == "other":
        return "not a regular file or folder"
    if m.encrypted:
        return "encrypted (cannot be read without a password)"
    return None


def unsafe_members(path: str | Path) -> list[tuple[str, str]]:
    """``[(member name, reason), ...]`` for every member :func:`safe_extract` would refuse."""
    return [(m.name, why) for m in list_members(path) if (why := member_problem(m))]


def _target(dest: Path, name: str) -> Path:
    parts = [p for p in name.replace("\\", "/").split("/") if p not in ("", ".")]
    return dest.joinpath(*parts)


# --------------------------------------------------------------------- extraction
def _members_and_streams(path: Path, fmt: str) -> Iterator[tuple[Member, Callable[[], BinaryIO]]]:
    if fmt == "zip":
        with zipfile.ZipFile(path) as zf:
            for info in zf.infolist():
                m = Member(info.filename, _zip_kind(info), info.file_size)
                yield m, (lambda info=info: zf.open(info))
    else:
        # Streaming mode ("r|*") reads a compressed tar once, front to back.
        with tarfile.open(path, "r|*") as tf:
            for ti in tf:
                m = Member(ti.name, _tar_kind(ti), ti.size, ti.linkname)
                yield m, (lambda ti=ti: tf.extractfile(ti))  # type: ignore[misc]


def safe_extract(
    archive: str | Path,
    dest: str | Path,
    *,
    max_bytes: int = DEFAULT_MAX_BYTES,
    max_members: int = DEFAULT_MAX_MEMBERS,
    progress: bool = False,
) -> list[Path]:
    """Extract the regular files of ``archive`` under ``dest``; return their paths.

    Raises :class:`UnsafeArchiveError` (naming every offending member) or
    :class:`ArchiveTooLargeError` before anything is written. ``dest`` is created;
    files already in it may be overwritten by members with the same name.
    """
    archive, dest = Path(archive), Path(dest)
    fmt = archive_format(archive)
    if fmt is None:
        raise ValueError(f"{archive}: not a tar or zip archive")
    try:
        members = list_members(archive)
    except (tarfile.TarError, zipfile.BadZipFile, EOFError, OSError, zlib.error) as exc:
        raise ValueError(f"{archive}: cannot read the archive: {exc}") from exc

    offending = [(m.name, why) for m in members if (why := member_problem(m))]
    if offending:
        raise UnsafeArchiveError(archive, offending)
    files = [m for m in members if m.kind == "file"]
    total = sum(m.size for m in files)
    if len(members) > max_members:
        raise ArchiveTooLargeError(
            f"{archive}: {len(members):,} members, more than the limit of {max_members:,}"
        )
    if total > max_bytes:
        raise ArchiveTooLargeError(
            f"{archive}: unpacks to {total:,} bytes, more than the limit of {max_bytes:,} "
            "(a zip bomb, or raise the limit)"
        )
    dest.mkdir(parents=True, exist_ok=True)
    free = shutil.disk_usage(dest).free
    if total > free:
        raise ArchiveTooLargeError(
            f"{archive}: unpacks to {total:,} bytes but only {free:,} bytes are free in {dest}"
        )

    written_total = 0
    out: list[Path] = []
    with tqdm(
        total=total,
        unit="B",
        unit_scale=True,
        desc=f"extract {archive.name}",
        disable=not progress,
        leave=False,
    ) as bar:
        for m, open_stream in _members_and_streams(archive, fmt):
            # The index was checked above; check each entry again in case the stream
            # disagrees with the index (a tar read twice, a zip with two directories).
            if (why := member_problem(m)) is not None:
                raise UnsafeArchiveError(archive, [(m.name, why)])
            if m.kind == "dir":
                if _name_problem(m.name) is None:
                    _target(dest, m.name).mkdir(parents=True, exist_ok=True)
                continue
            target = _target(dest, m.name)
            target.parent.mkdir(parents=True, exist_ok=True)
            src = open_stream()
            if src is None:
                raise ValueError(f"{archive}: cannot read member {m.name!r}")
            try:
                with src, open(target, "wb") as fh:
                    while chunk := src.read(_CHUNK):
                        written_total += len(chunk)
                        if written_total > max_bytes:
                            raise ArchiveTooLargeError(
                                f"{archive}: unpacked data passed the limit of {max_bytes:,} "
                                f"bytes at member {m.name!r} (its header understates its size)"
                            )
                        fh.write(chunk)
                        bar.update(len(chunk))
            except (zipfile.BadZipFile, tarfile.TarError, EOFError, OSError, zlib.error) as exc:
                raise ValueError(f"{archive}: cannot extract member {m.name!r}: {exc}") from exc
            target.chmod(0o644)
            out.append(target)
    return out
