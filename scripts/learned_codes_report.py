"""Write ``docs/results/learned_codes.md`` from the compare_codes JSON records beside it (targets checked).

    python scripts/learned_codes_report.py [--results docs/results]
"""

from __future__ import annotations

import argparse
from pathlib import Path

from parm.learned_codes_report import render

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--results", default=str(ROOT / "docs" / "results"))
    args = parser.parse_args()
    page = Path(args.results) / "learned_codes.md"
    page.write_text(render(Path(args.results)))
    print(page.read_text())


if __name__ == "__main__":
    main()
