"""Model files that load with ``torch.load(weights_only=True)`` and need neither Hydra nor Lightning.

A parm model file is a dict::

    {"format": "parm.model/1",
     "spec": {"_target_": "parm.models.mlp.MLP", "input_shape": [1, 28, 28], "num_classes": 10, ...},
     "state_dict": {...},
     "meta": {...} | None}

``spec`` is exactly the Hydra node that built the model, as plain builtins, so training can write it
straight from its config and a model server can rebuild the network with :func:`build_from_spec`.
"""

from __future__ import annotations

import contextlib
import importlib
import inspect
import os
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from parm.models.deployed import DeployedModel, SerializedModel
from parm.models.lenet import LeNet5
from parm.models.mlp import MLP
from parm.models.model_files import (
    FORMAT,
    LIGHTNING_PREFIX,
    first_items,
    load_program,
    program_format,
    read_record,
    to_builtin,
)
from parm.models.resnet import ResNet18
from parm.models.vgg import VGG11

BUILTIN_TARGETS = tuple(f"{c.__module__}.{c.__qualname__}" for c in (MLP, LeNet5, ResNet18, VGG11))
# Hydra keys that only steer instantiate() and mean nothing to a plain constructor call.
_HYDRA_NOOP_KEYS = frozenset({"_target_", "_recursive_", "_convert_"})


def save_model(
    path: str | os.PathLike[str],
    model: nn.Module,
    spec: Mapping[str, Any],
    meta: Mapping[str, Any] | None = None,
) -> Path:
    """Write ``model``'s weights with the spec that rebuilds it, atomically (temp file, then rename).

    Args:
        path: destination file; parent folders are created.
        model: the trained network; its class must be the one ``spec["_target_"]`` names.
        spec: Hydra-style node ``{"_target_": ..., **constructor kwargs}``; Mappings and sequences
            (including OmegaConf nodes) are converted to dicts and lists.
        meta: optional extra information (dataset, code, metrics), plain builtins.

    Returns:
        The path written.

    Raises:
        TypeError: ``spec``/``meta`` hold values that are not builtins, or ``model`` is not of the spec's class.
        ValueError: ``spec`` has no usable ``_target_``.
    """
    spec = to_builtin(spec, "spec")
    if not isinstance(spec, dict):
        raise TypeError(f"save_model needs spec as a mapping with a '_target_' key, got {type(spec).__name__}.")
    cls = resolve_target(spec.get("_target_"))
    if type(model) is not cls:
        raise TypeError(
            f"save_model got a {type(model).__qualname__} but spec['_target_'] is {spec['_target_']!r}; "
            f"pass the spec that built this model."
        )
    record = {"format": FORMAT, "spec": spec, "state_dict": model.state_dict(), "meta": to_builtin(meta, "meta")}
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(record, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    return path


def resolve_target(target: object) -> type[nn.Module]:
    """Import the class a spec's ``_target_`` names (``"package.module.Class"``) without Hydra.

    Raises:
        ValueError: ``target`` is not a dotted path, or its module or attribute does not exist.
        TypeError: it names something that is not an ``nn.Module`` subclass.
    """
    if not isinstance(target, str) or "." not in target:
        raise ValueError(
            f"A model spec needs '_target_' as a dotted class path such as 'parm.models.mlp.MLP', got {target!r}."
        )
    module_name, _, attr = target.rpartition(".")
    try:
        module = importlib.import_module(module_name)
    except ImportError as e:
        raise ValueError(
            f"Model spec _target_ {target!r} cannot be imported ({e}). Built-in: {', '.join(BUILTIN_TARGETS)}."
        ) from e
    cls = getattr(module, attr, None)
    if cls is None:
        raise ValueError(
            f"Model spec _target_ {target!r}: module {module_name!r} has no attribute {attr!r}. "
            f"Built-in: {', '.join(BUILTIN_TARGETS)}."
        )
    if not (isinstance(cls, type) and issubclass(cls, nn.Module)):
        raise TypeError(f"Model spec _target_ {target!r} is {cls!r}, not an nn.Module subclass.")
    return cls


def build_from_spec(spec: Mapping[str, Any]) -> nn.Module:
    """Build the module a Hydra-style spec describes, with importlib instead of Hydra.

    Keys ending in ``_shape`` are passed as tuples. ``_recursive_``/``_convert_`` are ignored;
    other underscore keys (``_partial_``, ...) are refused because a model file must build a module.

    Raises:
        ValueError: unknown ``_target_`` or unsupported Hydra key; whatever the constructor raises.
        TypeError: ``_target_`` is not an nn.Module, or the constructor rejects the arguments.
    """
    if not isinstance(spec, Mapping):
        raise TypeError(f"build_from_spec needs a mapping with a '_target_' key, got {type(spec).__name__}.")
    cls = resolve_target(spec.get("_target_"))
    kwargs = _constructor_kwargs(spec)
    try:
        return cls(**kwargs)
    except TypeError as e:
        raise TypeError(f"Cannot build {spec['_target_']} from spec arguments {kwargs}: {e}") from e


def load_model(
    path: str | os.PathLike[str],
    expected_spec: Mapping[str, Any] | None = None,
    map_location: str | torch.device = "cpu",
    *,
    state_dict_prefix: str = LIGHTNING_PREFIX,
) -> tuple[nn.Module, dict[str, Any]]:
    """Rebuild and load a model saved by :func:`save_model`, or the model inside a Lightning ``.ckpt``.

    Args:
        path: a parm model file, or a Lightning checkpoint (then ``expected_spec`` is required, since
            Lightning does not record how to build the network).
        expected_spec: the spec the caller's config asks for; a file holding another architecture or
            shape is refused. Compared on ``_target_`` and every constructor argument (defaults filled in).
        map_location: passed to ``torch.load``.
        state_dict_prefix: for Lightning checkpoints, the attribute prefix of the model's weights.

    Returns:
        ``(model, header)``: the model (in training mode, as constructed) and
        ``{"format": ..., "spec": ..., "meta": ...}`` describing the file.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        ValueError: corrupt or foreign file, wrong format, spec or weights that do not match.
    """
    path = Path(path)
    program = program_format(path)
    if program is not None:
        return load_program(path, program), {"format": program, "spec": None, "meta": None}
    header, state_dict = read_record(path, expected_spec, map_location, state_dict_prefix)
    try:
        model = build_from_spec(header["spec"])
    except (ValueError, TypeError) as e:
        raise ValueError(f"Checkpoint {path} holds a spec that cannot be built: {e}") from e
    if expected_spec is not None and header["format"] == FORMAT:
        _check_same_architecture(path, network_spec(header["spec"]) or header["spec"], expected_spec)
    load_state_dict_checked(model, state_dict, source=f"checkpoint {path}")
    return model, header


def network_spec(spec: Mapping[str, Any]) -> dict[str, Any] | None:
    """The spec of the network itself: F's own net inside a :class:`~parm.models.deployed.DeployedModel`,
    None for a compiled program (nothing parm can rebuild), else ``spec``."""
    target = spec.get("_target_")
    if target == f"{DeployedModel.__module__}.DeployedModel":
        return network_spec(spec["net"])
    if target == f"{SerializedModel.__module__}.SerializedModel":
        return None
    return dict(spec)


def load_state_dict_checked(model: nn.Module, state_dict: Mapping[str, Any], source: str) -> None:
    """Strictly load ``state_dict`` into ``model``, explaining missing, unexpected and mis-shaped keys.

    Args:
        model: the freshly built network.
        state_dict: parameter and buffer tensors by name.
        source: what the weights come from, for messages (e.g. ``"checkpoint runs/f.pt"``).

    Raises:
        ValueError: the keys or shapes do not match the model (the first few of each are named).
    """
    expected = model.state_dict()
    missing = [k for k in expected if k not in state_dict]
    unexpected = [k for k in state_dict if k not in expected]
    mismatched = [
        f"{k}: {tuple(getattr(state_dict[k], 'shape', ()))} in the file vs {tuple(v.shape)} in the model"
        for k, v in expected.items()
        if k in state_dict and (not isinstance(state_dict[k], torch.Tensor) or state_dict[k].shape != v.shape)
    ]
    problems = [
        f"{label} {first_items(items)}"
        for label, items in (("shape mismatch", mismatched), ("missing keys", missing), ("unexpected keys", unexpected))
        if items
    ]
    if problems:
        raise ValueError(
            f"{source} does not fit {type(model).__qualname__}: {'; '.join(problems)}. "
            f"The weights were trained for a different architecture or input shape; use the matching config."
        )
    try:
        model.load_state_dict(state_dict, strict=True)
    except RuntimeError as e:
        raise ValueError(f"{source} could not be loaded into {type(model).__qualname__}: {e}") from e


def _check_same_architecture(path: Path, file_spec: Mapping[str, Any], expected_spec: Mapping[str, Any]) -> None:
    """Refuse a file whose class or constructor arguments differ from what the config asks for."""
    got, want = _canonical(file_spec), _canonical(expected_spec)
    if got == want:
        return
    differing = sorted(k for k in got.keys() | want.keys() if got.get(k) != want.get(k))
    raise ValueError(
        f"Checkpoint {path} holds a {_describe(file_spec, got)} but the config asks for a "
        f"{_describe(expected_spec, want)}; they differ in {', '.join(differing)}. Point the config at a "
        f"checkpoint trained for this model, or change the model config to match the file."
    )


def _canonical(spec: Mapping[str, Any]) -> dict[str, Any]:
    """Spec as comparable values: the resolved class plus every constructor argument, defaults filled in."""
    cls = resolve_target(spec.get("_target_"))
    args = {k: _freeze(v) for k, v in _constructor_kwargs(spec).items()}
    for name, param in inspect.signature(cls).parameters.items():
        if param.default is not inspect.Parameter.empty and name not in args:
            args[name] = _freeze(param.default)
    return {"_target_": cls, **args}


def _describe(spec: Mapping[str, Any], canonical: Mapping[str, Any]) -> str:
    args = ", ".join(f"{k}={v!r}" for k, v in canonical.items() if k != "_target_")
    return f"{spec['_target_']}({args})"


def _constructor_kwargs(spec: Mapping[str, Any]) -> dict[str, Any]:
    kwargs: dict[str, Any] = {}
    for key, value in spec.items():
        if key in _HYDRA_NOOP_KEYS:
            continue
        if str(key).startswith("_"):
            raise ValueError(
                f"Model spec key {key!r} is not supported: a spec holds '_target_' and constructor arguments only."
            )
        is_seq = isinstance(value, Sequence) and not isinstance(value, str)
        kwargs[str(key)] = tuple(value) if is_seq and str(key).endswith("_shape") else value
    return kwargs


def _freeze(value: Any) -> Any:
    """Lists and Hydra ListConfigs become tuples so ``[1, 28, 28]`` equals ``(1, 28, 28)``."""
    if isinstance(value, Sequence) and not isinstance(value, str):
        return tuple(_freeze(v) for v in value)
    return value


