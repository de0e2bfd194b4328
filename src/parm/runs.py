"""Reading finished runs back from disk: ``summary.json`` and ``csv/metrics.csv`` of each run folder.

Used by ``scripts/compare_runs.py`` and ``scripts/reproduce.py``; needs no network and no Hydra.
A run folder is any folder holding a ``summary.json`` (a single run, or one job of a ``-m`` sweep).
"""

from __future__ import annotations

import csv
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass
class Run:
    """One finished run: where it is, its summary, the setup that identifies it and its training curves."""

    path: Path
    summary: dict[str, Any]
    curves: dict[str, list[tuple[int, float]]] = field(default_factory=dict)

    @property
    def config(self) -> dict[str, Any]:
        return self.summary.get("config") or {}

    @property
    def dataset(self) -> str:
        target = str((self.config.get("data") or {}).get("_target_", "?"))
        return target.rsplit(".", 1)[-1].removesuffix("DataModule").lower()

    @property
    def model(self) -> str:
        return str((self.config.get("model") or {}).get("_target_", "?")).rsplit(".", 1)[-1].lower()

    @property
    def setup(self) -> dict[str, Any]:
        """The keys a comparison groups by: dataset, model, encoder, decoder, k, r, stage."""
        cfg = self.config
        return {"dataset": self.dataset, "model": self.model, "encoder": cfg.get("encoder", "?"),
                "decoder": cfg.get("decoder", "?"), "k": cfg.get("k"), "r": cfg.get("r"),
                "stage": self.summary.get("stage", "?")}

    def metric(self, key: str) -> float:
        """A test metric (``degraded_acc``, ...), NaN when absent."""
        value = (self.summary.get("test") or {}).get(key)
        return float(value) if value is not None else math.nan

    @property
    def overall(self) -> dict[float, float]:
        """The A_o(f_u) curve: ``{f_u: accuracy}`` sorted by f_u."""
        return {float(f): float(v) for f, v in sorted((self.summary.get("overall") or {}).items(),
                                                        key=lambda item: float(item[0]))}


def _read_curves(path: Path) -> dict[str, list[tuple[int, float]]]:
    """``{metric: [(step, value), ...]}`` from a Lightning CSV log, skipping empty cells."""
    curves: dict[str, list[tuple[int, float]]] = {}
    if not path.exists():
        return curves
    with path.open(newline="") as handle:
        for row in csv.DictReader(handle):
            step = int(float(row.get("step") or 0))
            for key, value in row.items():
                if key in ("epoch", "step") or value in (None, ""):
                    continue
                curves.setdefault(key, []).append((step, float(value)))
    return curves


def load_run(folder: str | Path) -> Run:
    """The run in ``folder`` (which must hold ``summary.json``)."""
    folder = Path(folder)
    path = folder / "summary.json"
    if not path.exists():
        raise FileNotFoundError(f"{folder} is not a parm run folder: it has no summary.json. Point at a run "
                                f"folder (outputs/<date>/<time>) or a sweep folder (multirun/<date>/<time>).")
    try:
        summary = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"{path} is not valid JSON ({e}); the run may have been cut short.") from e
    return Run(folder, summary, _read_curves(folder / "csv" / "metrics.csv"))


def find_runs(*roots: str | Path) -> list[Run]:
    """Every run folder under ``roots`` (each a run or a sweep folder), sorted by path.

    Raises:
        FileNotFoundError: a root does not exist, or no root holds any run.
    """
    runs: list[Run] = []
    for root in map(Path, roots):
        if not root.exists():
            raise FileNotFoundError(f"{root} does not exist.")
        runs += [load_run(p.parent) for p in sorted(root.rglob("summary.json"))]
    if not runs:
        raise FileNotFoundError(f"no summary.json under {', '.join(map(str, roots))}: no finished runs there.")
    return runs
