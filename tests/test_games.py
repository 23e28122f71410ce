"agora.core.games and agora.core.shaping: exact payoff tables, env step semantics, exact gradients, OpenES, bad input."
from __future__ import annotations

import itertools

import pytest
import torch

from agora.core.games import (CoinGame, IPDMatrixGrid, NPlayerGame, PyNPlayerGame, exact_values, first_person_index,
                              joint_rewards, payoff_table, transition_matrix)
from agora.core.shaping import BatchedNet, OpenES, exact_game, lola_grads, naive_grads, naive_grads_autograd

TABLES = {  # payoff[a][d]: own action a (0=C, 1=D), d = defecting co-players
    ("ipd", 2): [[-1, -3], [0, -2]],
    ("ipd", 4): [[-1, -5 / 3, -7 / 3, -3], [0, -2 / 3, -4 / 3, -2]],
    ("chicken", 2): [[0, -2], [1, -3]],
    ("chicken", 3): [[0, -1, -2], [1, -1, -3]],
    ("stag", 2): [[4, 0], [2, 2]],
    ("stag", 3): [[4, 4, 0], [2, 2, 2]],
    ("stag", 4): [[4, 4, 0, 0], [2, 2, 2, 2]],
    ("stag", 5): [[4, 4, 4, 0, 0], [2, 2, 2, 2, 2]],
}


@pytest.mark.parametrize("key", sorted(TABLES))
def test_payoff_tables_exact(key):
    assert torch.allclose(payoff_table(*key), torch.tensor(TABLES[key], dtype=torch.float32), atol=1e-6)


def test_payoffs_depend_only_on_number_of_defectors():
    for game, n in itertools.product(("ipd", "chicken", "stag"), range(2, 6)):
        R, py = joint_rewards(game, n), PyNPlayerGame(game, n)
        for s, acts in enumerate(itertools.product([0, 1], repeat=n)):
            acts = list(acts)[::-1]  # bit i = player i
            assert sorted(R[s].tolist()) == sorted(py.step(acts)[1])
            d = sum(acts)
            assert all(abs(R[s, i] - payoff_table(game, n)[a, d - a]) < 1e-6 for i, a in enumerate(acts))


def test_step_semantics_first_person_and_done():
    env = NPlayerGame("ipd", 3, episode_len=2)
    obs = env.reset((2, 4))
    assert obs.shape == (2, 4, 3) and (obs == 8).all()
    acts = torch.zeros(2, 4, 3, dtype=torch.long)
    acts[..., 1] = 1  # only player 1 defects
    obs, r, done = env.step(acts)
    assert obs[0, 0].tolist() == [0b010, 0b001, 0b100] and not done
    assert r[0, 0].tolist() == [-2.0, 0.0, -2.0]
    assert env.step(acts)[2]
    assert (first_person_index(3)[:, -1] == 8).all()


def test_transition_rows_are_distributions_and_values_match_closed_form():
    p = torch.rand(5, 4, 17, dtype=torch.float64)
    assert torch.allclose(transition_matrix(p).sum(-1), torch.ones(5, 17, dtype=torch.float64))
    alld = torch.zeros(1, 2, 5)
    assert torch.allclose(exact_values(alld, joint_rewards("ipd", 2), 0.96), torch.tensor([[-2.0, -2.0]]))


def test_naive_grads_closed_form_equals_autograd():
    th = torch.randn(3, 4, 17, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    R = joint_rewards("chicken", 4).double()
    assert torch.allclose(naive_grads(th, R, 0.9), naive_grads_autograd(th, R, 0.9), atol=1e-10)
    assert torch.allclose(exact_game(th, R, 0.9)["visitation"].sum(-1), torch.ones(3, dtype=torch.float64))


def test_lola_gradient_matches_finite_differences():
    g = torch.Generator().manual_seed(2)
    th = torch.randn(3, 9, dtype=torch.float64, generator=g)
    R, alpha, gamma = joint_rewards("ipd", 3).double(), 0.5, 0.9

    def objective(x):  # LOLA player 0's look-ahead value
        t = torch.cat([x[None], th[1:]])
        ahead = t + alpha * naive_grads(t, R, gamma) * torch.tensor([0.0, 1.0, 1.0], dtype=torch.float64)[:, None]
        return exact_values(torch.sigmoid(ahead), R, gamma)[0]

    eps, fd = 1e-6, torch.zeros(9, dtype=torch.float64)
    for i in range(9):
        d = torch.zeros(9, dtype=torch.float64)
        d[i] = eps
        fd[i] = (objective(th[0] + d) - objective(th[0] - d)) / (2 * eps)
    assert torch.allclose(lola_grads(th, R, gamma, alpha, [0])[0], fd, atol=1e-7)


def test_openes_solves_toy_objective():
    target = torch.tensor([[0.5, -1.0, 2.0, 0.0]])
    es = OpenES(torch.zeros(1, 4), popsize=20, sigma=0.1, lr=0.1, gen=torch.Generator().manual_seed(0))
    for _ in range(250):
        x = es.ask()
        es.tell(-((x - target[:, None]) ** 2).sum(-1))
    assert (es.mean - target).abs().max() < 0.1


def test_gridworld_steps():
    g = torch.Generator().manual_seed(0)
    cg = CoinGame(3, episode_len=2)
    cg.reset(1, g)
    cg.pos[0] = torch.tensor([[1, 1], [0, 0]]); cg.coin[0] = torch.tensor([1, 2]); cg.color[0] = 0
    _, r, done = cg.step(torch.tensor([[3, 1]]))
    assert r[0].tolist() == [1.0, 0.0] and not done
    env = IPDMatrixGrid(size=4, coins_per_kind=1, episode_len=3)
    env.reset(1, g)
    env.pos[0] = torch.tensor([[2, 2], [2, 3]]); env.inv[0] = torch.tensor([[1.0, 3.0], [3.0, 1.0]])
    _, r, _ = env.step(torch.tensor([[4, 0]]))  # interact: x0 = (1/4, 3/4), x1 = (3/4, 1/4)
    x0, x1 = torch.tensor([0.25, 0.75]), torch.tensor([0.75, 0.25])
    assert torch.allclose(r[0], torch.stack([x0 @ env.payoff @ x1, x1 @ env.payoff @ x0]))
    assert env.frozen[0] == env.freeze_steps


@pytest.mark.parametrize("bad", [
    lambda: payoff_table("harvest", 3),
    lambda: payoff_table("ipd", 1),
    lambda: NPlayerGame("stag", 6),
    lambda: NPlayerGame("ipd", 2).step(torch.tensor([[0, 3]])),
    lambda: NPlayerGame("ipd", 2).step(torch.tensor([[0.0, 1.0]])),
    lambda: exact_values(torch.ones(1, 2, 5), joint_rewards("ipd", 2), 1.0),
    lambda: OpenES(torch.zeros(2), popsize=3),
    lambda: BatchedNet(3, 4, 1).unpack(torch.zeros(1, 5)),
    lambda: lola_grads(torch.zeros(2, 5), joint_rewards("ipd", 2), 0.9, 0.1, [5]),
    lambda: IPDMatrixGrid(size=2, coins_per_kind=2),
])
def test_bad_input_raises_value_error(bad):
    with pytest.raises(ValueError):
        bad()
