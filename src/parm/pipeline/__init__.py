"""What ``train.py`` runs: stage ``base`` trains F, stage ``parity`` trains F_P for a frozen F.

The public API, for ``train.py``, scripts, benchmarks and tests alike:

- configuration: :func:`compose` (the train config as ``python train.py <overrides>`` composes it),
  :func:`resolve_task`, :func:`num_outputs`, :func:`model_spec`, :func:`scaled_lr`;
- the Trainer: :func:`make_trainer` (callbacks from the ``callbacks`` config group),
  :func:`throughput_monitor`, :func:`best_checkpoint`;
- the F store: :func:`base_cache_path`, :func:`file_lock`, :func:`load_or_train_base`;
- the two stages: :func:`train_base`; :func:`build_parity` (-> :class:`ParityParts`),
  :func:`fast_path`, :func:`train_parity`; and :func:`run`, which runs the configured one.

Everything is built from the config with ``hydra.utils.instantiate`` except coders, which are chosen by
registered name through :func:`parm.coding.build_code`.
"""

from parm.pipeline.base import load_or_train_base, train_base
from parm.pipeline.config import (
    LR_SCALINGS,
    STAGES,
    compose,
    conf_dir,
    model_spec,
    num_outputs,
    resolve_task,
    scaled_lr,
)
from parm.pipeline.parity import ParityParts, build_parity, fast_path, train_parity
from parm.pipeline.runner import run
from parm.pipeline.store import base_cache_path, file_lock
from parm.pipeline.trainer import best_checkpoint, build_callbacks, fit_and_test, make_trainer, throughput_monitor

__all__ = [
    "LR_SCALINGS", "STAGES", "ParityParts", "base_cache_path", "best_checkpoint", "build_callbacks", "build_parity",
    "compose", "conf_dir", "fast_path", "file_lock", "fit_and_test", "load_or_train_base", "make_trainer",
    "model_spec", "num_outputs", "resolve_task", "run", "scaled_lr", "throughput_monitor", "train_base",
    "train_parity",
]
