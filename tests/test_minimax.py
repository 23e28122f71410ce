"minimax paper: the torch maze against minigrid, UED score functions, the level buffer, teachers and the bench CLI."
from __future__ import annotations

import json

import pytest
import torch

from agora.papers.minimax.maze import (FORWARD, MazeEnv, cat_levels, flip_walls, level_keys, move_goals, parity_check,
                                       parse_level, random_levels, shortest_solution)
from agora.papers.minimax.maze import held_out_mazes
from agora.papers.minimax.ued import (LevelBuffer, UEDTeacher, UEDTeacherConfig, max_mc, positive_value_loss, rank_weights,
                                      replay_distribution, staleness_weights)
from agora.core.paths import find_root
from conftest import agora


def test_parity_with_minigrid():
    pytest.importorskip("minigrid")
    g = torch.Generator().manual_seed(7)
    levels = cat_levels([random_levels(8, 9, 9, 15, g, sample_n_walls=True), *held_out_mazes(9).values()])
    actions = torch.multinomial(torch.tensor([0.2, 0.2, 0.6]), 150 * len(levels), replacement=True,
                                generator=g).view(150, len(levels))
    res = parity_check(levels, actions, max_steps=40)
    assert res.pop("steps") == 150 * len(levels)
    assert res == {"pos": 0, "dir": 0, "reward": 0, "done": 0, "view": 0}


def test_reward_and_restart():
    maze = MazeEnv(1, 3, view=3, max_steps=10)
    s = maze.reset(parse_level(">.G"))
    s, r, d, ok = maze.step(s, torch.tensor([FORWARD]))
    assert (r.item(), d.item()) == (0.0, False)
    s, r, d, ok = maze.step(s, torch.tensor([FORWARD]))
    assert d.item() and ok.item() and r.item() == pytest.approx(1 - 0.9 * 2 / 10)
    assert s.t.item() == 0 and maze.to_interior(s.pos).item() == 0  # restarted on the same level
    for _ in range(10): s, r, d, ok = maze.step(s, torch.tensor([0]))  # turning only: time runs out
    assert d.item() and not ok.item() and r.item() == 0.0


def test_bad_input():
    with pytest.raises(ValueError, match="odd"): MazeEnv(5, 5, view=4)
    with pytest.raises(ValueError, match="do not fit"): random_levels(1, 3, 3, 8)
    with pytest.raises(ValueError, match="exactly one goal"): parse_level(">..")
    with pytest.raises(ValueError, match="unknown teacher"): UEDTeacher(UEDTeacherConfig(method="paired"), 5, 5, 2, None)


def test_generators_mutators_comparator():
    g = torch.Generator().manual_seed(0)
    lv = random_levels(300, 7, 7, 12, g)
    assert lv.walls.flatten(1).sum(1).eq(12).all()
    assert len(set(level_keys(lv).tolist())) == 300
    assert (flip_walls(lv, g).walls != lv.walls).flatten(1).sum(1).eq(1).all()
    mg = move_goals(lv, g)
    assert not mg.walls.flatten(1).gather(1, mg.goal[:, None]).any() and (mg.goal != mg.agent_pos).all()
    for n in (7, 13):
        assert all(shortest_solution(m) is not None for m in held_out_mazes(n).values())


def test_score_functions_and_replay_distribution():
    adv = torch.tensor([[0.5, -1.0], [-0.5, 2.0]])
    assert positive_value_loss(adv).tolist() == [0.25, 1.0]
    assert max_mc(torch.tensor([[0.0, 1.0]]), torch.tensor([1.0, 1.0])).tolist() == [1.0, 0.0]
    w = rank_weights(torch.tensor([3.0, 1.0, 2.0]), 1.0)
    assert torch.allclose(w, torch.tensor([1.0, 1 / 3, 1 / 2]) / (11 / 6))
    assert staleness_weights(torch.tensor([0, 10]), 10).tolist() == [1.0, 0.0]
    p = replay_distribution(torch.tensor([3.0, 1.0]), torch.tensor([0, 10]), 10, temperature=1.0, staleness_coef=0.5)
    assert torch.allclose(p, torch.tensor([0.5 * 2 / 3 + 0.5, 0.5 * 1 / 3]))


def test_level_buffer_keeps_high_scores_without_duplicates():
    g = torch.Generator().manual_seed(1)
    buf = LevelBuffer(3, 5, 5)
    lv = random_levels(5, 5, 5, 4, g)
    buf.insert(lv, torch.tensor([0.1, 0.9, 0.5, 0.7, 0.2]), torch.zeros(5), now=1)
    assert sorted(buf.scores.tolist()) == pytest.approx([0.5, 0.7, 0.9])
    assert buf.insert(lv[1:2], torch.tensor([0.05]), torch.zeros(1), now=2) == 0  # a duplicate updates, never enters
    assert len(buf) == 3 and buf.scores.min().item() == pytest.approx(0.05)


def test_bench_cli_prints_json_lines(tmp_path):
    pytest.importorskip("minigrid")
    r = agora(find_root(), "bench", "maze", "--batches", "1,8", "--modes", "step,reset", "--seconds", "0.01", "--size", "5",
              "--n-walls", "3", "--jax-venv", str(tmp_path / "absent"))
    assert r.returncode == 0, r.stderr
    lines = [json.loads(l) for l in r.stdout.splitlines() if l.startswith("{")]
    assert lines[0]["skipped"] == "minimax-jax"
    rows = lines[1:]
    assert [(x["batch"], x["mode"]) for x in rows] == [(1, "step"), (1, "reset"), (8, "step"), (8, "reset")]
    assert all(x["ours"] > 0 for x in rows) and "ours_over_minigrid" in rows[0]
