"""F, the deployed model: its spec from the config, any file it comes in, its input, its accuracy check.

F can be any ``nn.Module`` by ``_target_`` with its own constructor arguments (parm fills ``input_shape``
and ``num_classes`` only where the constructor takes them), a plain ``state_dict``, a Lightning
checkpoint, a parm model file, a TorchScript file or a ``torch.export`` program. Its input transform
(``base.input_transform``) is put in front of it (:class:`~parm.models.deployed.DeployedModel`) and saved
with it in ``base.pt``, so every consumer of F feeds it what it was trained on.
"""

from __future__ import annotations

import inspect
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf
from torch import nn

from parm.models.checkpoint import load_model, network_spec, resolve_target
from parm.models.deployed import STANDARDIZED, DeployedModel, SerializedModel, check_transform, describe_transform

# parm's fill-ins: given to a constructor only when it takes them (or **kwargs).
_SHAPE_KEYS = ("input_shape", "num_classes")
PARITY_MODEL_CHOICES = ("mlp", "lenet5", "resnet18", "vgg11", "tiled")
ACCURACY_DROP = 0.05  # a validation accuracy this far below what F's file records is reported


def model_spec(node: DictConfig | Mapping[str, Any], input_shape: Sequence[int], num_outputs: int,
               where: str = "model") -> dict[str, Any]:
    """A model node as a constructor spec: parm's shapes filled in where the constructor takes them.

    Keys the constructor does not take are dropped with a warning: they come from the config group's
    default (``hidden`` of ``model: mlp``) when only ``model._target_`` is overridden.

    Raises:
        ValueError: no importable ``_target_``, or a required value left ``???``.
    """
    container = OmegaConf.to_container(node, resolve=True) if isinstance(node, DictConfig) else dict(node)
    assert isinstance(container, dict)
    raw: dict[str, Any] = {str(k): v for k, v in container.items()}
    cls = resolve_target(raw.get("_target_"))
    params = inspect.signature(cls).parameters
    takes_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
    fills = {"input_shape": list(input_shape), "num_classes": int(num_outputs)}
    spec: dict[str, Any] = {"_target_": raw["_target_"]}
    dropped = []
    for key, value in raw.items():
        if key == "_target_" or key in fills:
            continue
        if key in params or takes_any or key.startswith("_"):
            spec[str(key)] = value
        else:
            dropped.append(key)
    for key, value in fills.items():
        if key in params or takes_any:
            spec[key] = value
    missing = [key for key, value in spec.items() if value == "???"]
    if missing:
        raise ValueError(f"{where}.{missing[0]} is required by {raw['_target_']} but not set: add "
                         f"{where}.{missing[0]}=... to the command line.")
    if dropped:
        warnings.warn(f"{where}: {raw['_target_']}{inspect.signature(cls)} takes no {', '.join(dropped)}; ignored "
                      f"(left from the config group's default). Pass its own arguments as +{where}.NAME=VALUE.",
                      stacklevel=2)
    return spec


def load_base(path: str | Path, spec: Mapping[str, Any] | None, input_transform: Any,
              mean: torch.Tensor, std: torch.Tensor) -> tuple[nn.Module, dict[str, Any]]:
    """F from any file it comes in, behind its input transform, reading parm's standardised input.

    Args:
        path: parm model file, Lightning checkpoint, plain state_dict, TorchScript file or export program.
        spec: the config's model spec (needed for a plain state_dict or a Lightning checkpoint).
        input_transform: ``base.input_transform`` (:func:`~parm.models.deployed.check_transform`); a file
            that records one keeps it, and a different non-default setting is refused.
        mean, std: ``(C,)`` parm's standardisation of the data F is scored on.

    Returns:
        ``(F, header)``; ``header["spec"]`` is the spec that rebuilds the returned module.
    """
    wanted = check_transform(input_transform)
    model, header = load_model(path, expected_spec=spec)
    net, stored = model, STANDARDIZED
    if isinstance(model, DeployedModel):
        net, stored = model.net, model.transform_spec
        if wanted not in (STANDARDIZED, stored):
            raise ValueError(f"{path} records F's input transform {describe_transform(stored)}, but "
                             f"base.input_transform={describe_transform(wanted)}; drop the setting (the file's "
                             f"is used) or point base.ckpt at the network's own weights.")
        wanted = stored
    file_spec = header.get("spec") or {}
    net_spec = network_spec(file_spec) if file_spec else (None if isinstance(net, SerializedModel) else spec)
    if net_spec is None and isinstance(net, SerializedModel):
        net_spec = {"_target_": f"{SerializedModel.__module__}.SerializedModel", "format": net.format,
                    "size": int(net.program.numel())}
    if wanted == STANDARDIZED:
        return net, {**header, "spec": net_spec, "net_spec": network_spec(net_spec or {})}
    deployed = DeployedModel(net, wanted, mean.tolist(), std.tolist())
    full = {"_target_": f"{DeployedModel.__module__}.DeployedModel", "net": net_spec, "input_transform": wanted,
            "data_mean": mean.tolist(), "data_std": std.tolist()}
    return deployed, {**header, "spec": full, "net_spec": network_spec(net_spec or {})}


def network(model: nn.Module) -> nn.Module:
    """F's network without the input transform in front (e.g. to initialise F_P from it)."""
    return model.net if isinstance(model, DeployedModel) else model


def parity_spec(node: DictConfig | Mapping[str, Any] | None, net_spec: Mapping[str, Any] | None,
                input_shape: Sequence[int], parity_shape: Sequence[int], num_outputs: int) -> dict[str, Any]:
    """F_P's spec: ``parity_model``'s node, or (empty node) F's own architecture for the parity query's shape.

    Raises:
        ValueError: F's architecture cannot be rebuilt for F_P (a compiled program, or a constructor that
            does not take ``input_shape`` when the parity query's shape differs); names ``parity_model=``.
    """
    if node:
        return model_spec(node, parity_shape, num_outputs, where="parity_model")
    choices = "|".join(PARITY_MODEL_CHOICES)
    if net_spec is None:
        raise ValueError(f"F is a compiled program (TorchScript or torch.export), whose architecture parm cannot "
                         f"rebuild for the parity model; choose one: parity_model={choices}.")
    params = inspect.signature(resolve_target(net_spec["_target_"])).parameters
    if "input_shape" in params:
        return {**net_spec, "input_shape": list(parity_shape)}
    if tuple(parity_shape) == tuple(input_shape):
        return dict(net_spec)
    raise ValueError(f"the parity query has shape {tuple(parity_shape)}, not F's {tuple(input_shape)}, and "
                     f"{net_spec['_target_']} takes no input_shape; choose a parity model: parity_model={choices}.")


@torch.no_grad()
def validation_accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor, normalize: Any,
                        chunk: int = 2048) -> float:
    """Top-1 accuracy of F on raw samples ``x`` ``(N, C, H, W)`` with labels ``y`` ``(N,)``."""
    was_training = model.training
    model.eval()
    correct = 0
    for xs, ys in zip(x.split(chunk), y.split(chunk), strict=True):
        correct += int((model(normalize(xs)).argmax(-1).cpu() == ys.cpu()).sum())
    model.train(was_training)
    return correct / max(len(y), 1)


def recorded_accuracy(meta: Any) -> float | None:
    """The test accuracy a parm model file records for F, if any."""
    if not isinstance(meta, Mapping):
        return None
    test = meta.get("test")
    test = test if isinstance(test, Mapping) else {}
    value = test.get("available_acc", meta.get("test_acc"))
    return float(value) if isinstance(value, int | float) else None


def check_accuracy(accuracy: float, num_classes: int, recorded: float | None, transform: Any) -> str | None:
    """A loud message when F's validation accuracy is near chance or far below its recorded value, else None."""
    chance = 1.0 / max(num_classes, 1)
    problems = []
    if accuracy < 2 * chance:
        problems.append(f"near chance ({chance:.3f} for {num_classes} classes)")
    if recorded is not None and accuracy < recorded - ACCURACY_DROP:
        problems.append(f"{recorded - accuracy:.3f} below the {recorded:.4f} its file records")
    if not problems:
        return None
    return (f"F scores {accuracy:.4f} on the validation split: {' and '.join(problems)}. It is probably fed an "
            f"input it was not trained on (base.input_transform={describe_transform(transform)}; try none for raw "
            f"[0, 1] pixels, or {{mean: [...], std: [...]}}), or base.ckpt is not a model of this dataset. "
            f"Parity models trained for a wrong F are worthless.")
