"A figures notebook reads only its own profile's results: missing results fail, naming the file and its command."
from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from conftest import agora

REPO = Path(__file__).parents[1]


@pytest.mark.parametrize("slug", ["nplayer_os", "shaper"])
def test_figures_without_own_results_fail_naming_the_file(repo: Path, slug: str):
    "With only the committed cpu results present, the smoke figures notebook fails instead of plotting cpu numbers."
    shutil.copytree(REPO / "nbs" / "papers" / slug, repo / "nbs" / "papers" / slug)
    card = repo / "papers" / slug
    shutil.copytree(REPO / "papers" / slug / "profiles", card / "profiles")
    shutil.copy(REPO / "papers" / slug / "paper.yaml", card / "paper.yaml")
    (card / "results").mkdir()
    shutil.copy(REPO / "papers" / slug / "results" / "cpu.json", card / "results" / "cpu.json")
    r = agora(repo, "reproduce", "--paper", slug, "--profile", "smoke", "--only", "90_*", "--force")
    assert r.returncode == 1, r.stdout + r.stderr
    row = next(l for l in r.stdout.splitlines() if l.startswith(f"{slug}/90_figures"))
    assert "failed" in row and "FileNotFoundError" in row, row
    assert str(repo / "runs" / "smoke" / slug / "results.json") in row, row
    assert f"agora reproduce --paper {slug} --profile smoke" in row, row
    assert not (repo / "runs" / "smoke" / slug / "figures").exists()  # nothing drawn from another profile
