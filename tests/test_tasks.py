"""Task families (agora.core.tasks): property tests over 200 seeds per family.

For every family and seed: the solution verifies in several answer formats; perturbed answers are rejected; the
feedback on wrong answers never states the solution; the shards, parsed back by an independent solver, give the
solution and state exactly the prompt's facts; sampling is deterministic in its seed.
"""
import random
import re

import pytest

from agora.core.sandbox import UNSAFE_ENV, sandbox_available
from agora.core.tasks import (FAMILIES, GENERIC_FEEDBACK, Task, chain_expression, extract_answer, extract_int,
                              feedback_many, hint_many, leaks_solution, mastermind_score, sample_tasks, verify_many)

N_SEEDS = 200


@pytest.fixture(autouse=True)
def _our_code_may_run_unsandboxed(monkeypatch):
    "The programs run here are our reference solutions and their perturbations, not model-written code."
    if not sandbox_available(): monkeypatch.setenv(UNSAFE_ENV, "1")

NAMES = ["arithmetic", "word_problems", "code", "maze", "puzzle"]


def _tasks(name: str) -> list[Task]:
    return [FAMILIES[name].sample(1, seed=s, difficulty=1 + s % 3)[0] for s in range(N_SEEDS)]


def _right_answers(t: Task) -> list[str]:
    if t.family == "code":
        return [f"```python\n{t.solution}```", f"Here it is.\n{t.solution}"]
    return [f"ANSWER: {t.solution}", f"So the answer is {t.solution}.", f"{t.solution}\n"]


def test_registry():
    assert sorted(FAMILIES) == sorted(NAMES)
    with pytest.raises(KeyError, match="arithmetic"):
        sample_tasks("nope", 1)
    with pytest.raises(ValueError):
        FAMILIES["maze"].sample(1, 0, difficulty=0)
    with pytest.raises(ValueError, match="1..4"):
        FAMILIES["puzzle"].sample(1, 0, difficulty=5)


@pytest.mark.parametrize("name", NAMES)
def test_deterministic(name):
    fam = FAMILIES[name]
    a, b = fam.sample(6, seed=7, difficulty=2), fam.sample(6, seed=7, difficulty=2)
    assert [(t.prompt, t.solution, t.shards) for t in a] == [(t.prompt, t.solution, t.shards) for t in b]
    assert [t.prompt for t in fam.sample(3, seed=7, difficulty=2)] == [t.prompt for t in a[:3]]
    assert len({t.prompt for t in fam.sample(20, seed=8, difficulty=2)}) >= 15
    assert a[0].uid == f"{name}/2/7/0" and a[0].difficulty == 2


@pytest.mark.parametrize("name", NAMES)
def test_verify_accepts_solution_rejects_perturbed(name):
    fam, rng = FAMILIES[name], random.Random(0)
    tasks, answers, expect = [], [], []
    for t in _tasks(name):
        for a in _right_answers(t):
            tasks.append(t); answers.append(a); expect.append(True)
        for a in fam.perturb(t, rng):
            tasks.append(t); answers.append(a); expect.append(False)
    got = verify_many(tasks, answers)
    bad = [(t.prompt, t.solution, a, e) for t, a, e, g in zip(tasks, answers, expect, got) if e != g]
    assert not bad, bad[:3]


@pytest.mark.parametrize("name", NAMES)
def test_feedback_never_leaks(name):
    fam, rng = FAMILIES[name], random.Random(1)
    tasks, answers = [], []
    for t in _tasks(name):
        for a in fam.perturb(t, rng) + ["ANSWER: 0", "I do not know", "ANSWER: UUUU", "ANSWER: 1234"]:
            if not t.verify(a) if name != "code" else True:
                tasks.append(t); answers.append(a)
    feedback_many(tasks, answers)  # warms the code cache
    for t, a in zip(tasks, answers):
        if t.verify(a): continue
        fb = fam.feedback(t, a)  # the family's own text, before the guard in Task.feedback
        assert fb and not leaks_solution(fb, t.solution), (t.prompt, t.solution, a, fb)
        assert t.feedback(a) == fb != GENERIC_FEEDBACK


@pytest.mark.parametrize("name", NAMES)
def test_hints_never_leak(name):
    fam, rng = FAMILIES[name], random.Random(2)
    tasks, answers = [], []
    for t in _tasks(name):
        for a in [*fam.perturb(t, rng)[:2], ""]:
            tasks.append(t); answers.append(a)
    hints = hint_many(tasks, answers)
    assert all(h and not leaks_solution(h, t.solution) for t, h in zip(tasks, hints))
    # the guard replaces a hint only when a chain's solution equals one of its inputs (start, operand or an earlier
    # value), which the hint restates; other families never need it
    guarded = [t for t, a, h in zip(tasks, answers, hints) if h != FAMILIES[name].hint(t, a)]
    if name not in ("arithmetic", "word_problems"): assert not guarded
    for t in guarded:
        st = t.private["steps"]
        inputs = {t.private["start"]} | {s["operand"] for s in st} | {s["value"] for s in st[:-1]}
        assert int(t.solution) in inputs, (t.prompt, t.solution)


@pytest.mark.parametrize("name", NAMES)
def test_shards_state_exactly_the_problem(name):
    fam = FAMILIES[name]
    for t in _tasks(name)[:100]:
        assert t.shards and all(s.strip() for s in t.shards)
        if name not in ("arithmetic", "word_problems"):  # a chain may repeat a step ("Add 4." twice), in order
            assert len(set(t.shards)) == len(t.shards)
        assert t.shard_prompt() == t.goal and t.goal and not leaks_solution(t.goal, t.solution)
        assert not any(leaks_solution(s, t.solution) for s in t.shards if len(t.solution) >= 8)
        assert fam.solve_shards(t.shards, t.goal) == t.solution
        if name == "arithmetic":  # the shards rebuild exactly the prompt's expression
            start = int(re.search(r"\d+", t.shards[0]).group())
            ops = [({"Add": "+", "Subtract": "-", "Multiply": "*", "Divide": "/"}[s.split()[0]],
                    int(re.search(r"\d+", s).group())) for s in t.shards[1:]]
            assert chain_expression(start, ops) + " = ?" == t.prompt
            assert len(ops) == len(t.private["steps"])
        else:  # each shard is one of the prompt's facts, in order, and they cover every fact
            facts = [re.sub(r"^(Row|Step) \d+: ", "", s) for s in t.shards]
            if name == "code": facts = [f.removesuffix(".") for f in facts]
            covered, at = t.prompt, 0
            for f in facts:  # in order, each exactly once
                at = covered.find(f, at)
                assert at >= 0, (t.prompt, f)
                covered = covered[:at] + covered[at + len(f):]
            leftover = {"word_problems": r"How many \w+ does \w+ have now\?",
                        "maze": r"Maze:|Moves from S to G\?", "puzzle": r"Find the secret code: \d digits, each 1 to \d\.",
                        "code": r"Write a Python function f\((xs|s)\) that takes (a list of integers|a string):|, then"}[name]
            assert re.sub(leftover, "", covered).strip(" .\n") == "", (t.prompt, covered)


def test_extractors():
    assert extract_answer("Let me think.\n3+4=7\nThe answer is 7.") == "7"
    assert extract_answer("ANSWER: `RDDL`") == "RDDL"
    assert extract_int("ANSWER: 1,024") == 1024 and extract_int("x") is None and extract_int("") is None


def test_arithmetic_feedback_points_at_wrong_step():
    t = Task("arithmetic", "((3+4)*2)-5 = ?", "9",
             private=dict(start=3, steps=[dict(op="+", operand=4, value=7), dict(op="*", operand=2, value=14),
                                          dict(op="-", operand=5, value=9)]))
    assert "second step (the multiplication)" in t.feedback("3+4=7, 7*2=16, 16-5=11. ANSWER: 11")
    assert "too high" in t.feedback("3+4=7, 7*2=16, 16-5=11. ANSWER: 11")
    assert "too low" in t.feedback("ANSWER: 2")
    assert not re.search(r"\d", t.feedback("ANSWER: 2"))


def test_maze_feedback_and_any_valid_path():
    t = FAMILIES["maze"].sample(1, 0, 1)[0]
    grid = t.private["grid"]
    assert t.verify("ANSWER: " + t.solution)
    detour = t.solution[0] + {"U": "D", "D": "U", "L": "R", "R": "L"}[t.solution[0]] + t.solution
    assert t.verify("ANSWER: " + detour) == (grid is not None)  # a legal detour also reaches G
    assert "wall" in t.feedback("ANSWER: " + "L" * 10) or "leaves" in t.feedback("ANSWER: " + "L" * 10)


def test_mastermind_score():
    assert mastermind_score("1234", "1243") == (2, 2)
    assert mastermind_score("1122", "2211") == (0, 4)
    assert mastermind_score("1111", "1222") == (1, 0)


def test_code_feedback_gives_failing_input_only():
    t = FAMILIES["code"].sample(1, 3, 2)[0]
    wrong = f"def f({t.private['arg']}):\n    return None\n"
    fb = t.feedback(wrong)
    assert "on the input f(" in fb and t.private["inputs"][0] in fb
    expected = t.private["tests"][0].rsplit("==", 1)[1].strip()
    assert not fb.endswith(expected + ".") or expected in t.private["inputs"][0]
    assert "endless loop" in t.feedback(f"def f({t.private['arg']}):\n    while True: pass")
