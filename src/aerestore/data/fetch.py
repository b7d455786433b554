"""Fetching a file over HTTP(S) into a cache, with retries, resume and a checksum, and the
checksums themselves: what the ``download`` stage (:mod:`aerestore.data.download`) uses for
``data.url`` and the presets' files (docs/data.md, "download")."""

from __future__ import annotations

import hashlib
import os
import time
import warnings
from pathlib import Path
from typing import Sequence

import requests
import urllib3
from filelock import FileLock
from tqdm import tqdm

__all__ = ["DownloadError", "ChecksumError", "file_digest", "verify", "cache_name", "fetch", "fetch_any"]

# Network settings, read at call time (tests shorten them).
RETRIES = 4  # attempts per URL
BACKOFF_S = 1.0  # wait before retry i (0-based): BACKOFF_S * 2**i
TIMEOUT_S = 30.0  # connect and read timeout


class DownloadError(RuntimeError):
    """A file could not be fetched."""


class ChecksumError(ValueError):
    """A file's checksum differs from the expected one; the message has both."""


# ----------------------------------------------------------------------- checksums
def file_digest(path: str | Path, algo: str = "sha256", chunk: int = 1 << 20) -> str:
    """Hex digest of a file with any ``hashlib`` algorithm, read in 1 MiB chunks."""
    try:
        h = hashlib.new(algo)
    except ValueError:
        raise ValueError(f"unknown checksum algorithm {algo!r}") from None
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()


def verify(path: str | Path, algo: str, expected: str) -> str:
    """Check ``path``'s ``algo`` digest against ``expected``; return it.

    Raises :class:`ChecksumError` naming the file, the algorithm and both sums. The
    file is not touched (the caller decides whether to delete it).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file")
    actual = file_digest(path, algo)
    if actual.lower() != expected.lower():
        raise ChecksumError(f"{path}: {algo} mismatch: expected {expected.lower()}, got {actual}")
    return actual


# ------------------------------------------------------------------------ fetching
class _Retry(Exception):
    pass


def cache_name(url: str, checksum: str) -> str:
    """Cache file name: checksum prefix + the URL's last path component."""
    base = url.split("?", 1)[0].split("#", 1)[0].rstrip("/").rsplit("/", 1)[-1] or "download"
    return f"{checksum.lower()[:12]}-{base}"


def fetch(
    url: str,
    dest: str | Path,
    algo: str,
    expected: str,
    *,
    retries: int | None = None,
    backoff: float | None = None,
    timeout: float | None = None,
    progress: bool = True,
) -> Path:
    """Download ``url`` to ``dest`` and verify it; return ``dest``.

    * A file already at ``dest`` with the right checksum is reused without network;
      one with another checksum is replaced.
    * The body streams to ``dest.part`` with a progress bar. A dropped connection or
      a timeout, an incomplete body or an HTTP 408/429/5xx is retried up to ``retries``
      attempts, waiting ``backoff * 2**i`` seconds; a retry asks for the rest with an
      HTTP ``Range`` header and appends if the server answers 206 from the right offset,
      else it starts over.
    * The finished file is verified; on a mismatch it is deleted and
      :class:`ChecksumError` names both sums. Only then is it renamed to ``dest``.
    * Other HTTP errors (404, 403, ...) fail at once with :class:`DownloadError`.
    """
    retries = max(1, RETRIES if retries is None else retries)
    backoff = BACKOFF_S if backoff is None else backoff
    timeout = TIMEOUT_S if timeout is None else timeout
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    with FileLock(str(dest) + ".lock"):
        if dest.exists():
            if file_digest(dest, algo) == expected.lower():
                return dest
            warnings.warn(
                f"{dest}: cached file has the wrong {algo} checksum; downloading again",
                stacklevel=2,
            )
            dest.unlink()
        last: BaseException | None = None
        for attempt in range(retries):
            if attempt:
                time.sleep(backoff * 2 ** (attempt - 1))
            try:
                _fetch_once(url, part, timeout, progress)
                last = None
                break
            except DownloadError:
                raise
            except (
                requests.ConnectionError,
                requests.Timeout,
                requests.exceptions.ChunkedEncodingError,
                urllib3.exceptions.HTTPError,
                _Retry,
            ) as exc:
                last = exc
        if last is not None:
            raise DownloadError(
                f"could not download {url} after {retries} attempt(s): {last}. "
                f"Without network access, copy the file to {dest}, or set data.path to a "
                f"local copy (it is checked against the same {algo} checksum)."
            ) from last
        actual = file_digest(part, algo)
        if actual != expected.lower():
            part.unlink()
            raise ChecksumError(
                f"{url}: {algo} mismatch: expected {expected.lower()}, got {actual}; "
                "the download was deleted"
            )
        os.replace(part, dest)
    return dest


def _fetch_once(url: str, part: Path, timeout: float, progress: bool) -> None:
    have = part.stat().st_size if part.exists() else 0
    headers = {"Accept-Encoding": "identity"}
    if have:
        headers["Range"] = f"bytes={have}-"
    with requests.get(url, headers=headers, stream=True, timeout=timeout) as r:
        if r.status_code == 416 and have:  # nothing after `have`: the part may be whole
            size = r.headers.get("Content-Range", "").rpartition("/")[2]
            if size.isdigit() and int(size) == have:
                return
            part.unlink()
            raise _Retry(f"HTTP 416 for a range from byte {have}; starting over")
        if r.status_code in (408, 429) or r.status_code >= 500:
            raise _Retry(f"HTTP {r.status_code} {r.reason}")
        if r.status_code not in (200, 206):
            raise DownloadError(f"could not download {url}: HTTP {r.status_code} {r.reason}")
        mode = "wb"
        if r.status_code == 206 and have:
            start = r.headers.get("Content-Range", "").removeprefix("bytes ").split("-", 1)[0]
            if start.isdigit() and int(start) == have:
                mode = "ab"
        if mode == "wb":
            have = 0
        length = r.headers.get("Content-Length")
        total = have + int(length) if length and length.isdigit() else None
        with (
            open(part, mode) as fh,
            tqdm(
                total=total,
                initial=have,
                unit="B",
                unit_scale=True,
                desc=f"download {part.name.removesuffix('.part')}",
                disable=not progress,
            ) as bar,
        ):
            # raw bytes as sent: no transparent gunzip of a .tgz served with gzip encoding
            for chunk in r.raw.stream(1 << 20, decode_content=False):
                fh.write(chunk)
                bar.update(len(chunk))
        got = part.stat().st_size
        if total is not None and got < total:
            raise _Retry(f"connection closed after {got:,} of {total:,} bytes")


def fetch_any(
    urls: Sequence[str], cache_dir: Path, algo: str, expected: str, filename: str, progress: bool
) -> Path:
    """:func:`fetch` from the first mirror that works (all share one cache file)."""
    dest = Path(cache_dir) / cache_name(filename, expected)
    errors = []
    for url in urls:
        try:
            return fetch(url, dest, algo, expected, progress=progress)
        except DownloadError as exc:
            errors.append(str(exc))
    raise DownloadError("\n".join(errors))
