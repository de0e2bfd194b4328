"""Length-prefixed frames between the frontend and worker processes (loopback TCP).

A frame is ``>II`` (header length, payload length), a UTF-8 JSON header, then the payload: an
array's raw bytes described by the header's ``dtype`` and ``shape``. Nothing is ever unpickled from
the network; dtypes come from an allow-list and sizes are checked before any allocation.
"""

from __future__ import annotations

import asyncio
import json
import math
import socket
import struct
from typing import Any

import numpy as np

PREFIX = struct.Struct(">II")
MAX_HEADER = 64 * 1024
MAX_PAYLOAD = 256 * 1024 * 1024
DTYPES = frozenset({"float16", "float32", "float64", "int32", "int64", "uint8", "bool"})


class FrameError(ValueError):
    """A frame that breaks the protocol (size, dtype, shape or JSON)."""


def pack(header: dict[str, Any], array: np.ndarray | None = None) -> bytes:
    """One frame; ``array`` adds ``dtype`` and ``shape`` to the header."""
    payload = b""
    if array is not None:
        array = np.ascontiguousarray(array)
        if array.dtype.name not in DTYPES:
            raise FrameError(f"dtype {array.dtype.name} cannot be sent; allowed: {sorted(DTYPES)}.")
        header = {**header, "dtype": array.dtype.name, "shape": list(array.shape)}
        payload = array.tobytes()
    head = json.dumps(header, separators=(",", ":")).encode()
    return PREFIX.pack(len(head), len(payload)) + head + payload


def _lengths(prefix: bytes) -> tuple[int, int]:
    head_len, payload_len = PREFIX.unpack(prefix)
    if head_len > MAX_HEADER or payload_len > MAX_PAYLOAD:
        raise FrameError(f"frame too large: header {head_len} B (max {MAX_HEADER}), payload {payload_len} B "
                         f"(max {MAX_PAYLOAD}).")
    return head_len, payload_len


def unpack(head: bytes, payload: bytes) -> tuple[dict[str, Any], np.ndarray | None]:
    """Decode a frame's header and payload (lengths already checked)."""
    try:
        header = json.loads(head)
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise FrameError(f"frame header is not JSON: {e}") from e
    if not isinstance(header, dict):
        raise FrameError(f"frame header must be a JSON object, got {type(header).__name__}.")
    if "dtype" not in header:
        if payload:
            raise FrameError("frame has a payload but no dtype/shape.")
        return header, None
    dtype, shape = header.get("dtype"), header.get("shape")
    if dtype not in DTYPES:
        raise FrameError(f"dtype {dtype!r} is not allowed; allowed: {sorted(DTYPES)}.")
    if not isinstance(shape, list) or not all(isinstance(d, int) and d >= 0 for d in shape):
        raise FrameError(f"shape must be a list of non-negative ints, got {shape!r}.")
    expected = math.prod(shape) * np.dtype(dtype).itemsize
    if expected != len(payload):
        raise FrameError(f"payload is {len(payload)} B but {dtype} {shape} needs {expected} B.")
    return header, np.frombuffer(payload, dtype=dtype).reshape(shape)


async def read_frame(reader: asyncio.StreamReader) -> tuple[dict[str, Any], np.ndarray | None]:
    """Read one frame from an asyncio stream (raises ``IncompleteReadError`` at EOF)."""
    head_len, payload_len = _lengths(await reader.readexactly(PREFIX.size))
    head = await reader.readexactly(head_len)
    payload = await reader.readexactly(payload_len) if payload_len else b""
    return unpack(head, payload)


def _recv_exactly(sock: socket.socket, n: int) -> bytes:
    buf = bytearray()
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            raise EOFError("peer closed the connection")
        buf += chunk
    return bytes(buf)


def recv_frame(sock: socket.socket) -> tuple[dict[str, Any], np.ndarray | None]:
    """Read one frame from a blocking socket (raises ``EOFError`` at EOF)."""
    head_len, payload_len = _lengths(_recv_exactly(sock, PREFIX.size))
    head = _recv_exactly(sock, head_len)
    payload = _recv_exactly(sock, payload_len) if payload_len else b""
    return unpack(head, payload)
