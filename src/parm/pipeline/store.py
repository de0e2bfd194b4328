"""The F store: trained base models cached under ``cache_dir``, keyed by what determines their weights."""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

# Data settings that shape batches, not the data itself: F does not depend on them.
BATCHING_KEYS = ("group_size", "groups_per_batch", "eval_groups_per_batch", "group_order")


def base_cache_path(cfg: DictConfig, model_spec: dict[str, Any]) -> Path:
    """Cache location of F, keyed by everything that determines its weights."""
    data = OmegaConf.to_container(cfg.data, resolve=True)
    base = OmegaConf.to_container(cfg.base, resolve=True)
    if not isinstance(data, dict) or not isinstance(base, dict):
        raise TypeError("the config's data and base nodes must be mappings.")
    for key in (*BATCHING_KEYS, "data_dir"):
        data.pop(key, None)
    base.pop("ckpt", None)
    key = json.dumps({"data": data, "model": model_spec, "base": base, "seed": cfg.seed}, sort_keys=True)
    digest = hashlib.sha256(key.encode()).hexdigest()[:16]
    name = str(model_spec["_target_"]).rsplit(".", 1)[-1].lower()
    return Path(cfg.cache_dir) / "base" / f"{name}-{digest}.pt"


@contextlib.contextmanager
def file_lock(path: Path) -> Iterator[None]:
    """An exclusive advisory lock (POSIX flock) held for the ``with`` block.

    Parallel sweep jobs needing the same F: one trains it, the others wait and load it.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
