"""Results pages are rendered from committed JSON: re-rendering every page changes nothing."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from parm.bench.pages import tta_phrase
from parm.results import ROOT, pages, render_page, render_text, rerender_citing


@pytest.mark.parametrize("page", pages(), ids=lambda p: str(p.relative_to(ROOT)))
def test_every_page_equals_its_rendering_from_json(page: Path) -> None:
    assert render_page(page) == page.read_text(), (
        f"{page.relative_to(ROOT)} differs from what its JSON renders: run `python -m parm.results`")


def test_the_pages_with_figures_are_rendered() -> None:
    rendered = {p.relative_to(ROOT).as_posix() for p in pages()}
    assert {"README.md", "docs/results/bench_train_cpu.md"} <= rendered
    bench = (ROOT / "docs/results/bench_train_cpu.md").read_text()
    record = json.loads((ROOT / "docs/results/bench_train_cpu_mnist.json").read_text())
    seconds = record["time_to_accuracy"]["reference"]["seconds"]
    assert f"reference {seconds:.1f} s" in bench, f"the reference's time to accuracy is its JSON's {seconds:.2f} s"


def test_a_typed_in_figure_is_caught(tmp_path: Path) -> None:
    record = {"results": [{"method": "parm-sum", "k": 8, "degraded_acc": 0.5261}]}
    (tmp_path / "codes.json").write_text(json.dumps(record))
    page = tmp_path / "page.md"
    page.write_text("A_d <!-- render: codes_ad codes.json parm-sum 8 -->0.879<!-- end render -->.")
    assert render_page(page) == "A_d <!-- render: codes_ad codes.json parm-sum 8 -->0.526<!-- end render -->."
    with pytest.raises(ValueError, match=r"no parm-concat at k=8 in the record; it holds \[\('parm-sum', 8\)\]"):
        render_text("<!-- render: codes_ad codes.json parm-concat 8 --><!-- end render -->", tmp_path)


def test_render_blocks_name_their_errors(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unknown render block 'nope x.json'.*renderer among"):
        render_text("<!-- render: nope x.json --><!-- end render -->", tmp_path)
    with pytest.raises(FileNotFoundError, match="cites .*missing.json, which does not exist. Commit the JSON"):
        render_text("<!-- render: codes_ad missing.json a 2 --><!-- end render -->", tmp_path)


def test_measuring_script_rerenders_the_pages_citing_its_json(tmp_path: Path) -> None:
    (tmp_path / "docs").mkdir()
    report = json.loads((ROOT / "docs/results/bench_train_cpu_mnist.json").read_text())
    out = tmp_path / "docs" / "bench.json"
    out.write_text(json.dumps(report))
    page = tmp_path / "docs" / "page.md"
    page.write_text("<!-- render: bench_tta bench.json -->stale<!-- end render -->")
    assert rerender_citing(out, root=tmp_path) == [page]
    tta = {name: report["time_to_accuracy"][name]["seconds"] for name in ("parm", "plain", "reference")}
    expected = f"parm {tta['parm']:.1f} s, plain loop {tta['plain']:.1f} s, reference {tta['reference']:.1f} s"
    assert expected in page.read_text()


def test_a_missed_time_to_accuracy_reads_as_missed() -> None:
    assert tta_phrase({"target": 0.85, "seconds": None, "trace": [[40.2, 0.812]]}) == "missed (A_d 0.812 after 40.2 s)"
    assert tta_phrase({"target": 0.85, "seconds": 5.81, "trace": [[5.81, 0.855]]}) == "5.8 s"


def test_docs_name_no_machine_paths() -> None:
    for page in [ROOT / "README.md", *(ROOT / "docs").rglob("*.md")]:
        text = page.read_text()
        assert "/work/" not in text and "/root/" not in text, f"{page.relative_to(ROOT)} names a machine path"


def test_codes_page_is_its_json_rendered() -> None:
    from parm.bench.codes import codes_page

    folder = ROOT / "docs" / "results"
    assert codes_page(folder) == (folder / "codes.md").read_text(), \
        "codes.md differs from its codes_*.json: run `python scripts/compare_codes.py --report-only`"


@pytest.mark.parametrize("stem", ["accuracy", "accuracy_speech_cpu"])
def test_reproduction_pages_are_their_json_rendered(stem: str) -> None:
    from parm.bench.reproduce import accuracy_page

    folder = ROOT / "docs" / "results"
    record = json.loads((folder / f"{stem}.json").read_text())
    assert accuracy_page(record) == (folder / f"{stem}.md").read_text(), \
        f"{stem}.md differs from {stem}.json: scripts/reproduce.py writes both"


def test_run_comparison_pages_are_their_json_rendered() -> None:
    from parm.bench.compare_runs import load_records, markdown, page_images

    for table in (ROOT / "docs" / "results").rglob("comparison.json"):
        page = table.with_suffix(".md")
        assert markdown(load_records(table), page_images(table.parent)) == page.read_text(), \
            f"{page.relative_to(ROOT)} differs from its comparison.json"
