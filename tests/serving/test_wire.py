"""The loopback protocol never unpickles and refuses malformed frames."""

from __future__ import annotations

import struct

import numpy as np
import pytest

from parm.serving.wire import PREFIX, FrameError, pack, unpack


def _split(frame: bytes) -> tuple[bytes, bytes]:
    head_len, _ = PREFIX.unpack(frame[: PREFIX.size])
    return frame[PREFIX.size: PREFIX.size + head_len], frame[PREFIX.size + head_len:]


def test_round_trip() -> None:
    array = np.arange(12, dtype=np.float32).reshape(3, 4)
    header, got = unpack(*_split(pack({"op": "infer", "id": 7}, array)))
    assert header["id"] == 7 and got.dtype == np.float32
    np.testing.assert_array_equal(got, array)


@pytest.mark.parametrize(("head", "payload", "message"), [
    (b"{bad", b"", "not JSON"),
    (b"[1]", b"", "JSON object"),
    (b'{"dtype": "object", "shape": [1]}', b"x" * 8, "not allowed"),
    (b'{"dtype": "float32", "shape": [2]}', b"x" * 4, "needs 8 B"),
    (b'{"dtype": "float32", "shape": [-1]}', b"", "non-negative"),
    (b'{"op": "infer"}', b"xx", "no dtype"),
])
def test_malformed_frames_are_refused(head: bytes, payload: bytes, message: str) -> None:
    with pytest.raises(FrameError, match=message):
        unpack(head, payload)


def test_oversized_frames_are_refused_before_reading() -> None:
    from parm.serving.wire import _lengths

    with pytest.raises(FrameError, match="too large"):
        _lengths(struct.pack(">II", 10, 2**31))
