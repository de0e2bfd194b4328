"""Deployed models as parm holds them: F with its own input transform, and compiled programs.

A deployed F expects the input it was trained on (raw [0, 1] pixels, its own mean/std, ...), while parm
feeds every network its standardised input ``(x - data_mean) / data_std``. :class:`DeployedModel` undoes
parm's standardisation and applies F's own transform in front of F, so training targets, evaluation and
serving workers all give F what it expects, and the transform travels inside ``base.pt``.

:class:`SerializedModel` holds a TorchScript file or a ``torch.export`` program as a ``uint8`` buffer, so
such an F is saved and loaded like any parm model file (``torch.load(weights_only=True)``).
"""

from __future__ import annotations

import importlib
import io
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
from torch import nn

STANDARDIZED = "standardized"  # F reads parm's own standardised input (every F that parm trained)
RAW = "none"  # F reads raw pixels in [0, 1] (uint8 / 255)
PROGRAM_FORMATS = ("torchscript", "export")


def describe_transform(transform: Any) -> str:
    """A short text for messages: ``none``, ``mean/std``, ``pkg.fn`` or ``standardized``."""
    if transform in (None, STANDARDIZED):
        return STANDARDIZED
    if transform == RAW:
        return "none (raw [0, 1] pixels)"
    if isinstance(transform, Mapping) and "_target_" in transform:
        return str(transform["_target_"])
    return f"mean={list(transform['mean'])} std={list(transform['std'])}"


def check_transform(transform: Any) -> Any:
    """Validate an input-transform setting and return it as plain builtins.

    Accepted: ``"standardized"`` (or None), ``"none"``, ``{"mean": [...], "std": [...]}`` (per channel,
    on [0, 1] pixels) or ``{"_target_": "pkg.module.fn", **kwargs}`` (a callable, or a class built with
    the kwargs, mapping ``(B, C, H, W)`` float [0, 1] input to what F reads).

    Raises:
        ValueError: anything else, with the accepted forms.
    """
    if transform is None or transform in (STANDARDIZED, RAW):
        return STANDARDIZED if transform is None else transform
    if isinstance(transform, Mapping):
        plain = {str(k): (list(v) if isinstance(v, Sequence) and not isinstance(v, str) else v)
                 for k, v in transform.items()}
        if "_target_" in plain and isinstance(plain["_target_"], str):
            return plain
        if set(plain) == {"mean", "std"}:
            mean, std = (_floats(plain[key], key) for key in ("mean", "std"))
            if len(mean) != len(std) or not all(s > 0 for s in std):
                raise ValueError(f"base.input_transform mean/std need equal lengths and std > 0, got {plain}.")
            return {"mean": mean, "std": std}
    raise ValueError(
        f"base.input_transform must be 'standardized' (F reads parm's standardised input), 'none' (raw [0, 1] "
        f"pixels), {{mean: [...], std: [...]}} or {{_target_: pkg.module.fn}}, got {transform!r}."
    )


def _floats(value: Any, key: str) -> list[float]:
    values = list(value) if isinstance(value, Sequence) and not isinstance(value, str) else [value]
    try:
        return [float(v) for v in values]
    except (TypeError, ValueError) as e:
        raise ValueError(f"base.input_transform.{key} must be numbers (one per channel), got {value!r}.") from e


def _callable(spec: Mapping[str, Any]) -> Callable[[torch.Tensor], torch.Tensor]:
    """Import ``spec["_target_"]``; a class is built with the other keys, a function bound to them."""
    target = str(spec["_target_"])
    module_name, _, attr = target.rpartition(".")
    try:
        obj = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError, ValueError) as e:
        raise ValueError(f"base.input_transform._target_ {target!r} cannot be imported: {e}") from e
    kwargs = {k: v for k, v in spec.items() if k != "_target_"}
    if isinstance(obj, type):
        return obj(**kwargs)  # type: ignore[no-any-return]
    if not callable(obj):
        raise ValueError(f"base.input_transform._target_ {target!r} is {obj!r}, not a callable.")
    return (lambda x: obj(x, **kwargs)) if kwargs else obj


class DeployedModel(nn.Module):
    """F behind its own input transform, reading parm's standardised input.

    Args:
        net: the spec of F's network (``{"_target_": ..., **kwargs}``), built with
            :func:`parm.models.checkpoint.build_from_spec`; or an already built module.
        input_transform: what F reads, as :func:`check_transform` accepts.
        data_mean: ``(C,)`` parm's per-channel mean of the training data, [0, 1] pixel scale.
        data_std: ``(C,)`` parm's per-channel std, same scale.

    Shapes: ``(N, C, H, W)`` standardised input -> F's output ``(N, D)``.
    """

    data_mean: torch.Tensor
    data_std: torch.Tensor
    own_mean: torch.Tensor
    own_std: torch.Tensor

    def __init__(self, net: Mapping[str, Any] | nn.Module, input_transform: Any, data_mean: Sequence[float],
                 data_std: Sequence[float]) -> None:
        super().__init__()
        if isinstance(net, nn.Module):
            self.net = net
        else:
            from parm.models.checkpoint import build_from_spec

            self.net = build_from_spec(net)
        self.transform_spec = check_transform(input_transform)
        shape = (1, len(data_mean), 1, 1)
        self.register_buffer("data_mean", torch.tensor(list(data_mean), dtype=torch.float32).view(shape),
                             persistent=False)
        self.register_buffer("data_std", torch.tensor(list(data_std), dtype=torch.float32).view(shape),
                             persistent=False)
        self._fn: Callable[[torch.Tensor], torch.Tensor] | None = None
        if isinstance(self.transform_spec, Mapping) and "_target_" in self.transform_spec:
            self._fn = _callable(self.transform_spec)
        elif isinstance(self.transform_spec, Mapping):
            self.register_buffer("own_mean", torch.tensor(self.transform_spec["mean"]).view(1, -1, 1, 1),
                                 persistent=False)
            self.register_buffer("own_std", torch.tensor(self.transform_spec["std"]).view(1, -1, 1, 1),
                                 persistent=False)

    def own_input(self, x: torch.Tensor) -> torch.Tensor:
        """parm's standardised ``(N, C, H, W)`` input -> the input F was trained on."""
        if self.transform_spec == STANDARDIZED:
            return x
        pixels = x * self.data_std.to(x.dtype) + self.data_mean.to(x.dtype)  # back to [0, 1]
        if self._fn is not None:
            return self._fn(pixels)
        if isinstance(self.transform_spec, Mapping):
            return (pixels - self.own_mean.to(x.dtype)) / self.own_std.to(x.dtype)
        return pixels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(self.own_input(x))  # type: ignore[no-any-return]


class SerializedModel(nn.Module):
    """A TorchScript file or ``torch.export`` program, kept as bytes and deserialised on first call.

    F is frozen, so only its forward is needed: parm never rebuilds or trains such a network.

    Args:
        format: ``"torchscript"`` or ``"export"``.
        size: the program's length in bytes (the shape of the ``program`` buffer).
        program: the bytes; None leaves zeros for :meth:`load_state_dict` to fill.
    """

    program: torch.Tensor

    def __init__(self, format: str, size: int, program: bytes | None = None) -> None:
        super().__init__()
        if format not in PROGRAM_FORMATS:
            raise ValueError(f"SerializedModel format must be one of {PROGRAM_FORMATS}, got {format!r}.")
        self.format = format
        data = torch.frombuffer(bytearray(program), dtype=torch.uint8) if program else torch.zeros(size,
                                                                                                   dtype=torch.uint8)
        if data.numel() != size:
            raise ValueError(f"SerializedModel got {data.numel()} bytes, expected size={size}.")
        self.register_buffer("program", data)
        self._loaded: list[Callable[[torch.Tensor], torch.Tensor]] = []  # a list: not a registered submodule

    def _module(self) -> Callable[[torch.Tensor], torch.Tensor]:
        if not self._loaded:
            buffer = io.BytesIO(self.program.cpu().numpy().tobytes())
            if self.format == "torchscript":
                module: Any = torch.jit.load(buffer, map_location=self.program.device).eval()
            else:
                module = torch.export.load(buffer).module().to(self.program.device)
            self._loaded.append(module)
        return self._loaded[0]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._module()(x)

    def _apply(self, fn: Any, recurse: bool = True) -> SerializedModel:
        self._loaded.clear()  # moved to another device: deserialise again there
        return super()._apply(fn, recurse)  # type: ignore[return-value]
