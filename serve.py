"""Serve F (and its parity models) over HTTP: ``python serve.py serve.base=... serve.parity=...``.

Starts the local worker processes and the coded frontend, then the HTTP API on 127.0.0.1 by default
(``POST /predict``, ``GET /healthz``, ``GET /metrics``). See docs/serving.md.
"""

from __future__ import annotations

import logging

import hydra
from omegaconf import DictConfig, OmegaConf


@hydra.main(config_path="conf", config_name="serve", version_base="1.3")
def main(cfg: DictConfig) -> None:
    from parm.serving.server import serve

    logging.basicConfig(level=logging.INFO)
    settings = OmegaConf.to_container(cfg.serve, resolve=True)
    assert isinstance(settings, dict)
    serve(**settings)


if __name__ == "__main__":
    main()
