"""scripts/compare_runs.py, parm.runs and scripts/reproduce.py on fabricated and tiny real runs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from parm.bench import compare_runs, reproduce
from parm.runs import find_runs, load_run

ROOT = Path(__file__).resolve().parents[1]


def _fake_run(folder: Path, encoder: str, k: int, a_d: float, **extra: object) -> None:
    folder.mkdir(parents=True)
    summary = {"stage": "parity", "test": {"available_acc": 0.97, "degraded_acc": a_d, "agreement": a_d + 0.01,
                                           "default_acc": 0.11},
               "overall": {"0.01": 0.97, "0.1": 0.96, "0.5": 0.9}, "timing": {"train_seconds": 12.5},
               "config": {"k": k, "r": 1, "encoder": encoder, "decoder": "subtraction", "stage": "parity",
                          "data": {"_target_": "parm.data.vision.MNISTDataModule"},
                          "model": {"_target_": "parm.models.mlp.MLP"}, "output_dir": str(folder), **extra}}
    (folder / "summary.json").write_text(json.dumps(summary))
    (folder / "csv").mkdir()
    (folder / "csv" / "metrics.csv").write_text(
        "epoch,step,train/loss,val/degraded_acc\n0,49,3.0,\n0,99,2.0,\n0,99,,0.7\n1,199,1.0,\n1,199,,0.8\n")


def test_compare_runs_table_markdown_and_plots(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    sweep = tmp_path / "multirun"
    for i, (encoder, k, a_d) in enumerate([("sum", 2, 0.88), ("sum", 4, 0.7), ("concat", 2, 0.94),
                                           ("concat", 4, 0.8)]):
        _fake_run(sweep / f"{i}_encoder={encoder},k={k}", encoder, k, a_d)
    records = compare_runs.main([str(sweep), "--out", str(tmp_path / "cmp")])
    assert [(r["encoder"], r["k"]) for r in records] == [("concat", 2), ("concat", 4), ("sum", 2), ("sum", 4)]
    text = (tmp_path / "cmp" / "comparison.md").read_text()
    assert "| mnist | mlp | concat | subtraction | 2 | 1 | - | 0.9700 | 0.9400 |" in text
    assert "f_u=0.5" in text
    for png in ("degraded_vs_k.png", "overall_curves.png", "training_curves.png"):
        assert (tmp_path / "cmp" / png).stat().st_size > 1000
    assert "0.9400" in capsys.readouterr().out
    run = load_run(sweep / "0_encoder=sum,k=2")
    assert run.curves["val/degraded_acc"] == [(99, 0.7), (199, 0.8)]
    assert run.overall == {0.01: 0.97, 0.1: 0.96, 0.5: 0.9}


def test_compare_runs_names_the_settings_a_sweep_varied(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """Runs of one setup differ by what the sweep changed (here lr rule and scheduler): that is shown, paths are not."""
    cosine = {"_target_": "torch.optim.lr_scheduler.CosineAnnealingLR", "_partial_": True, "T_max": 20}
    for i, (rule, scheduler) in enumerate([("none", {}), ("sqrt", {}), ("sqrt", cosine)]):
        _fake_run(tmp_path / "sweep" / f"{i}", "sum", 2, 0.9 - i / 100, parity={"lr_scaling": rule},
                  scheduler=scheduler, trainer={"default_root_dir": str(tmp_path / str(i))})
    records = compare_runs.main([str(tmp_path / "sweep"), "--out", str(tmp_path / "cmp"), "--no-plots"])
    assert [r["varies"] for r in records] == ["parity.lr_scaling=none scheduler=none",
                                              "parity.lr_scaling=sqrt scheduler=cosineannealinglr",
                                              "parity.lr_scaling=sqrt scheduler=none"]
    assert "parity.lr_scaling=sqrt scheduler=cosineannealinglr |" in (tmp_path / "cmp" / "comparison.md").read_text()
    assert "default_root_dir" not in capsys.readouterr().out


def test_runs_errors_say_what_to_point_at(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="no summary.json under"):
        find_runs(tmp_path)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        find_runs(tmp_path / "nope")
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "summary.json").write_text("{not json")
    with pytest.raises(ValueError, match="not valid JSON"):
        load_run(tmp_path / "bad")


def test_reproduce_writes_report_from_real_tiny_runs(tmp_path: Path, tiny_data_dir: Path) -> None:
    report = tmp_path / "accuracy.md"
    _, failed = reproduce.main(["--profile", "quick", "--only", "mnist mlp k=2", "mnist mlp k=4", "--epochs", "1",
                                "--scale", "0.1",
                                "--data-dir", str(tiny_data_dir), "--cache-dir", str(tmp_path / "cache"),
                                "--out-dir", str(tmp_path / "runs"), "--report", str(report), "--set",
                                "trainer.accelerator=cpu", "data.val_size=100", "data.eval_groups_per_batch=8",
                                "trainer.limit_train_batches=2", "logger=csv"])
    text = report.read_text()
    assert failed == 0 and "## Not run" not in text
    assert "| mnist mlp k=2 sum | 1 | 64 |" in text and "| mnist mlp k=2 concat | 1 | 64 |" in text
    assert "| mnist mlp k=4 concat | 1 | 32 |" in text, "the reference's 32 groups per batch above k = 2"
    assert "| mnist mlp k=2 learned | 1 | 64 |" in text and "| mnist mlp k=2 lac | 1 | 64 |" in text
    assert "0.886" in text, "the reference code's figure sits beside ours"
    record = json.loads(report.with_suffix(".json").read_text())
    assert record["setups"][0]["name"] == "mnist mlp k=2 sum" and record["setups"][0]["test"]["degraded_acc"] >= 0
    assert all(setup["train_seconds"] > 0 for setup in record["setups"]), "each row's training time is recorded"
    assert "Rows `learned`: `code=learned`" in text
    learned = next(setup for setup in record["setups"] if setup["name"] == "mnist mlp k=2 learned")
    assert learned["coder"]["warmup"] == 0.5 and learned["coder"]["lr_scale"] == 0.1
    assert "coder frozen for the first 50% of the epochs, then at 0.1x F_P's learning rate" in text
    assert reproduce.accuracy_page(record) == text, "the page is its JSON rendered"
    del learned["coder"]  # a record from before the warm-up says so instead of claiming today's schedule
    assert "jointly from the first step" in reproduce.accuracy_page(record)
    records = compare_runs.main([str(tmp_path / "runs"), "--out", str(tmp_path / "cmp"), "--no-plots"])
    assert len(records) == 5


def test_reproduce_full_runs_speech_from_its_experiment_and_reports_missing_data(tmp_path: Path,
                                                                                 tiny_data_dir: Path) -> None:
    """The speech setup fits the 58-clip subset (experiment batch sizes); CIFAR-100's absent file is a row
    under "Not run" with the reason, and the other setups still finish."""
    report = tmp_path / "accuracy.md"
    path, failed = reproduce.main([
        "--profile", "full", "--only", "speech", "cifar100", "--epochs", "1", "--scale", "0.05",
        "--data-dir", str(tiny_data_dir), "--cache-dir", str(tmp_path / "cache"), "--out-dir", str(tmp_path / "runs"),
        "--report", str(report), "--set", "trainer.accelerator=cpu", "trainer.limit_train_batches=2",
        "data.download=false", "logger=csv"])
    text = path.read_text()
    assert failed == 1
    assert "| speech vgg11 k=2 sum (pipeline check) | 1 | 4 |" in text, "the experiment's batch fits 58 clips"
    assert "## Not run" in text and "- cifar100 resnet18 k=2 sum: " in text.split("## Not run")[1]


def test_reproduce_refuses_an_only_that_matches_nothing_before_touching_the_report(tmp_path: Path) -> None:
    report = tmp_path / "accuracy.md"
    report.write_text("earlier results")
    with pytest.raises(SystemExit, match="matches no setup of the quick profile; its setups: mnist mlp k=2 sum"):
        reproduce.main(["--profile", "quick", "--only", "cifar", "--report", str(report)])
    assert report.read_text() == "earlier results"
