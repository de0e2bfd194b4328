"""End-of-run summary: a compact terminal table and ``summary.json``."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

# (summary key, label) in display order; missing keys are skipped.
ROWS = (
    ("available_acc", "A_a  available accuracy (F)"),
    ("degraded_acc", "A_d  degraded accuracy (top-1)"),
    ("degraded_top5_acc", "A_d  degraded accuracy (top-5)"),
    ("agreement", "reconstruction agreement with F"),
    ("default_acc", "default-answer baseline"),
    # Boxes (task=regression): hit rates are shares of boxes with IoU >= 0.75.
    ("available_iou", "A_a  IoU>=0.75 share (F vs truth)"),
    ("available_miou", "     mean IoU (F vs truth)"),
    ("degraded_iou", "A_d  IoU>=0.75 share (decoded)"),
    ("degraded_miou", "     mean IoU (decoded vs truth)"),
    ("agreement_iou", "IoU>=0.75 share, decoded vs F"),
    ("degraded_mse", "MSE, decoded vs F"),
    ("default_iou", "default-box baseline IoU>=0.75"),
)


def format_table(summary: Mapping[str, Any]) -> str:
    """A fixed-width table of the test metrics and the A_o(f_u) curve."""
    metrics = summary.get("test", {})
    lines = [f"parm {summary.get('stage', '')}: {summary.get('title', '')}".rstrip()]
    width = 36
    for key, label in ROWS:
        if key in metrics:
            lines.append(f"  {label:<{width}} {metrics[key]:.4f}")
    overall = summary.get("overall", {})
    if overall:
        lines.append("  " + "A_o(f_u)".ljust(width) + " " + "  ".join(f"{f:>6}" for f in overall))
        lines.append("  " + "".ljust(width) + " " + "  ".join(f"{v:>6.4f}" for v in overall.values()))
    timing = summary.get("timing", {})
    if timing:
        lines.append(f"  {'train wall time (s)':<{width}} {timing.get('train_seconds', 0):.1f}")
        lines.append(f"  {'train samples/s':<{width}} {timing.get('samples_per_second', 0):.0f}")
    return "\n".join(lines)


def write_summary(output_dir: str | os.PathLike[str], summary: Mapping[str, Any]) -> Path:
    """Write ``summary.json`` into the run directory and return its path."""
    path = Path(output_dir) / "summary.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(summary, indent=2, sort_keys=False, default=str))
    return path
