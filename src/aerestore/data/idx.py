"""MNIST's IDX files (the ``mnist`` source): :func:`decode_idx`."""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np

_IDX_TYPES = {
    0x08: np.dtype(">u1"),
    0x09: np.dtype(">i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}


def decode_idx(source: str | Path | bytes) -> np.ndarray:
    """Decode an IDX file (MNIST's format), gzip-compressed or not.

    Layout (http://yann.lecun.com/exdb/mnist/): two zero bytes, a type code
    (0x08 = uint8, 0x09 = int8, 0x0B = int16, 0x0C = int32, 0x0D = float32,
    0x0E = float64), the number of dimensions ``n``, then ``n`` big-endian uint32 sizes,
    then the data, big-endian, C order. Image files are (count, rows, cols) uint8.
    """
    name = "IDX data" if isinstance(source, bytes) else str(source)
    raw = source if isinstance(source, bytes) else Path(source).read_bytes()
    if raw[:2] == b"\x1f\x8b":
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError) as exc:
            raise ValueError(f"{name}: broken gzip stream: {exc}") from exc
    if len(raw) < 4 or raw[:2] != b"\x00\x00":
        raise ValueError(f"{name}: not an IDX file (bad magic number {raw[:4].hex()!r})")
    code, ndim = raw[2], raw[3]
    if code not in _IDX_TYPES:
        raise ValueError(f"{name}: unknown IDX type code 0x{code:02x}")
    if ndim == 0 or len(raw) < 4 + 4 * ndim:
        raise ValueError(f"{name}: IDX header cut short ({ndim} dimensions)")
    dims = struct.unpack(f">{ndim}I", raw[4 : 4 + 4 * ndim])
    dtype = _IDX_TYPES[code]
    count = int(np.prod(dims, dtype=np.int64))
    expected = 4 + 4 * ndim + count * dtype.itemsize
    if len(raw) != expected:
        raise ValueError(
            f"{name}: IDX dimensions {dims} need {expected:,} bytes, the file has {len(raw):,}"
        )
    data = np.frombuffer(raw, dtype=dtype, count=count, offset=4 + 4 * ndim)
    return data.reshape(dims).astype(dtype.newbyteorder("="))
