"""The parity artifact ``parity.pt``: r parity models plus the code they were trained for.

Loads with ``torch.load(weights_only=True)`` and needs neither Hydra nor Lightning, so a model
server can read it. F itself is a plain model file (:mod:`parm.models.checkpoint`).

In the Learning-a-Code mode (``parity_model=base``) F itself answers the parity queries: the artifact
then holds only the learned code and a reference to F (its file and a digest of its weights), and
loading it loads F as every parity model.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from parm.coding import Code, CodeSpec, build_code
from parm.models.checkpoint import build_from_spec, load_model, load_state_dict_checked, save_model
from parm.models.model_files import read_checkpoint

FORMAT = "parm.parity/1"
# The parity-model spec of the Learning-a-Code mode: "F answers the parity queries", no network of its own.
BASE_PARITY_SPEC: dict[str, Any] = {"use_base": True}


def uses_base(model_spec: Mapping[str, Any] | None) -> bool:
    """Whether a parity-model spec (a config node or an artifact's) means "F answers the parity queries"."""
    return bool(model_spec is not None and model_spec.get("use_base", False))


def base_as_parity(code: Code, input_shape: Sequence[int], base_model: nn.Module) -> tuple[dict[str, Any],
                                                                                       list[nn.Module]]:
    """The parity-model spec and the r parity models of the Learning-a-Code mode: F itself, r times.

    Raises:
        ValueError: the encoder's parities are not queries F can answer (another shape than F's input).
    """
    if tuple(code.encoder.parity_shape) != tuple(input_shape):
        raise ValueError(f"parity_model=base lets F answer the parity queries, so they must have F's input shape "
                         f"{tuple(input_shape)}; encoder {code.names[0]} makes {tuple(code.encoder.parity_shape)}. "
                         f"Use an encoder whose parity is a query (code=lac, sum, concat).")
    return dict(BASE_PARITY_SPEC), [base_model] * code.spec.r


def weights_digest(model: nn.Module) -> str:
    """sha256 over a model's state dict (names, shapes, dtypes, values): which F a code was learned around."""
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        value = tensor.detach().cpu().contiguous()
        digest.update(f"{name}:{tuple(value.shape)}:{value.dtype}".encode())
        digest.update(value.view(torch.uint8).numpy().tobytes() if value.numel() else b"")
    return digest.hexdigest()


@dataclass
class ParityArtifact:
    """What serving and evaluation need to answer and decode parity queries."""

    code: Code
    parity_models: list[nn.Module]
    input_shape: tuple[int, ...]
    output_shape: tuple[int, ...]
    meta: dict[str, Any]

    @property
    def spec(self) -> CodeSpec:
        return self.code.spec


def code_record(code: Code, encoder_kwargs: Mapping[str, Any], decoder_kwargs: Mapping[str, Any]) -> dict[str, Any]:
    """The plain-builtin description that rebuilds ``code`` through :func:`build_code`."""
    return {"encoder": code.names[0], "decoder": code.names[1], "k": code.spec.k, "r": code.spec.r,
            "encoder_kwargs": dict(encoder_kwargs), "decoder_kwargs": dict(decoder_kwargs)}


def save_parity(path: str | os.PathLike[str], parity_models: Sequence[nn.Module], model_spec: Mapping[str, Any],
                code: Code, code_meta: Mapping[str, Any], input_shape: Sequence[int], output_shape: Sequence[int],
                meta: Mapping[str, Any] | None = None) -> Path:
    """Write the parity artifact atomically (through :func:`save_model` of a container module).

    With ``model_spec`` :data:`BASE_PARITY_SPEC` the parity models are F: no weights of theirs are
    written, only F's file (``meta["base"]``) and :func:`weights_digest`, checked when loading.
    """
    meta = dict(meta or {})
    if uses_base(model_spec):
        if not meta.get("base"):
            raise ValueError("a parity artifact whose parity model is F needs meta['base'], the path of F's file.")
        meta["base_digest"] = weights_digest(parity_models[0])
        parity_models = ()
    container = _ParityContainer(parity_models, code)
    spec = {"_target_": f"{__name__}._ParityContainer"}
    record_meta = {"format": FORMAT, "code": dict(code_meta), "model_spec": dict(model_spec),
                   "input_shape": list(input_shape), "output_shape": list(output_shape), "meta": meta}
    return save_model(path, container, spec, meta=record_meta)


def references_base(path: str | os.PathLike[str]) -> bool:
    """Whether the parity artifact at ``path`` is of the Learning-a-Code mode (its parity models are F,
    read from F's file at load time), so a server must ship F's file with it."""
    payload = read_checkpoint(Path(path), "cpu")
    meta = payload.get("meta") if isinstance(payload, Mapping) else None
    return isinstance(meta, Mapping) and uses_base(meta.get("model_spec"))


def load_parity(path: str | os.PathLike[str], map_location: str | torch.device = "cpu",
                base: str | os.PathLike[str] | None = None) -> ParityArtifact:
    """Rebuild the code and parity models of a ``parity.pt``.

    Args:
        path: the artifact.
        map_location: where tensors load.
        base: F's model file, for an artifact whose parity model is F (Learning-a-Code mode); default
            the file recorded at training. Ignored by artifacts with parity models of their own.

    Raises:
        FileNotFoundError: no such file (the artifact, or the F it references).
        ValueError: corrupt file, not a parity artifact, weights that do not fit, or an F other than the
            one the code was learned around.
    """
    path = Path(path)
    payload = read_checkpoint(path, map_location)
    meta = payload.get("meta") if isinstance(payload, Mapping) else None
    if not isinstance(meta, Mapping) or meta.get("format") != FORMAT:
        raise ValueError(
            f"{path} is not a parm parity artifact (format {FORMAT!r}); it may be a model file for F. "
            f"train.py writes parity artifacts as parity.pt in the run directory."
        )
    code_meta = meta["code"]
    spec = CodeSpec(int(code_meta["k"]), int(code_meta["r"]))
    input_shape = tuple(int(d) for d in meta["input_shape"])
    output_shape = tuple(int(d) for d in meta["output_shape"])
    code = build_code(code_meta["encoder"], code_meta["decoder"], spec, input_shape, output_shape,
                      code_meta.get("encoder_kwargs"), code_meta.get("decoder_kwargs"))
    if uses_base(meta["model_spec"]):
        models = [_referenced_base(path, dict(meta.get("meta", {})), base, map_location)] * spec.r
        container = _ParityContainer((), code)
    else:
        models = [build_from_spec(meta["model_spec"]) for _ in range(spec.r)]
        container = _ParityContainer(models, code)
    load_state_dict_checked(container, payload["state_dict"], source=f"parity artifact {path}")
    for module in (*models, code):
        module.eval()
    return ParityArtifact(code, models, input_shape, output_shape, dict(meta.get("meta", {})))


def _referenced_base(path: Path, meta: Mapping[str, Any], base: str | os.PathLike[str] | None,
                     map_location: str | torch.device) -> nn.Module:
    """F for an artifact whose parity model is F: from ``base`` or the recorded file, weights checked."""
    source = Path(base) if base is not None else Path(str(meta.get("base", "")))
    if not source.is_file():
        raise FileNotFoundError(
            f"{path} is a Learning-a-Code artifact: F itself answers its parity queries, and F's file {source} "
            f"(recorded at training) does not exist. Pass F's file (load_parity(..., base=...), serve.base).")
    model, _ = load_model(source, map_location=map_location)
    expected = meta.get("base_digest")
    if expected is not None and weights_digest(model) != expected:
        raise ValueError(f"{source} is not the F that the code of {path} was learned around (weights digest "
                         f"{weights_digest(model)[:12]}..., expected {str(expected)[:12]}...). Serve it with that F.")
    return model


class _ParityContainer(nn.Module):
    """Holds the parity models and the code's (learned) parameters under one state dict."""

    def __init__(self, parity_models: Sequence[nn.Module] = (), code: Code | None = None) -> None:
        super().__init__()
        self.parity_models = nn.ModuleList(parity_models)
        self.code = code
