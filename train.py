"""Train parity models: `python train.py encoder=concat k=4`, sweeps with `-m`. See conf/train.yaml."""

from __future__ import annotations

import hydra
from omegaconf import DictConfig


@hydra.main(config_path="conf", config_name="train", version_base="1.3")
def main(cfg: DictConfig) -> float | None:
    from parm.pipeline import run  # imported here so `--help` and config errors stay fast

    summary = run(cfg)
    # Returned for sweepers that optimise a value (e.g. Optuna): degraded-mode accuracy.
    return summary["test"].get("degraded_acc")


if __name__ == "__main__":
    main()
