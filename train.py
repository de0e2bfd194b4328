"""Train parity models: `python train.py encoder=concat k=4`, sweeps with `-m`. See conf/train.yaml."""

from __future__ import annotations

import hydra
from omegaconf import DictConfig


@hydra.main(config_path="conf", config_name="train", version_base="1.3")
def main(cfg: DictConfig) -> float | None:
    from parm.pipeline import run  # imported here so `--help` and config errors stay fast
    from parm.tasks import get_task

    summary = run(cfg)
    # Returned for sweepers that optimise a value (e.g. Optuna): degraded-mode accuracy (or IoU hit rate).
    return summary["test"].get(get_task(summary["task"]).degraded_key)


if __name__ == "__main__":
    main()
