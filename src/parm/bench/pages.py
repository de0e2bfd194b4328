"""Renderers for results-page blocks (:mod:`parm.results`) over the JSON the benchmarks write.

``bench_*`` read a :mod:`parm.bench.training` report; ``codes_ad`` reads a ``scripts/compare_codes.py``
record.
"""

from __future__ import annotations

from typing import Any

from parm.results import renderer

LABELS = {
    "speed_of_light": "speed of light (F_P fwd+bwd+Adam, random data)",
    "speed_of_light_bf16_channels_last": "speed of light, bf16 + channels_last",
    "reference": "reference algorithm (per-sample PIL Dataset + DataLoader, F per batch)",
    "plain": "plain loop (parm's algorithm and data path, no Lightning)",
    "parm": "parm `ParityModule` through the pipeline's Trainer",
}
NAMES = {"parm": "parm", "plain": "plain loop", "reference": "reference"}


@renderer("bench_table")
def bench_table(report: dict[str, Any], args: list[str]) -> str:
    """Groups/s, images/s and parm's ratio to each contender."""
    rates = report["throughput"]
    parm = rates["parm"]["groups_per_second"]
    lines = [f"| loop, {report['setup']['groups_per_batch']} groups/batch | groups/s | images/s | parm × |",
             "|---|---|---|---|"]
    for name in LABELS:
        if name in rates:
            rate = rates[name]
            lines.append(f"| {LABELS[name]} | {rate['groups_per_second']:,.0f} | {rate['images_per_second']:,.0f} "
                         f"| {parm / rate['groups_per_second']:.2f} |")
    return "\n" + "\n".join(lines) + "\n"


def tta_phrase(tta: dict[str, Any]) -> str:
    """``2.0 s``, or ``missed (A_d 0.812 after 40.0 s)`` when the target was not reached."""
    if tta["seconds"] is not None:
        return f"{tta['seconds']:.1f} s"
    last = tta["trace"][-1] if tta["trace"] else [float("nan"), float("nan")]
    return f"missed (A_d {last[1]:.3f} after {last[0]:.1f} s)"


@renderer("bench_tta")
def bench_tta(report: dict[str, Any], args: list[str]) -> str:
    """One sentence: each contender's training seconds to the target test A_d."""
    tta = report["time_to_accuracy"]
    if not tta:
        return "time to accuracy not measured in this run"
    target = next(iter(tta.values()))["target"]
    parts = [f"{NAMES.get(name, name)} {tta_phrase(value)}" for name, value in tta.items()]
    return f"time to test A_d ≥ {target:.2f}: " + ", ".join(parts)


@renderer("bench_rate")
def bench_rate(report: dict[str, Any], args: list[str]) -> str:
    """``args[0]``'s groups/s; with ``args[1]``, also its ratio to that contender."""
    rates = report["throughput"]
    value = rates[args[0]]["groups_per_second"]
    if len(args) < 2:
        return f"{value:,.0f} groups/s"
    other = rates[args[1]]["groups_per_second"]
    return f"{value:,.0f} groups/s ({NAMES.get(args[1], args[1])} {other:,.0f}: {value / other:.2f}×)"


@renderer("bench_setup")
def bench_setup(report: dict[str, Any], args: list[str]) -> str:
    """Where and how: hardware, torch, date, data, model, code, precision, targets, warm-up, repeats."""
    setup = report["setup"]
    targets = "cached" if setup.get("cache_targets") else "on-the-fly"
    overrides = f", `{' '.join(setup['overrides'])}`" if setup.get("overrides") else ""
    warmup = (f"{setup['warmup_steps']} warm-up steps untimed" if "warmup_steps" in setup
              else "warm-up steps not recorded")
    return (f"\n{report['hardware']}, torch {report['torch']}, {report['date']}: {setup['data']} {setup['model']}, "
            f"k = {setup['k']}, {setup['encoder']} encoder, {setup['precision']}, {targets} targets, "
            f"{warmup}, best of {setup['repeats']}{overrides}.\n")


@renderer("codes_ad")
def codes_ad(record: dict[str, Any], args: list[str]) -> str:
    """A_d of method ``args[0]`` at k = ``args[1]`` in a compare_codes record, three decimals."""
    method, k = args[0], int(args[1])
    for result in record["results"]:
        if result["method"] == method and result["k"] == k:
            return f"{result['degraded_acc']:.3f}"
    raise ValueError(f"no {method} at k={k} in the record; it holds "
                     f"{sorted({(r['method'], r['k']) for r in record['results']})}.")
