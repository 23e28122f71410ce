"agora.core.tokenizer and agora.core.lm: save/load paths, the sampler, scoring, training (the endpoint: test_endpoint.py)."
from __future__ import annotations

import numpy as np
import pytest
import torch

from agora.core.lm import ChatModel, HFChatModel, TinyLM, TrainConfig, chat_example, lm_config, train_lm
from agora.core.tokenizer import build_tokenizer, encode_chat, role_loss_mask

CONVS = [[{"role": "user", "content": "What is 3 + 4?"}],
         [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Reverse the list [1, 2, 3]."},
          {"role": "student", "content": "ANSWER: [1, 2, 3]"}, {"role": "teacher", "content": "Check the order."}],
         [{"role": "user", "content": "hi"}]]


pytestmark = pytest.mark.usefixtures("one_thread")  # tiny models: one thread is fastest


@pytest.fixture(scope="module")
def lm() -> TinyLM:
    return TinyLM.create("1m", seed=0)


@pytest.fixture(scope="module")
def saved(lm, tmp_path_factory):
    d = tmp_path_factory.mktemp("tinylm")
    lm.save_pretrained(d)
    return d


def test_tokenizer_roles_and_template():
    tok = build_tokenizer()
    ids, roles = encode_chat(tok, CONVS[1], generation_role="student")
    assert ids == tok.apply_chat_template(CONVS[1], add_generation_prompt=True, tokenize=True)["input_ids"]
    assert tok.decode(ids).endswith("<|teacher|>Check the order.<eot><|student|>")
    mask = role_loss_mask(tok, ids, roles, ["student"])
    assert tok.decode([i for i, m in zip(ids, mask) if m]) == "ANSWER: [1, 2, 3]<eot>"
    with pytest.raises(ValueError, match="unknown role"):
        encode_chat(tok, [{"role": "robot", "content": "x"}])


def test_sizes():
    tok = build_tokenizer()
    with pytest.raises(ValueError, match="unknown size"):
        lm_config("3b", tok)
    assert 4.5e6 < TinyLM.create("5m").n_params < 5.5e6


def test_from_pretrained_roundtrip(lm, saved):
    again = TinyLM.from_pretrained(saved)
    assert not again.model.training
    for a, b in zip(lm.model.parameters(), again.model.parameters()):
        assert torch.equal(a, b)
    assert again.generate(CONVS, max_new_tokens=10) == lm.generate(CONVS, max_new_tokens=10)
    assert isinstance(HFChatModel.from_pretrained(saved), ChatModel)


def reference_greedy(lm: HFChatModel, conv, n: int) -> str:
    ids = torch.tensor([lm.encode(conv)])
    out = lm.model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=n, do_sample=False,
                            eos_token_id=sorted(lm.stop_ids), pad_token_id=lm.pad_id)[0, ids.shape[1]:].tolist()
    return lm.tokenizer.decode([t for t in out if t not in lm.stop_ids])


def test_batched_greedy_matches_unbatched_reference(lm):
    assert lm.generate(CONVS, max_new_tokens=16) == [reference_greedy(lm, c, 16) for c in CONVS]


def test_seeded_sampling(lm):
    a = lm.generate(CONVS, max_new_tokens=12, temperature=1.0, seed=7)
    assert a == lm.generate(CONVS, max_new_tokens=12, temperature=1.0, seed=7)
    assert a != lm.generate(CONVS, max_new_tokens=12, temperature=1.0, seed=8)


def test_per_sequence_stop(lm):
    full = lm.generate(CONVS, max_new_tokens=12)
    stop = full[0][3:5]
    cut = lm.generate(CONVS, max_new_tokens=12, stop=[stop])
    assert cut == [t[:t.find(stop)] if stop in t else t for t in full]


def test_session_across_turns_equals_fresh_prefill(lm):
    sess = lm.session()
    first = sess.generate(["x", "y", "z"], CONVS, max_new_tokens=8, temperature=1.0, seed=1)
    nxt = [c + [{"role": "student", "content": t}, {"role": "teacher", "content": "No. Try again."}]
           for c, t in zip(CONVS, first)]
    got = sess.generate(["z", "x"], [nxt[2], nxt[0]], max_new_tokens=8)
    assert got == lm.generate([nxt[2], nxt[0]], max_new_tokens=8)


def test_feeding_only_unfinished_rows_changes_no_sample():
    "Rows that finished their turn stop being fed; the samples equal those of sessions that feed every row."
    sharp = TinyLM.create("1m", seed=0)
    with torch.no_grad(): sharp.model.lm_head.weight.mul_(5)  # peaked distributions: the samples follow the context
    convs = [[{"role": "user", "content": f"What is {i} * 3?"}] for i in range(20)]
    stop = [chr(c) for c in range(ord("a"), ord("z") + 1)]  # rows stop after a few tokens or none

    def turn(min_rows: int | None, keys, cs, seed: int, sess=None) -> list[str]:
        sess = sess or sharp.session()
        if min_rows: sess.min_rows = min_rows
        return sess.generate(keys, cs, 12, temperature=1.0, stop=stop, seed=seed)

    sess = sharp.session()
    first = turn(None, range(20), convs, 5, sess)
    nxt = [c + [{"role": "student", "content": t}, {"role": "teacher", "content": "No."}] for c, t in zip(convs, first)]
    keep = [19, 4, 0, 11, 8, 2, 3, 7, 13]
    second = turn(None, keep, [nxt[i] for i in keep], 6, sess)
    assert len({len(t) for t in first}) > 5  # rows did stop at different steps
    assert first == turn(10**6, range(20), convs, 5)
    assert second == turn(10**6, keep, [nxt[i] for i in keep], 6)
    with pytest.raises(ValueError, match="distinct"):
        sharp.session().generate(["a", "a"], CONVS[:2])


def test_logprobs_match_stepwise(lm):
    comp = "ANSWER: 7"
    ids, total = lm.encode(CONVS[0]), 0.0
    for t in lm.tokenizer.encode(comp, add_special_tokens=False):
        total += torch.log_softmax(lm.model(input_ids=torch.tensor([ids])).logits[0, -1], -1)[t].item()
        ids = ids + [t]
    assert lm.logprobs(CONVS[:1], [comp])[0] == pytest.approx(total, abs=1e-3)
    with pytest.raises(ValueError, match="one completion"):
        lm.logprobs(CONVS, [comp])


def test_training_lowers_masked_loss():
    tiny = TinyLM.create("1m", seed=1)
    rng = np.random.default_rng(0)
    ex = [chat_example(tiny.tokenizer, [{"role": "user", "content": f"{a}+{b}"},
                                        {"role": "student", "content": str(a + b)}])
          for a, b in rng.integers(0, 10, (100, 2))]
    losses = train_lm(tiny.model, ex, TrainConfig(steps=40, batch_size=16, lr=3e-3, warmup=5))
    assert np.mean(losses[-5:]) < 0.5 * losses[0]
    assert not tiny.model.training
    with pytest.raises(ValueError, match="no training examples"):
        train_lm(tiny.model, [], TrainConfig(steps=1))
