"""Learned coders that start as a hand-made code, and the Learning-a-Code mode (F answers the parities)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from helpers import TINY, compose_train, run_train
from parm.artifacts import base_as_parity, load_parity, references_base, weights_digest
from parm.coding import CodeSpec, build_code
from parm.models.checkpoint import load_model, save_model
from parm.serving.worker import WorkerSpec, load_instance_model

IMAGE, CLASSES = (1, 28, 28), (10,)


@pytest.mark.parametrize(("k", "r", "init", "arch"), [
    (2, 1, "sum", "mlp"), (4, 1, "concat", "conv"), (3, 2, "sum", "conv"), (8, 1, "auto", "auto"),
    (4, 2, "concat", "mlp"),
])
def test_learned_code_starts_as_its_init_code(k: int, r: int, init: str, arch: str) -> None:
    torch.manual_seed(0)  # a narrow conv encoder's ReLUs can all be dead for some draws: no gradient to check
    spec = CodeSpec(k, r)
    learned = build_code("learned", "learned", spec, IMAGE, CLASSES, {"init": init, "arch": arch}, {"init": "auto"})
    hand_made = build_code("concat" if init in ("concat", "auto") else "sum", "subtraction", spec, IMAGE, CLASSES)
    x = torch.randn(6, k, *IMAGE)
    assert torch.allclose(learned.encode(x), hand_made.encode(x), atol=1e-6)
    outputs, parities = torch.randn(6, k, 10), torch.randn(6, r, 10)
    available = torch.ones(6, k + r, dtype=torch.bool)
    available[:, :r] = False  # r data outputs missing: the most the code recovers
    assert torch.allclose(learned.decode(outputs, parities, available), hand_made.decode(outputs, parities, available),
                          atol=1e-5)
    # ... and it can learn: the zero-started corrections receive gradients.
    loss = learned.encode(x).square().mean() + learned.decode(outputs, parities, available).square().mean()
    loss.backward()
    assert learned.encoder.net[-1].weight.grad.abs().sum() > 0
    assert learned.decoder.net[-1].weight.grad.abs().sum() > 0


def test_auto_arch_is_an_mlp_for_mnist_sized_queries_and_conv_above() -> None:
    small = build_code("learned", "learned", CodeSpec(2), IMAGE, CLASSES, {"arch": "auto"})
    large = build_code("learned", "learned", CodeSpec(2), (3, 32, 32), CLASSES, {"arch": "auto"})
    assert (small.encoder.arch, large.encoder.arch) == ("mlp", "conv")


def test_learned_coder_settings_are_checked() -> None:
    with pytest.raises(ValueError, match="init must be one of"):
        build_code("learned", "learned", CodeSpec(2), IMAGE, CLASSES, {"init": "berrut-ish"})
    with pytest.raises(ValueError, match="init must be one of"):
        build_code("learned", "learned", CodeSpec(2), IMAGE, CLASSES, {}, {"init": "sum"})
    with pytest.raises(ValueError, match="needs a linear code"):
        build_code("learned", "learned", CodeSpec(2), IMAGE, CLASSES, {"init": "none"}, {"init": "subtraction"})
    # A decoder asked for "auto" next to a code with no linear part falls back to the MLP alone.
    assert build_code("learned", "learned", CodeSpec(2), IMAGE, CLASSES, {}, {"init": "auto"}).decoder.subtract is None


def test_code_lac_selects_f_as_parity_model(tmp_path: Path) -> None:
    cfg = compose_train(tmp_path, tmp_path, ["code=lac", "k=5"])
    assert cfg.parity_model.use_base and (cfg.code.encoder, cfg.code.decoder, cfg.code.k) == ("learned", "learned", 5)
    assert cfg.callbacks.restart._target_.endswith("RestartIfStuck") and "checkpoint" in cfg.callbacks


def test_base_as_parity_needs_queries_f_can_answer() -> None:
    code = build_code("learned", "learned", CodeSpec(2), IMAGE, CLASSES)
    f = nn.Sequential(nn.Flatten(), nn.Linear(784, 10))
    spec, models = base_as_parity(code, IMAGE, f)
    assert spec == {"use_base": True} and models == [f]
    with pytest.raises(ValueError, match="must have F's input shape"):
        base_as_parity(code, (1, 14, 14), f)


def test_learning_a_code_trains_only_the_code_and_ships_a_reference_to_f(tmp_path: Path, tiny_data_dir: Path) -> None:
    summary = run_train(tmp_path, tiny_data_dir, [*TINY, "code=lac"])
    base, _ = load_model(summary["artifacts"]["base"])
    payload = torch.load(summary["artifacts"]["parity"], weights_only=True)
    assert not any(key.startswith("parity_models") for key in payload["state_dict"]), "F's weights are not copied"
    assert payload["meta"]["meta"]["base_digest"] == weights_digest(base)
    assert references_base(summary["artifacts"]["parity"]), "servers ship F's file with this artifact (ray backend)"
    assert not references_base(summary["artifacts"]["base"])
    artifact = load_parity(summary["artifacts"]["parity"])
    assert weights_digest(artifact.parity_models[0]) == weights_digest(base), "the frozen F, unchanged by training"
    assert 0.0 <= summary["test"]["degraded_acc"] <= 1.0
    # A parity instance of the server runs F itself.
    served = load_instance_model(WorkerSpec("parity-0", summary["artifacts"]["parity"], parity_index=0,
                                            base=summary["artifacts"]["base"]))
    x = torch.randn(3, *IMAGE)
    assert torch.equal(served(x), base.eval()(x))


def test_learning_a_code_artifact_refuses_another_f(tmp_path: Path, tiny_data_dir: Path) -> None:
    summary = run_train(tmp_path, tiny_data_dir, [*TINY, "code=lac"])
    base, header = load_model(summary["artifacts"]["base"])
    other = tmp_path / "other_f.pt"
    with torch.no_grad():
        next(base.parameters()).add_(1.0)
    save_model(other, base, header["spec"])
    with pytest.raises(ValueError, match="not the F that the code"):
        load_parity(summary["artifacts"]["parity"], base=other)
    with pytest.raises(FileNotFoundError, match="Learning-a-Code artifact"):
        load_parity(summary["artifacts"]["parity"], base=tmp_path / "missing.pt")


def test_restart_if_stuck_reinitialises_what_trains_and_leaves_f(tmp_path: Path) -> None:
    from types import SimpleNamespace

    from parm.lit.restart import RestartIfStuck

    code = build_code("learned", "learned", CodeSpec(2), IMAGE, CLASSES, {"init": "concat"}, {"init": "auto"})
    f = nn.Sequential(nn.Flatten(), nn.Linear(784, 10)).requires_grad_(False)
    with torch.no_grad():
        code.encoder.net[-1].weight.fill_(1.0)
    module = SimpleNamespace(code=code, parity_models=[f])
    before = [p.clone() for p in code.encoder.net[0].parameters()]
    f_before = f[1].weight.clone()
    optimizer = torch.optim.Adam(code.parameters())
    optimizer.state[next(code.parameters())] = {"step": torch.tensor(1.0)}
    trainer = SimpleNamespace(callback_metrics={"val/agreement": torch.tensor(0.1)}, current_epoch=0,
                              optimizers=[optimizer])
    callback = RestartIfStuck(threshold=0.3, max_restarts=1)
    callback.on_train_epoch_end(trainer, module)  # type: ignore[arg-type]
    assert callback.restarts == 1 and not optimizer.state
    assert not torch.equal(before[0], code.encoder.net[0].weight)
    assert code.encoder.net[-1].weight.abs().sum() == 0, "the correction starts at zero again"
    assert torch.equal(f_before, f[1].weight), "F is never touched"
    callback.on_train_epoch_end(trainer, module)  # type: ignore[arg-type]
    assert callback.restarts == 1, "at most max_restarts"
    healthy = RestartIfStuck(threshold=0.3)
    healthy.on_train_epoch_end(SimpleNamespace(callback_metrics={"val/agreement": torch.tensor(0.9)},  # type: ignore[arg-type]
                                               current_epoch=0, optimizers=[]), module)
    assert healthy.restarts == 0
    with pytest.raises(ValueError, match="threshold must be in"):
        RestartIfStuck(threshold=0.0)
