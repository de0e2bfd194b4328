"""docs/results/learned_codes.md is rendered from committed JSON, with the issue's targets checked."""

from __future__ import annotations

import json
from pathlib import Path

from parm.bench.learned_codes import render

RESULTS = Path(__file__).resolve().parents[1] / "docs" / "results"


def _record(data: str, epochs: int, rows: list[tuple[str, int, float]], available: float = 0.98) -> dict:
    return {"data": data, "epochs": epochs, "timing": {"parm-learned@2": 12.0}, "loadavg_at_end": [3.0, 2.0, 1.0],
            "results": [{"method": m, "k": k, "available_acc": available, "degraded_acc": a} for m, k, a in rows]}


def test_committed_page_is_rendered_from_the_committed_json() -> None:
    assert (RESULTS / "learned_codes.md").read_text() == render(RESULTS)


def test_targets_are_checked_from_the_records(tmp_path: Path) -> None:
    learned = _record("mnist", 5, [("parm-sum", 2, 0.90), ("parm-learned", 2, 0.95), ("parm-concat", 4, 0.70),
                                   ("parm-learned", 4, 0.60), ("parm-learned", 8, 0.40),
                                   ("parm-learned-tiled", 8, 0.90)])
    (tmp_path / "codes_mnist_learned_e3.json").write_text(json.dumps(learned))
    lac = _record("mnist", 5, [("parm-lac", 2, 0.89), ("parm-sum", 2, 0.9)])
    (tmp_path / "codes_mnist_lac_e3.json").write_text(json.dumps(lac))
    quality = _record("fashion_mnist", 20, [("parm-concat-tiled", 2, 0.85), ("parm-sum", 2, 0.80)], available=0.895)
    (tmp_path / "codes_fashion_mnist_reference_f_k2_e20.json").write_text(json.dumps(quality))
    reproduced = {"setups": [{"name": "mnist mlp k=2 concat", "test": {"available_acc": 0.977, "degraded_acc": 0.966},
                              "epochs": 20, "train_seconds": 40.0}]}
    (tmp_path / "accuracy.json").write_text(json.dumps(reproduced))
    page = render(tmp_path)
    assert "- mnist mlp k=2 concat: A_a 0.9770, A_d 0.9660, gap 1.1 points (within 3: **met**); 20 epochs" in page
    assert "- k = 2: learned >= sum: **met**" in page
    assert "- k = 4: learned >= concat: **missed**" in page
    assert "- k = 8: best learned >= 0.526: **met**" in page
    assert "- k = 2: A_d >= 0.9: **missed**" in page
    assert "best: parm-concat-tiled, A_a - A_d = 4.5 points; A_d >= 0.845: **met**" in page
    assert "Fashion-MNIST: not measured." in page
