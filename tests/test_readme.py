"The README's import examples work: every `from agora... import ...` it shows is run."
from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

README = (Path(__file__).parents[1] / "README.md").read_text()
IMPORTS = sorted(set(re.findall(r"(?m)(?:^|`)\s*(from agora[\w.]* import [\w, ]+|import agora[\w.]*)", README)))


def test_the_readme_shows_import_examples():
    assert len(IMPORTS) >= 2, IMPORTS


@pytest.mark.parametrize("line", IMPORTS)
def test_readme_import_example_runs(line):
    r = subprocess.run([sys.executable, "-c", line], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, f"{line}: {r.stderr[-2000:]}"
