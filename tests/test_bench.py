"""scripts/bench_train.py and the speed work in ParityModule: same results, every code path runs on CPU."""

from __future__ import annotations

import functools
import json
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from torch import nn

from helpers import compose_train
from parm.bench import gpu_report
from parm.bench import loops as bench_loops
from parm.bench import training as bench_train
from parm.bench.harness import Harness
from parm.coding import CodeSpec, build_code, sample_erasures
from parm.lit import FastPath, ParityModule

ROOT = Path(__file__).resolve().parents[1]

TINY_SET = ["trainer.accelerator=cpu", "data.val_size=100", "data.eval_groups_per_batch=8", "base.epochs=1"]


def test_bench_train_writes_table_and_json(tmp_path: Path, tiny_data_dir: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "bench.json"
    report = bench_train.main(["--data-dir", str(tiny_data_dir), "--cache-dir", str(tmp_path / "cache"),
                               "--work-dir", str(tmp_path / "work"), "--steps", "3", "--repeats", "1",
                               "--target", "0.15", "--budget", "2", "--eval-every", "2", "--out", str(out),
                               "--set", *TINY_SET])
    on_disk = json.loads(out.read_text())
    assert on_disk["ratios"] == report["ratios"]
    assert set(report["throughput"]) == {"parm", "plain", "reference", "speed_of_light"}
    assert all(r["groups_per_second"] > 0 for r in report["throughput"].values())
    assert report["setup"]["cache_targets"] is True
    assert set(report["time_to_accuracy"]) == {"parm", "plain", "reference"}
    assert report["time_to_accuracy"]["parm"]["trace"], "A_d was evaluated at least once"
    assert "speed_of_light" in capsys.readouterr().out


@pytest.mark.parametrize("encoder", ["sum", "concat"])
def test_plain_loop_loss_is_parms_training_loss(tmp_path: Path, tiny_data_dir: Path, encoder: str) -> None:
    """The plain contender runs parm's algorithm: for r = 1 its loss equals the module's on any batch."""
    from hydra.utils import instantiate

    from parm import pipeline

    cfg = compose_train(tmp_path, tiny_data_dir, [f"encoder={encoder}", "data.val_size=20", "base.epochs=1",
                                                  "data.groups_per_batch=8", "trainer.accelerator=cpu"])
    datamodule = instantiate(cfg.data)
    datamodule.setup("fit")
    spec = pipeline.model_spec(cfg.model, datamodule.input_shape, datamodule.num_classes)
    parts = bench_train.fresh_parts(cfg, datamodule, spec, tmp_path)
    plain = bench_loops.PlainLoop(parts, datamodule, cfg, Harness(torch.device("cpu")), seed=0)
    index = torch.randperm(len(datamodule.split("train")[0]))[:16]
    x, y = datamodule.split("train")
    module = parts.module
    module.log = lambda *args, **kwargs: None  # type: ignore[method-assign]  # no trainer here
    parm_loss = module.training_step((datamodule.normalize(x[index]), y[index], index), 0)
    torch.testing.assert_close(plain.loss(index), parm_loss)


def test_bench_refuses_codes_the_reference_algorithm_does_not_cover(tmp_path: Path, tiny_data_dir: Path) -> None:
    with pytest.raises(SystemExit, match="r=1, a plain-sum parity"):
        bench_train.main(["--data-dir", str(tiny_data_dir), "--cache-dir", str(tmp_path / "cache"),
                          "--work-dir", str(tmp_path / "work"), "--target", "0", "--k", "3", "--set", *TINY_SET,
                          "r=2"])


def test_reference_dataset_normalises_like_the_datamodule(tmp_path: Path, tiny_data_dir: Path) -> None:
    from hydra.utils import instantiate

    cfg = compose_train(tmp_path, tiny_data_dir, ["data=cifar10", "data.val_size=20", "data.groups_per_batch=8"])
    datamodule = instantiate(cfg.data)
    datamodule.setup("fit")
    x, y = datamodule.split("train")
    dataset = bench_loops.PerSampleDataset(x, y, datamodule.mean, datamodule.std)
    sample, label = dataset[3]
    torch.testing.assert_close(sample, datamodule.normalize(x[3:4])[0])
    assert label == int(y[3])


def _module(base: nn.Module, **kwargs: object) -> ParityModule:
    code = build_code("sum", "subtraction", CodeSpec(3, 1), (6,), (4,))
    return ParityModule(base, [nn.Linear(6, 4)], code, optimizer=functools.partial(torch.optim.Adam), **kwargs)


@pytest.mark.parametrize("k,r", [(3, 1), (5, 2), (6, 3)])
def test_erased_pairs_match_boolean_indexing(k: int, r: int) -> None:
    torch.manual_seed(0)
    code = build_code("sum", "subtraction", CodeSpec(k, r), (6,), (4,))
    module = ParityModule(nn.Linear(6, 4), [nn.Linear(6, 4) for _ in range(r)], code,
                          optimizer=functools.partial(torch.optim.Adam))
    targets, parities = torch.randn(9, k, 4), torch.randn(9, r, 4)
    available, erased = sample_erasures(code.spec, 9, generator=torch.Generator().manual_seed(k))
    estimate, truth = module._erased_pairs(targets, parities, available, erased)
    missing = ~available[:, :k]
    reference = module.code.decode(targets.masked_fill(missing[..., None], 0.0), parities, available)
    torch.testing.assert_close(estimate, reference[missing])
    torch.testing.assert_close(truth, targets[missing])


def test_precomputed_targets_equal_lazy_cache() -> None:
    class FakeData:
        def split(self, stage: str) -> tuple[torch.Tensor, torch.Tensor]:
            return x, torch.zeros(len(x), dtype=torch.long)

        def normalize(self, t: torch.Tensor) -> torch.Tensor:
            return t * 2

    class FakeTrainer:
        datamodule = FakeData()

    x = torch.randn(10, 6)
    base = nn.Linear(6, 4)
    module = _module(base)
    module._trainer = FakeTrainer()  # type: ignore[assignment]
    module.on_train_start()
    module._trainer = None
    index = torch.tensor([7, 1, 4])
    torch.testing.assert_close(module.targets(torch.zeros(3, 6), index), base(x[index] * 2).detach())
    assert module.targets.complete and module.target_seconds >= 0


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_graph_precompute_keeps_every_chunk() -> None:
    """With parity.compile=reduce-overhead, F's chunks come from one CUDA graph replayed; each replay
    overwrites the last one's output, so the target cache must hold copies, not the graph's memory."""
    class Data:
        def split(self, stage: str) -> tuple[torch.Tensor, torch.Tensor]:
            return x, torch.zeros(len(x), dtype=torch.long)

        def normalize(self, t: torch.Tensor) -> torch.Tensor:
            return t

    device = torch.device("cuda")
    x = torch.randn(3 * 4096, 6, device=device)  # three full chunks: the same graph replayed
    base = nn.Linear(6, 4).to(device)
    module = ParityModule(base, [nn.Linear(6, 4)], build_code("sum", "subtraction", CodeSpec(2, 1), (6,), (4,)),
                          optimizer=functools.partial(torch.optim.Adam),
                          fast=FastPath(compile="reduce-overhead")).to(device)
    module._trainer = SimpleNamespace(datamodule=Data())  # type: ignore[assignment]
    module.on_train_start()
    with torch.no_grad():
        torch.testing.assert_close(module.targets.values, base(x), rtol=1e-4, atol=1e-4)


def test_channels_last_and_compile_paths_run_on_cpu() -> None:
    conv = nn.Sequential(nn.Conv2d(1, 2, 3, padding=1), nn.Flatten(), nn.Linear(2 * 16, 4))
    code = build_code("sum", "subtraction", CodeSpec(2, 1), (1, 4, 4), (4,))
    module = ParityModule(conv, [nn.Sequential(nn.Conv2d(1, 2, 3, padding=1), nn.Flatten(), nn.Linear(32, 4))],
                          code, optimizer=functools.partial(torch.optim.Adam), fast=FastPath(channels_last=True))
    loss = module.training_step((torch.randn(8, 1, 4, 4), torch.zeros(8, dtype=torch.long), torch.arange(8)), 0)
    loss.backward()
    assert torch.isfinite(loss)
    compiled = ParityModule(nn.Linear(6, 4), [nn.Linear(6, 4)], build_code("sum", "subtraction", CodeSpec(2, 1),
                            (6,), (4,)), optimizer=functools.partial(torch.optim.Adam), fast=FastPath(compile=True))
    assert set(compiled.state_dict()) == {"base_model.weight", "base_model.bias", "parity_models.0.weight",
                                          "parity_models.0.bias"}, "compiled wrappers must not rename weights"


def test_compile_modes_are_validated_and_train_on_cpu(tmp_path: Path) -> None:
    from parm.lit.speed import compile_mode

    assert [compile_mode(v) for v in (False, None, True, "reduce-overhead")] == [None, None, "default",
                                                                                 "reduce-overhead"]
    with pytest.raises(ValueError, match="parity.compile must be"):
        compile_mode("fast")
    cfg = compose_train(tmp_path, tmp_path, ["parity.compile=fast"])
    from parm import pipeline

    with pytest.raises(ValueError, match="reduce-overhead"):  # refused before F would be trained
        pipeline.build_parity(cfg, None, {}, tmp_path)  # type: ignore[arg-type]


@pytest.mark.slow
def test_compiled_training_matches_eager() -> None:
    """A compile mode changes how F_P runs, not what it computes: same losses over updating steps."""
    def run(mode: bool | str) -> list[float]:
        torch.manual_seed(0)
        code = build_code("sum", "subtraction", CodeSpec(2, 1), (6,), (4,))
        module = ParityModule(nn.Linear(6, 4), [nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 4))], code,
                              optimizer=functools.partial(torch.optim.SGD, lr=0.1),
                              fast=FastPath(compile=mode))
        module.log = lambda *args, **kwargs: None  # type: ignore[method-assign]  # no trainer here
        optimizer = module.configure_optimizers()
        data = torch.randn(4, 8, 6, generator=torch.Generator().manual_seed(1))
        losses = []
        for step, x in enumerate(data):
            torch.manual_seed(step)  # the same erasures in both runs
            loss = module.training_step((x, torch.zeros(8, dtype=torch.long), torch.arange(8)), step)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            losses.append(float(loss))
        return losses

    assert run("reduce-overhead") == pytest.approx(run(False), rel=1e-5)


def test_throughput_monitor_leaves_out_warmup_steps() -> None:

    from parm.lit import ThroughputMonitor

    module = SimpleNamespace(device=torch.device("cpu"))
    batch = (torch.zeros(8, 2),)
    monitor = ThroughputMonitor(warmup_steps=2)
    for epoch_batches in (1, 4):  # warm-up spans the first epoch's only batch and the second's first
        monitor.on_train_epoch_start(None, module)  # type: ignore[arg-type]
        for i in range(epoch_batches):
            monitor.on_train_batch_end(None, module, None, batch, i)  # type: ignore[arg-type]
        monitor.on_train_epoch_end(None, module)  # type: ignore[arg-type]
    assert monitor.samples == 3 * 8 and monitor.seconds >= 0
    with pytest.raises(ValueError, match="warmup_steps"):
        ThroughputMonitor(warmup_steps=-1)


def test_lr_scaling_rule(tmp_path: Path) -> None:
    from parm.pipeline import scaled_lr

    for rule, expected in (("none", 1e-3), ("linear", 8e-3), ("sqrt", 1e-3 * 8 ** 0.5)):
        cfg = compose_train(tmp_path, tmp_path, ["data.groups_per_batch=512", f"parity.lr_scaling={rule}"])
        assert scaled_lr(cfg) == pytest.approx(expected)
    with pytest.raises(ValueError, match="parity.lr_scaling must be one of"):
        scaled_lr(compose_train(tmp_path, tmp_path, ["parity.lr_scaling=cubic"]))


@pytest.mark.slow
def test_gpu_suite_runs_at_tiny_size_on_cpu(tmp_path: Path) -> None:
    shared = Path(os.environ.get("PARM_SHARED_DATA", ROOT.parent / "shared" / "data"))
    if not (shared / "cifar10_gpu_subset_index.npz").exists():
        pytest.skip("the shared CIFAR-10 files are not here (set PARM_SHARED_DATA)")
    env = {**os.environ, "PARM_SUITE_TINY": "1", "OUT": str(tmp_path / "out"), "PYTHON": sys.executable,
           "PARM_SHARED_DATA": str(shared), "PARM_SUITE_WORK": str(tmp_path / "work")}
    done = subprocess.run(["bash", str(ROOT / "scripts" / "gpu_suite.sh")], env=env, capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    names = {p.name for p in (tmp_path / "out").iterdir()}
    assert {"bench_b64.json", "bench_fast_cache_true.json", "bench_fast_cache_false.json",
            "accuracy_gpu.md", "suite.log"} <= names
    assert "| cifar10 resnet18 k=2 concat |" in done.stdout.splitlines()[-1] or "cifar10 resnet18" in done.stdout


def _bench_report(date: str, parm: float, reference: float, tta: dict[str, object]) -> dict[str, object]:
    rates = {name: {"groups_per_second": g, "images_per_second": 2 * g, "seconds": 1.0}
             for name, g in (("parm", parm), ("plain", parm * 1.05), ("reference", reference))}
    return {"date": date, "hardware": "NVIDIA H200", "device": "cuda", "torch": "2.11",
            "setup": {"data": "cifar10", "model": "resnet18", "k": 2, "encoder": "concat", "groups_per_batch": 512,
                      "precision": "bf16-mixed", "cache_targets": True, "compile": None},
            "throughput": rates, "ratios": {}, "time_to_accuracy": tta}


def test_gpu_report_checks_the_issue_targets_and_records_the_run(tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "hardware.txt").write_text("torch 2.11 cuda True NVIDIA H200")
    reference_tta = {"target": 0.52, "seconds": None, "trace": [[150.0, 0.515]], "final_degraded_acc": 0.515}
    parm_tta = {"target": 0.58, "seconds": 6.0, "trace": [[2.0, 0.40], [4.5, 0.53], [6.0, 0.59]],
                "final_degraded_acc": 0.59}
    reports = {"bench_b64": _bench_report("2027-01-02T10:00:00+00:00", 9_000, 2_000, {"reference": reference_tta}),
               "bench_fast_cache_true": _bench_report("2027-01-02T10:03:00+00:00", 36_000, 2_000, {"parm": parm_tta}),
               "bench_fast_cache_false": _bench_report("2027-01-02T10:04:00+00:00", 26_000, 2_000, {})}
    for name, report in reports.items():
        (out / f"{name}.json").write_text(json.dumps(report))
    page = gpu_report.main([str(out), "--results", str(tmp_path / "results")])
    assert page is not None and page.name == "gpu_2027-01-02.md"
    text = page.read_text()
    assert "parm, cached targets, groups/s: 36,000.0 (target ≥ 35,000.0): met" in text
    assert "parm, targets on the fly, groups/s: 26,000.0 (target ≥ 27,000.0): missed" in text
    assert "reference's final A_d 0.515: 4.5 s (target ≤ 5.0 s): met" in text
    assert "parm (cached) / the reference loop's measured 2,000 groups/s: 18.0× (target ≥ 30.0×): missed" in text
    assert "NVIDIA H200" in text and (tmp_path / "results" / "gpu_2027-01-02_bench_b64.json").exists()
    reports["bench_fast_cache_true"]["time_to_accuracy"]["parm"]["trace"] = [[2.0, 0.40], [9.0, 0.50]]  # type: ignore[index]
    (out / "bench_fast_cache_true.json").write_text(json.dumps(reports["bench_fast_cache_true"]))
    text, _ = gpu_report.render(out)
    assert "final A_d 0.515: not reached in 9.0 s (last A_d 0.500) (target ≤ 5.0 s): missed" in text
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(SystemExit, match="no bench_"):
        gpu_report.main([str(empty), "--stdout"])


def test_harness_gives_every_contender_the_same_untimed_warmup() -> None:
    calls: list[float] = []
    harness = Harness(torch.device("cpu"), warmup_steps=4)
    rates = harness.time(lambda: calls.append(1.0), steps=6, samples_per_step=10, k=2)
    assert len(calls) == 10 and rates["images_per_second"] > 0
    assert rates["groups_per_second"] == pytest.approx(rates["images_per_second"] / 2)


def test_every_contender_runs_under_the_bench_compile_setting(tmp_path: Path, tiny_data_dir: Path) -> None:
    """The plain and reference loops compile F_P as parm does when parity.compile is set (no longer eager)."""
    from hydra.utils import instantiate

    from parm import pipeline

    cfg = compose_train(tmp_path, tiny_data_dir, ["data.val_size=20", "base.epochs=1", "data.groups_per_batch=8",
                                                  "trainer.accelerator=cpu", "parity.compile=true"])
    datamodule = instantiate(cfg.data)
    datamodule.setup("fit")
    spec = pipeline.model_spec(cfg.model, datamodule.input_shape, datamodule.num_classes)
    parts = bench_train.fresh_parts(cfg, datamodule, spec, tmp_path)
    harness = Harness(torch.device("cpu"), warmup_steps=1, compile="default")
    plain = bench_loops.PlainLoop(parts, datamodule, cfg, harness, seed=0)
    reference = bench_loops.ReferenceLoop(parts, datamodule, 8, harness, seed=0)
    assert parts.module.compile_mode == plain.calls.mode == "default"
    assert reference.parity_call is not reference.parity, "the reference loop's F_P is compiled too"
    eager = bench_loops.ReferenceLoop(parts, datamodule, 8, Harness(torch.device("cpu")), seed=0)
    assert eager.parity_call is eager.parity
