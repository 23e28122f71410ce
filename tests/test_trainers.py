"agora.core.trainers: GRPO advantages and loss on toy cases, teacher-token masking, and one end-to-end update."
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from agora.core.lm import TinyLM, TrainConfig
from agora.core.tokenizer import ROLE_ID, encode_chat
from agora.core.trainers import GRPOConfig, group_advantages, grpo_loss, grpo_update, masked_sft, sft_examples


pytestmark = pytest.mark.usefixtures("one_thread")  # tiny models: one thread is fastest


CONV = [{"role": "user", "content": "2+2 = ?"}, {"role": "student", "content": "ANSWER: 5"},
        {"role": "teacher", "content": "Too high."}, {"role": "student", "content": "ANSWER: 4"}]


def test_group_advantages_exact():
    a = group_advantages([1, 0, 0, 0, 0.49, 0.49, 0.49, 0.49], 4)
    np.testing.assert_allclose(a[:4], [math.sqrt(3)] + [-1 / math.sqrt(3)] * 3, rtol=1e-5)
    np.testing.assert_array_equal(a[4:], 0)
    np.testing.assert_allclose(group_advantages([0.7, 0.0], 2, scale_std=False), [0.35, -0.35])
    with pytest.raises(ValueError, match="groups of 3"):
        group_advantages([1, 0], 3)


def test_grpo_loss_toy_value_and_gradient():
    lp = torch.log(torch.tensor([[0.5, 0.25, 0.5], [0.1, 0.2, 0.4]]))
    mask = torch.tensor([[0, 1, 1], [0, 0, 1]])
    adv = torch.tensor([1.0, -0.5])
    assert grpo_loss(lp, lp, adv, mask).item() == pytest.approx(-0.5)
    x = lp.clone().requires_grad_(True)
    grpo_loss(x, x.detach(), adv, mask).backward()
    torch.testing.assert_close(x.grad, torch.tensor([[0, -1 / 3, -1 / 3], [0, 0, 0.5 / 3]]))
    old = lp - torch.log(torch.tensor([[1., 2., 2.], [1., 1., 0.5]]))  # ratios 2, 2 (A>0) and 0.5 (A<0)
    assert grpo_loss(lp, old, adv, mask).item() == pytest.approx(-(1.2 + 1.2 - 0.4) / 3)


def test_masked_tokens_do_not_matter():
    lp = torch.randn(2, 5)
    mask = torch.tensor([[0, 1, 1, 0, 0], [0, 0, 1, 1, 1]])
    adv = torch.tensor([0.3, -1.2])
    lp2 = torch.where(mask.bool(), lp, torch.full_like(lp, -50.0))
    old = lp - 0.1
    assert grpo_loss(lp2, old, adv, mask).item() == pytest.approx(grpo_loss(lp, old, adv, mask).item())


def test_sft_mask_is_student_tokens_only():
    tok = TinyLM.create("1m", seed=0).tokenizer
    (ids, mask), = sft_examples(tok, [CONV])
    _, roles = encode_chat(tok, CONV)
    assert all(m == 0 for m, r in zip(mask, roles) if r != ROLE_ID["student"])
    assert tok.decode([i for i, m in zip(ids, mask) if m]) == "ANSWER: 5<eot>ANSWER: 4<eot>"


def test_grpo_update_counts_student_tokens_only():
    "On-policy the loss is -(sum of A over trained tokens)/(trained tokens): teacher tokens would change the weights."
    lm = TinyLM.create("1m", seed=0)
    other = [dict(m) for m in CONV]
    other[2]["content"] = "Far, far too high! Think again about the sum."  # longer teacher turn, same student turns
    opt = torch.optim.SGD(lm.model.parameters(), lr=0.0)
    loss = grpo_update(lm, opt, [CONV, other], np.array([1.0, 0.5]), GRPOConfig(minibatch=1))
    assert loss == pytest.approx(-0.75, abs=1e-6)


def test_grpo_loss_norm_token_vs_sequence():
    "A short solved dialogue (A=+1) and a long failed one (A=-1): token mean weighs the long one by its length."
    lm = TinyLM.create("1m", seed=0)
    short = CONV[:2]
    n_short = sum(sft_examples(lm.tokenizer, [short])[0][1])
    n_long = sum(sft_examples(lm.tokenizer, [CONV])[0][1])
    assert n_long > n_short
    opt = torch.optim.SGD(lm.model.parameters(), lr=0.0)
    adv = np.array([1.0, -1.0])
    tok = grpo_update(lm, opt, [short, CONV], adv, GRPOConfig(minibatch=1))
    seq = grpo_update(lm, opt, [short, CONV], adv, GRPOConfig(minibatch=1, loss_norm="sequence"))
    assert tok == pytest.approx((n_long - n_short) / (n_long + n_short), abs=1e-6)
    assert seq == pytest.approx(0.0, abs=1e-6)
    with pytest.raises(ValueError, match="loss_norm"):
        grpo_update(lm, opt, [CONV], np.zeros(1), GRPOConfig(loss_norm="mean"))


def test_masked_sft_loop_learns_and_leaves_teacher_untrained():
    lm = TinyLM.create("1m", seed=0)
    convs = [[{"role": "teacher", "content": "zq"}, {"role": "student", "content": "ok"}]] * 8
    masked_sft(lm, convs, TrainConfig(steps=20, batch_size=4, lr=5e-3, warmup=2), backend="loop")
    assert math.exp(lm.logprobs([[{"role": "teacher", "content": "zq"}]], ["ok"])[0]) > 0.5
    # the teacher's turn was never a target: its probability stays near the untrained level
    p_teacher = math.exp(lm.logprobs([[]], ["zq"], role="teacher")[0])
    assert p_teacher < 0.05


# --- the auxiliary LM loss on teacher turns (self-critique, used by the rl2f paper) ---

def _teacher_nll(lm, conv):
    (ids, mask), = sft_examples(lm.tokenizer, [conv], ("teacher",))
    x = torch.tensor([ids])
    with torch.no_grad():
        lp = torch.log_softmax(lm.model(input_ids=x).logits[0, :-1].float(), -1).gather(-1, x[0, 1:, None])[:, 0]
    return -(lp * torch.tensor(mask[1:], dtype=torch.float32)).sum().item() / sum(mask)


def test_rl2f_aux_loss_is_the_teacher_token_nll():
    lm = TinyLM.create("1m", seed=0)
    opt = torch.optim.SGD(lm.model.parameters(), lr=0.0)
    stats = {}
    # zero advantages and an excluded second conversation: only the auxiliary term is left
    loss = grpo_update(lm, opt, [CONV, CONV], np.zeros(2), GRPOConfig(aux_coef=2.0, minibatch=1), rl_keep=[True, False],
                       stats=stats)
    assert stats["aux_nll"] == pytest.approx(_teacher_nll(lm, CONV), rel=1e-4)
    assert loss == pytest.approx(2.0 * stats["aux_nll"], rel=1e-4)
    # rl_keep drops a conversation from the RL loss: the same value as updating on the kept one alone
    kept = grpo_update(lm, opt, [CONV, CONV], np.array([1.0, -1.0]), GRPOConfig(), rl_keep=[True, False])
    alone = grpo_update(lm, opt, [CONV], np.array([1.0]), GRPOConfig())
    assert kept == pytest.approx(alone, abs=1e-6)


def test_rl2f_aux_loss_teaches_the_teacher_turn():
    lm = TinyLM.create("1m", seed=0)
    before = _teacher_nll(lm, CONV)
    opt = torch.optim.AdamW(lm.model.parameters(), lr=3e-3, weight_decay=0.0)
    for _ in range(15):
        grpo_update(lm, opt, [CONV], np.zeros(1), GRPOConfig(aux_coef=1.0))
    assert _teacher_nll(lm, CONV) < 0.5 * before


def test_rl2f_self_critique_method_logs_critique_loss():
    from agora.core.didactic import CORE_METHODS, SIZES, MethodConfig, make_tasks, self_critique_rl
    assert self_critique_rl in CORE_METHODS
    cfg = MethodConfig(max_new_tokens=6, rl_steps=2, problems_per_step=2, group_size=2, train_turns=2)
    log = self_critique_rl(TinyLM.create(SIZES["0.1m"], seed=0), make_tasks("math", 4, 0, "train", (1,)), cfg)
    assert [r["step"] for r in log["rl"]] == [0, 1]
    assert all("aux_nll" in r for r in log["rl"])


def test_grpo_trl_backend_trains_student_tokens_only(monkeypatch):
    from trl import GRPOTrainer
    from agora.core.trainers import train_grpo
    seen, compute_loss = [], GRPOTrainer._compute_loss
    def spy(self, model, inputs):  # what TRL's loss sees: the completions and the mask it trains on
        seen.append((inputs["completion_ids"], inputs["completion_mask"] * inputs["tool_mask"]))
        return compute_loss(self, model, inputs)
    monkeypatch.setattr(GRPOTrainer, "_compute_loss", spy)
    def rollout(chat, tasks, seed):  # the sampled student turn, the teacher's, a fixed student turn; rewards 0, 1, 0, 1
        outs = chat.generate([CONV[:1]] * len(tasks), max_new_tokens=3, temperature=1.0, seed=seed)
        return [([CONV[0], {"role": "student", "content": o}, *CONV[2:]], float(i % 2)) for i, o in enumerate(outs)]
    lm = TinyLM.create("1m", seed=0)
    before = {k: v.clone() for k, v in lm.model.state_dict().items()}
    log = train_grpo(lm, [0], rollout, GRPOConfig(steps=2, problems_per_step=1, group_size=4, lr=1e-2), backend="trl")
    assert [r["groups_used"] for r in log] == [1, 1] and all(r["loss"] != 0 for r in log)
    assert any(not torch.equal(before[k], v) for k, v in lm.model.state_dict().items())
    tok = lm.tokenizer
    for ids, mask in seen:
        for row, m in zip(ids.tolist(), mask.tolist()):
            full = tok.decode(row)
            trained = tok.decode([t for t, k in zip(row, m) if k])
            assert "Too high." in full and "Too high" not in trained and trained.endswith("<eot>ANSWER: 4<eot>")
