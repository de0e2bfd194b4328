"""The contracts every coder implements: an Encoder turns k queries into r parity queries, a
Decoder rebuilds missing outputs from the available outputs and the parity models' outputs."""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from typing import ClassVar

import torch
from torch import nn

from parm.coding.erasure import check_mask
from parm.coding.spec import CodeSpec


class Encoder(nn.Module, ABC):
    """Maps a coding group ``(B, k, *input_shape)`` to parities ``(B, r, *parity_shape)``.

    Subclasses implement :meth:`encode`; :meth:`forward` validates shapes first.

    Attributes:
        traits: capabilities a decoder may require, e.g. ``"linear"`` when parity j is meant to be
            answered with ``sum_i coefficients[j, i] * F(X_i)``.
        max_k: the largest k the encoder supports; a larger one is refused at construction.
    """

    traits: ClassVar[frozenset[str]] = frozenset()
    max_k: ClassVar[int] = 12  # the largest k the coder supports (is tested for); raise it in a subclass

    def __init__(self, spec: CodeSpec, input_shape: tuple[int, ...]) -> None:
        super().__init__()
        if not isinstance(spec, CodeSpec):
            raise TypeError(f"spec must be a parm.coding.CodeSpec, got {type(spec).__name__}.")
        if spec.k > self.max_k:
            raise ValueError(f"encoder {type(self).__name__} supports k <= {self.max_k}, got k={spec.k}. Lower k, "
                             f"or use an encoder whose max_k allows it.")
        self.spec = spec
        self.input_shape = tuple(int(d) for d in input_shape)
        if not self.input_shape or any(d < 1 for d in self.input_shape):
            raise ValueError(f"input_shape must be a non-empty tuple of positive sizes, got {input_shape!r}.")

    @property
    def parity_shape(self) -> tuple[int, ...]:
        """Shape of one parity query; the parity model's input. Defaults to the input shape."""
        return self.input_shape

    @property
    def coefficients(self) -> torch.Tensor | None:
        """``(r, k)`` matrix A with target ``F_P(P_j) ~ sum_i A[j, i] F(X_i)``, or None if nonlinear."""
        return None

    @abstractmethod
    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Encode ``(B, k, *input_shape)`` into ``(B, r, *parity_shape)``."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        expected = (self.spec.k, *self.input_shape)
        if x.dim() != len(expected) + 1 or tuple(x.shape[1:]) != expected:
            raise ValueError(
                f"{type(self).__name__} expects a coding group of shape (B, k, *input_shape) = "
                f"(B, {', '.join(map(str, expected))}), got {tuple(x.shape)}."
            )
        return self.encode(x)


class Decoder(nn.Module, ABC):
    """Rebuilds missing outputs of a coding group.

    Attributes:
        requires: encoder traits this decoder needs; a pairing without them fails at construction.
    """

    requires: ClassVar[frozenset[str]] = frozenset()

    def __init__(self, spec: CodeSpec, output_shape: tuple[int, ...], encoder: Encoder) -> None:
        super().__init__()
        missing = self.requires - encoder.traits
        if missing:
            raise ValueError(
                f"decoder {type(self).__name__} pairs only with encoders that have traits "
                f"{sorted(self.requires)}; encoder {type(encoder).__name__} lacks {sorted(missing)} "
                f"(it has {sorted(encoder.traits) or 'none'}). Pick a matching encoder, or decoder=learned."
            )
        if encoder.spec != spec:
            raise ValueError(f"encoder was built for {encoder.spec}, decoder for {spec}; they must match.")
        self.spec = spec
        self.output_shape = tuple(int(d) for d in output_shape)
        self.output_dim = math.prod(self.output_shape)

    @property
    def trainable(self) -> bool:
        """Whether the decoder has parameters to learn."""
        return any(p.requires_grad for p in self.parameters())

    @abstractmethod
    def decode(self, outputs: torch.Tensor, parities: torch.Tensor, available: torch.Tensor) -> torch.Tensor:
        """Estimate every data slot.

        Args:
            outputs: ``(B, k, D)`` outputs of F, zero where missing.
            parities: ``(B, r, D)`` outputs of the parity models, zero where missing.
            available: ``(B, k + r)`` bool, True where an output arrived.

        Returns:
            ``(B, k, D)`` estimates; only the missing slots are used.
        """

    def forward(self, outputs: torch.Tensor, parities: torch.Tensor, available: torch.Tensor) -> torch.Tensor:
        """Fill the missing outputs of a group; available ones are returned untouched.

        Args:
            outputs: ``(B, k, *output_shape)``; values at missing slots are ignored (may be NaN).
            parities: ``(B, r, *output_shape)``; likewise.
            available: ``(B, k + r)`` bool.

        Returns:
            ``(B, k, *output_shape)``.
        """
        batch, k, r = outputs.shape[0], self.spec.k, self.spec.r
        for name, tensor, slots in (("outputs", outputs, k), ("parities", parities, r)):
            if tuple(tensor.shape) != (batch, slots, *self.output_shape):
                raise ValueError(
                    f"{name} must have shape (B, {slots}, {', '.join(map(str, self.output_shape))}), "
                    f"got {tuple(tensor.shape)}."
                )
        check_mask(self.spec, available, batch)
        flat_out = outputs.reshape(batch, k, self.output_dim)
        flat_par = parities.reshape(batch, r, self.output_dim)
        zero = flat_out.new_zeros(())
        flat_out = torch.where(available[:, :k, None], flat_out, zero)
        flat_par = torch.where(available[:, k:, None], flat_par, zero)
        estimate = self.decode(flat_out, flat_par, available)
        filled = torch.where(available[:, :k, None], flat_out, estimate)
        return filled.reshape(outputs.shape)


class Code(nn.Module):
    """An encoder and a decoder built for the same :class:`CodeSpec`."""

    def __init__(self, spec: CodeSpec, encoder: Encoder, decoder: Decoder, names: tuple[str, str]) -> None:
        super().__init__()
        self.spec = spec
        self.encoder = encoder
        self.decoder = decoder
        self.names = names

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, k, *input_shape)`` -> ``(B, r, *parity_shape)``."""
        return self.encoder(x)

    def decode(self, outputs: torch.Tensor, parities: torch.Tensor, available: torch.Tensor) -> torch.Tensor:
        """See :meth:`Decoder.forward`."""
        return self.decoder(outputs, parities, available)

    def extra_repr(self) -> str:
        return f"k={self.spec.k}, r={self.spec.r}, encoder={self.names[0]!r}, decoder={self.names[1]!r}"
