"agora.core.dialogue: the rules of didactic episodes, teachers, the sharded user, and records."
from __future__ import annotations

import math
import re

import pytest

from agora.core.dialogue import (BLIND_RETRY_TEXT, ENV_NO_HINT_TEXT, BlindRetryTeacher, Episode, EnvTeacher,
                                 SelfTeacher, Turn, answer_key, env_feedback, repeat_counts, repeat_rate)
from agora.core.dialogue import (NO_HINT_TEXT, NO_MORE_TEXT, NUDGE_TEXT, RETRY_TEXT, DialogueConfig, DidacticEnv,
                                 ModelTeacher, RetryTeacher, ScriptedTeacher, ShuffledTeacher, Teacher, TeacherReply,
                                 classify_turn, episodes_to_dataset, leak_rate, load_episodes, save_episodes,
                                 success_by_turn)
from agora.core.lm import TinyLM
from agora.core.tasks import leaks_solution, sample_tasks
from agora.core.tokenizer import build_tokenizer


pytestmark = pytest.mark.usefixtures("one_thread")  # tiny models: one thread is fastest


class Scripted:
    "A student that replays fixed turns, keyed by the episode's first user message."
    def __init__(self, script): self.script = script
    def generate(self, conversations, max_new_tokens=64, temperature=0.0, stop=None, seed=0, role="student"):
        return [self.script[c[0]["content"]][sum(m["role"] == "student" for m in c)] for c in conversations]
    def logprobs(self, conversations, completions, role="student"): return [0.0] * len(completions)


class LeakyChat:
    "A teacher model that states the answer on its first call and hints afterwards."
    def __init__(self): self.calls = 0
    def generate(self, conversations, max_new_tokens=64, temperature=0.0, stop=None, seed=0, role="student"):
        self.calls += 1
        sols = [re.search(r"Answer: (-?\d+)", c[0]["content"]).group(1) for c in conversations]
        return [f"It is {s}." if self.calls == 1 else "Look at the last step." for s in sols]
    def logprobs(self, conversations, completions, role="student"): return [0.0] * len(completions)


@pytest.fixture(scope="module")
def tasks():
    return sample_tasks("arithmetic", 4, seed=0, difficulty=2)


def test_classify_turns():
    kinds = [classify_turn(t) for t in ["ANSWER: 3", "the answer is 4", "is it 3?", "let me think", ""]]
    assert kinds == ["attempt", "attempt", "question", "other", "other"]


def test_teacher_only_after_wrong_attempt_and_end_at_first_verified(tasks):
    t0, t1, t2, _ = tasks
    wrong = f"ANSWER: {int(t0.solution) + 1}"
    env = DidacticEnv(Scripted({t0.prompt: [wrong, f"ANSWER: {t0.solution}", "x", "x"],
                                t1.prompt: [f"The answer is {t1.solution}", "x", "x", "x"],
                                t2.prompt: ["What?", wrong, "hmm", "ok"]}), ScriptedTeacher(), DialogueConfig(max_turns=4))
    e0, e1, e2 = env.run([t0, t1, t2])
    assert [e.solved_at for e in (e0, e1, e2)] == [2, 1, None]
    assert [(t.role, t.kind) for t in e0.turns] == [("user", "problem"), ("student", "attempt"),
                                                     ("teacher", "feedback"), ("student", "attempt")]
    assert e0.turns[2].content == t0.feedback(wrong)
    assert len(e1.turns) == 2
    assert [t.role for t in e2.turns] == ["user", "student", "teacher", "student", "teacher", "student", "user",
                                          "student"]
    assert e2.turns[2].kind == "answer" and e2.turns[2].content == t2.hint("")  # the question gets a hint
    assert e2.turns[4].content == t2.feedback(wrong) and e2.turns[6].content == NUDGE_TEXT
    assert len(e2.student_turns()) == 4
    assert list(success_by_turn([e0, e1, e2], 4)) == pytest.approx([1 / 3, 2 / 3, 2 / 3, 2 / 3])


def test_leaks_rejected_and_counted(tasks):
    script = {t.prompt: [f"ANSWER: {int(t.solution) + 2}"] * 3 for t in tasks}
    eps = DidacticEnv(Scripted(script), ModelTeacher(LeakyChat()), DialogueConfig(max_turns=3)).run(tasks)
    assert all(e.leaks_rejected == 1 and e.teacher_samples == 3 for e in eps)
    assert eps[0].turns[2].content == "Look at the last step."
    assert leak_rate(eps) == pytest.approx(1 / 3)

    class Leaks(Teacher):
        name = "leaks"
        def respond(self, tasks, episodes, answers, seed=0):
            return [TeacherReply(f"It is {t.solution}") for t in tasks]
    eps = DidacticEnv(Scripted(script), Leaks(), DialogueConfig(max_turns=3)).run(tasks)
    assert {e.leaks_rejected for e in eps} == {2}
    assert all(t.content == RETRY_TEXT for e in eps for t in e.turns if t.role == "teacher")


def test_control_teachers(tasks):
    wrong = [f"ANSWER: {int(t.solution) + 5}" for t in tasks]
    assert {r.text for r in RetryTeacher().respond(tasks, [None] * 4, wrong)} == {RETRY_TEXT}
    shuffled = ShuffledTeacher().respond(tasks, [None] * 4, wrong, seed=0)
    assert all(not leaks_solution(r.text, t.solution) for r, t in zip(shuffled, tasks))
    # questions: the retry teacher gives no information; the shuffled one hints about another problem
    assert {r.text for r in RetryTeacher().answer(tasks, [None] * 4, wrong)} == {NO_HINT_TEXT}
    own = [r.text for r in ScriptedTeacher().answer(tasks, [None] * 4, wrong)]
    assert own == [t.hint(a) for t, a in zip(tasks, wrong)]
    other = [r.text for r in ShuffledTeacher().answer(tasks, [None] * 4, wrong, seed=0)]
    assert other != own and all(not leaks_solution(h, t.solution) for h, t in zip(other, tasks))


def test_sharded_user_reveals_one_fact_per_turn():
    t = sample_tasks("word_problems", 1, seed=2, difficulty=2)[0]
    opening = f"{t.shard_prompt()}\n{t.shards[0]}"
    n = len(t.shards)
    turns = ["How many?"] + ["ANSWER: 0"] * (n - 1) + ["ok", f"ANSWER: {t.solution}"]
    ep = DidacticEnv(Scripted({opening: turns}), cfg=DialogueConfig(max_turns=n + 2, sharded=True)).run([t])[0]
    assert [x.content for x in ep.turns if x.kind == "shard"] == t.shards[1:]
    assert ep.turns[2].kind == "shard"  # the question is answered by the next fact
    assert ep.premature == n - 2 and ep.count("question") == 1
    assert ep.turns[-2].content == NO_MORE_TEXT and ep.solved_at == n + 2
    assert not any(x.role == "teacher" for x in ep.turns)


def test_records_to_dataset_and_parquet(tasks, tmp_path):
    wrong = f"ANSWER: {int(tasks[0].solution) + 1}"
    eps = DidacticEnv(Scripted({tasks[0].prompt: [wrong, f"ANSWER: {tasks[0].solution}"]})).run(tasks[:1])
    tok = build_tokenizer()
    ds = episodes_to_dataset(eps, tok)
    row = ds[0]
    assert len(row["input_ids"]) == len(row["role_ids"]) == len(row["loss_mask"])
    assert tok.decode([i for i, m in zip(row["input_ids"], row["loss_mask"]) if m]) == \
        f"{wrong}<eot>ANSWER: {tasks[0].solution}<eot>"
    assert load_episodes(save_episodes(eps, tmp_path / "e.parquet", tok)) == eps


def test_tinylm_rollout_session_matches_fresh(tasks):
    lm = TinyLM.create("1m", seed=0)
    cfg = DialogueConfig(max_turns=3, max_new_tokens=10, temperature=1.0)
    a = DidacticEnv(lm, cfg=cfg).run(tasks, seed=3)
    b = DidacticEnv(lm, cfg=DialogueConfig(max_turns=3, max_new_tokens=10, temperature=1.0)).run(tasks, seed=3)
    assert a == b
    greedy = DialogueConfig(max_turns=3, max_new_tokens=10, temperature=0.0)
    fresh = DialogueConfig(max_turns=3, max_new_tokens=10, temperature=0.0, reuse_cache=False)
    assert DidacticEnv(lm, cfg=greedy).run(tasks) == DidacticEnv(lm, cfg=fresh).run(tasks)


def test_rollout_through_endpoint_equals_local(tasks):
    from agora.core.endpoint import ChatServer, EndpointChatModel
    lm = TinyLM.create("1m", seed=0)
    cfg = DialogueConfig(max_turns=2, max_new_tokens=6, temperature=0.0)
    with ChatServer(lm) as srv:
        remote = DidacticEnv(EndpointChatModel(srv.url, native_roles=True), cfg=cfg).run(tasks[:3])
    assert remote == DidacticEnv(lm, cfg=cfg).run(tasks[:3])


# --- teacher-free play and plasticity (used by the rl2f paper) ---


class Critic:
    "A self-teacher stand-in: records what it was asked and critiques the last student turn."
    def __init__(self): self.calls = []
    def generate(self, conversations, max_new_tokens=64, temperature=0.0, stop=None, seed=0, role="student"):
        self.calls.append((role, [list(c) for c in conversations]))
        return [f"Check {c[-1]['content']!r} again." for c in conversations]


def test_rl2f_self_teacher_reads_only_the_public_conversation():
    tasks = sample_tasks("arithmetic", 3, seed=1, difficulty=2)
    script = {t.prompt: [f"ANSWER: {int(t.solution) + 1}", f"ANSWER: {t.solution}"] for t in tasks}
    critic = Critic()
    eps = DidacticEnv(Scripted(script), SelfTeacher(critic), DialogueConfig(max_turns=2)).run(tasks)
    assert [e.solved_at for e in eps] == [2, 2, 2]
    (role, convs), = critic.calls
    assert role == "teacher"
    for t, e, c in zip(tasks, eps, convs):
        assert c == e.messages()[:2]  # the problem and the attempt: no system prompt, no private notes
        assert e.turns[2].content == f"Check 'ANSWER: {int(t.solution) + 1}' again." and e.turns[2].kind == "feedback"


def test_rl2f_self_critique_stating_the_answer_is_not_screened():
    class Guessing(SelfTeacher):
        def respond(self, tasks, episodes, answers, seed=0): return [TeacherReply(f"Is it {t.solution}?") for t in tasks]
    tasks = sample_tasks("arithmetic", 2, seed=2, difficulty=1)
    script = {t.prompt: ["ANSWER: 100000"] * 2 for t in tasks}
    eps = DidacticEnv(Scripted(script), Guessing(None), DialogueConfig(max_turns=2)).run(tasks)
    assert [e.turns[2].content for e in eps] == [f"Is it {t.solution}?" for t in tasks]
    assert leak_rate(eps) == 0.0


def test_rl2f_blind_retry_and_env_teacher():
    maze = sample_tasks("maze", 3, seed=0, difficulty=2)
    puzzle = sample_tasks("puzzle", 3, seed=0, difficulty=2)
    eps = [Episode(t.uid, t.family, t.solution, "x") for t in maze]
    assert {r.text for r in BlindRetryTeacher().respond(maze, eps, ["ANSWER: U"] * 3)} == {BLIND_RETRY_TEXT}
    for t in maze:
        walk_off = "ANSWER: " + "U" * 10  # runs into a wall or leaves the grid
        assert env_feedback(t, walk_off) == t.feedback(walk_off)
        assert re.fullmatch(r"Your move number \w+ (runs into a wall|leaves the maze)\.", env_feedback(t, walk_off))
    for t in puzzle:
        fb = env_feedback(t, "ANSWER: " + "1" * len(t.solution))
        assert re.fullmatch(r"Your code has \w+ exact and \w+ misplaced\.", fb), fb
    assert EnvTeacher().answer(maze, eps, [""] * 3)[0].text == ENV_NO_HINT_TEXT
    with pytest.raises(ValueError, match="no environment feedback"):
        env_feedback(sample_tasks("arithmetic", 1)[0], "ANSWER: 3")


def test_rl2f_repeat_rate():
    def ep(*turns):
        return Episode("u", "arithmetic", "7", "scripted", turns=[Turn("user", "3+4?", "problem"), *turns])
    fb = Turn("teacher", "Too big.", "feedback")
    a = ep(Turn("student", "3+4=8. ANSWER: 8", "attempt"), fb, Turn("student", "ANSWER: 8.", "attempt"), fb,
           Turn("student", "ANSWER: 9", "attempt"), fb, Turn("student", "ANSWER: 7", "attempt"))
    b = ep(Turn("student", "ANSWER: 8", "attempt"), Turn("user", "nudge", "nudge"), Turn("student", "ANSWER: 8", "attempt"))
    assert repeat_counts([a]) == (1, 3)
    assert repeat_counts([b]) == (0, 0)  # no feedback between the attempts
    assert repeat_rate([a, b]) == pytest.approx(1 / 3)
    assert math.isnan(repeat_rate([b]))
    assert answer_key("ANSWER:\ndef f(x):\n    return x") != answer_key("ANSWER:\ndef f(x):\n    return 0")
