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
import errno
import importlib
import inspect
import os
import pickle
import re
import struct
import tempfile
import zipfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from parm.models.deployed import DeployedModel, SerializedModel
from parm.models.lenet import LeNet5
from parm.models.mlp import MLP
from parm.models.resnet import ResNet18
from parm.models.vgg import VGG11

FORMAT = "parm.model/1"
LIGHTNING_PREFIX = "model."
BUILTIN_TARGETS = tuple(f"{c.__module__}.{c.__qualname__}" for c in (MLP, LeNet5, ResNet18, VGG11))
# Hydra keys that only steer instantiate() and mean nothing to a plain constructor call.
_HYDRA_NOOP_KEYS = frozenset({"_target_", "_recursive_", "_convert_"})
# What torch.load raises on bytes that are not a (complete) torch file.
_CORRUPT_ERRORS = (
    RuntimeError, EOFError, KeyError, IndexError, ValueError, TypeError, AttributeError, struct.error,
    zipfile.BadZipFile,
)  # fmt: skip


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
    spec = _to_builtin(spec, "spec")
    if not isinstance(spec, dict):
        raise TypeError(f"save_model needs spec as a mapping with a '_target_' key, got {type(spec).__name__}.")
    cls = resolve_target(spec.get("_target_"))
    if type(model) is not cls:
        raise TypeError(
            f"save_model got a {type(model).__qualname__} but spec['_target_'] is {spec['_target_']!r}; "
            f"pass the spec that built this model."
        )
    record = {"format": FORMAT, "spec": spec, "state_dict": model.state_dict(), "meta": _to_builtin(meta, "meta")}
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
    payload = read_checkpoint(path, map_location)
    if "format" in payload:
        header, state_dict = _parm_record(path, payload)
    elif payload and all(isinstance(v, torch.Tensor) for v in payload.values()):
        if expected_spec is None:
            raise ValueError(
                f"Checkpoint {path} is a plain state_dict ({len(payload)} tensors), which does not record the "
                f"architecture; pass expected_spec (in train.py: model._target_=your_pkg.YourNet plus its "
                f"constructor arguments) to load it."
            )
        header = {"format": "state_dict", "spec": _to_builtin(expected_spec, "expected_spec"), "meta": None}
        state_dict = dict(payload)
    elif "state_dict" in payload:
        if expected_spec is None:
            raise ValueError(
                f"Checkpoint {path} is a Lightning checkpoint, which does not record the architecture; "
                f"pass expected_spec (the model config node) to load it, or re-export it with save_model."
            )
        header, state_dict = _lightning_record(path, payload, expected_spec, state_dict_prefix)
    else:
        raise ValueError(
            f"Checkpoint {path} holds a dict with keys {sorted(map(str, payload))[:8]}: not a parm model file "
            f"('format'), a Lightning checkpoint ('state_dict') or a plain state_dict (tensors only). Save the "
            f"network's model.state_dict(), a TorchScript file (torch.jit.save) or a torch.export program."
        )
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


def program_format(path: Path) -> str | None:
    """``"torchscript"`` or ``"export"`` when ``path`` is such an archive, else None (read by its zip entries)."""
    if not path.is_file() or not zipfile.is_zipfile(path):
        return None
    try:
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
    except (zipfile.BadZipFile, OSError):
        return None
    if any(n.endswith("/archive_format") or n.endswith("/models/model.json") for n in names):
        return "export"
    if any(n.endswith("/constants.pkl") for n in names) and any("/code/" in n for n in names):
        return "torchscript"
    return None


def load_program(path: Path, program: str) -> SerializedModel:
    """A TorchScript file or ``torch.export`` program as a :class:`SerializedModel`, checked by loading it once."""
    data = path.read_bytes()
    model = SerializedModel(program, len(data), data)
    try:
        model._module()
    except Exception as e:  # a foreign archive fails in many torch-internal ways; the cause is kept
        raise ValueError(f"Checkpoint {path} looks like a {program} archive but does not load: "
                         f"{type(e).__name__}: {str(e)[:200]}") from e
    return model


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
        f"{label} {_first(items)}"
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


def read_checkpoint(path: Path, map_location: str | torch.device) -> Mapping[str, Any]:
    """``torch.load(weights_only=True)`` with errors that say what is wrong with the file."""
    if not path.exists():
        raise FileNotFoundError(f"Checkpoint {path} does not exist. Check the path or train the model first.")
    if not path.is_file():
        raise ValueError(f"Checkpoint {path} is not a file.")
    try:
        payload = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as e:
        refused = re.search(r"Unsupported global: GLOBAL (\S+)", str(e))
        if refused is None:
            raise _corrupt(path, e) from e
        raise ValueError(
            f"Checkpoint {path} holds Python objects ({refused.group(1)}) that torch.load(weights_only=True) "
            f"refuses to unpickle, so it was not loaded. Lightning checkpoints do this when save_hyperparameters() "
            f"stores non-builtin values such as a Hydra DictConfig: save plain builtins (OmegaConf.to_container) "
            f"or re-export the weights with parm.models.checkpoint.save_model."
        ) from e
    except _CORRUPT_ERRORS as e:
        raise _corrupt(path, e) from e
    except OSError as e:
        # torch's zip reader reports some truncations as EINVAL; other OS errors (permissions) are real.
        if e.errno not in (None, errno.EINVAL):
            raise
        raise _corrupt(path, e) from e
    if not isinstance(payload, Mapping):
        raise _corrupt(path, f"it holds a {type(payload).__name__}, not a dict")
    return payload


def _parm_record(path: Path, payload: Mapping[str, Any]) -> tuple[dict[str, Any], Mapping[str, Any]]:
    """Split a parm model file into its header and state_dict, checking the format key."""
    if payload["format"] != FORMAT:
        raise ValueError(
            f"Checkpoint {path} has format {payload['format']!r}, but this parm reads {FORMAT!r}. "
            f"Re-export it with parm.models.checkpoint.save_model from a matching parm version."
        )
    spec, state_dict = payload.get("spec"), payload.get("state_dict")
    if not isinstance(spec, Mapping) or not isinstance(state_dict, Mapping):
        raise _corrupt(path, "its 'spec' or 'state_dict' entry is missing or not a dict")
    return {"format": FORMAT, "spec": dict(spec), "meta": payload.get("meta")}, state_dict


def _lightning_record(
    path: Path, payload: Mapping[str, Any], expected_spec: Mapping[str, Any], prefix: str
) -> tuple[dict[str, Any], dict[str, Any]]:
    """The model's weights inside a Lightning checkpoint, prefix stripped, with a header built from the config."""
    full = payload["state_dict"]
    if not isinstance(full, Mapping):
        raise _corrupt(path, "its 'state_dict' entry is not a dict")
    state_dict = {k[len(prefix) :]: v for k, v in full.items() if isinstance(k, str) and k.startswith(prefix)}
    if not state_dict:
        raise ValueError(
            f"Checkpoint {path} is a Lightning checkpoint but none of its state_dict keys start with {prefix!r} "
            f"(first keys: {_first(list(full))}). Pass state_dict_prefix= the attribute holding the model."
        )
    meta = {k: payload[k] for k in ("epoch", "global_step", "pytorch-lightning_version") if k in payload}
    return {"format": "lightning", "spec": _to_builtin(expected_spec, "expected_spec"), "meta": meta}, state_dict


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


def _to_builtin(value: Any, where: str) -> Any:
    """Mappings → dicts and sequences → lists (OmegaConf nodes included), refusing anything else non-builtin."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, Mapping):
        return {str(k): _to_builtin(v, f"{where}[{k!r}]") for k, v in value.items()}
    if isinstance(value, Sequence):
        return [_to_builtin(v, f"{where}[{i}]") for i, v in enumerate(value)]
    raise TypeError(
        f"{where} is a {type(value).__name__}; model files hold only builtins (dict, list, str, int, float, bool, "
        f"None) so that they load with weights_only=True. Convert it first."
    )


def _corrupt(path: Path, cause: object) -> ValueError:
    if isinstance(cause, EOFError):
        text = "the file ends early (empty or truncated)"
    elif isinstance(cause, BaseException):
        text = f"{type(cause).__name__}: {cause}"
    else:
        text = str(cause)
    first_line = text.strip().splitlines()[0][:200] if text.strip() else type(cause).__name__
    return ValueError(f"Checkpoint {path} is corrupted or not a parm model file: {first_line}")


def _first(items: Sequence[str], n: int = 5) -> str:
    shown = ", ".join(map(str, items[:n]))
    return f"[{shown}{', ...' if len(items) > n else ''}] ({len(items)} in all)"
