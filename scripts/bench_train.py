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

    PARM_DATA_DIR=../shared/data python scripts/bench_train.py --out outputs/bench.json
    python scripts/bench_train.py --data cifar10 --model resnet18 --set trainer=gpu --out $OUT/bench.json

Prints a table, writes JSON (``--out``). Extra Hydra overrides for the config go after ``--set``.
"""

from __future__ import annotations

import argparse
import copy
import json
import platform
import tempfile
import time
from collections.abc import Iterator, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate
from omegaconf import DictConfig
from PIL import Image
from pytorch_lightning.callbacks import ModelCheckpoint
from torch import nn

from parm import pipeline
from parm.data import transforms
from parm.data.base import TensorDataModule
from parm.lit import ParityModule

CONF_DIR = str(Path(__file__).resolve().parents[1] / "conf")


# ---- shared pieces ---------------------------------------------------------------------------------------


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def evaluate(module: ParityModule, datamodule: TensorDataModule, device: torch.device) -> dict[str, float]:
    """Test-set metrics of ``module`` (A_a, A_d, agreement, ...), through its own ``test_step``."""
    was_training = module.training
    module.eval()
    with torch.no_grad():
        for i, (x, y, index) in enumerate(datamodule.test_dataloader()):
            x, y = x.to(device), y.to(device)
            module.test_step((datamodule.normalize(x), y, index), i)
    values = module.test_metrics.compute()
    module.test_metrics.reset()
    module.train(was_training)
    return values


class Clock:
    """Training seconds with evaluation pauses taken out, and the A_d trace at each evaluation."""

    def __init__(self, target: float, budget: float) -> None:
        self.target, self.budget = target, budget
        self.elapsed, self.started = 0.0, 0.0
        self.trace: list[tuple[float, float]] = []
        self.reached: float | None = None

    def start(self) -> None:
        self.started = time.perf_counter()

    def checkpoint(self, evaluate_fn: Any, device: torch.device) -> bool:
        """Stop the clock, evaluate, restart it; True when the target is met or the budget spent."""
        sync(device)
        self.elapsed += time.perf_counter() - self.started
        a_d = float(evaluate_fn()["degraded_acc"])
        self.trace.append((round(self.elapsed, 3), round(a_d, 4)))
        if self.reached is None and a_d >= self.target:
            self.reached = self.elapsed
        self.start()
        return self.reached is not None or self.elapsed >= self.budget

    def result(self) -> dict[str, Any]:
        return {"target": self.target, "seconds": self.reached, "trace": self.trace,
                "final_degraded_acc": self.trace[-1][1] if self.trace else None}


# ---- the reference loop ----------------------------------------------------------------------------------


class PerSampleDataset(torch.utils.data.Dataset):
    """The reference's input path: one uint8 sample at a time to a normalised float tensor."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> None:
        # Stored as the files hold them: (N, H, W) grey or (N, H, W, C) colour uint8.
        x = x.cpu()
        self.x = (x[:, 0] if x.shape[1] == 1 else x.permute(0, 2, 3, 1)).numpy()
        self.y = y.cpu().numpy()
        self.mean, self.std = mean.view(-1, 1, 1), std.view(-1, 1, 1)

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        # torchvision's MNIST/CIFAR10 datasets hand out PIL images; ToTensor() turns each back into a
        # (C, H, W) float tensor in [0, 1], Normalize() standardises it: done here without torchvision.
        image = Image.fromarray(self.x[i])
        x = torch.from_numpy(np.array(image, copy=True)).view(image.size[1], image.size[0], -1)
        x = x.permute(2, 0, 1).contiguous().float().div(255.0)
        return (x - self.mean) / self.std, int(self.y[i])


class ReferenceLoop:
    """The reference algorithm: encode, F_P(P), MSE to sum_i F(X_i) with F run on every batch."""

    def __init__(self, parts: pipeline.ParityParts, datamodule: TensorDataModule, groups_per_batch: int,
                 device: torch.device, seed: int) -> None:
        self.device, self.k = device, parts.code.spec.k
        self.base = copy.deepcopy(parts.module.base_model).to(device).eval()
        self.code = copy.deepcopy(parts.code).to(device)
        self.parity = copy.deepcopy(parts.parity_models[0]).to(device).train()
        self.optimizer = torch.optim.Adam(self.parity.parameters(), lr=1e-3, weight_decay=1e-5)
        x, y = datamodule.split("train")
        dataset = PerSampleDataset(x, y, datamodule.mean, datamodule.std)
        self.loader = torch.utils.data.DataLoader(dataset, batch_size=groups_per_batch * self.k, shuffle=True,
                                                  drop_last=True, generator=torch.Generator().manual_seed(seed))
        self.module = ParityModule(self.base, [self.parity], self.code, optimizer=torch.optim.Adam,
                                   default_answer=int(datamodule.train_label_counts.argmax())).to(device)

    def step(self, x: torch.Tensor) -> None:
        x = x.to(self.device)
        groups = x.view(-1, self.k, *x.shape[1:])
        with torch.no_grad():
            target = self.base(x).view(groups.shape[0], self.k, -1).sum(1)
        loss = F.mse_loss(self.parity(self.code.encode(groups)[:, 0]), target)
        self.optimizer.zero_grad()
        loss.backward()
        self.optimizer.step()

    def throughput(self, max_steps: int) -> dict[str, float]:
        steps, started = 0, time.perf_counter()
        while steps < max_steps:
            for x, _ in self.loader:
                self.step(x)
                steps += 1
                if steps >= max_steps:
                    break
        sync(self.device)
        return _rates(steps * self.loader.batch_size, time.perf_counter() - started, self.k)

    def time_to_accuracy(self, clock: Clock, datamodule: TensorDataModule, eval_every: int) -> dict[str, Any]:
        clock.start()
        steps = 0
        while True:
            for x, _ in self.loader:
                self.step(x)
                steps += 1
                if steps % eval_every == 0 and clock.checkpoint(
                        lambda: evaluate(self.module, datamodule, self.device), self.device):
                    return clock.result()


# ---- the plain fast loop ---------------------------------------------------------------------------------


class PlainLoop:
    """parm's training algorithm without Lightning (the issue's "plain loop"), same init and settings.

    For r = 1 with the subtraction decoder, parm's loss on one erased slot equals
    ``MSE(F_P(P), sum_i F(X_i))``, which this loop computes directly.
    """

    def __init__(self, parts: pipeline.ParityParts, datamodule: TensorDataModule, cfg: DictConfig,
                 device: torch.device, seed: int) -> None:
        module = parts.module
        self.device, self.k = device, parts.code.spec.k
        self.base = copy.deepcopy(module.base_model).to(device).eval()
        self.code = copy.deepcopy(parts.code).to(device)
        self.parity = copy.deepcopy(parts.parity_models[0]).to(device).train()
        self.channels_last = module.channels_last
        self.optimizer = module.optimizer_factory(self.parity.parameters())
        self.bf16 = str(cfg.trainer.precision).startswith("bf16")
        self.datamodule, self.augment = datamodule, datamodule.augment
        x, _ = datamodule.split("train")
        self.x = x.to(device)
        self.batch = datamodule.groups_per_batch * self.k
        self.generator = torch.Generator(device).manual_seed(seed)
        self.cache: torch.Tensor | None = None
        if module.cache_targets:
            with torch.no_grad():
                self.cache = torch.cat([self._base(datamodule.normalize(chunk)) for chunk in self.x.split(4096)])

    def _layout(self, x: torch.Tensor) -> torch.Tensor:
        return x.contiguous(memory_format=torch.channels_last) if self.channels_last and x.ndim == 4 else x

    def _base(self, x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad(), torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.bf16):
            return self.base(self._layout(x)).float()

    def loss(self, index: torch.Tensor) -> torch.Tensor:
        """The training loss on the samples ``index`` of the training split (consecutive k form a group)."""
        x = self.x[index]
        if self.augment:
            x = transforms.augment(x, generator=self.generator)
        x = self.datamodule.normalize(x)
        outputs = self.cache[index] if self.cache is not None else self._base(x)
        target = outputs.view(-1, self.k, outputs.shape[-1]).sum(1)
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.bf16):
            parity = self.code.encode(x.view(-1, self.k, *x.shape[1:]))[:, 0]
            return F.mse_loss(self.parity(self._layout(parity)).float(), target)

    def step(self, index: torch.Tensor) -> None:
        loss = self.loss(index)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()

    def _batches(self) -> Iterator[torch.Tensor]:
        """Sample indices of every full batch of a fresh permutation per epoch, epoch after epoch."""
        while True:
            order = torch.randperm(len(self.x), device=self.device, generator=self.generator)
            for start in range(0, len(order) - self.batch + 1, self.batch):
                yield order[start:start + self.batch]

    def throughput(self, max_steps: int, warmup_steps: int = 0) -> dict[str, float]:
        """Rates over ``max_steps`` steps after ``warmup_steps`` untimed ones."""
        started = time.perf_counter()
        for steps, index in enumerate(self._batches(), start=1):
            self.step(index)
            if steps == warmup_steps:
                sync(self.device)
                started = time.perf_counter()
            if steps >= warmup_steps + max_steps:
                break
        sync(self.device)
        return _rates(max_steps * self.batch, time.perf_counter() - started, self.k)

    def time_to_accuracy(self, clock: Clock, datamodule: TensorDataModule, eval_every: int) -> dict[str, Any]:
        """Training seconds until test A_d reaches the clock's target (constant lr: no schedule here)."""
        module = ParityModule(self.base, [self.parity], self.code, optimizer=torch.optim.Adam,
                              default_answer=int(datamodule.train_label_counts.argmax()),
                              channels_last=self.channels_last).to(self.device)
        clock.start()
        for steps, index in enumerate(self._batches(), start=1):
            self.step(index)
            if steps % eval_every == 0 and clock.checkpoint(lambda: evaluate(module, datamodule, self.device),
                                                            self.device):
                return clock.result()
        raise AssertionError("unreachable: the batches never end")


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
            done = self.clock.checkpoint(lambda: evaluate(pl_module, self.datamodule, pl_module.device),
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

    Validation and checkpoint files are left out: they are not training, and on a GPU with short epochs
    writing two ResNet-18 checkpoints per epoch would dominate time-to-accuracy.
    """
    pl.seed_everything(cfg.seed, verbose=False)
    parts = pipeline.build_parity(cfg, datamodule, model_spec, out_dir)
    trainer = pipeline.make_trainer(cfg, out_dir, monitor="val/agreement", max_epochs=epochs,
                                    limit_val_batches=0, enable_progress_bar=False)
    trainer.callbacks = [cb for cb in trainer.callbacks if not isinstance(cb, ModelCheckpoint)]
    trainer.callbacks.extend(callbacks)
    monitor = pipeline._throughput(trainer)
    monitor.warmup_steps = warmup_steps
    trainer.fit(parts.module, datamodule=datamodule)
    rates = _rates(monitor.samples, monitor.seconds, parts.code.spec.k)
    rates["target_precompute_seconds"] = parts.module.target_seconds
    return parts, rates


# ---- speed of light ---------------------------------------------------------------------------------------


def speed_of_light(parity: nn.Module, shape: tuple[int, ...], groups: int, k: int, device: torch.device,
                   steps: int, fast: bool) -> dict[str, float]:
    """F_P forward + backward + Adam step on random parity queries ``(groups, *shape)``."""
    model = copy.deepcopy(parity).to(device).train()
    x = torch.randn(groups, *shape, device=device)
    if fast:
        model = model.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last) if x.ndim == 4 else x
    with torch.no_grad():
        target = torch.randn_like(model(x).float())
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3, weight_decay=1e-5)
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=fast)

    def step() -> None:
        with autocast:
            loss = F.mse_loss(model(x).float(), target)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    for _ in range(min(10, steps)):
        step()
    sync(device)
    started = time.perf_counter()
    for _ in range(steps):
        step()
    sync(device)
    return _rates(steps * groups * k, time.perf_counter() - started, k)


def _rates(samples: int, seconds: float, k: int) -> dict[str, float]:
    seconds = max(seconds, 1e-9)
    return {"seconds": seconds, "images_per_second": samples / seconds, "groups_per_second": samples / k / seconds}


# ---- driver ------------------------------------------------------------------------------------------------


def compose_config(args: argparse.Namespace, out_dir: Path) -> DictConfig:
    overrides = [f"data={args.data}", f"model={args.model}", f"k={args.k}", f"encoder={args.encoder}",
                 f"data.groups_per_batch={args.groups_per_batch}", f"output_dir={out_dir}", "logger=csv",
                 "trainer.enable_progress_bar=false", f"seed={args.seed}"]
    if args.data_dir:
        overrides.append(f"data_dir={args.data_dir}")
    if args.cache_dir:
        overrides.append(f"cache_dir={args.cache_dir}")
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        return compose("train", overrides=[*overrides, *args.set])


def hardware(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} torch thread(s)"


def run(args: argparse.Namespace) -> dict[str, Any]:
    torch.set_num_threads(args.threads)
    out_dir = Path(args.work_dir or tempfile.mkdtemp(prefix="parm-bench-"))
    cfg = compose_config(args, out_dir)
    pl.seed_everything(cfg.seed, workers=True)
    datamodule: TensorDataModule = instantiate(cfg.data)
    datamodule.setup("fit")
    model_spec = pipeline._model_spec(cfg.model, datamodule.input_shape, datamodule.num_classes)
    device = torch.device("cuda" if torch.cuda.is_available() and cfg.trainer.accelerator != "cpu" else "cpu")
    train_steps = len(datamodule.train_dataloader())
    steps = args.steps or train_steps
    warmup = min(args.warmup_steps, train_steps * args.epochs - 1)  # leave at least one timed step
    results: dict[str, Any] = {"speed_of_light": {}, "reference": {}, "plain": {}, "parm": {}}
    parts = None
    for repeat in range(args.repeats):  # alternate the contenders; keep each one's best
        fresh = fresh_parts(cfg, datamodule, model_spec, out_dir)  # untrained F_P, same init as parm's
        if not getattr(fresh.code.decoder, "unit_sum", False):
            raise SystemExit(f"bench_train compares parm with the reference algorithm, MSE(F_P(P), sum of F's "
                             f"outputs): a code with r=1, a plain-sum parity (sum or concat) and the subtraction "
                             f"decoder. Got {fresh.code!r}; time other codes with train.py (summary.json's timing).")
        parts, parm_rates = parm_fit(cfg, datamodule, model_spec, out_dir / f"parm{repeat}", args.epochs,
                                     warmup_steps=warmup)
        timed_steps = train_steps * args.epochs - warmup  # as many as parm's timed steps
        reference = ReferenceLoop(fresh, datamodule, args.groups_per_batch, device, cfg.seed)
        contenders = {
            "parm": parm_rates,
            "plain": PlainLoop(fresh, datamodule, cfg, device, cfg.seed).throughput(timed_steps, warmup),
            "reference": reference.throughput(steps),
            "speed_of_light": speed_of_light(fresh.parity_models[0], tuple(parts.code.encoder.parity_shape),
                                             args.groups_per_batch, args.k, device, min(steps, 300), fast=False),
        }
        if device.type == "cuda":
            contenders["speed_of_light_bf16_channels_last"] = speed_of_light(
                fresh.parity_models[0], tuple(parts.code.encoder.parity_shape), args.groups_per_batch, args.k,
                device, min(steps, 300), fast=True)
        for name, rates in contenders.items():
            if rates["groups_per_second"] > results.get(name, {}).get("groups_per_second", 0):
                results[name] = rates
    assert parts is not None
    ratios = {f"parm_vs_{name}": results["parm"]["groups_per_second"] / results[name]["groups_per_second"]
              for name in results if name != "parm"}
    tta: dict[str, Any] = {}
    if args.target > 0:
        fresh = fresh_parts(cfg, datamodule, model_spec, out_dir)
        clock = Clock(args.target, args.budget)
        parm_fit(cfg, datamodule, model_spec, out_dir / "tta", 10_000,
                 [TimeToAccuracy(clock, datamodule, args.eval_every)])
        tta["parm"] = clock.result()
        if not args.skip_plain_tta:
            tta["plain"] = PlainLoop(fresh, datamodule, cfg, device, cfg.seed).time_to_accuracy(
                Clock(args.target, args.budget), datamodule, args.eval_every)
        if not args.skip_reference_tta:
            reference = ReferenceLoop(fresh, datamodule, args.groups_per_batch, device, cfg.seed)
            tta["reference"] = reference.time_to_accuracy(Clock(args.target, args.budget), datamodule,
                                                          args.eval_every)
    return {
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"), "hardware": hardware(device),
        "device": str(device), "torch": torch.__version__,
        "setup": {"data": args.data, "model": args.model, "k": args.k, "encoder": args.encoder,
                  "groups_per_batch": args.groups_per_batch, "train_steps_per_epoch": train_steps,
                  "reference_steps": steps, "parm_epochs": args.epochs, "repeats": args.repeats,
                  "warmup_steps": warmup, "compile": parts.module.compile_mode,
                  "overrides": list(args.set), "cache_targets": parts.module.cache_targets,
                  "precision": str(cfg.trainer.precision)},
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
        seconds = f"{tta['seconds']:.1f} s" if tta["seconds"] is not None else "not reached"
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
                        help="untimed steps before parm's and the plain loop's clocks start (compilation, autotuning)")
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
    return report


if __name__ == "__main__":
    main()
