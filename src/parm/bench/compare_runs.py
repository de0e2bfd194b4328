"""Compare finished runs: a table on the terminal, Markdown and PNG plots on disk; no network needed.

    python scripts/compare_runs.py multirun/2026-11-29/12-00-00 [more sweep or run folders] --out docs/results/cmp

Reads every ``summary.json`` (and ``csv/metrics.csv``) under the given folders and writes into ``--out``:
``comparison.md`` (the table and the A_o(f_u) table), ``comparison.json``, ``degraded_vs_k.png`` (A_d
against k, one line per encoder, one panel per dataset/model), ``overall_curves.png`` (A_o(f_u) per
run) and ``training_curves.png`` (train loss and validation A_d per run).
"""

from __future__ import annotations

import argparse
import json
import math
from collections import defaultdict
from pathlib import Path
from typing import Any

from parm.runs import Run, find_runs, varying_settings

COLUMNS = (("available_acc", "A_a"), ("degraded_acc", "A_d"), ("degraded_top5_acc", "A_d top5"),
           ("agreement", "agree"), ("default_acc", "default"))


def label(run: Run, varies: str = "") -> str:
    s = run.setup
    return f"{s['dataset']} {s['model']} {s['encoder']}/{s['decoder']} k={s['k']} r={s['r']}" + (
        f" {varies}" if varies else "")


def rows(runs: list[Run]) -> list[dict[str, Any]]:
    """One flat record per run, sorted by dataset, model, encoder, k and the other settings that vary."""
    records = []
    varies = varying_settings(runs)
    for run in runs:
        timing = run.summary.get("timing") or {}
        records.append({**run.setup, **{key: run.metric(key) for key, _ in COLUMNS},
                        "overall": run.overall, "train_seconds": timing.get("train_seconds"),
                        "samples_per_second": timing.get("samples_per_second"), "varies": varies[run.path],
                        "path": str(run.path)})
    return sorted(records, key=lambda r: (r["dataset"], r["model"], str(r["encoder"]), r["k"] or 0, r["r"] or 0,
                                          r["varies"]))


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return "-" if math.isnan(value) else f"{value:.4f}"
    return "-" if value is None else str(value)


def text_table(records: list[dict[str, Any]]) -> str:
    head = f"{'dataset':<14}{'model':<10}{'code':<22}{'k':>3}{'r':>3}" + "".join(f"{name:>10}" for _, name in COLUMNS)
    lines = [head + f"{'train s':>9}"]
    for r in records:
        code = f"{r['encoder']}/{r['decoder']}"
        seconds = f"{r['train_seconds']:>9.1f}" if r["train_seconds"] is not None else f"{'-':>9}"
        lines.append(f"{r['dataset']:<14}{r['model']:<10}{code:<22}{_fmt(r['k']):>3}{_fmt(r['r']):>3}"
                     + "".join(f"{_fmt(r[key]):>10}" for key, _ in COLUMNS) + seconds
                     + (f"  {r['varies']}" if r["varies"] else ""))
    return "\n".join(lines)


def markdown(records: list[dict[str, Any]], images: list[str]) -> str:
    cols = ["dataset", "model", "encoder", "decoder", "k", "r", "other settings", *(name for _, name in COLUMNS),
            "train s", "run"]
    out = ["# Run comparison", "", "| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for r in records:
        values = [r["dataset"], r["model"], r["encoder"], r["decoder"], r["k"], r["r"], r["varies"] or None,
                  *(r[key] for key, _ in COLUMNS),
                  None if r["train_seconds"] is None else round(r["train_seconds"], 1), f"`{r['path']}`"]
        out.append("| " + " | ".join(_fmt(v) for v in values) + " |")
    fractions = sorted({f for r in records for f in r["overall"]})
    if fractions:
        out += ["", "## A_o(f_u) = (1 - f_u) A_a + f_u A_d", "",
                "| run | " + " | ".join(f"f_u={f:g}" for f in fractions) + " |", "|" + "---|" * (len(fractions) + 1)]
        for r in records:
            code = f"{r['dataset']} {r['model']} {r['encoder']} k={r['k']}" + (f" {r['varies']}" if r["varies"] else "")
            out.append(f"| {code} | " + " | ".join(_fmt(r["overall"].get(f)) for f in fractions) + " |")
    out += ["", *(f"![{name}]({name})" for name in images), ""]
    return "\n".join(out)


def load_records(path: Path) -> list[dict[str, Any]]:
    """The records of a ``comparison.json`` as :func:`rows` made them (f_u keys back to floats)."""
    return [{**r, "overall": {float(f): v for f, v in r["overall"].items()}} for r in json.loads(path.read_text())]


def page_images(folder: Path) -> list[str]:
    """The plots :func:`plot` writes, in its order, that exist in ``folder``."""
    return [name for name in ("degraded_vs_k.png", "overall_curves.png", "training_curves.png")
            if (folder / name).exists()]


def plot(runs: list[Run], records: list[dict[str, Any]], out: Path) -> list[str]:
    """Write the PNGs into ``out``; returns their file names."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = []
    varies = {Path(r["path"]): r["varies"] for r in records}
    panels: dict[tuple[str, str], dict[str, list[tuple[int, float]]]] = defaultdict(lambda: defaultdict(list))
    for r in records:
        if r["stage"] == "parity" and r["k"] is not None and not math.isnan(r["degraded_acc"]):
            # One line per encoder and per combination of the other settings a sweep varied (not k).
            line = f"{r['encoder']} {r['varies']}".strip()
            panels[(r["dataset"], r["model"])][line].append((r["k"], r["degraded_acc"]))
    if panels:
        fig, axes = plt.subplots(1, len(panels), figsize=(4.5 * len(panels), 3.5), squeeze=False)
        for ax, ((dataset, model), lines) in zip(axes[0], sorted(panels.items()), strict=True):
            for encoder, points in sorted(lines.items()):
                ks, values = zip(*sorted(points), strict=True)
                ax.plot(ks, values, marker="o", label=encoder)
            ax.set(title=f"{dataset} {model}", xlabel="k", ylabel="A_d (top-1)")
            ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(0.0, -0.15))  # below: labels can be long
        names.append(_save(fig, out / "degraded_vs_k.png"))
    curves = [run for run in runs if run.overall]
    if curves:
        fig, ax = plt.subplots(figsize=(6, 4))
        for run in curves:
            ax.plot(list(run.overall), list(run.overall.values()), marker=".", label=label(run, varies[run.path]))
        ax.set(xlabel="f_u (fraction of predictions unavailable)", ylabel="A_o(f_u)", xscale="log")
        ax.legend(fontsize=6)
        names.append(_save(fig, out / "overall_curves.png"))
    trained = [run for run in runs if run.curves]
    if trained:
        fig, (loss_ax, acc_ax) = plt.subplots(1, 2, figsize=(10, 3.5))
        for run in trained:
            for ax, key in ((loss_ax, "train/loss"), (acc_ax, "val/degraded_acc")):
                if run.curves.get(key):
                    steps, values = zip(*run.curves[key], strict=True)
                    ax.plot(steps, values, label=label(run, varies[run.path]))
        loss_ax.set(xlabel="step", ylabel="train/loss", yscale="log")
        acc_ax.set(xlabel="step", ylabel="val/degraded_acc")
        acc_ax.legend(fontsize=6)
        names.append(_save(fig, out / "training_curves.png"))
    return names


def _save(fig: Any, path: Path) -> str:
    fig.tight_layout()
    fig.savefig(path, dpi=110, bbox_inches="tight")  # keeps legends placed outside the axes
    import matplotlib.pyplot as plt

    plt.close(fig)
    return path.name


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("folders", nargs="+", help="run or sweep folders (searched for summary.json)")
    parser.add_argument("--out", default="outputs/compare", help="folder for comparison.md/.json and PNGs")
    parser.add_argument("--no-plots", action="store_true")
    args = parser.parse_args(argv)
    runs = find_runs(*args.folders)
    records = rows(runs)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    images = [] if args.no_plots else plot(runs, records, out)
    (out / "comparison.md").write_text(markdown(records, images))
    serialisable = [{**r, "overall": {str(f): v for f, v in r["overall"].items()}} for r in records]
    (out / "comparison.json").write_text(json.dumps(serialisable, indent=2))
    print(text_table(records))
    print(f"\nwrote {out / 'comparison.md'} ({len(records)} runs; plots: {', '.join(images) or 'none'})")
    return records


if __name__ == "__main__":
    main()
