"""The wire between the scoring process and a submission's sandbox: a JSON header and raw arrays.

Nothing is pickled in either direction: a frame is a 4-byte length, a JSON header that names its arrays
(dtype from a short list, shape), then the arrays' bytes. The scoring process parses only JSON and
numbers, so a hostile submission can send it nonsense, never code.
"""

from __future__ import annotations

import json
import os
import select
import struct
import time
from typing import Any, BinaryIO

import numpy as np

from ..core.errors import BenchError

DTYPES = {"uint8", "int32", "int64", "float32", "float64", "bool"}
MAX_HEADER = 1 << 20
MAX_ARRAY = 8 << 30


class FrameError(BenchError):
    """A frame that is malformed, too large, or late."""


def send(out: BinaryIO, header: dict[str, Any], arrays: dict[str, np.ndarray] | None = None) -> None:
    arrays = {k: np.ascontiguousarray(v) for k, v in (arrays or {}).items()}
    meta = {**header, "arrays": [[k, str(a.dtype), list(a.shape)] for k, a in arrays.items()]}
    head = json.dumps(meta).encode()
    out.write(struct.pack("<I", len(head)) + head)
    for a in arrays.values():
        out.write(a.tobytes())
    out.flush()


class Reader:
    """Reads frames from a pipe, each within a deadline (None: wait as long as it takes)."""

    def __init__(self, fd: int):
        self.fd = fd

    def _exact(self, n: int, deadline: float | None) -> bytes:
        chunks, got = [], 0
        while got < n:
            if deadline is not None:
                left = deadline - time.monotonic()
                if left <= 0 or not select.select([self.fd], [], [], left)[0]:
                    raise TimeoutError
            chunk = os.read(self.fd, min(n - got, 1 << 20))
            if not chunk:
                raise EOFError
            chunks.append(chunk)
            got += len(chunk)
        return b"".join(chunks)

    def recv(self, timeout_s: float | None = None) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        (size,) = struct.unpack("<I", self._exact(4, deadline))
        if size > MAX_HEADER:
            raise FrameError(f"a frame header of {size} bytes (at most {MAX_HEADER})")
        try:
            header = json.loads(self._exact(size, deadline))
        except (json.JSONDecodeError, UnicodeDecodeError, RecursionError):
            raise FrameError("a frame header that is not JSON") from None
        if not isinstance(header, dict) or not isinstance(header.get("arrays"), list):
            raise FrameError("a frame header without its list of arrays")
        arrays = {}
        for item in header.pop("arrays"):
            if not (
                isinstance(item, list)
                and len(item) == 3
                and item[1] in DTYPES
                and isinstance(item[2], list)
                and all(isinstance(d, int) and d >= 0 for d in item[2])
            ):
                raise FrameError(f"an array described as {str(item)[:80]}")
            name, dtype, shape = item
            n = int(np.prod(shape, dtype=np.int64)) * np.dtype(dtype).itemsize
            if n > MAX_ARRAY:
                raise FrameError(f"an array of {n} bytes (at most {MAX_ARRAY})")
            arrays[str(name)] = np.frombuffer(self._exact(n, deadline), dtype=dtype).reshape(shape)
        return header, arrays
