"""The download stage: every source, checks, duplicates, splits, fetching and failures.

Network use is limited to a local HTTP server on 127.0.0.1.
"""

from __future__ import annotations

import csv
import dataclasses
import gzip
import hashlib
import http.server
import io
import json
import re
import socket
import struct
import tarfile
import threading
import warnings
import zipfile
from pathlib import Path
from typing import Iterator

import numpy as np
import pytest
from PIL import Image

from aerestore.data import download as dl
from aerestore.data import fetch as fe
from aerestore.data import presets
from aerestore.data.archive import UnsafeArchiveError
from aerestore.params import DataParams


# ------------------------------------------------------------------------ helpers
def _pixels(seed: int, h: int = 20, w: int = 28) -> np.ndarray:
    rng = np.random.default_rng(seed)
    ramp = np.linspace(0, 200, w)[None, :, None] * np.ones((h, 1, 3))
    return np.clip(ramp + rng.normal(0, 25, (h, w, 3)), 0, 255).astype(np.uint8)


def _encoded(seed: int, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(_pixels(seed, **kw)).save(buf, format=fmt)
    return buf.getvalue()


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _md5(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


def _write(path: Path, data: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def _good_tree(root: Path, n: int = 10) -> dict[str, bytes]:
    """n distinct images in five formats across nested folders; returns rel path -> bytes."""
    fmts = [("JPEG", "jpg"), ("PNG", "png"), ("BMP", "bmp"), ("TIFF", "tiff"), ("WEBP", "webp")]
    out = {}
    for i in range(n):
        fmt, ext = fmts[i % len(fmts)]
        folder = ("sub/" if i % 2 else "") + ("deep/er/" if i % 3 == 0 else "")
        rel = f"{folder}img{i:02d}.{ext.upper() if i == 4 else ext}"  # one upper-case extension
        out[rel] = _encoded(i, fmt)
        _write(root / rel, out[rel])
    return out


def _run(data: DataParams, tmp_path: Path, seed: int = 0, **kw) -> dict:
    return dl.run_download(
        data,
        seed,
        tmp_path / "out",
        tmp_path / "metrics.json",
        cache_dir=tmp_path / "cache",
        progress=False,
        **kw,
    )


def _manifest(tmp_path: Path) -> list[dict]:
    return dl.load_manifest(tmp_path / "out")


def _balance(m: dict) -> int:
    return m["kept"] + m["duplicates"] + m["skipped_total"] + m["flat"] + m["limited"]


# --------------------------------------------------------------------------- sample
@pytest.fixture(scope="module")
def sample_run(tmp_path_factory) -> tuple[Path, dict]:
    tmp = tmp_path_factory.mktemp("sample")
    m = dl.run_download(DataParams(), 42, tmp / "out", tmp / "m.json", progress=False)
    return tmp, m


def test_sample_gives_enough_real_tiles(sample_run) -> None:
    tmp, m = sample_run
    rows = dl.load_manifest(tmp / "out")
    assert m["source"] == "sample" and m["kept"] == len(rows)
    assert 400 <= m["kept"] <= 2000  # 435 at 64 px from copies at 1/2 and 1/4
    assert m["flat"] > 0  # the retina's black surround
    assert m["found"] == _balance(m)
    assert all(r["split"] for r in rows) and all(m["splits"][s] > 0 for s in dl.SPLITS)
    r = rows[0]
    img = Image.open(tmp / "out" / r["file"])
    assert img.size == (64, 64) and img.mode == "RGB" and (r["width"], r["height"]) == (64, 64)
    assert _sha((tmp / "out" / r["file"]).read_bytes()) == r["sha256"]
    assert r["file"] == f"images/{r['sha256'][:16]}.png"
    assert len({r["sha256"] for r in rows}) == len(rows)
    on_disk = sorted(p.name for p in (tmp / "out/images").iterdir())
    assert on_disk == sorted(Path(r["file"]).name for r in rows)
    assert json.loads((tmp / "m.json").read_text()) == m


def test_sample_val_and_test_share_no_source_pixel_with_train(sample_run) -> None:
    tmp, _ = sample_run
    split = {r["file"]: r["split"] for r in dl.load_manifest(tmp / "out")}
    with open(tmp / "out/origins.csv", newline="") as fh:
        origins = list(csv.DictReader(fh))
    pat = re.compile(r"skimage\.data\.(\w+)(?:\[\d\])? scale=1/(\d) x=(\d+) y=(\d+)")
    masks: dict[tuple[str, str], np.ndarray] = {}
    rects = []
    for o in origins:
        name, f, x, y = pat.fullmatch(o["origin"]).groups()
        f, x, y = int(f), int(x), int(y)
        rects.append((name, split[o["file"]], y, x, 64 * f))
    for name, s, y, x, side in rects:
        mask = masks.setdefault((name, s), np.zeros((1500, 1500), bool))
        if name == "stereo_motorcycle":  # the other view repeats rows: compare whole rows
            mask[y : y + side, :] = True
        else:
            mask[y : y + side, x : x + side] = True
    photos = {n for n, *_ in rects}
    for name in photos:
        train = masks.get((name, "train"), np.zeros((1500, 1500), bool))
        for s in ("val", "test"):
            other = masks.get((name, s))
            if other is not None:
                assert not (train & other).any(), f"{name}: {s} overlaps train"
    assert sum(1 for n in photos if (n, "val") in masks or (n, "test") in masks) >= 2


def test_sample_is_deterministic(sample_run, tmp_path: Path) -> None:
    tmp, m = sample_run
    m2 = dl.run_download(DataParams(), 42, tmp_path / "out", tmp_path / "m.json", progress=False)
    assert m2 == m
    for name in ("manifest.csv", "origins.csv"):
        assert (tmp_path / "out" / name).read_bytes() == (tmp / "out" / name).read_bytes()


def test_sample_limit_keeps_smallest_hashes(tmp_path: Path, monkeypatch) -> None:
    from aerestore.data import tiles
    from aerestore.data.presets import SamplePhoto

    monkeypatch.setattr(tiles, "SAMPLE_PHOTOS", (SamplePhoto("coins"), SamplePhoto("brick")))
    full = _run(DataParams(image_size=32), tmp_path / "full", seed=42)
    m = _run(DataParams(image_size=32, limit=40), tmp_path, seed=42)
    assert full["kept"] > 100 and m["kept"] == 40 and m["limited"] == full["kept"] - 40
    full_rows = dl.load_manifest(tmp_path / "full/out")
    rows = _manifest(tmp_path)
    assert sorted(r["sha256"] for r in rows) == sorted(r["sha256"] for r in full_rows)[:40]
    # the limit is applied before the split and moves no tile to another split
    # (apart from the groups the fill-up rule moves: at most one per empty split).
    full_split = {r["sha256"]: r["split"] for r in full_rows}
    with open(tmp_path / "out/origins.csv", newline="") as fh:
        origin = {o["file"]: o["origin"] for o in csv.DictReader(fh)}
    pat = re.compile(r"skimage\.data\.(\w+) scale=1/\d x=(\d+) y=(\d+)")

    def region(file: str) -> tuple:
        name, x, y = pat.fullmatch(origin[file]).groups()
        side = tiles.region_side(32, tiles.SAMPLE_FACTORS)
        return name, int(y) // side, int(x) // side

    moved = {region(r["file"]) for r in rows if full_split[r["sha256"]] != r["split"]}
    assert len(moved) <= 2


# --------------------------------------------------------------------------- folder
def test_folder_mixed_formats_nested(tmp_path: Path) -> None:
    src = tmp_path / "src"
    files = _good_tree(src, 10)
    _write(src / "README.txt", b"not an image")
    _write(src / ".DS_Store", b"\0\0")
    m = _run(DataParams(source="folder", path=str(src)), tmp_path)
    rows = _manifest(tmp_path)
    assert m["found"] == 10 and m["kept"] == 10 and m["ignored_other_files"] == 1
    assert m["skipped_total"] == 0 and m["duplicates"] == 0
    by_sha = {_sha(b): rel for rel, b in files.items()}
    for r in rows:
        rel = by_sha[r["sha256"]]
        out = (tmp_path / "out" / r["file"]).read_bytes()
        assert out == files[rel]  # original bytes, not re-encoded
        assert r["file"] == f"images/{r['sha256'][:16]}{Path(rel).suffix.lower()}"
        assert (r["width"], r["height"]) == (28, 20)
    assert {Path(r["file"]).suffix for r in rows} == {".jpg", ".png", ".bmp", ".tiff", ".webp"}
    order = {s: i for i, s in enumerate(dl.SPLITS)}
    assert [(order[r["split"]], r["file"]) for r in rows] == sorted(
        (order[r["split"]], r["file"]) for r in rows
    )
    with open(tmp_path / "out/origins.csv", newline="") as fh:
        origins = {o["file"]: o["origin"] for o in csv.DictReader(fh)}
    assert sorted(origins.values()) == sorted(files)


def test_folder_bad_files_skipped_counted_and_listed(tmp_path: Path) -> None:
    src = tmp_path / "src"
    _good_tree(src, 6)
    png = _encoded(100, "PNG", h=40, w=40)
    jpg = _encoded(101, "JPEG", h=40, w=40)
    half = jpg.index(b"\xff\xda") + 20  # into the entropy-coded data, past the headers
    bad = {
        "bad/empty.jpg": (b"", "empty"),
        "bad/text.jpg": (b"hello, I am text\n" * 10, "not_image"),
        "bad/cut.png": (png[: len(png) // 2], "truncated"),
        "bad/garbled.jpg": (
            jpg[:half] + bytes(255 - b for b in jpg[half:-2]) + jpg[-2:],
            "corrupt",
        ),
        "bad/huge.png": (_encoded(102, "PNG", h=40, w=41), "too_large"),  # 1640 > max_pixels
    }
    for rel, (data, _) in bad.items():
        _write(src / rel, data)
    with pytest.warns(dl.SkippedFilesWarning) as rec:
        m = _run(DataParams(source="folder", path=str(src), max_pixels=1600), tmp_path)
    text = str(rec[0].message)
    for rel, (_, reason) in bad.items():
        assert rel in text and reason in text
    assert m["skipped"] == {
        "corrupt": 1,
        "truncated": 1,
        "empty": 1,
        "not_image": 1,
        "too_large": 1,
    }
    assert m["kept"] == 6 and m["found"] == 11 == _balance(m)
    assert sorted((s["file"], s["reason"]) for s in m["skipped_files"]) == sorted(
        (rel, reason) for rel, (_, reason) in bad.items()
    )
    assert len(_manifest(tmp_path)) == 6


def test_folder_duplicates_dropped_keeping_first_path(tmp_path: Path) -> None:
    src = tmp_path / "src"
    a = _encoded(1, "PNG")
    _write(src / "a/first.png", a)
    _write(src / "b/copy.png", a)  # same bytes
    _write(src / "c/same_pixels.bmp", _encoded(1, "BMP"))  # same pixels, other bytes
    _write(src / "d/other.png", _encoded(2, "PNG"))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # 2 images cannot fill 3 splits
        m = _run(DataParams(source="folder", path=str(src)), tmp_path)
    assert m["kept"] == 2 and m["duplicates"] == 2
    assert sorted((d["file"], d["same_as"]) for d in m["duplicate_files"]) == [
        ("b/copy.png", "a/first.png"),
        ("c/same_pixels.bmp", "a/first.png"),
    ]
    assert sorted(r["sha256"] for r in _manifest(tmp_path)) == sorted(
        [_sha(a), _sha(_encoded(2, "PNG"))]
    )


def test_all_bad_fails_clearly_and_keeps_old_output(tmp_path: Path) -> None:
    out = _write(tmp_path / "out/keep.txt", b"previous result").parent
    (tmp_path / "metrics.json").write_text("{}")
    src = tmp_path / "src"
    _write(src / "e.jpg", b"")
    _write(src / "t.png", b"text")
    _write(src / "notes.md", b"# hi")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", dl.SkippedFilesWarning)
        with pytest.raises(dl.NoUsableImagesError) as err:
            _run(DataParams(source="folder", path=str(src)), tmp_path)
    msg = str(err.value)
    assert "'folder'" in msg and str(src) in msg and "2 found" in msg
    assert "empty 1" in msg and "not_image 1" in msg and "1 other files ignored" in msg
    assert (out / "keep.txt").read_text() == "previous result"
    assert (tmp_path / "metrics.json").read_text() == "{}"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["metrics.json", "out", "src"]


def test_success_replaces_old_output(tmp_path: Path) -> None:
    _write(tmp_path / "out/stale.png", b"old")
    src = tmp_path / "src"
    _good_tree(src, 3)
    _run(DataParams(source="folder", path=str(src)), tmp_path)
    assert not (tmp_path / "out/stale.png").exists() and len(_manifest(tmp_path)) == 3
    assert (tmp_path / "out").stat().st_mode & 0o777 == (tmp_path / "src").stat().st_mode & 0o777
    assert sorted(p.name for p in tmp_path.iterdir()) == ["metrics.json", "out", "src"]


def test_missing_folder_is_named(tmp_path: Path) -> None:
    with pytest.raises(NotADirectoryError, match="nowhere"):
        _run(DataParams(source="folder", path=str(tmp_path / "nowhere")), tmp_path)
    assert not (tmp_path / "out").exists()


# --------------------------------------------------------------------------- splits
SHARES = {"train": 0.8, "val": 0.1, "test": 0.1}


def test_split_is_deterministic_seeded_and_stable() -> None:
    keys = [_sha(str(i).encode()) for i in range(400)]
    a = dl.assign_splits(keys, SHARES, seed=1)
    assert a == dl.assign_splits(list(reversed(keys)), SHARES, seed=1)
    b = dl.assign_splits(keys, SHARES, seed=2)
    assert sum(a[k] != b[k] for k in keys) > 50  # a new seed draws a new split
    more = dl.assign_splits(keys + [_sha(f"new{i}".encode()) for i in range(100)], SHARES, seed=1)
    assert all(more[k] == a[k] for k in keys)  # adding images moves none of the others
    fewer = dl.assign_splits(keys[:300], SHARES, seed=1)
    assert all(fewer[k] == a[k] for k in keys[:300])


def test_split_shares_are_respected() -> None:
    keys = [f"k{i}" for i in range(5000)]
    a = dl.assign_splits(keys, {"train": 0.6, "val": 0.3, "test": 0.1}, seed=0)
    counts = {s: sum(v == s for v in a.values()) for s in dl.SPLITS}
    assert abs(counts["train"] / 5000 - 0.6) < 0.03
    assert abs(counts["val"] / 5000 - 0.3) < 0.03
    assert abs(counts["test"] / 5000 - 0.1) < 0.02
    none_val = dl.assign_splits(keys[:50], {"train": 0.9, "val": 0.0, "test": 0.1}, seed=0)
    assert "val" not in none_val.values()


@pytest.mark.parametrize("n", [3, 4, 5, 10])
def test_few_images_still_fill_every_split(n: int) -> None:
    for seed in range(30):
        a = dl.assign_splits([f"img{i}" for i in range(n)], SHARES, seed)
        assert set(a.values()) == set(dl.SPLITS), (n, seed, a)


def test_one_image_goes_to_train_with_a_warning(tmp_path: Path) -> None:
    src = tmp_path / "src"
    _write(src / "one.png", _encoded(0, "PNG"))
    with pytest.warns(UserWarning, match="cannot fill every split"):
        m = _run(DataParams(source="folder", path=str(src)), tmp_path)
    assert m["kept"] == 1 and sum(m["splits"].values()) == 1


def test_run_split_determinism_and_seed(tmp_path: Path) -> None:
    src = tmp_path / "src"
    _good_tree(src, 30)
    d = DataParams(source="folder", path=str(src))
    _run(d, tmp_path / "a", seed=3)
    _run(d, tmp_path / "b", seed=3)
    _run(d, tmp_path / "c", seed=4)
    ma, mb, mc = (tmp_path / x / "out/manifest.csv" for x in "abc")
    assert ma.read_bytes() == mb.read_bytes()
    assert ma.read_bytes() != mc.read_bytes()
    rows = dl.load_manifest(tmp_path / "a/out")
    assert {r["split"] for r in rows} == set(dl.SPLITS)


def test_folder_limit_applies_before_split(tmp_path: Path) -> None:
    src = tmp_path / "src"
    files = _good_tree(src, 20)
    m = _run(DataParams(source="folder", path=str(src), limit=7), tmp_path)
    assert m["kept"] == 7 and m["limited"] == 13 and sum(m["splits"].values()) == 7
    assert (
        sorted(r["sha256"] for r in _manifest(tmp_path))
        == sorted(_sha(b) for b in files.values())[:7]
    )


def test_load_manifest_errors(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="manifest"):
        dl.load_manifest(tmp_path)
    (tmp_path / "manifest.csv").write_text("file,split,width,height,sha256\na.png,dev,1,1,ab\n")
    with pytest.raises(ValueError, match=r"manifest.csv:2: split 'dev'"):
        dl.load_manifest(tmp_path)


# ---------------------------------------------------------------- checksums, fetch
def test_verify_any_algorithm(tmp_path: Path) -> None:
    p = _write(tmp_path / "f.bin", b"hello")
    assert fe.verify(p, "md5", _md5(b"hello")) == _md5(b"hello")
    assert fe.verify(p, "sha256", _sha(b"hello").upper()) == _sha(b"hello")
    with pytest.raises(fe.ChecksumError) as err:
        fe.verify(p, "md5", "0" * 32)
    assert (
        "0" * 32 in str(err.value)
        and _md5(b"hello") in str(err.value)
        and "f.bin" in str(err.value)
    )
    assert p.exists()  # verify never deletes
    with pytest.raises(ValueError, match="unknown checksum algorithm 'nope'"):
        fe.verify(p, "nope", "x")


class _Server:
    """A local HTTP server over a dict of path -> bytes, with failure switches."""

    def __init__(self) -> None:
        self.files: dict[str, bytes] = {}
        self.requests: list[tuple[str, str | None]] = []  # (path, Range header)
        self.drop_first: set[str] = set()  # close the socket mid-body on the first GET
        self.ranges = True  # honour Range requests
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *a) -> None:
                pass

            def do_GET(self) -> None:
                rng = self.headers.get("Range")
                path = self.path.split("?", 1)[0]
                server.requests.append((path, rng))
                body = server.files.get(path)
                if body is None:
                    self.send_error(404)
                    return
                start = 0
                if rng and server.ranges:
                    start = int(re.fullmatch(r"bytes=(\d+)-", rng).group(1))
                    self.send_response(206)
                    self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
                else:
                    self.send_response(200)
                self.send_header("Content-Length", str(len(body) - start))
                self.end_headers()
                if path in server.drop_first:
                    server.drop_first.discard(path)
                    self.wfile.write(body[start : start + (len(body) - start) // 2])
                    self.wfile.flush()
                    self.connection.shutdown(socket.SHUT_RDWR)
                    return
                self.wfile.write(body[start:])

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.httpd.serve_forever, args=(0.02,), daemon=True)
        self.thread.start()
        self.base = f"http://127.0.0.1:{self.httpd.server_address[1]}"

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server(monkeypatch) -> Iterator[_Server]:
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    monkeypatch.setattr(fe, "BACKOFF_S", 0.0)
    s = _Server()
    yield s
    s.close()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_fetch_reuses_a_verified_cache_without_network(server: _Server, tmp_path: Path) -> None:
    body = b"x" * 5000
    server.files["/f.bin"] = body
    dest = tmp_path / "cache/f.bin"
    assert fe.fetch(server.base + "/f.bin", dest, "sha256", _sha(body), progress=False) == dest
    assert dest.read_bytes() == body and len(server.requests) == 1
    server.close()
    assert fe.fetch(server.base + "/f.bin", dest, "sha256", _sha(body), progress=False) == dest
    assert len(server.requests) == 1


def test_fetch_checksum_mismatch_deletes_and_names_both(server: _Server, tmp_path: Path) -> None:
    server.files["/f.bin"] = b"actual content"
    dest = tmp_path / "cache/f.bin"
    wrong = "ab" * 32
    with pytest.raises(fe.ChecksumError) as err:
        fe.fetch(server.base + "/f.bin", dest, "sha256", wrong, progress=False)
    assert wrong in str(err.value) and _sha(b"actual content") in str(err.value)
    assert "/f.bin" in str(err.value)
    assert not dest.exists() and not dest.with_name("f.bin.part").exists()


@pytest.mark.parametrize("ranges", [True, False])
def test_fetch_retries_a_dropped_connection(server: _Server, tmp_path: Path, ranges: bool) -> None:
    body = bytes(range(256)) * 400
    server.files["/big.bin"] = body
    server.drop_first.add("/big.bin")
    server.ranges = ranges
    dest = tmp_path / "big.bin"
    fe.fetch(server.base + "/big.bin", dest, "sha256", _sha(body), progress=False)
    assert dest.read_bytes() == body
    assert len(server.requests) == 2
    assert server.requests[0][1] is None
    assert server.requests[1][1] == f"bytes={len(body) // 2}-"  # asked for the rest


def test_fetch_without_network_names_url_and_data_path(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(fe, "BACKOFF_S", 0.0)
    url = f"http://127.0.0.1:{_free_port()}/lfw.tgz"
    with pytest.raises(fe.DownloadError) as err:
        fe.fetch(url, tmp_path / "lfw.tgz", "md5", "0" * 32, retries=2, progress=False)
    msg = str(err.value)
    assert url in msg and "data.path" in msg and "2 attempt" in msg


def test_fetch_http_404_fails_at_once(server: _Server, tmp_path: Path) -> None:
    with pytest.raises(fe.DownloadError, match="404"):
        fe.fetch(
            server.base + "/missing.zip", tmp_path / "m.zip", "sha256", "0" * 64, progress=False
        )
    assert len(server.requests) == 1


# ----------------------------------------------------------------------- url source
def _tgz(files: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tf:
        for name, data in files.items():
            ti = tarfile.TarInfo(name)
            ti.size = len(data)
            tf.addfile(ti, io.BytesIO(data))
    return buf.getvalue()


def _zip(files: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in files.items():
            zf.writestr(name, data)
    return buf.getvalue()


@pytest.mark.parametrize("kind", ["tgz", "zip"])
def test_url_archive(server: _Server, tmp_path: Path, kind: str) -> None:
    files = {f"set/{'a' if i < 3 else 'b'}/p{i}.png": _encoded(i, "PNG") for i in range(6)}
    files["set/readme.txt"] = b"hello"
    files["set/bad.jpg"] = b"not a jpeg"
    body = _tgz(files) if kind == "tgz" else _zip(files)
    server.files[f"/data.{kind}"] = body
    d = DataParams(source="url", url=f"{server.base}/data.{kind}", sha256=_sha(body))
    with pytest.warns(dl.SkippedFilesWarning, match="bad.jpg"):
        m = _run(d, tmp_path)
    assert m["found"] == 7 and m["kept"] == 6 and m["skipped"]["not_image"] == 1
    assert m["ignored_other_files"] == 1
    kept = {r["sha256"] for r in _manifest(tmp_path)}
    assert kept == {_sha(b) for n, b in files.items() if n.endswith(".png")}
    assert not list((tmp_path / "out").glob("work*"))  # the extraction folder is gone
    # Second run: the cached archive is reused with no request.
    n = len(server.requests)
    with pytest.warns(dl.SkippedFilesWarning):
        _run(d, tmp_path)
    assert len(server.requests) == n


def test_url_single_image(server: _Server, tmp_path: Path) -> None:
    body = _encoded(9, "JPEG")
    server.files["/one.jpg"] = body
    d = DataParams(source="url", url=f"{server.base}/one.jpg?dl=1", sha256=_sha(body))
    with pytest.warns(UserWarning, match="cannot fill every split"):
        m = _run(d, tmp_path)
    rows = _manifest(tmp_path)
    assert m["kept"] == 1 and rows[0]["file"] == f"images/{_sha(body)[:16]}.jpg"
    assert (tmp_path / "out" / rows[0]["file"]).read_bytes() == body


def test_url_checksum_mismatch_fails_before_output(server: _Server, tmp_path: Path) -> None:
    body = _zip({"a.png": _encoded(1, "PNG")})
    server.files["/d.zip"] = body
    d = DataParams(source="url", url=f"{server.base}/d.zip", sha256="cd" * 32)
    with pytest.raises(fe.ChecksumError) as err:
        _run(d, tmp_path)
    assert "cd" * 32 in str(err.value) and _sha(body) in str(err.value)
    assert not (tmp_path / "out").exists()
    assert [p.name for p in (tmp_path / "cache").iterdir() if not p.name.endswith(".lock")] == []


def test_url_unsafe_archive_fails_and_names_members(server: _Server, tmp_path: Path) -> None:
    body = _tgz({"ok.png": _encoded(1, "PNG"), "../escape.png": b"x", "/abs.png": b"y"})
    server.files["/evil.tgz"] = body
    d = DataParams(source="url", url=f"{server.base}/evil.tgz", sha256=_sha(body))
    with pytest.raises(UnsafeArchiveError) as err:
        _run(d, tmp_path)
    assert "'../escape.png'" in str(err.value) and "'/abs.png'" in str(err.value)
    assert not (tmp_path / "out").exists() and not (tmp_path / "escape.png").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cache"]


def test_url_local_copy_via_data_path(tmp_path: Path) -> None:
    body = _tgz({f"x/{i}.png": _encoded(i, "PNG") for i in range(3)})
    local = _write(tmp_path / "mine.tgz", body)
    d = DataParams(
        source="url", url="http://127.0.0.1:9/never.tgz", sha256=_sha(body), path=str(local)
    )
    assert _run(d, tmp_path)["kept"] == 3


# -------------------------------------------------------------------------- presets
def _patch_preset(monkeypatch, name: str, **changes) -> None:
    p = presets.PRESETS[name]
    files = tuple(dataclasses.replace(rf, **changes.get(rf.filename, {})) for rf in p.files)
    monkeypatch.setitem(presets.PRESETS, name, dataclasses.replace(p, files=files))


def test_lfw_local_copy_is_verified_with_md5(tmp_path: Path, monkeypatch) -> None:
    body = _tgz({f"lfw/Person_{i}/Person_{i}_0001.jpg": _encoded(i, "JPEG") for i in range(5)})
    local = _write(tmp_path / "lfw.tgz", body)
    d = DataParams(source="lfw", path=str(local))
    # the real published md5 does not match our fake archive: refused, file kept
    with pytest.raises(fe.ChecksumError) as err:
        _run(d, tmp_path)
    assert "a17d05bd522c52d84eca14327a23d494" in str(err.value) and _md5(body) in str(err.value)
    assert local.exists() and not (tmp_path / "out").exists()
    _patch_preset(monkeypatch, "lfw", **{"lfw.tgz": {"checksum": _md5(body)}})
    m = _run(d, tmp_path)
    assert m["kept"] == 5 and all(r["file"].endswith(".jpg") for r in _manifest(tmp_path))


def test_lfw_download_from_mirror_and_offline_message(
    server: _Server, tmp_path: Path, monkeypatch
) -> None:
    body = _tgz({f"lfw/P{i}/P{i}_0001.jpg": _encoded(i, "JPEG") for i in range(4)})
    server.files["/lfw/lfw.tgz"] = body
    dead = f"http://127.0.0.1:{_free_port()}/lfw/lfw.tgz"
    _patch_preset(
        monkeypatch,
        "lfw",
        **{"lfw.tgz": {"checksum": _md5(body), "urls": (dead, server.base + "/lfw/lfw.tgz")}},
    )
    assert _run(DataParams(source="lfw"), tmp_path)["kept"] == 4  # first mirror dead: second used
    _patch_preset(monkeypatch, "lfw", **{"lfw.tgz": {"checksum": "0" * 32, "urls": (dead,)}})
    with pytest.raises(fe.DownloadError) as err:
        _run(DataParams(source="lfw"), tmp_path / "again")
    assert dead in str(err.value) and "data.path" in str(err.value)


def test_celeba_zip_from_local_path(tmp_path: Path, monkeypatch) -> None:
    body = _zip({f"img_align_celeba/{i:06d}.jpg": _encoded(i, "JPEG") for i in range(1, 5)})
    local = _write(tmp_path / "img_align_celeba.zip", body)
    _patch_preset(monkeypatch, "celeba", **{"img_align_celeba.zip": {"checksum": _md5(body)}})
    m = _run(DataParams(source="celeba", path=str(local)), tmp_path)
    assert m["kept"] == 4
    with pytest.raises(ValueError, match="source: folder"):
        _run(DataParams(source="celeba", path=str(tmp_path)), tmp_path / "x")


def _idx3(arr: np.ndarray) -> bytes:
    return bytes([0, 0, 8, 3]) + struct.pack(">3I", *arr.shape) + arr.tobytes()


def test_mnist_from_local_idx_files(tmp_path: Path, monkeypatch) -> None:
    rng = np.random.default_rng(0)
    train = rng.integers(0, 256, (6, 28, 28), dtype=np.uint8)
    train[5] = train[0]  # a duplicate digit
    test = rng.integers(0, 256, (3, 28, 28), dtype=np.uint8)
    folder = tmp_path / "mnist"
    tr = _write(folder / "train-images-idx3-ubyte.gz", gzip.compress(_idx3(train)))
    te = _write(folder / "t10k-images-idx3-ubyte.gz", gzip.compress(_idx3(test)))
    d = DataParams(source="mnist", path=str(folder))
    with pytest.raises(fe.ChecksumError, match="f68b3c2dcbeaaa9fbdd348bbdeb94873"):
        _run(d, tmp_path)
    _patch_preset(
        monkeypatch,
        "mnist",
        **{
            "train-images-idx3-ubyte.gz": {"checksum": _md5(tr.read_bytes())},
            "t10k-images-idx3-ubyte.gz": {"checksum": _md5(te.read_bytes())},
        },
    )
    m = _run(d, tmp_path)
    assert m["found"] == 9 and m["kept"] == 8 and m["duplicates"] == 1
    pix = {
        r["sha256"]: np.asarray(Image.open(tmp_path / "out" / r["file"]))
        for r in _manifest(tmp_path)
    }
    assert all(p.shape == (28, 28) for p in pix.values())  # grey PNG
    want = sorted(a.tobytes() for a in list(train[:5]) + list(test))
    assert sorted(p.tobytes() for p in pix.values()) == want
    with open(tmp_path / "out/origins.csv", newline="") as fh:
        assert "t10k-images-idx3-ubyte.gz[2]" in {o["origin"] for o in csv.DictReader(fh)}
