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


def test_learned_targets_are_checked_from_the_records_with_the_warmup(tmp_path: Path) -> None:
    tiled = "parm.models.tiled.TiledParity"
    settings = {"learned": {"coder_warmup": 0.5, "coder_lr_scale": 0.1, "parity_model": tiled}}
    now = _record("mnist", 3, [("parm-sum", 2, 0.85), ("parm-learned", 2, 0.84), ("parm-concat", 4, 0.50),
                               ("parm-learned", 4, 0.88)])
    k8 = _record("mnist", 10, [("parm-sum", 8, 0.45), ("parm-concat-tiled", 8, 0.72), ("parm-learned", 8, 0.70)])
    for stem, record in (("codes_mnist_learned_warmup_e3", now), ("codes_mnist_learned_k8_e10", k8)):
        (tmp_path / f"{stem}.json").write_text(json.dumps({**record, "code_settings": settings}))
    page = render(tmp_path)
    assert "Learned code: `code=learned` with the coder frozen at its hand-made start for the first 0.5 of the " \
           "epochs, then at 0.1 x F_P's lr; F_P `parm.models.tiled.TiledParity`." in page
    assert "- k = 2: learned >= sum: **missed**" in page and "- k = 4: learned >= concat: **met**" in page
    assert "### MNIST k = 8, every parity model trained 10 epochs" in page
    assert "- k = 8: best learned >= 0.526: **met**" in page
    ablation = {**_record("mnist", 10, [("parm-learned", 8, 0.30)]), "overrides": ["parity.coder_warmup=0"],
                "code_settings": {"learned": {**settings["learned"], "coder_warmup": 0.0, "coder_lr_scale": 1.0}}}
    (tmp_path / "codes_mnist_learned_k8_nowarmup_e10.json").write_text(json.dumps(ablation))
    page = render(tmp_path)
    assert "| parm-learned-no-warmup |" in page and "| 8 | 0.9800 | 0.4500 | 0.7000 | 0.7200 | 0.3000 |" in page
    assert "`learned-no-warmup` (`codes_mnist_learned_k8_nowarmup_e10.json`): `code=learned` with no warm-up, " \
           "the coder at 1 x F_P's lr; F_P " \
           "`parm.models.tiled.TiledParity`; `parity.coder_warmup=0`." in page
    assert "- k = 8: best learned >= 0.526: **met**" in page, "the ablation is not the default: not counted"
    (tmp_path / "codes_mnist_learned_k8_e10.json").write_text(
        json.dumps({**k8, "code_settings": settings, "results": k8["results"][:2] + [
            {"method": "parm-learned", "k": 8, "available_acc": 0.98, "degraded_acc": 0.5}]}))
    assert "- k = 8: best learned >= 0.526: **missed**" in render(tmp_path)
    assert "Fashion-MNIST, `codes_fashion_mnist_learned_warmup_e3.json`: not measured." in page


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
    assert "- k = 2: learned >= sum (earlier defaults): **met**" in page
    assert "- k = 4: learned >= concat (earlier defaults): **missed**" in page
    assert "- k = 8: best learned >= 0.526 (earlier defaults): **met**" in page
    assert "MNIST k = 8, `codes_mnist_learned_k8_e10.json`: not measured." in page
    assert "- k = 2: A_d >= 0.9: **missed**" in page
    assert "best: parm-concat-tiled, A_a - A_d = 4.5 points; A_d >= 0.845: **met**" in page
    assert "Fashion-MNIST: not measured." in page
