"""The parity artifact ``parity.pt``: r parity models plus the code they were trained for.

Loads with ``torch.load(weights_only=True)`` and needs neither Hydra nor Lightning, so a model
server can read it. F itself is a plain model file (:mod:`parm.models.checkpoint`).
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from parm.coding import Code, CodeSpec, build_code
from parm.models.checkpoint import build_from_spec, load_state_dict_checked, read_checkpoint, save_model

FORMAT = "parm.parity/1"


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
    """Write the parity artifact atomically (through :func:`save_model` of a container module)."""
    container = _ParityContainer(parity_models, code)
    spec = {"_target_": f"{__name__}._ParityContainer"}
    record_meta = {"format": FORMAT, "code": dict(code_meta), "model_spec": dict(model_spec),
                   "input_shape": list(input_shape), "output_shape": list(output_shape), "meta": dict(meta or {})}
    return save_model(path, container, spec, meta=record_meta)


def load_parity(path: str | os.PathLike[str], map_location: str | torch.device = "cpu") -> ParityArtifact:
    """Rebuild the code and parity models of a ``parity.pt``.

    Raises:
        FileNotFoundError: no such file.
        ValueError: corrupt file, not a parity artifact, or weights that do not fit.
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
    models = [build_from_spec(meta["model_spec"]) for _ in range(spec.r)]
    container = _ParityContainer(models, code)
    load_state_dict_checked(container, payload["state_dict"], source=f"parity artifact {path}")
    for module in (*models, code):
        module.eval()
    return ParityArtifact(code, models, input_shape, output_shape, dict(meta.get("meta", {})))


class _ParityContainer(nn.Module):
    """Holds the parity models and the code's (learned) parameters under one state dict."""

    def __init__(self, parity_models: Sequence[nn.Module] = (), code: Code | None = None) -> None:
        super().__init__()
        self.parity_models = nn.ModuleList(parity_models)
        self.code = code
