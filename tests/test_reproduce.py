"End-to-end tests of `agora reproduce`, `claims`, `list` on the toy fixture paper."
from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from conftest import AGORA, add_paper, agora


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


def test_a_rerun_from_the_first_notebook_drops_metrics_of_older_runs(repo):
    # a metric no notebook writes any more (a model dropped from the paper) must not outlive the run that wrote it
    write = "from agora.core.results import record_metrics\nrecord_metrics('m', profile, {k: [1.0] for k in (ROOT / 'keys.txt').read_text().split()})"
    make_paper(repo, "m", {"00_metrics": write, "90_more": "from agora.core.results import record_metrics\nrecord_metrics('m', profile, {'late': [2.0]})"})
    (repo / "keys.txt").write_text("a b")
    assert agora(repo, "reproduce", "--profile", "smoke").returncode == 0
    (repo / "keys.txt").write_text("a")
    assert agora(repo, "reproduce", "--profile", "smoke", "--force").returncode == 0
    assert sorted(json.loads((repo / "runs/smoke/m/results.json").read_text())["metrics"]) == ["a", "late"]


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


# --- what a notebook read, interrupts, one line per notebook, threads, cross-paper reads -------------------------

def make_paper(root: Path, slug: str, notebooks: dict[str, str], reads: list[str] | None = None) -> None:
    "A paper whose notebooks each hold a parameters cell (`profile`) and one code cell."
    import nbformat
    (root / "papers" / slug / "profiles").mkdir(parents=True)
    (root / "nbs" / "papers" / slug).mkdir(parents=True)
    for name, code in notebooks.items():
        nb = nbformat.v4.new_notebook(metadata={"kernelspec": {"name": "python3", "display_name": "Python 3",
                                                               "language": "python"}})
        nb.cells = [nbformat.v4.new_code_cell('profile = "smoke"  # injected by the runner', metadata={"tags": ["parameters"]}),
                    nbformat.v4.new_code_cell("import os, time\nfrom pathlib import Path\n"
                                              "ROOT = Path(os.environ['AGORA_ROOT'])\n" + code)]
        nbformat.write(nb, root / "nbs" / "papers" / slug / f"{name}.ipynb")
    card = {"id": slug, "title": slug, "notebooks": [f"{n}.ipynb" for n in notebooks], **({"reads": reads} if reads else {})}
    (root / "papers" / slug / "paper.yaml").write_text(json.dumps(card))


def statuses(r) -> dict[str, str]:
    return {l.split()[0]: l.split()[1] for l in r.stdout.splitlines() if "/" in l.split()[0]} if r.stdout else {}


def test_an_upstream_rerun_reruns_what_read_it(repo):
    # 00 fails while 90 (which reads 00's output) succeeds on the stale output; once 00 runs again, 90 must too
    make_paper(repo, "chain", {
        "00_make": "v = (ROOT / 'input.txt').read_text()\nassert v != 'fail', 'injected failure'\n(ROOT / 'out.txt').write_text(v)",
        "90_use": "(ROOT / 'final.txt').write_text((ROOT / 'out.txt').read_text())"})
    (repo / "input.txt").write_text("1")
    assert statuses(agora(repo, "reproduce", "--profile", "smoke")) == {"chain/00_make": "ok", "chain/90_use": "ok"}
    (repo / "input.txt").write_text("fail")
    assert statuses(agora(repo, "reproduce", "--profile", "smoke", "--force")) == {"chain/00_make": "failed", "chain/90_use": "ok"}
    (repo / "input.txt").write_text("2")
    assert statuses(agora(repo, "reproduce", "--profile", "smoke")) == {"chain/00_make": "ok", "chain/90_use": "ok"}
    assert (repo / "final.txt").read_text() == "2"
    assert statuses(agora(repo, "reproduce", "--profile", "smoke")) == {"chain/00_make": "skipped", "chain/90_use": "skipped"}
    # --only reruns one notebook; what reads it reruns next time, what it reads does not
    assert statuses(agora(repo, "reproduce", "--profile", "smoke", "--only", "00_*", "--force")) == {"chain/00_make": "ok"}
    assert statuses(agora(repo, "reproduce", "--profile", "smoke")) == {"chain/00_make": "skipped", "chain/90_use": "ok"}


SLOW = ("(ROOT / 'kernel.pid').write_text(str(os.getpid()))\n"
        "if (ROOT / 'slow').exists():\n    (ROOT / 'started').touch(); time.sleep(120)\n")


def _as_in_a_terminal() -> None:
    "SIGINT as a terminal's foreground command has it: default handling, not blocked."
    # in the full suite the pytest process can hold SIGINT ignored or blocked (make test from a fresh clone did), and a
    # child inherits both: the runner would never see the Ctrl-C this test sends
    signal.pthread_sigmask(signal.SIG_UNBLOCK, [signal.SIGINT])
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _interrupt(repo: Path, sig: int) -> tuple[subprocess.CompletedProcess, int]:
    "Start a forced run of the slow paper, send `sig` to the runner's process group once the notebook runs."
    (repo / "slow").touch()
    p = subprocess.Popen([AGORA, "reproduce", "--profile", "smoke", "--force"], env={**os.environ, "AGORA_ROOT": str(repo)},
                         cwd=repo, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
                         preexec_fn=_as_in_a_terminal)
    t0 = time.time()
    while not (repo / "started").exists():
        assert time.time() - t0 < 120 and p.poll() is None, "the notebook never started"
        time.sleep(0.2)
    os.killpg(p.pid, sig)  # as a terminal's Ctrl-C does: the whole foreground group
    try: out, err = p.communicate(timeout=120)
    except subprocess.TimeoutExpired:
        os.killpg(p.pid, signal.SIGKILL); out, err = p.communicate()
        here = (signal.getsignal(signal.SIGINT), signal.pthread_sigmask(signal.SIG_BLOCK, []))  # this process's SIGINT
        raise AssertionError(f"the runner did not stop within 120 s of {sig!r} (pytest's SIGINT: {here}): "
                             f"{out[-2000:]} {err[-2000:]}") from None
    (repo / "slow").unlink(); (repo / "started").unlink()
    return subprocess.CompletedProcess(p.args, p.returncode, out, err), int((repo / "kernel.pid").read_text())


def _gone(pid: int, within: float = 15.0) -> bool:
    t0 = time.time()
    while time.time() - t0 < within:
        if not Path(f"/proc/{pid}").exists() or "zombie" in Path(f"/proc/{pid}/status").read_text().lower(): return True
        time.sleep(0.2)
    return False


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGKILL], ids=["SIGINT", "SIGKILL"])
def test_an_interrupted_notebook_counts_as_failed(repo, sig):
    make_paper(repo, "slow", {"00_slow": SLOW})
    assert statuses(agora(repo, "reproduce", "--profile", "smoke")) == {"slow/00_slow": "ok"}
    r, kernel = _interrupt(repo, sig)
    if sig == signal.SIGINT:
        assert r.returncode == 130, (r.stdout, r.stderr)
        assert r.stderr.strip().splitlines() == [r.stderr.strip()] and "Traceback" not in r.stderr
        assert "interrupted; slow/00_slow stopped and recorded as failed" in r.stderr
    else:
        assert r.returncode == -signal.SIGKILL
    assert _gone(kernel), "the notebook's kernel outlived the runner"
    assert "00_slow" not in json.loads((repo / "runs/smoke/slow/state.json").read_text())
    assert statuses(agora(repo, "reproduce", "--profile", "smoke")) == {"slow/00_slow": "ok"}  # not "skipped"


def test_one_clean_line_per_notebook_and_kernel_threads(repo):
    make_paper(repo, "env", {"00_env": "(ROOT / 'env.json').write_text(__import__('json').dumps("
                                        "{k: os.environ.get(k) for k in ('OMP_WAIT_POLICY', 'OMP_NUM_THREADS')}))",
                             "10_print": "print('chatty notebook')"})
    r = agora(repo, "reproduce", "--profile", "smoke")
    assert r.returncode == 0, r.stderr
    lines = r.stderr.strip().splitlines()
    assert [l.split()[:2] for l in lines] == [["env/00_env", "ok"], ["env/10_print", "ok"]], r.stderr
    assert "WARNING" not in r.stderr and "chatty" not in r.stdout + r.stderr
    threads = os.environ.get("OMP_NUM_THREADS") or str(os.cpu_count())  # a user's own setting wins
    assert json.loads((repo / "env.json").read_text()) == {"OMP_WAIT_POLICY": "PASSIVE", "OMP_NUM_THREADS": threads}
    assert (repo / "runs/smoke/env/logs/10_print.log").is_file()


def test_a_paper_reading_another_runs_after_it_and_reruns_with_it(repo):
    make_paper(repo, "a", {"00_a": "time.sleep(2)\n(ROOT / 'a.txt').write_text(str(time.time()))"})  # slower than b
    make_paper(repo, "b", {"00_b": "(ROOT / 'b.txt').write_text((ROOT / 'a.txt').read_text())"}, reads=["a"])
    r = agora(repo, "reproduce", "--profile", "smoke", "--paper", "b", "--paper", "a")
    assert [l.split()[0] for l in r.stdout.splitlines()[1:-1]] == ["a/00_a", "b/00_b"], r.stdout
    assert statuses(agora(repo, "reproduce", "--profile", "smoke", "--paper", "b")) == {"b/00_b": "skipped"}
    assert statuses(agora(repo, "reproduce", "--profile", "smoke", "--paper", "a", "--force")) == {"a/00_a": "ok"}
    assert statuses(agora(repo, "reproduce", "--profile", "smoke", "--paper", "b")) == {"b/00_b": "ok"}
    assert (repo / "a.txt").read_text() == (repo / "b.txt").read_text()
    r = agora(repo, "reproduce", "--profile", "smoke", "--jobs", "2", "--force")  # in parallel, b still waits for a
    assert r.returncode == 0 and r.stderr.splitlines()[0].startswith("a/00_a"), r.stderr
    assert (repo / "a.txt").read_text() == (repo / "b.txt").read_text()
    (repo / "papers/b/paper.yaml").write_text(json.dumps({"id": "b", "title": "b", "notebooks": ["00_b.ipynb"], "reads": ["zz"]}))
    r = agora(repo, "reproduce", "--profile", "smoke", "--paper", "b")
    assert r.returncode == 2 and "reads 'zz', which is no paper; valid: a" in r.stderr


def test_claims_say_which_results_are_missing_and_reject_bad_files(toy_repo):
    r = agora(toy_repo, "claims", "--profile", "cpu")
    assert r.returncode == 0 and r.stdout.count("no papers/toy/results/cpu.json: run agora reproduce --paper toy --profile cpu") == 3
    res = toy_repo / "papers/toy/results/cpu.json"
    res.parent.mkdir(parents=True)
    for text in ("{not json", "[1, 2]", '{"metrics": []}'):
        res.write_text(text)
        r = agora(toy_repo, "claims", "--profile", "cpu")
        assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1 and "Traceback" not in r.stderr, r.stderr
        assert f"{res}: not a" in r.stderr


def test_out_of_range_parameters_are_rejected(toy_repo):
    (toy_repo / "papers/toy/profiles/cpu.yaml").write_text("seeds: []\n")
    r = agora(toy_repo, "reproduce", "--profile", "cpu")
    assert r.returncode == 2 and "parameter seeds = [] is outside its range {non-empty, >= 0}" in r.stderr
    (toy_repo / "papers/toy/profiles/cpu.yaml").write_text("seeds: [0, 'a']\n")
    r = agora(toy_repo, "reproduce", "--profile", "cpu")
    assert r.returncode == 2 and "parameter seeds[1] = 'a' has type str, expected int" in r.stderr


def test_an_interrupted_run_does_not_stop_the_next_one(repo):
    "In one process (a notebook calling run_paper), a Ctrl-C ends that run only."
    from agora.core.reproduce import RunControl, plan, run_paper
    make_paper(repo, "p", {"00_p": "(ROOT / 'p.txt').write_text('ran')"})
    jobs = plan(["p"], "smoke", root=repo)["p"]
    stopped = RunControl(); stopped.stop()
    assert [r.status for r in run_paper(jobs, "smoke", repo, control=stopped)] == []
    assert [(r.status, r.error) for r in run_paper(jobs, "smoke", repo)] == [("ok", "")]
    assert (repo / "p.txt").read_text() == "ran"
