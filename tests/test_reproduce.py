"End-to-end tests of `agora reproduce`, `claims`, `list` on the toy fixture paper."
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from conftest import add_paper, agora


def files_under(d: Path) -> list[Path]:
    return sorted(p for p in d.rglob("*") if p.is_file()) if d.exists() else []


def test_no_papers_says_so(repo):
    r = agora(repo, "reproduce")
    assert r.returncode == 0 and "no papers yet" in r.stdout


def test_cpu_profile_runs_in_order_and_writes_artefacts(toy_repo):
    r = agora(toy_repo, "reproduce", "--profile", "cpu")
    assert r.returncode == 0, r.stdout + r.stderr
    lines = [l.split() for l in r.stdout.splitlines() if l.startswith("toy/")]
    assert [l[:2] for l in lines] == [["toy/00_data", "ok"], ["toy/90_figures", "ok"]]
    res = json.loads((toy_repo / "papers/toy/results/cpu.json").read_text())
    assert res["metrics"]["n"]["values"] == [50.0, 50.0, 50.0]  # the profile's n reached the notebook
    assert res["metrics"]["score.b"]["n"] == 3
    assert [p.name for p in files_under(toy_repo / "figures/toy")] == ["scores.csv", "scores.md", "scores.pdf", "scores.png"]
    executed = json.loads((toy_repo / "runs/cpu/toy/00_data.ipynb").read_text())
    assert any("injected-parameters" in c["metadata"].get("tags", []) for c in executed["cells"])
    assert not (toy_repo / "runs/smoke").exists()


def test_smoke_profile_writes_only_runs(toy_repo):
    r = agora(toy_repo, "reproduce", "--profile", "smoke")
    assert r.returncode == 0, r.stdout + r.stderr
    assert not (toy_repo / "figures").exists() and not (toy_repo / "papers/toy/results").exists()
    assert (toy_repo / "runs/smoke/toy/results.json").is_file()
    assert (toy_repo / "runs/smoke/toy/figures/scores.png").is_file()


def test_unchanged_notebooks_are_skipped_until_inputs_change(toy_repo):
    assert agora(toy_repo, "reproduce", "--profile", "cpu").returncode == 0
    r = agora(toy_repo, "reproduce", "--profile", "cpu")
    assert [l.split()[1] for l in r.stdout.splitlines() if l.startswith("toy/")] == ["skipped", "skipped"]
    (toy_repo / "papers/toy/profiles/cpu.yaml").write_text("n: 60\nseeds: [0, 1, 2]\n")
    r = agora(toy_repo, "reproduce", "--profile", "cpu")  # upstream change reruns downstream too
    assert [l.split()[1] for l in r.stdout.splitlines() if l.startswith("toy/")] == ["ok", "ok"]
    r = agora(toy_repo, "reproduce", "--profile", "cpu", "--force", "--only", "90_*")
    assert [l.split()[:2] for l in r.stdout.splitlines() if l.startswith("toy/")] == [["toy/90_figures", "ok"]]


def test_failing_notebook_is_reported_and_others_keep_their_outputs(toy_repo):
    assert agora(toy_repo, "reproduce", "--profile", "cpu").returncode == 0
    before = {p: p.read_bytes() for p in files_under(toy_repo / "figures/toy")}
    nbs, card = toy_repo / "nbs/papers/toy", toy_repo / "papers/toy/paper.yaml"
    card.write_text(card.read_text().replace("  - 90_figures.ipynb", "  - 50_fail.ipynb\n  - 90_figures.ipynb"))
    assert (nbs / "50_fail.ipynb").is_file()
    r = agora(toy_repo, "reproduce", "--profile", "cpu", "--force")
    assert r.returncode == 1
    rows = {l.split()[0]: l for l in r.stdout.splitlines() if l.startswith("toy/")}
    assert rows["toy/00_data"].split()[1] == "ok" and rows["toy/90_figures"].split()[1] == "ok"
    assert "failed" in rows["toy/50_fail"] and "cell 4 (raise ValueError" in rows["toy/50_fail"]
    assert "ValueError: injected failure" in rows["toy/50_fail"]
    assert {p: p.read_bytes() for p in files_under(toy_repo / "figures/toy")} == before
    assert json.loads((toy_repo / "papers/toy/results/cpu.json").read_text())["metrics"]["score.a"]["n"] == 3


def test_figures_are_byte_identical_on_rerun(toy_repo):
    digest = lambda: {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in files_under(toy_repo / "figures/toy")}  # noqa: E731
    assert agora(toy_repo, "reproduce", "--profile", "cpu").returncode == 0
    first = digest()
    assert agora(toy_repo, "reproduce", "--profile", "cpu", "--force").returncode == 0
    assert digest() == first and len(first) == 4


def test_parallel_papers(toy_repo):
    add_paper(toy_repo, "toy2")  # a second paper with the same notebooks (they write to the toy results)
    r = agora(toy_repo, "reproduce", "--profile", "smoke", "--jobs", "2")
    assert r.returncode == 0, r.stdout + r.stderr
    assert sorted(l.split()[0] for l in r.stdout.splitlines() if l.startswith("toy")) == \
        ["toy/00_data", "toy/90_figures", "toy2/00_data", "toy2/90_figures"]


def test_reproduce_in_process_leaves_the_environment_alone(toy_repo):
    from agora.core.reproduce import reproduce
    before = dict(os.environ)
    runs = reproduce(["toy"], "smoke", root=toy_repo, progress=False)
    assert [(r.notebook, r.status) for r in runs] == [("00_data", "ok"), ("90_figures", "ok")]
    assert dict(os.environ) == before  # no JUPYTER_PATH, AGORA_ROOT, MPLBACKEND left behind


def test_bad_input_exits_2_and_writes_nothing(toy_repo):
    def check(args, *needles, profile_text=None):
        if profile_text is not None: (toy_repo / "papers/toy/profiles/cpu.yaml").write_text(profile_text)
        r = agora(toy_repo, *args)
        assert r.returncode == 2, (args, r.stdout, r.stderr)
        assert len(r.stderr.strip().splitlines()) == 1, r.stderr
        for n in needles: assert n in r.stderr, (n, r.stderr)
        assert not (toy_repo / "runs").exists() and not (toy_repo / "figures").exists()
    check(["reproduce", "--paper", "nope"], "unknown paper 'nope'", "valid: toy")
    check(["reproduce", "--profile", "tpu"], "invalid choice", "smoke", "cpu", "gpu")
    check(["reproduce", "--profile", "gpu"], "no gpu profile", "available: smoke, cpu")
    check(["reproduce", "--profile", "cpu"], "unknown parameter 'n_sample'", "valid: n, offset, seeds",
          profile_text="n_sample: 5\n")
    check(["reproduce", "--profile", "cpu"], "n = 'many'", "expected int", profile_text="n: many\n")
    check(["reproduce", "--profile", "cpu"], "malformed YAML", profile_text="n: [1, 2\n")
    check(["reproduce", "--profile", "cpu"], "set by the runner", profile_text="profile: gpu\n")
    (toy_repo / "papers/toy/profiles/cpu.yaml").write_text("n: 5\n")
    check(["reproduce", "--profile", "cpu", "--only", "77_*"], "matches no notebook")
    check(["claims", "--paper", "nope"], "unknown paper 'nope'")
    check(["bench", "nope"], "unknown benchmark 'nope'")


def test_claims_and_list(toy_repo):
    r = agora(toy_repo, "claims", "--profile", "cpu")
    assert r.returncode == 0 and r.stdout.count("not run") == 3
    assert agora(toy_repo, "reproduce", "--profile", "cpu").returncode == 0
    rows = {l.split()[1]: l for l in agora(toy_repo, "claims", "--profile", "cpu").stdout.splitlines()[2:]}
    assert rows["b_beats_a"].rstrip().endswith(" reproduced") and "[0.5, 0.5]" in rows["b_beats_a"]
    assert rows["a_is_large"].rstrip().endswith("not reproduced")
    assert rows["c_exists"].rstrip().endswith("not run") and "score.c missing" in rows["c_exists"]
    out = agora(toy_repo, "list").stdout
    assert "toy" in out and "00_data 90_figures" in out and "smoke cpu" in out
