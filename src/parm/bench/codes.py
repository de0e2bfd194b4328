"""Compare parm parity models, Berrut codes and the default answer on the same F, test set and groups.

At equal redundancy r/k = S/K (r = S = ``--redundancy``, 1 by default) and for each K in ``--ks``:

- ``parm-<encoder>``: parm parity models (``<encoder>/subtraction``, or ``code=learned``: learned encoder,
  F_P and decoder; ``lac``: ``code=lac``, learned encoder and decoder around F itself), trained now
  through the pipeline for ``--epochs`` epochs, or loaded with ``--parity K=path/to/parity.pt``;
- ``berrut-systematic``: originals served as is, S Berrut parities answered by F (no training);
- ``berrut-linear-solve``: the same queries, decoded by solving the linear system as if F were linear
  (``berrut/subtraction``, exact for affine F);
- ``approxifer``: N = K + S Berrut-coded queries, every prediction approximated (no training);
- ``default``: the most frequent training class (boxes: the mean training box) for a missing prediction.

Classification is scored by accuracy; box outputs (``--data localization``) by the share of boxes with
IoU >= 0.75, through the same task metrics training logs (:mod:`parm.tasks`).

Every method sees the same F (``--base``, else the pipeline's cached F, trained if missing), the same
test samples in the same seeded order, and groups of K consecutive samples of that order.

    python scripts/compare_codes.py --data mnist --epochs 3
    python scripts/compare_codes.py --data mnist --epochs 3 --reuse   # re-score parity models trained before
    python scripts/compare_codes.py --report-only       # rebuild docs/results/codes.md from the JSONs

``scripts/compare_codes.py`` is the CLI; the roster (:func:`training_free_methods`), the page
(:func:`codes_page`, re-rendered by a test from the committed JSON) and the evaluation live here.

Prints a table per dataset and writes ``codes_<data><tag>.json``, ``..._ad.png`` (A_d vs K),
``..._ao.png`` (A_o curves) and the combined ``codes.md`` under ``--out``. Needs the parm-berrut
distribution (``pip install -e plugins/parm-berrut``) and matplotlib.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path
from typing import Any

import torch

from parm.artifacts import load_parity
from parm.coding import CodeSpec, build_code
from parm.evaluation import (
    MethodResult,
    evaluate_coded_computation,
    evaluate_default,
    evaluate_parity_models,
)
from parm.tasks import Task

ROOT = Path(__file__).resolve().parents[3]
FRACTIONS = (0.0, 0.01, 0.05, 0.1, 0.2, 0.5, 1.0)
# Reported by the ApproxIFER authors at S = 1 (PARM.md section 4): K -> (ApproxIFER, ParM).
PAPER = {"mnist": {8: (0.872, 0.683), 10: (0.872, 0.592), 12: (0.868, 0.503)},
         "fashion_mnist": {8: (0.740, 0.671), 10: (0.730, 0.590), 12: (0.720, 0.552)}}


def _compose(data: str, data_dir: str, overrides: list[str]) -> Any:
    from parm.pipeline import compose

    return compose([f"data={data}", f"data_dir={data_dir}", *overrides])


def _parse_parity(items: list[str]) -> dict[int, Path]:
    paths = {}
    for item in items:
        k, sep, path = item.partition("=")
        if not sep or not k.isdigit():
            raise SystemExit(f"--parity takes K=path/to/parity.pt, got {item!r}.")
        paths[int(k)] = Path(path)
    return paths


def _method(spec: str) -> tuple[str, str | None]:
    """``"concat:tiled"`` -> encoder ``concat`` with ``parity_model=tiled``; ``"sum"`` -> F's architecture."""
    encoder, _, parity_model = spec.partition(":")
    return encoder, parity_model or None


def _relative(path: Path) -> str:
    """``path`` relative to the repository when it lies inside it: committed JSON names no machine paths."""
    return str(path.resolve().relative_to(ROOT)) if path.resolve().is_relative_to(ROOT) else str(path)


# Methods that are whole code configs (conf/code/): the learned code with its initialisation, and the
# Learning-a-Code mode (lac: F answers the parity queries, so no parity model is trained).
CODE_CONFIGS = ("learned", "lac")


def code_overrides(encoder: str) -> list[str]:
    """The Hydra overrides that select method ``encoder``'s code."""
    if encoder in CODE_CONFIGS:
        return [f"code={encoder}"]
    return [f"encoder={encoder}", "decoder=subtraction"]


def code_settings(args: argparse.Namespace, spec: str) -> dict[str, Any] | None:
    """How a whole-code method (``learned``, ``lac``) trains under this run's configs, for the record; else None.

    A config's defaults change over time (``code=learned`` gained its warm-up and the tile-wise F_P after the
    first measurements), so each record says which it was measured with.
    """
    encoder, parity_model = _method(spec)
    if encoder not in CODE_CONFIGS:
        return None
    cfg = _compose(args.data, args.data_dir, [*code_overrides(encoder), *([f"parity_model={parity_model}"]
                                                                           if parity_model else []), *args.override])
    return {"coder_warmup": float(cfg.parity.coder_warmup), "coder_lr_scale": float(cfg.parity.coder_lr_scale),
            "parity_model": "F itself" if cfg.parity_model.get("use_base") else
            str(cfg.parity_model.get("_target_", "F's architecture"))}


def train_parity(args: argparse.Namespace, k: int, spec: str, base_path: Path) -> Path:
    """Train parity models for one K through the pipeline; returns the parity.pt it wrote."""
    from parm.pipeline import run

    encoder, parity_model = _method(spec)
    out = Path(args.workdir) / args.data / f"{spec.replace(':', '-')}-k{k}-r{args.redundancy}"
    if args.reuse and (out / "parity.pt").exists():
        return out / "parity.pt"
    cfg = _compose(args.data, args.data_dir, [
        f"k={k}", f"r={args.redundancy}", *code_overrides(encoder), f"base.ckpt={base_path}",
        f"output_dir={out}", f"trainer.max_epochs={args.epochs}", "trainer.accelerator=cpu",
        "trainer.enable_progress_bar=false", "logger=csv", f"parity.max_eval_patterns={args.max_patterns}",
        *([f"parity_model={parity_model}"] if parity_model else []), *args.override,
    ])
    summary = run(cfg)
    return Path(summary["artifacts"]["parity"])


def evaluate_dataset(args: argparse.Namespace) -> dict[str, Any]:
    """Every method at every K on one dataset; returns the JSON record."""
    from hydra.utils import instantiate

    from parm.pipeline import load_or_train_base, model_spec, num_outputs, resolve_task

    cfg = _compose(args.data, args.data_dir, [f"output_dir={Path(args.workdir) / args.data}", "k=1",
                                              *([f"base.ckpt={args.base}"] if args.base else []), *args.override])
    datamodule = instantiate(cfg.data)
    datamodule.setup("test")
    task = resolve_task(cfg, datamodule)  # classification, or boxes scored by IoU (data=localization)
    base, base_path = load_or_train_base(cfg, model_spec(cfg.model, datamodule.input_shape, num_outputs(datamodule)),
                                         Path(cfg.output_dir))
    base.eval()
    x, y = datamodule.split("test")
    x = datamodule.normalize(x)
    default_answer = task.default_answer(datamodule.split("train")[1])
    s = args.redundancy
    given = _parse_parity(args.parity)
    results: list[MethodResult] = []
    timing: dict[str, float] = {}
    for k in args.ks:
        for encoder in args.encoders:
            started = time.perf_counter()
            path = given.get(k) if encoder == args.encoders[0] and k in given else None
            if path is None and args.epochs > 0:
                path = train_parity(args, k, encoder, base_path)
            if path is not None:
                artifact = load_parity(path)
                name = f"parm-{encoder.replace(':', '-')}"
                results.append(evaluate_parity_models(name, base, artifact.parity_models, artifact.code, x, y,
                                                      args.max_patterns, args.seed, task))
                results[-1].extra["parity"] = _relative(path)
                timing[f"parm-{encoder}@{k}"] = time.perf_counter() - started
        results += training_free_methods(base, x, y, k, s, default_answer, task, args.max_patterns, args.seed)
    return {"data": args.data, "stem": f"codes_{args.data}{args.tag}", "base": _relative(base_path),
            "epochs": args.epochs, "overrides": list(args.override),
            "redundancy": s,
            "encoders": args.encoders, "test_samples": int(x.shape[0]), "task": task.name,
            "code_settings": {e: settings for e in args.encoders if (settings := code_settings(args, e))},
            "default_answer": default_answer,
            "fractions": list(FRACTIONS), "results": [r.as_dict(FRACTIONS) for r in results], "timing": timing,
            "loadavg_at_end": list(os.getloadavg())}  # the machine may be shared: timings read beside it


def training_free_methods(base: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, k: int, s: int,
                          default_answer: Any, task: Task, max_patterns: int | None = 64,
                          seed: int = 0) -> list[MethodResult]:
    """The roster every parm code is compared with at K = ``k``, S = ``s``, all answered by F alone.

    ``berrut-systematic`` and ``berrut-linear-solve`` (Berrut parities answered by F, decoded by Berrut
    or by solving as if F were linear), ``approxifer`` (every prediction approximated) and ``default``.
    """
    from parm_berrut import ApproxIFERCode

    with torch.no_grad():
        shape, outputs = tuple(x.shape[1:]), (int(base(x[:1]).shape[-1]),)
    results = []
    for decoder, name in (("berrut", "berrut-systematic"), ("subtraction", "berrut-linear-solve")):
        code = build_code("berrut", decoder, CodeSpec(k, s), shape, outputs)
        results.append(evaluate_parity_models(name, base, [base] * s, code, x, y, max_patterns, seed, task))
    results.append(evaluate_coded_computation("approxifer", base, ApproxIFERCode(k, s), x, y, max_patterns, seed,
                                              task))
    results.append(evaluate_default(base, x, y, k, default_answer, s, task))
    return results


def crossover(result: dict[str, Any], approx_acc: float | None) -> float | None:
    """f_u below which a method that keeps available predictions exact beats ApproxIFER's flat A_o."""
    if approx_acc is None or result["approximates_all"]:
        return None
    gap = result["available_acc"] - result["degraded_acc"]
    if gap <= 0:
        return 1.0
    return min(1.0, max(0.0, (result["available_acc"] - approx_acc) / gap))


def format_table(record: dict[str, Any]) -> str:
    """Markdown table: one row per (K, method). For boxes the top-5 column holds A_d's mean IoU instead."""
    boxes = record.get("task") == "regression"
    lines = [f"| K | method | A_a | A_d | {'A_d mean IoU' if boxes else 'A_d top-5'} | agreement | A_o(0.1) | "
             "A_o(0.5) | A (all N answers) | beats ApproxIFER for f_u < |",
             "|---|---|---|---|---|---|---|---|---|---|"]

    def fmt(v: float | None) -> str:
        return "–" if v is None else f"{v:.4f}"

    approx = {r["k"]: r["degraded_acc"] for r in record["results"] if r["method"] == "approxifer"}
    for r in record["results"]:
        third = r.get("metrics", {}).get("degraded_miou") if boxes else r["degraded_top5"]
        lines.append(f"| {r['k']} | {r['method']} | {fmt(r['available_acc'])} | **{fmt(r['degraded_acc'])}** | "
                     f"{fmt(third)} | {fmt(r['agreement'])} | {fmt(r['overall']['0.1'])} | "
                     f"{fmt(r['overall']['0.5'])} | {fmt(r['full_acc'])} | "
                     f"{fmt(crossover(r, approx.get(r['k'])))} |")
    return "\n".join(lines)


def plot(record: dict[str, Any], out: Path) -> list[Path]:
    """A_d vs K per method, and the A_o(f_u) curves per K."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    methods = list(dict.fromkeys(r["method"] for r in record["results"]))
    ks = sorted({r["k"] for r in record["results"]})
    fig, ax = plt.subplots(figsize=(7.5, 4))
    for m in methods:
        rows = [r for r in record["results"] if r["method"] == m]
        ax.plot([r["k"] for r in rows], [r["degraded_acc"] for r in rows], marker="o", label=m)
    for k, (approx, parm) in PAPER.get(record["data"], {}).items():
        ax.scatter([k], [approx], marker="x", color="black")
        ax.scatter([k], [parm], marker="+", color="black")
    boxes = record.get("task") == "regression"
    ax.set(xlabel=f"K (queries per group), S = r = {record['redundancy']}",
           ylabel="A_d (IoU >= 0.75)" if boxes else "A_d (top-1)",
           title=f"{record['data']}: degraded-mode {'localization' if boxes else 'accuracy'}"
                 + (" (x/+: ApproxIFER/ParM as published)" if record["data"] in PAPER else ""), ylim=(0, 1))
    ax.title.set_fontsize(9)
    ax.legend(fontsize=8, bbox_to_anchor=(1.02, 1), loc="upper left")
    stem = record.get("stem", f"codes_{record['data']}")
    paths = [out / f"{stem}_ad.png"]
    fig.tight_layout()
    fig.savefig(paths[0], dpi=120)
    plt.close(fig)
    fig, axes = plt.subplots(1, len(ks), figsize=(3 * len(ks), 3), sharey=True, squeeze=False)
    for ax, k in zip(axes[0], ks, strict=True):
        for r in (r for r in record["results"] if r["k"] == k):
            curve = r["overall"]
            ax.plot([float(f) for f in curve], list(curve.values()), marker=".", label=r["method"])
        ax.set(title=f"K = {k}", xlabel="f_u")
    axes[0][0].set_ylabel("A_o(f_u)")
    axes[0][-1].legend(fontsize=7)
    paths.append(out / f"{stem}_ao.png")
    fig.tight_layout()
    fig.savefig(paths[1], dpi=120)
    plt.close(fig)
    return paths


def codes_page(out: Path) -> str:
    """``codes.md``'s Markdown from every ``codes_*.json`` under ``out``."""
    parts = ["# parm codes vs Berrut (ApproxIFER) at equal redundancy", "",
             "Written by `scripts/compare_codes.py`. A_d scores only decoded predictions for parm and systematic "
             "Berrut (one erased slot per pattern, every pattern), and *every* prediction for ApproxIFER (every "
             "S-subset of the N answers lost in turn); its A_o(f_u) is therefore flat at A_d, while the others "
             "keep F's exact answers for the 1 - f_u that arrive.", ""]
    for path in sorted(out.glob("codes_*.json")):
        record = json.loads(path.read_text())
        stem = record.get("stem", f"codes_{record['data']}")
        extra = f", `{' '.join(record['overrides'])}`" if record.get("overrides") else ""
        scored = (" Scores are shares of boxes with IoU >= 0.75 (A_a, A_d against the true box, agreement "
                  "against F's box); the A_d mean IoU column is the mean IoU of the decoded boxes with the true "
                  "ones; the JSON's `metrics` hold the rest."
                  if record.get("task") == "regression" else "")
        parts += [f"## {record['data']}, parity models trained {record['epochs']} epochs{extra}", "",
                  f"F: `{record['base']}`; {record['test_samples']} test samples in the seeded order; redundancy "
                  f"r = S = {record['redundancy']}; parm parity models trained {record['epochs']} epochs "
                  f"({', '.join(record['encoders'])}).{scored}", "", format_table(record), "",
                  f"![A_d]({stem}_ad.png) ![A_o]({stem}_ao.png)", ""]
    return "\n".join(parts)


def write_report(out: Path) -> Path:
    """``codes.md`` and the figures from every ``codes_*.json`` under ``out``."""
    for path in sorted(out.glob("codes_*.json")):
        plot(json.loads(path.read_text()), out)
    report = out / "codes.md"
    report.write_text(codes_page(out))
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", default="mnist", help="Hydra data config: mnist, fashion_mnist, ...")
    parser.add_argument("--data-dir", default=os.environ.get("PARM_DATA_DIR", "data"),
                        help="dataset folder (default: $PARM_DATA_DIR, else ./data)")
    parser.add_argument("--base", default=None, help="F's model file; default: the pipeline's cached F")
    parser.add_argument("--ks", type=int, nargs="+", default=[2, 4, 8, 10, 12])
    parser.add_argument("--redundancy", type=int, default=1, help="r = S per group")
    parser.add_argument("--encoders", nargs="+", default=["sum"],
                        help="parm encoders to train (sum, concat, learned, lac), optionally encoder:parity_model "
                             "(e.g. concat:tiled, learned:tiled)")
    parser.add_argument("--epochs", type=int, default=3, help="parity training epochs; 0 skips training")
    parser.add_argument("--parity", action="append", default=[], help="K=parity.pt for the first encoder")
    parser.add_argument("--max-patterns", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workdir", default=str(ROOT / "outputs" / "compare_codes"))
    parser.add_argument("--out", default=str(ROOT / "docs" / "results"))
    parser.add_argument("--override", action="append", default=[],
                        help="extra Hydra override (data, F and parity training), repeatable")
    parser.add_argument("--tag", default="", help="suffix of the output files, e.g. _e100")
    parser.add_argument("--reuse", action="store_true", help="reuse parity.pt already trained under --workdir")
    parser.add_argument("--report-only", action="store_true")
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if not args.report_only:
        torch.manual_seed(args.seed)
        record = evaluate_dataset(args)
        (out / f"{record['stem']}.json").write_text(json.dumps(record, indent=2))
        print(format_table(record))
    print(f"wrote {write_report(out)}")


if __name__ == "__main__":
    main()
