"""Settings refused before anything trains, and resuming only the run a checkpoint belongs to.

Every message names the key that limits (``k``, ``trainer.max_epochs``, ``base.batch_size`` ...), since a
run that fails after F has trained for minutes, or trains forever, costs more than a clear refusal.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf

from parm.coding import CodeSpec, encoders

# trainer keys that count something and must be positive when set (None: Lightning's default).
_POSITIVE_TRAINER_KEYS = ("check_val_every_n_epoch", "log_every_n_steps")
_LIMIT_KEYS = ("limit_train_batches", "limit_val_batches", "limit_test_batches")


def check_settings(cfg: DictConfig) -> None:
    """Refuse nonsensical settings before F or F_P trains.

    Raises:
        ValueError: naming the key, what was got and what is expected.
    """
    spec = CodeSpec(int(cfg.code.k), int(cfg.code.r))  # k=0 is refused as k, before the data speaks of group_size
    encoder = encoders.get(str(cfg.code.encoder))
    if spec.k > encoder.max_k:
        raise ValueError(f"encoder {cfg.code.encoder!r} ({encoder.__name__}) supports k <= {encoder.max_k}, got "
                         f"k={spec.k}. Lower k, or use an encoder whose max_k allows it.")
    epochs = OmegaConf.select(cfg, "trainer.max_epochs")
    if cfg.stage == "parity" and not _positive_int(epochs):
        raise ValueError(f"trainer.max_epochs must be an int >= 1 (F_P's epochs), got {epochs!r}: -1 would train "
                         f"forever and 0 would score an untrained parity model. Set trainer.max_epochs=20, say.")
    if not cfg.base.ckpt and not _positive_int(cfg.base.epochs):
        raise ValueError(f"base.epochs must be an int >= 1 (F's epochs when parm trains F), got {cfg.base.epochs!r}.")
    for key in _POSITIVE_TRAINER_KEYS:
        value = OmegaConf.select(cfg, f"trainer.{key}")
        if value is not None and not _positive_int(value):
            raise ValueError(f"trainer.{key} must be an int >= 1 or null, got {value!r}.")
    for key in _LIMIT_KEYS:
        value = OmegaConf.select(cfg, f"trainer.{key}")
        if value is not None and (isinstance(value, bool) or not isinstance(value, int | float) or value < 0
                                  or (isinstance(value, float) and value > 1.0)):
            raise ValueError(f"trainer.{key} must be null, an int >= 0 (batches) or a float in [0, 1] (a fraction), "
                             f"got {value!r}.")
    if OmegaConf.select(cfg, "trainer.limit_train_batches") == 0:
        raise ValueError("trainer.limit_train_batches=0 trains nothing; drop it or set it >= 1.")


def _positive_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 1


def run_identity(code_names: tuple[str, str], spec: CodeSpec, base_model: torch.nn.Module,
                 parity_spec: dict[str, Any]) -> dict[str, Any]:
    """What a parity-training run is: its code, F (a digest of its weights) and F_P's architecture."""
    digest = hashlib.sha256()
    for name, tensor in sorted(base_model.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return {"code": f"k={spec.k} r={spec.r} {code_names[0]}/{code_names[1]}", "base": digest.hexdigest()[:16],
            "parity_model": str(parity_spec.get("_target_"))}


def check_resume(ckpt_path: str | Path, identity: dict[str, Any]) -> None:
    """Refuse resuming a checkpoint of another code, F or parity model.

    Raises:
        FileNotFoundError: no such checkpoint.
        ValueError: the checkpoint records another run; names what differs.
    """
    path = Path(ckpt_path)
    if not path.is_file():
        raise FileNotFoundError(f"ckpt_path={path} does not exist; point it at a run's checkpoints/last.ckpt.")
    # A Lightning checkpoint holds the optimizer state and loop counters; it is parm's own file.
    stored = torch.load(path, map_location="cpu", weights_only=False).get("parm_run")
    if not isinstance(stored, dict):
        raise ValueError(f"ckpt_path={path} records no parm parity run (no 'parm_run' entry): it is not a "
                         f"checkpoint of train.py's parity stage. Resume from <run>/checkpoints/last.ckpt.")
    what = {"code": "the code (k, r, encoder/decoder)", "base": "F (base.ckpt or model, its weights)",
            "parity_model": "the parity model (parity_model=...)"}
    differing = [f"{what[key]}: {stored.get(key)} there, {value} here" for key, value in identity.items()
                 if stored.get(key) != value]
    if differing:
        raise ValueError(f"ckpt_path={path} belongs to another run; {'; '.join(differing)}. Resume with the same "
                         f"settings, or drop ckpt_path to start a new run.")
