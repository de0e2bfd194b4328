"""The pipeline's public API: one compose(), callbacks from the `callbacks` config group."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from pytorch_lightning.callbacks import ModelCheckpoint

from helpers import compose_train
from parm import pipeline
from parm.lit import HostProgressBar, ThroughputMonitor

ROOT = Path(__file__).resolve().parents[1]


def test_default_callbacks_keep_last_and_best_by_the_stage_monitor(tmp_path: Path) -> None:
    cfg = compose_train(tmp_path, tmp_path)
    callbacks = pipeline.build_callbacks(cfg, tmp_path / "run", monitor="val/agreement")
    assert [type(cb) for cb in callbacks] == [ModelCheckpoint, ThroughputMonitor, HostProgressBar]
    checkpoint = callbacks[0]
    assert isinstance(checkpoint, ModelCheckpoint)
    assert (checkpoint.monitor, checkpoint.save_last, checkpoint.dirpath) == (
        "val/agreement", True, str(tmp_path / "run" / "checkpoints"))
    quiet = pipeline.build_callbacks(cfg, tmp_path, monitor="val/acc", progress=False)
    assert not any(isinstance(cb, HostProgressBar) for cb in quiet)


def test_bench_callbacks_select_the_clock_alone(tmp_path: Path) -> None:
    cfg = compose_train(tmp_path, tmp_path, ["callbacks=bench", "callbacks.throughput.warmup_steps=3"])
    trainer = pipeline.make_trainer(cfg, tmp_path, monitor="val/x", enable_progress_bar=False)
    assert trainer.checkpoint_callback is None and pipeline.best_checkpoint(trainer) == ""
    assert pipeline.throughput_monitor(trainer).warmup_steps == 3


def test_callbacks_config_errors_name_the_fix(tmp_path: Path) -> None:
    cfg = compose_train(tmp_path, tmp_path, ["+callbacks.bad._target_=collections.OrderedDict"])
    with pytest.raises(TypeError, match=r"callbacks.bad builds OrderedDict, which is not a Lightning Callback"):
        pipeline.build_callbacks(cfg, tmp_path, monitor="val/x")
    cfg = compose_train(tmp_path, tmp_path, ["~callbacks.throughput"])
    trainer = pipeline.make_trainer(cfg, tmp_path, monitor="val/x", enable_progress_bar=False)
    with pytest.raises(ValueError, match="Keep callbacks.throughput"):
        pipeline.throughput_monitor(trainer)


def test_compose_reads_the_repository_config_or_says_where_to_point(monkeypatch: pytest.MonkeyPatch,
                                                                     tmp_path: Path) -> None:
    assert pipeline.conf_dir() == ROOT / "conf"
    assert pipeline.compose(["output_dir=x", "k=4"]).code.k == 4
    monkeypatch.setenv("PARM_CONF_DIR", str(tmp_path))
    with pytest.raises(FileNotFoundError, match="set PARM_CONF_DIR to a folder holding train.yaml"):
        pipeline.compose(["output_dir=x"])


def test_no_caller_reaches_into_private_pipeline_names_or_composes_by_hand() -> None:
    callers = [*ROOT.glob("scripts/*.py"), *ROOT.glob("tests/**/*.py"), ROOT / "train.py", *ROOT.glob("src/**/*.py")]
    private = re.compile(r"pipeline\._[a-z]|from parm\.pipeline(\.\w+)? import [^\n]*\b_[a-z]")
    for path in callers:
        text = path.read_text()
        assert not private.search(text), f"{path.name} uses a private pipeline name"
        if path.name != "config.py":
            assert "initialize_config_dir" not in text.replace('"initialize_config_dir"', ""), \
                f"{path.name} composes the config itself: use parm.pipeline.compose"
