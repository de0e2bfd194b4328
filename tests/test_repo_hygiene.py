"""Project files name no machine paths: a committed file must read the same on every checkout."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# Absolute paths of this workplace's and users' machines; a relative path or an env variable is what belongs.
MACHINE_PATH = re.compile("/" + "(?:work|root|home|Users|tmp/i1)" + r"/[\w.-]")


@pytest.mark.skipif(shutil.which("git") is None or not (ROOT / ".git").exists(), reason="needs a git checkout")
def test_tracked_files_name_no_machine_paths() -> None:
    files = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True).stdout.split()
    offenders = []
    for name in files:
        path = ROOT / name
        if path.suffix in {".png", ".jpg", ".npz", ".pt", ".whl"} or not path.is_file():
            continue
        text = path.read_text(errors="ignore")
        offenders += [f"{name}:{i}" for i, line in enumerate(text.splitlines(), 1) if MACHINE_PATH.search(line)]
    assert not offenders, f"machine paths in tracked files (use repo-relative paths or PARM_DATA_DIR): {offenders}"
