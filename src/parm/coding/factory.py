"""``build_code``: the one way training, evaluation and serving build a coder pair."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from parm.coding.base import Code
from parm.coding.registry import decoders, encoders
from parm.coding.spec import CodeSpec


def build_code(
    encoder: str,
    decoder: str,
    spec: CodeSpec,
    input_shape: Sequence[int],
    output_shape: Sequence[int],
    encoder_kwargs: Mapping[str, Any] | None = None,
    decoder_kwargs: Mapping[str, Any] | None = None,
) -> Code:
    """Build an encoder/decoder pair by registered name.

    Args:
        encoder: registered encoder name, e.g. ``"sum"``.
        decoder: registered decoder name, e.g. ``"subtraction"``.
        spec: the code (k, r).
        input_shape: shape of one query, e.g. ``(1, 28, 28)``.
        output_shape: shape of one output of F, e.g. ``(10,)``.
        encoder_kwargs: extra arguments of the encoder class.
        decoder_kwargs: extra arguments of the decoder class.

    Raises:
        ValueError: unknown names, or a decoder that does not pair with the encoder.
    """
    enc = encoders.get(encoder)(spec=spec, input_shape=tuple(input_shape), **dict(encoder_kwargs or {}))
    dec = decoders.get(decoder)(spec=spec, output_shape=tuple(output_shape), encoder=enc, **dict(decoder_kwargs or {}))
    return Code(spec, enc, dec, names=(encoder, decoder))
