"End-to-end smoke reproduction of every paper in the repository (the notebooks' default parameters)."
from __future__ import annotations

import pytest

from agora.core.claims import list_papers, load_card
from agora.core.paths import find_root
from conftest import agora

ROOT = find_root()
PAPERS = list_papers(ROOT)


@pytest.mark.parametrize("slug", PAPERS or ["(none)"])
def test_paper_smoke_reproduction(slug):
    if slug == "(none)":
        r = agora(ROOT, "reproduce", "--profile", "smoke")
        assert r.returncode == 0 and "no papers yet" in r.stdout
        return
    r = agora(ROOT, "reproduce", "--paper", slug, "--profile", "smoke", "--force", timeout=900)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    card = load_card(slug, ROOT)
    assert sum(l.startswith(f"{slug}/") for l in r.stdout.splitlines()) == len(card.notebooks)


@pytest.mark.parametrize("slug", PAPERS or ["(none)"])
def test_paper_card_and_profiles_valid(slug):
    if slug == "(none)": return
    from agora.core.reproduce import plan
    for profile in ("smoke", "cpu"):
        assert plan([slug], profile, root=ROOT)[slug]


@pytest.mark.parametrize("slug", PAPERS or ["(none)"])
def test_seed_lists_declare_they_are_non_empty(slug):
    "An empty seed list would run nothing and report nothing: every notebook taking seeds rejects one."
    if slug == "(none)": return
    from agora.core.profiles import notebook_parameters, parameter_ranges
    for nb in load_card(slug, ROOT).notebook_paths(ROOT):
        if "seeds" in notebook_parameters(nb): assert parameter_ranges(nb)["seeds"].non_empty, nb.name
