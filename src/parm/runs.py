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


# Where a run lives or reads from, not what it is: never a difference worth a column.
_LOCATION_NAMES = ("ckpt", "ckpt_path", "dirpath", "default_root_dir")
_SETUP_KEYS = ("encoder", "decoder", "k", "r", "stage", "data._target_", "model._target_")


def _is_location(key: str) -> bool:
    name = key.rsplit(".", 1)[-1]
    return name.endswith("_dir") or name in _LOCATION_NAMES


def flat_config(config: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": 1}}`` -> ``{"a.b": 1}``; lists stay values."""
    flat: dict[str, Any] = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(flat_config(value, f"{name}."))  # an empty group ({}) is the same as an absent one
        else:
            flat[name] = value
    return flat


def varying_settings(runs: list[Run]) -> dict[Path, str]:
    """Per run, the settings that differ between ``runs`` beyond the setup columns, as ``key=value ...``.

    A sweep over ``parity.lr_scaling`` and ``scheduler`` shows ``parity.lr_scaling=sqrt scheduler=cosineannealinglr``
    beside each run, so runs of one setup stay distinguishable. Paths and the setup's own keys are left out;
    ``_target_`` values are shortened to the class name and a group's keys to the group name when its
    target differs.
    """
    flats = [flat_config(run.config) for run in runs]
    keys = sorted({key for flat in flats for key in flat})
    varying = [key for key in keys if not _is_location(key) and key not in _SETUP_KEYS
               and not key.startswith("hydra.") and len({repr(flat.get(key)) for flat in flats}) > 1]
    groups = {key.removesuffix("._target_") for key in varying if key.endswith("._target_")}
    shown = [key for key in varying if key.endswith("._target_") or not any(key.startswith(f"{g}.") for g in groups)]

    def describe(flat: dict[str, Any]) -> str:
        parts = []
        for key in shown:
            value = flat.get(key)
            if key.endswith("._target_"):
                key, value = key.removesuffix("._target_"), str(value).rsplit(".", 1)[-1].lower()
            parts.append(f"{key}={value}")
        return " ".join(parts)

    return {run.path: describe(flat) for run, flat in zip(runs, flats, strict=True)}


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
