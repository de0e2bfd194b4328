"""Reading model files: which format a file is, and its weights and header, with errors that name the fix.

A parm model file (``FORMAT``, written by :func:`parm.models.checkpoint.save_model`), a plain
state_dict, a Lightning checkpoint (weights under ``LIGHTNING_PREFIX``), or a TorchScript /
``torch.export`` archive kept as a :class:`~parm.models.deployed.SerializedModel`. Everything loads with
``torch.load(weights_only=True)``; building and checking the network is :mod:`parm.models.checkpoint`'s.
"""

from __future__ import annotations

import errno
import pickle
import re
import struct
import zipfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from parm.models.deployed import SerializedModel

FORMAT = "parm.model/1"
LIGHTNING_PREFIX = "model."
# What torch.load raises on bytes that are not a (complete) torch file.
_CORRUPT_ERRORS = (
    RuntimeError, EOFError, KeyError, IndexError, ValueError, TypeError, AttributeError, struct.error,
    zipfile.BadZipFile,
)  # fmt: skip


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


def read_record(
    path: Path, expected_spec: Mapping[str, Any] | None, map_location: str | torch.device, prefix: str
) -> tuple[dict[str, Any], Mapping[str, Any]]:
    """``(header, state_dict)`` of a parm model file, a plain state_dict or a Lightning checkpoint.

    The last two do not record the architecture, so their header's spec is ``expected_spec``.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        ValueError: corrupt or foreign file, wrong format, or no ``expected_spec`` where one is needed.
    """
    payload = read_checkpoint(path, map_location)
    if "format" in payload:
        return _parm_record(path, payload)
    if payload and all(isinstance(v, torch.Tensor) for v in payload.values()):
        if expected_spec is None:
            raise ValueError(
                f"Checkpoint {path} is a plain state_dict ({len(payload)} tensors), which does not record the "
                f"architecture; pass expected_spec (in train.py: model._target_=your_pkg.YourNet plus its "
                f"constructor arguments) to load it."
            )
        return {"format": "state_dict", "spec": to_builtin(expected_spec, "expected_spec"), "meta": None}, dict(payload)
    if "state_dict" in payload:
        if expected_spec is None:
            raise ValueError(
                f"Checkpoint {path} is a Lightning checkpoint, which does not record the architecture; "
                f"pass expected_spec (the model config node) to load it, or re-export it with save_model."
            )
        return _lightning_record(path, payload, expected_spec, prefix)
    raise ValueError(
        f"Checkpoint {path} holds a dict with keys {sorted(map(str, payload))[:8]}: not a parm model file "
        f"('format'), a Lightning checkpoint ('state_dict') or a plain state_dict (tensors only). Save the "
        f"network's model.state_dict(), a TorchScript file (torch.jit.save) or a torch.export program."
    )


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
            f"(first keys: {first_items(list(full))}). Pass state_dict_prefix= the attribute holding the model."
        )
    meta = {k: payload[k] for k in ("epoch", "global_step", "pytorch-lightning_version") if k in payload}
    return {"format": "lightning", "spec": to_builtin(expected_spec, "expected_spec"), "meta": meta}, state_dict


def to_builtin(value: Any, where: str) -> Any:
    """Mappings → dicts and sequences → lists (OmegaConf nodes included), refusing anything else non-builtin."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, Mapping):
        return {str(k): to_builtin(v, f"{where}[{k!r}]") for k, v in value.items()}
    if isinstance(value, Sequence):
        return [to_builtin(v, f"{where}[{i}]") for i, v in enumerate(value)]
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


def first_items(items: Sequence[str], n: int = 5) -> str:
    shown = ", ".join(map(str, items[:n]))
    return f"[{shown}{', ...' if len(items) > n else ''}] ({len(items)} in all)"
