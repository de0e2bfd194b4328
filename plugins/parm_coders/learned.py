"""Learned coders: a small network maps the k queries to r parities, and an MLP over the k + r
output vectors rebuilds the missing ones. Trained jointly with the parity model (or around F itself,
the Learning-a-Code mode: ``parity_model=base``).

Trained from a random start, joint training can sit at chance for a whole run (parm's own MNIST k = 8
run did, and the Learning-a-Code paper reports the same). Both coders can therefore start *as* a
hand-made code and learn a correction: the encoder as ``init`` (``sum`` or ``concat``) plus a network
whose last layer starts at zero, the decoder as the subtraction decoder of that code plus an MLP whose
last layer starts at zero. At step 0 the learned code is exactly the hand-made one, so training starts
from its accuracy instead of from chance.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, ClassVar

import torch
from torch import nn

from parm.coding import CodeSpec, Decoder, Encoder
from parm.coding.registry import encoders

ENCODER_INITS = ("none", "auto", "sum", "concat")
DECODER_INITS = ("auto", "none", "subtraction")
MLP_MAX_INPUT = 1024  # arch="auto": an MLP encoder up to this many values per query (a 32x32 image)


def _zero_last(net: nn.Sequential) -> None:
    """Start the correction at zero, so the code begins as its hand-made base."""
    last = net[-1]
    assert isinstance(last, nn.Linear | nn.Conv2d)
    nn.init.zeros_(last.weight)
    if last.bias is not None:
        nn.init.zeros_(last.bias)


class LearnedEncoder(Encoder):
    """Trainable encoder: dilated convolutions for images, an MLP otherwise.

    Args:
        spec: the code.
        input_shape: shape of one query.
        arch: ``"conv"``, ``"mlp"`` or ``"auto"``: an MLP for queries of at most :data:`MLP_MAX_INPUT`
            values (MNIST-sized; it trained to higher A_d than the conv encoder there, see docs/codes.md),
            dilated convolutions for larger images ``(C, H, W)``.
        hidden: MLP hidden width (multiple of the input size) or conv channels per input channel.
        init: ``"none"`` (the network alone, random start), or a linear encoder (``"sum"``,
            ``"concat"``) the parity starts as: parity = init(X) + network(X), network zero at step 0;
            ``"auto"``: concat for images ``(C, H, W)``, sum otherwise.
        init_kwargs: arguments of the ``init`` encoder (e.g. concat's ``grid``).
    """

    traits: ClassVar[frozenset[str]] = frozenset({"learned"})

    def __init__(self, spec: CodeSpec, input_shape: tuple[int, ...], arch: str = "auto", hidden: int = 2,
                 init: str = "none", init_kwargs: Mapping[str, Any] | None = None) -> None:
        super().__init__(spec, input_shape)
        if arch not in ("auto", "conv", "mlp"):
            raise ValueError(f"learned encoder arch must be 'auto', 'conv' or 'mlp', got {arch!r}.")
        if arch == "auto":
            small = math.prod(self.input_shape) <= MLP_MAX_INPUT
            arch = "conv" if len(self.input_shape) == 3 and not small else "mlp"
        if arch == "conv" and len(self.input_shape) != 3:
            raise ValueError(f"learned encoder arch='conv' needs (C, H, W) inputs, got {self.input_shape}.")
        if hidden < 1:
            raise ValueError(f"learned encoder hidden must be >= 1, got {hidden}.")
        if init not in ENCODER_INITS:
            raise ValueError(f"learned encoder init must be one of {ENCODER_INITS}, got {init!r}. "
                             f"'sum' starts from the plain-sum parity, 'concat' from tiled images.")
        self.arch = arch
        if init == "auto":
            init = "concat" if len(self.input_shape) == 3 else "sum"
        self.base: Encoder | None = None
        if init != "none":
            self.base = encoders.get(init)(spec=spec, input_shape=self.input_shape, **dict(init_kwargs or {}))
            if self.base.parity_shape != self.input_shape or self.base.coefficients is None:
                raise ValueError(f"learned encoder init={init!r} must be a linear encoder whose parity has the "
                                 f"query's shape {self.input_shape}; got {self.base.parity_shape}.")
        self.net: nn.Sequential = self._conv(hidden) if arch == "conv" else self._mlp(hidden)
        self.hand_made_only = False  # not saved: a training-time switch (see the module docstring)
        self.reset_parameters()

    @property
    def grid(self) -> tuple[int, int] | None:
        """The ``init`` code's tile grid (concat), so a tile-wise F_P can be checked against it; else None."""
        return getattr(self.base, "grid", None)

    def reset_parameters(self) -> None:
        """Fresh weights; the correction starts at zero again when the encoder has an ``init`` code."""
        for layer in self.net:
            if isinstance(layer, nn.Linear | nn.Conv2d):
                layer.reset_parameters()
        if self.base is not None:
            _zero_last(self.net)

    def _conv(self, hidden: int) -> nn.Sequential:
        channels, k, r = self.input_shape[0], self.spec.k, self.spec.r
        width = hidden * channels * k
        layers: list[nn.Module] = []
        in_ch = k * channels
        for dilation in (1, 2, 4, 8, 1):
            layers += [nn.Conv2d(in_ch, width, 3, padding=dilation, dilation=dilation), nn.ReLU()]
            in_ch = width
        layers.append(nn.Conv2d(in_ch, r * channels, 1))
        return nn.Sequential(*layers)

    def _mlp(self, hidden: int) -> nn.Sequential:
        size, k, r = math.prod(self.input_shape), self.spec.k, self.spec.r
        return nn.Sequential(nn.Linear(k * size, hidden * size), nn.ReLU(), nn.Linear(hidden * size, hidden * size),
                             nn.ReLU(), nn.Linear(hidden * size, r * size))

    @property
    def base_coefficients(self) -> torch.Tensor | None:
        """``(r, k)`` coefficients of the ``init`` code (what a subtraction decoder of it solves), or None."""
        return None if self.base is None else self.base.coefficients

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, k, *S)`` -> ``(B, r, *S)``."""
        batch = x.shape[0]
        if self.base is not None and self.hand_made_only:
            return self.base.encode(x)
        if self.arch == "conv":
            _, height, width = self.input_shape
            out = self.net(x.reshape(batch, -1, height, width))
        else:
            out = self.net(x.reshape(batch, -1))
        out = out.reshape(batch, self.spec.r, *self.input_shape)
        return out if self.base is None else self.base.encode(x) + out


class LearnedDecoder(Decoder):
    """MLP over the k + r output vectors (missing ones zeroed, plus the availability mask).

    Pairs with any encoder.

    Args:
        spec: the code.
        output_shape: shape of one output of F.
        encoder: the paired encoder.
        hidden: hidden width as a multiple of ``(k + r) * D``.
        init: ``"subtraction"``: estimate = the subtraction decoder of the encoder's linear code (its own
            coefficients, or a learned encoder's ``init`` code's) + the MLP, which starts at zero;
            ``"none"`` (default, as artifacts saved before ``init`` existed): the MLP alone; ``"auto"``:
            subtraction whenever the encoder has such a code.
    """

    def __init__(self, spec: CodeSpec, output_shape: tuple[int, ...], encoder: Encoder, hidden: int = 2,
                 init: str = "none") -> None:
        super().__init__(spec, output_shape, encoder)
        if hidden < 1:
            raise ValueError(f"learned decoder hidden must be >= 1, got {hidden}.")
        if init not in DECODER_INITS:
            raise ValueError(f"learned decoder init must be one of {DECODER_INITS}, got {init!r}.")
        coefficients = encoder.coefficients
        if coefficients is None:
            coefficients = getattr(encoder, "base_coefficients", None)
        if init == "subtraction" and coefficients is None:
            raise ValueError(f"learned decoder init='subtraction' needs a linear code; encoder "
                             f"{type(encoder).__name__} has none. Use a learned encoder with init=sum or "
                             f"init=concat, or decoder init=none.")
        self.subtract: Decoder | None = None
        if init != "none" and coefficients is not None:
            from parm_coders.subtraction import SubtractionDecoder

            self.subtract = SubtractionDecoder(spec, output_shape, _LinearCode(spec, encoder.input_shape, coefficients))
        size = spec.n * self.output_dim
        self.net = nn.Sequential(
            nn.Linear(size + spec.n, hidden * size), nn.ReLU(), nn.Linear(hidden * size, hidden * size), nn.ReLU(),
            nn.Linear(hidden * size, spec.k * self.output_dim),
        )
        self.hand_made_only = False  # not saved: a training-time switch (see the module docstring)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Fresh weights; the MLP starts at zero again when it corrects a subtraction decoder."""
        for layer in self.net:
            if isinstance(layer, nn.Linear):
                layer.reset_parameters()
        if self.subtract is not None:
            _zero_last(self.net)

    def decode(self, outputs: torch.Tensor, parities: torch.Tensor, available: torch.Tensor) -> torch.Tensor:
        if self.subtract is not None and self.hand_made_only:
            return self.subtract.decode(outputs, parities, available)
        batch = outputs.shape[0]
        features = torch.cat(
            [outputs.reshape(batch, -1), parities.reshape(batch, -1), available.to(outputs.dtype)], dim=1
        )
        estimate = self.net(features).reshape(batch, self.spec.k, self.output_dim)
        if self.subtract is not None:
            estimate = estimate + self.subtract.decode(outputs, parities, available)
        return estimate


class _LinearCode(Encoder):
    """Only the coefficients of a linear code, for the subtraction decoder a learned decoder starts from."""

    traits: ClassVar[frozenset[str]] = frozenset({"linear"})
    coeffs: torch.Tensor

    def __init__(self, spec: CodeSpec, input_shape: tuple[int, ...], coefficients: torch.Tensor) -> None:
        super().__init__(spec, input_shape)
        self.register_buffer("coeffs", coefficients.detach().clone(), persistent=False)

    @property
    def coefficients(self) -> torch.Tensor:
        return self.coeffs

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError("_LinearCode only carries coefficients; the learned encoder encodes.")
