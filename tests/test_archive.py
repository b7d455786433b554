"""Safe extraction: good archives unpack; every unsafe member is named; nothing is written."""

from __future__ import annotations

import io
import stat
import tarfile
import zipfile
from pathlib import Path

import pytest

from aerestore.data.archive import (
    ArchiveTooLargeError,
    UnsafeArchiveError,
    archive_format,
    safe_extract,
    unsafe_members,
)


def _add_file(tf: tarfile.TarFile, name: str, data: bytes) -> None:
    ti = tarfile.TarInfo(name)
    ti.size = len(data)
    tf.addfile(ti, io.BytesIO(data))


def _add_special(tf: tarfile.TarFile, name: str, kind: bytes, linkname: str = "") -> None:
    ti = tarfile.TarInfo(name)
    ti.type = kind
    ti.linkname = linkname
    tf.addfile(ti)


def _files_under(root: Path) -> list[str]:
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file())


@pytest.mark.parametrize("suffix,mode", [(".tgz", "w:gz"), (".tar", "w"), (".tar.gz", "w:gz")])
def test_tar_extracts_regular_files_and_dirs(tmp_path: Path, suffix: str, mode: str) -> None:
    arc = tmp_path / f"a{suffix}"
    with tarfile.open(arc, mode) as tf:
        _add_special(tf, "./", tarfile.DIRTYPE)  # what `tar -C dir .` writes first
        _add_special(tf, "./top", tarfile.DIRTYPE)
        _add_file(tf, "./top/a.jpg", b"aaa")
        _add_file(tf, "top/sub/b.png", b"bbbb")
    assert archive_format(arc) == "tar"
    out = safe_extract(arc, tmp_path / "x")
    assert _files_under(tmp_path / "x") == ["top/a.jpg", "top/sub/b.png"]
    assert (tmp_path / "x/top/sub/b.png").read_bytes() == b"bbbb"
    assert sorted(p.name for p in out) == ["a.jpg", "b.png"]


def test_zip_extracts(tmp_path: Path) -> None:
    arc = tmp_path / "a.zip"
    with zipfile.ZipFile(arc, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("d/", b"")
        zf.writestr("d/e/one.bmp", b"1" * 100)
        zf.writestr("two.webp", b"2")
    assert archive_format(arc) == "zip"
    safe_extract(arc, tmp_path / "x")
    assert _files_under(tmp_path / "x") == ["d/e/one.bmp", "two.webp"]
    assert (tmp_path / "x/d/e/one.bmp").read_bytes() == b"1" * 100


def test_archive_format_by_content(tmp_path: Path) -> None:
    z = tmp_path / "noext"
    with zipfile.ZipFile(z, "w") as zf:
        zf.writestr("a", b"a")
    assert archive_format(z) == "zip"
    t = tmp_path / "noext2"
    with tarfile.open(t, "w") as tf:
        _add_file(tf, "a", b"a")
    assert archive_format(t) == "tar"
    other = tmp_path / "plain.bin"
    other.write_bytes(b"not an archive at all" * 40)
    assert archive_format(other) is None


def test_tar_every_unsafe_member_is_named_and_nothing_extracted(tmp_path: Path) -> None:
    arc = tmp_path / "evil.tgz"
    with tarfile.open(arc, "w:gz") as tf:
        _add_file(tf, "good.jpg", b"fine")
        _add_file(tf, "/etc/evil_abs.jpg", b"x")
        _add_file(tf, "sub/../../evil_dotdot.jpg", b"x")
        _add_special(tf, "evil_symlink", tarfile.SYMTYPE, "/etc/passwd")
        _add_special(tf, "evil_hardlink", tarfile.LNKTYPE, "good.jpg")
        _add_special(tf, "evil_chr", tarfile.CHRTYPE)
        _add_special(tf, "evil_blk", tarfile.BLKTYPE)
        _add_special(tf, "evil_fifo", tarfile.FIFOTYPE)
        _add_file(tf, "z_last_good.png", b"fine")
    dest = tmp_path / "x"
    with pytest.raises(UnsafeArchiveError) as err:
        safe_extract(arc, dest)
    msg = str(err.value)
    expected = {
        "/etc/evil_abs.jpg": "absolute path",
        "sub/../../evil_dotdot.jpg": "'..'",
        "evil_symlink": "symbolic link",
        "evil_hardlink": "hard link",
        "evil_chr": "device",
        "evil_blk": "device",
        "evil_fifo": "fifo",
    }
    for name, why in expected.items():
        line = next((ln for ln in msg.splitlines() if repr(name) in ln), None)
        assert line is not None, f"{name} not named in:\n{msg}"
        assert why in line
    assert "'good.jpg':" not in msg and "z_last_good.png" not in msg  # safe members not listed
    assert len(err.value.offending) == len(expected)
    assert not dest.exists() or not any(dest.iterdir())
    assert {n for n, _ in unsafe_members(arc)} == set(expected)


def test_zip_every_unsafe_member_is_named_and_nothing_extracted(tmp_path: Path) -> None:
    arc = tmp_path / "evil.zip"
    with zipfile.ZipFile(arc, "w") as zf:
        zf.writestr("good.jpg", b"fine")
        zf.writestr("/abs/evil.jpg", b"x")
        zf.writestr("../evil_up.jpg", b"x")
        zf.writestr("a\\..\\..\\evil_backslash.jpg", b"x")
        zf.writestr("C:/evil_drive.jpg", b"x")
        link = zipfile.ZipInfo("evil_link")
        link.create_system = 3
        link.external_attr = (stat.S_IFLNK | 0o777) << 16
        zf.writestr(link, "/etc/passwd")
        fifo = zipfile.ZipInfo("evil_fifo")
        fifo.create_system = 3
        fifo.external_attr = (stat.S_IFIFO | 0o644) << 16
        zf.writestr(fifo, b"")
    names = zipfile.ZipFile(arc).namelist()
    dest = tmp_path / "x"
    with pytest.raises(UnsafeArchiveError) as err:
        safe_extract(arc, dest)
    msg = str(err.value)
    offenders = [n for n in names if n != "good.jpg"]
    for name in offenders:
        assert repr(name) in msg, f"{name!r} not named in:\n{msg}"
    assert "symbolic link" in msg and "fifo" in msg
    assert len(err.value.offending) == len(offenders) == 6
    assert not dest.exists() or not any(dest.iterdir())


def test_size_limit_refuses_bombs_before_writing(tmp_path: Path) -> None:
    arc = tmp_path / "bomb.zip"
    with zipfile.ZipFile(arc, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("a.png", b"\0" * 200_000)
        zf.writestr("b.png", b"\0" * 200_000)
    assert arc.stat().st_size < 5_000  # compresses ~100:1
    dest = tmp_path / "x"
    with pytest.raises(ArchiveTooLargeError, match="400,000 bytes"):
        safe_extract(arc, dest, max_bytes=300_000)
    assert not dest.exists() or not any(dest.iterdir())
    safe_extract(arc, dest, max_bytes=400_000)  # at the limit: fine
    assert (dest / "b.png").stat().st_size == 200_000


def test_member_count_limit(tmp_path: Path) -> None:
    arc = tmp_path / "many.tar"
    with tarfile.open(arc, "w") as tf:
        for i in range(5):
            _add_file(tf, f"{i}.jpg", b"x")
    with pytest.raises(ArchiveTooLargeError, match="5 members"):
        safe_extract(arc, tmp_path / "x", max_members=4)


def test_damaged_archive_error_names_it(tmp_path: Path) -> None:
    arc = tmp_path / "broken.tgz"
    arc.write_bytes(b"\x1f\x8b\x08\x00" + b"garbage" * 10)
    with pytest.raises(ValueError, match="broken.tgz"):
        safe_extract(arc, tmp_path / "x")
