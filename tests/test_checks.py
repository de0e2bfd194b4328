"""Settings refused before anything trains, each naming the key that limits; resuming only the same run."""

from __future__ import annotations

from pathlib import Path

import pytest

from helpers import TINY, run_train
from parm.coding import CodeSpec, build_code


def test_k_beyond_what_a_coder_supports_is_refused() -> None:
    assert build_code("sum", "subtraction", CodeSpec(12, 1), (1, 28, 28), (10,)).spec.k == 12
    with pytest.raises(ValueError, match=r"encoder SumEncoder supports k <= 12, got k=13. Lower k"):
        build_code("sum", "subtraction", CodeSpec(13, 1), (1, 28, 28), (10,))


@pytest.mark.parametrize(("override", "match"), [
    ("trainer.max_epochs=-1", r"trainer.max_epochs must be an int >= 1 .*got -1: -1 would train forever"),
    ("trainer.max_epochs=0", r"trainer.max_epochs must be an int >= 1 .*got 0"),
    ("base.epochs=0", r"base.epochs must be an int >= 1"),
    ("k=0", r"k >= 2 queries per coding group, got k=0"),
    ("k=13", r"supports k <= 12, got k=13"),
    ("trainer.limit_train_batches=-1", r"trainer.limit_train_batches must be null, an int >= 0"),
    ("trainer.limit_train_batches=0", r"limit_train_batches=0 trains nothing"),
    ("trainer.check_val_every_n_epoch=0", r"trainer.check_val_every_n_epoch must be an int >= 1 or null"),
])
def test_nonsense_is_refused_before_f_trains(tmp_path: Path, tiny_data_dir: Path, override: str, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        run_train(tmp_path, tiny_data_dir, [*TINY, override])
    assert not (tmp_path / "cache").exists(), "refused before F was trained"


def test_a_too_large_batch_for_f_names_base_batch_size(tmp_path: Path, tiny_data_dir: Path) -> None:
    with pytest.raises(ValueError, match=r"fewer than one batch.*For F the batch is base.batch_size=512 samples: "
                       r"lower base.batch_size"):
        run_train(tmp_path, tiny_data_dir, [*TINY, "data=speech_commands", "stage=base", "base.batch_size=512"])


def test_resuming_with_another_code_or_f_is_refused(tmp_path: Path, tiny_data_dir: Path) -> None:
    run_train(tmp_path, tiny_data_dir, TINY)
    last = tmp_path / "run" / "checkpoints" / "last.ckpt"
    resume = [*TINY, "trainer.max_epochs=2", f"ckpt_path={last}"]
    with pytest.raises(ValueError, match=r"belongs to another run; the code \(k, r, encoder/decoder\): k=2 r=1 "
                       r"sum/subtraction there, k=3 r=1 sum/subtraction here.*drop ckpt_path"):
        run_train(tmp_path, tiny_data_dir, [*resume, "k=3"], "other_k")
    with pytest.raises(ValueError, match=r"belongs to another run; F \(base.ckpt or model, its weights\)"):
        run_train(tmp_path, tiny_data_dir, [*resume, "seed=1"], "other_f")
    with pytest.raises(FileNotFoundError, match=r"ckpt_path=.*nowhere.ckpt does not exist"):
        run_train(tmp_path, tiny_data_dir, [*TINY, f"ckpt_path={tmp_path / 'nowhere.ckpt'}"], "missing")
