"""Results pages rendered from committed JSON: every figure in README.md and docs/ comes from a file.

A page marks each generated part with a block naming a renderer and its JSON file (relative to the
page's folder), e.g. ``<!-- render: bench_table bench_train_cpu_mnist.json -->...<!-- end render -->``;
:func:`render_text` replaces each block's body by the renderer's output. The measuring scripts
re-render the pages that cite the JSON they write (:func:`rerender_citing`), and a test re-renders every
page and fails on a difference, so a typed-in or stale figure inside a block cannot survive.

    python -m parm.results            # re-render README.md and docs/**/*.md in place
    python -m parm.results --check    # exit 1 and name the pages whose blocks are stale
"""

from __future__ import annotations

import argparse
import json
import re
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

BLOCK = re.compile(r"<!-- render: (?P<spec>[^>]*?) -->(?P<body>.*?)<!-- end render -->", re.S)
# (the block's JSON record, the block's further arguments, the page's folder for any further files)
Renderer = Callable[[Any, list[str], Path], str]
RENDERERS: dict[str, Renderer] = {}
ROOT = Path(__file__).resolve().parents[2]


def renderer(name: str) -> Callable[[Renderer], Renderer]:
    """Register a function ``(record, args, folder) -> Markdown`` under ``name`` for page blocks."""
    def register(function: Renderer) -> Renderer:
        RENDERERS[name] = function
        return function
    return register


def render_text(text: str, folder: Path, where: str = "page") -> str:
    """``text`` with every render block's body regenerated from its JSON file (relative to ``folder``)."""
    def fill(match: re.Match[str]) -> str:
        name, *rest = match["spec"].split()
        if name not in RENDERERS or not rest:
            raise ValueError(f"{where}: unknown render block {match['spec']!r}; expected "
                             f"'<renderer> <file.json> [args]' with a renderer among {sorted(RENDERERS)}.")
        path = folder / rest[0]
        if not path.is_file():
            raise FileNotFoundError(f"{where}: the render block {match['spec']!r} cites {path}, which does not "
                                    f"exist. Commit the JSON the measuring script wrote, or remove the block.")
        body = RENDERERS[name](json.loads(path.read_text()), rest[1:], folder)
        return f"<!-- render: {match['spec']} -->{body}<!-- end render -->"

    _register_builtins()
    return BLOCK.sub(fill, text)


def render_page(path: Path) -> str:
    """The page at ``path`` as its JSON renders it."""
    return render_text(path.read_text(), path.parent, where=str(path))


def pages(root: Path = ROOT) -> list[Path]:
    """README.md and every Markdown page under docs/ that holds a render block."""
    candidates = [root / "README.md", *sorted((root / "docs").rglob("*.md"))]
    return [p for p in candidates if p.is_file() and BLOCK.search(p.read_text())]


def rerender_citing(json_path: Path, root: Path = ROOT) -> list[Path]:
    """Re-render, in place, the pages whose blocks cite ``json_path``; the pages changed."""
    changed = []
    for page in pages(root):
        cited = {(page.parent / m["spec"].split()[1]).resolve() for m in BLOCK.finditer(page.read_text())
                 if len(m["spec"].split()) > 1}
        if json_path.resolve() in cited:
            text = render_page(page)
            if text != page.read_text():
                page.write_text(text)
                changed.append(page)
    return changed


def _register_builtins() -> None:
    # The renderers live beside the code that measures the figures; importing registers them.
    from parm.bench import pages as _bench_pages  # noqa: F401
    from parm.serving import policy_report as _policy_pages  # noqa: F401


def main(argv: Iterable[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--check", action="store_true", help="write nothing; exit 1 if a page is stale")
    args = parser.parse_args(None if argv is None else list(argv))
    stale = []
    for page in pages():
        text = render_page(page)
        if text != page.read_text():
            stale.append(page)
            if not args.check:
                page.write_text(text)
    for page in stale:
        print(f"{'stale' if args.check else 're-rendered'}: {page.relative_to(ROOT)}")
    return 1 if stale and args.check else 0


if __name__ == "__main__":
    # Run as a script this file is __main__; the renderers register in the importable parm.results.
    from parm.results import main as _main

    raise SystemExit(_main())
