"""Parity-training throughput and time-to-accuracy: parm's LightningModule vs the reference loop.

Measured in one process, one after another, so that the ratios are fair on a shared machine:

- ``reference``: a plain PyTorch loop as the ParM reference code trains F_P: a per-sample ``Dataset``
  (per-sample tensor conversion and normalisation) behind a ``torch.utils.data.DataLoader``, fp32,
  Adam (lr 1e-3, wd 1e-5), MSE from F_P(P) to the sum of F's outputs, F run on every batch;
- ``plain``: the same algorithm as parm's in a plain PyTorch loop without Lightning: data held where
  training runs, batched augmentation when the data module augments, the configured optimizer,
  precision (bf16 autocast) and memory format, F's outputs cached or computed on the fly as parm's
  module does. ``parm / plain`` is what Lightning and parm's bookkeeping cost per step;
- ``parm``: ``ParityModule`` through the same Trainer ``train.py`` builds (progress bar off);
- ``speed_of_light``: F_P forward + backward + optimizer step alone on random data (fp32, and on CUDA
  also bf16 autocast + channels_last), the ceiling for any loop;

all at the same number of coding groups per batch. Time-to-accuracy: training seconds (evaluation
excluded) until test A_d reaches ``--target``, for parm and the reference.

Every contender is timed by one :class:`~parm.bench.harness.Harness`: the same untimed warm-up steps,
device synchronisation at the clock's start and stop, and the config's ``parity.compile`` mode.

    PARM_DATA_DIR=../shared/data python scripts/bench_train.py --out outputs/bench.json
    python scripts/bench_train.py --data cifar10 --model resnet18 --set trainer=gpu --out $OUT/bench.json

Prints a table, writes JSON (``--out``). Extra Hydra overrides for the config go after ``--set``. The
contenders other than parm live in :mod:`parm.bench.loops`.
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
from collections.abc import Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from parm import pipeline
from parm.bench.harness import Harness, rates_of
from parm.bench.loops import Clock, PlainLoop, ReferenceLoop, evaluate, speed_of_light
from parm.data.base import TensorDataModule
from parm.lit import ParityModule
from parm.lit.speed import compile_mode
from parm.results import rerender_citing

# ---- parm's own loop -------------------------------------------------------------------------------------


class TimeToAccuracy(pl.Callback):
    """Evaluates test A_d every ``every`` training steps with the clock paused; stops at the target."""

    def __init__(self, clock: Clock, datamodule: TensorDataModule, every: int) -> None:
        self.clock, self.datamodule, self.every = clock, datamodule, every

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        # Callbacks run before the module's own on_train_start: the clock includes the target precompute.
        self.clock.start()

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        if trainer.global_step % self.every == 0:
            assert isinstance(pl_module, ParityModule)
            done = self.clock.checkpoint(lambda: evaluate(pl_module.base_model, list(pl_module.parity_models),
                                                          pl_module.code, self.datamodule, pl_module.device),
                                         pl_module.device)
            trainer.should_stop = trainer.should_stop or done


def fresh_parts(cfg: DictConfig, datamodule: TensorDataModule, model_spec: dict[str, Any],
                out_dir: Path) -> pipeline.ParityParts:
    """F, the code and an untrained F_P initialised exactly as :func:`parm_fit`'s (same seed)."""
    pl.seed_everything(cfg.seed, verbose=False)
    return pipeline.build_parity(cfg, datamodule, model_spec, out_dir / "fresh")


def parm_fit(cfg: DictConfig, datamodule: TensorDataModule, model_spec: dict[str, Any], out_dir: Path,
             epochs: int, callbacks: Sequence[pl.Callback] = (),
             warmup_steps: int = 0) -> tuple[pipeline.ParityParts, dict[str, float]]:
    """Fit a fresh ParityModule through the pipeline's Trainer; throughput of the training pass.

    Validation and checkpoint files are left out (the config selects ``callbacks=bench``): they are not
    training, and on a GPU with short epochs writing two ResNet-18 checkpoints per epoch would dominate
    time-to-accuracy.
    """
    pl.seed_everything(cfg.seed, verbose=False)
    parts = pipeline.build_parity(cfg, datamodule, model_spec, out_dir)
    trainer = pipeline.make_trainer(cfg, out_dir, monitor="val/agreement", max_epochs=epochs,
                                    limit_val_batches=0, enable_progress_bar=False)
    trainer.callbacks.extend(callbacks)  # type: ignore[attr-defined]
    monitor = pipeline.throughput_monitor(trainer)
    monitor.warmup_steps = warmup_steps  # the harness's: parm's clock starts as the other contenders' do
    trainer.fit(parts.module, datamodule=datamodule)
    rates = rates_of(monitor.samples, monitor.seconds, parts.code.spec.k)
    rates["target_precompute_seconds"] = parts.module.target_seconds
    return parts, rates


# ---- driver ------------------------------------------------------------------------------------------------


def compose_config(args: argparse.Namespace, out_dir: Path) -> DictConfig:
    overrides = [f"data={args.data}", f"model={args.model}", f"k={args.k}", f"encoder={args.encoder}",
                 f"data.groups_per_batch={args.groups_per_batch}", f"output_dir={out_dir}", "logger=csv",
                 "trainer.enable_progress_bar=false", f"seed={args.seed}", "callbacks=bench"]
    if args.data_dir:
        overrides.append(f"data_dir={args.data_dir}")
    if args.cache_dir:
        overrides.append(f"cache_dir={args.cache_dir}")
    return pipeline.compose([*overrides, *args.set])


def hardware(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} torch thread(s)"


class Bench:
    """One benchmark setup: the config, data, F's spec and device every contender shares."""

    def __init__(self, args: argparse.Namespace) -> None:
        torch.set_num_threads(args.threads)
        self.args = args
        self.out_dir = Path(args.work_dir or tempfile.mkdtemp(prefix="parm-bench-"))
        self.cfg = compose_config(args, self.out_dir)
        pl.seed_everything(self.cfg.seed, workers=True)
        self.datamodule: TensorDataModule = instantiate(self.cfg.data)
        self.datamodule.setup("fit")
        self.model_spec = pipeline.model_spec(self.cfg.model, self.datamodule.input_shape,
                                               self.datamodule.num_classes)
        use_cuda = torch.cuda.is_available() and self.cfg.trainer.accelerator != "cpu"
        self.device = torch.device("cuda" if use_cuda else "cpu")
        self.train_steps = len(self.datamodule.train_dataloader())
        self.reference_steps = args.steps or self.train_steps
        self.warmup = min(args.warmup_steps, self.train_steps * args.epochs - 1)  # at least one timed step
        self.harness = Harness(self.device, self.warmup,
                               compile_mode(OmegaConf.select(self.cfg, "parity.compile", default=False)))

    def fresh(self) -> pipeline.ParityParts:
        """F, the code and an untrained F_P, initialised as parm's fit initialises them."""
        return fresh_parts(self.cfg, self.datamodule, self.model_spec, self.out_dir)

    def throughput(self) -> tuple[dict[str, Any], pipeline.ParityParts]:
        """Best rates of each contender over ``--repeats`` alternated rounds, and parm's last fit."""
        args, cfg, harness = self.args, self.cfg, self.harness
        results: dict[str, Any] = {"speed_of_light": {}, "reference": {}, "plain": {}, "parm": {}}
        timed_steps = self.train_steps * args.epochs - self.warmup  # as many as parm's timed steps
        sol_steps = min(self.reference_steps, 300)
        parts = None
        for repeat in range(args.repeats):  # alternate the contenders; keep each one's best
            fresh = self.fresh()  # untrained F_P, same init as parm's
            parts, parm_rates = parm_fit(cfg, self.datamodule, self.model_spec, self.out_dir / f"parm{repeat}",
                                         args.epochs, warmup_steps=self.warmup)
            shape = tuple(parts.code.encoder.parity_shape)
            contenders = {
                "parm": parm_rates,
                "plain": PlainLoop(fresh, self.datamodule, cfg, harness, cfg.seed).throughput(timed_steps),
                "reference": ReferenceLoop(fresh, self.datamodule, args.groups_per_batch, harness,
                                           cfg.seed).throughput(self.reference_steps),
            }
            for name, fast in (("speed_of_light", False), ("speed_of_light_bf16_channels_last", True)):
                if not fast or harness.device.type == "cuda":
                    contenders[name] = speed_of_light(fresh.parity_models[0], shape, args.groups_per_batch, args.k,
                                                      harness, sol_steps, fast=fast)
            for name, measured in contenders.items():
                if measured["groups_per_second"] > results.get(name, {}).get("groups_per_second", 0):
                    results[name] = measured
        assert parts is not None
        return results, parts

    def time_to_accuracy(self) -> dict[str, Any]:
        """Training seconds until test A_d reaches ``--target``: parm, then the plain and reference loops."""
        args, cfg = self.args, self.cfg
        fresh, clock = self.fresh(), Clock(args.target, args.budget)
        parm_fit(cfg, self.datamodule, self.model_spec, self.out_dir / "tta", 10_000,
                 [TimeToAccuracy(clock, self.datamodule, args.eval_every)])
        tta = {"parm": clock.result()}
        if not args.skip_plain_tta:
            tta["plain"] = PlainLoop(fresh, self.datamodule, cfg, self.harness, cfg.seed).time_to_accuracy(
                Clock(args.target, args.budget), self.datamodule, args.eval_every)
        if not args.skip_reference_tta:
            reference = ReferenceLoop(fresh, self.datamodule, args.groups_per_batch, self.harness, cfg.seed)
            tta["reference"] = reference.time_to_accuracy(Clock(args.target, args.budget), self.datamodule,
                                                          args.eval_every)
        return tta


def run(args: argparse.Namespace) -> dict[str, Any]:
    bench = Bench(args)
    code = bench.fresh().code
    if not getattr(code.decoder, "unit_sum", False):
        raise SystemExit(f"bench_train compares parm with the reference algorithm, MSE(F_P(P), sum of F's "
                         f"outputs): a code with r=1, a plain-sum parity (sum or concat) and the subtraction "
                         f"decoder. Got {code!r}; time other codes with train.py (summary.json's timing).")
    results, parts = bench.throughput()
    ratios = {f"parm_vs_{name}": results["parm"]["groups_per_second"] / results[name]["groups_per_second"]
              for name in results if name != "parm"}
    tta = bench.time_to_accuracy() if args.target > 0 else {}
    return {
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"), "hardware": hardware(bench.device),
        "device": str(bench.device), "torch": torch.__version__,
        "setup": {"data": args.data, "model": args.model, "k": args.k, "encoder": args.encoder,
                  "groups_per_batch": args.groups_per_batch, "train_steps_per_epoch": bench.train_steps,
                  "reference_steps": bench.reference_steps, "parm_epochs": args.epochs, "repeats": args.repeats,
                  "warmup_steps": bench.warmup, "compile": parts.module.compile_mode,
                  "harness": {"warmup_steps": bench.harness.warmup_steps, "compile": bench.harness.compile,
                              "synchronised": bench.device.type == "cuda"},
                  "overrides": list(args.set), "cache_targets": parts.module.cache_targets,
                  "precision": str(bench.cfg.trainer.precision)},
        "throughput": results, "ratios": ratios, "time_to_accuracy": tta,
    }


def format_table(report: dict[str, Any]) -> str:
    setup = report["setup"]
    targets = "cached" if setup["cache_targets"] else "on-the-fly"
    lines = [f"bench_train: {setup['data']} {setup['model']} k={setup['k']} {setup['encoder']}, "
             f"{setup['groups_per_batch']} groups/batch, {setup['precision']}, {targets} targets, "
             f"compile={setup.get('compile')}, {report['hardware']} ({report['date']})",
             f"  {'loop':<34} {'groups/s':>10} {'images/s':>10} {'parm x':>8}"]
    parm = report["throughput"]["parm"]["groups_per_second"]
    for name, rates in report["throughput"].items():
        lines.append(f"  {name:<34} {rates['groups_per_second']:>10.0f} {rates['images_per_second']:>10.0f} "
                     f"{parm / rates['groups_per_second']:>8.2f}")
    for name, tta in report["time_to_accuracy"].items():
        seconds = f"{tta['seconds']:.1f} s" if tta["seconds"] is not None else "missed (not reached)"
        lines.append(f"  time to test A_d >= {tta['target']:.3f} ({name}): {seconds}; "
                     f"last A_d {tta['final_degraded_acc']}")
    return "\n".join(lines)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default="mnist")
    parser.add_argument("--model", default="mlp")
    parser.add_argument("--k", type=int, default=2)
    parser.add_argument("--encoder", default="sum")
    parser.add_argument("--groups-per-batch", type=int, default=64)
    parser.add_argument("--epochs", type=int, default=1, help="parm epochs per throughput measurement")
    parser.add_argument("--steps", type=int, default=0, help="reference steps per measurement (0: one epoch)")
    parser.add_argument("--warmup-steps", type=int, default=3,
                        help="untimed steps before every contender's clock starts (compilation, autotuning)")
    parser.add_argument("--repeats", type=int, default=2, help="alternate the contenders this often; keep the best")
    parser.add_argument("--target", type=float, default=0.85, help="test A_d for time-to-accuracy (0: skip)")
    parser.add_argument("--budget", type=float, default=60.0, help="training seconds before giving up on it")
    parser.add_argument("--eval-every", type=int, default=100, help="steps between A_d evaluations")
    parser.add_argument("--skip-reference-tta", action="store_true")
    parser.add_argument("--skip-plain-tta", action="store_true")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--cache-dir", default=None)
    parser.add_argument("--work-dir", default=None, help="run folders (default: a temp dir)")
    parser.add_argument("--out", default=None, help="JSON report path")
    parser.add_argument("--set", nargs="*", default=[], help="extra Hydra overrides, e.g. trainer=gpu")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    report = run(args)
    print(format_table(report))
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(report, indent=2))
        for page in rerender_citing(Path(args.out)):  # the results pages citing this file show its figures
            print(f"re-rendered {page}")
    return report


if __name__ == "__main__":
    main()
