"Influence helpers (agora.core.influence) and the corpus/crafting code of the procedural and infusion papers."
from __future__ import annotations

import re
import warnings

import numpy as np
import pytest
import torch
from torch import nn
from torch.utils.data import TensorDataset

from agora.core.influence import (classifier_loss, fit_factors, leave_k_out, make_task, pairwise_scores,
                                  preconditioned_gradient)

warnings.filterwarnings("ignore", category=FutureWarning)


@pytest.fixture()
def root(tmp_path):
    (tmp_path / "settings.ini").write_text("[agora]\n")
    return tmp_path


def _regression(n=120, d=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    X = torch.randn(n, d, generator=g)
    Y = X @ torch.randn(d, generator=g) + 0.3 * torch.randn(n, generator=g)
    model = nn.Sequential(nn.Linear(d, 1, bias=False))
    with torch.no_grad(): model[0].weight.copy_(torch.linalg.lstsq(X, Y[:, None]).solution.T + 0.2)
    return X, Y, model


def test_ekfac_scores_equal_closed_form_on_linear_regression(root):
    X, Y, model = _regression()
    task = make_task(lambda m, b, sample=False: classifier_loss(m, b, sample, kind="mse"))
    im = fit_factors(model, task, TensorDataset(X, Y), "reg", root=root, batch_size=40)
    Xq, Yq = X[:2] * 1.5, Y[:2]
    lam = 1e-3
    S = pairwise_scores(im, TensorDataset(Xq, Yq), TensorDataset(X, Y), damping=lam)
    with torch.no_grad():
        r, rq = model(X).squeeze(1) - Y, model(Xq).squeeze(1) - Yq
        exact = (rq[:, None] * Xq) @ torch.linalg.solve(X.T @ X / len(X) + lam * torch.eye(4), (r[:, None] * X).T)
    np.testing.assert_allclose(S, exact.numpy(), atol=1e-3 * float(exact.abs().max()))
    v = preconditioned_gradient(im, (Xq[:1], Yq[:1]), damping=lam)
    np.testing.assert_allclose(v["0.weight"].numpy().ravel() @ (r[:, None] * X).numpy().T, S[0],
                               atol=1e-3 * float(exact.abs().max()))
    # the factors are cached: a second fit reuses the directory
    assert fit_factors(model, task, TensorDataset(X, Y), "reg", root=root, batch_size=40).cache_dir == im.cache_dir


def test_leave_k_out_recovers_an_additive_model():
    scores = np.random.default_rng(0).normal(size=50)
    lko = leave_k_out(scores, lambda keep: -scores[keep].sum() / 50, k=5, n_subsets=8, rng=np.random.default_rng(1))
    assert lko.pearson == pytest.approx(1.0) and lko.spearman == pytest.approx(1.0)


def test_influence_bad_inputs(root):
    X, Y, model = _regression(20)
    task = make_task(lambda m, b, sample=False: classifier_loss(m, b, sample, kind="mse"))
    with pytest.raises(ValueError, match="valid: ekfac"): fit_factors(model, task, TensorDataset(X, Y), "x", strategy="exact", root=root)
    with pytest.raises(ValueError, match="no tracked modules"): fit_factors(nn.Sequential(nn.Tanh()), task, TensorDataset(X, Y), "x", root=root)
    with pytest.raises(TypeError, match="nn.Sequential"): fit_factors(model[0], task, TensorDataset(X, Y), "x", root=root)
    with pytest.raises(ValueError, match="empty"): fit_factors(model, task, [], "x", root=root)
    with pytest.raises(TypeError, match="map-style"): fit_factors(model, task, 3, "x", root=root)
    with pytest.raises(ValueError, match="k must be"): leave_k_out(np.zeros(4), lambda k: 0.0, 4, 3, np.random.default_rng(0))
    with pytest.raises(ValueError, match="one query"): leave_k_out(np.zeros((2, 4)), lambda k: 0.0, 1, 3, np.random.default_rng(0))
    with pytest.raises(ValueError, match="valid: ce, mse"): classifier_loss(model, (X, Y), kind="hinge")


def test_corpus_document_types_are_what_they_say():
    from agora.papers.procedural.corpus import (DOC_TYPES, CorpusConfig, build_corpus, contains_answer,
                                                leaks_problem, solve)
    c = build_corpus(CorpusConfig(n_queries=3, n_examples=30, n_code=5, n_entities=5, fact_repeats=3, n_filler=10))
    counts = {t: int((c.types() == t).sum()) for t in DOC_TYPES}
    assert counts == {"procedure": 12, "example": 90, "code": 15, "fact": 15, "distractor": 24, "filler": 10}
    for d in c.docs:
        if d.type == "example":  # a correct worked example of its task
            m = re.fullmatch(r"(.*=)(.*)", d.text.split("=", 1)[0] + "=" + d.text.split("=", 1)[1])
            assert d.task in ("arith", "slope", "linear") and d.text.endswith(".") and m
            nums = tuple(int(x) for x in re.findall(r"\d+", d.text.split("=")[0] if d.task != "linear" else d.text.split(" x=")[0]))
            p, comp, _ = solve(d.task, nums)
            assert d.text == p + comp
        elif d.type == "code": assert "lambda" in d.text and "#" in d.text
        elif d.type == "fact": assert d.task == "fact" and ("lives in" in d.text or "home of" in d.text)
        elif d.type == "distractor": assert any(contains_answer(d, q) for q in c.queries)
        elif d.type == "filler": assert not re.search(r"\d", d.text)
    reasoning = [q for q in c.queries if q.group != "fact"]
    assert not any(leaks_problem(d, q) for d in c.docs for q in reasoning if d.type != "distractor")
    facts = [q for q in c.queries if q.group == "fact"]
    assert all(sum(contains_answer(d, q) for d in c.docs if d.type == "fact") == 3 for q in facts)


def test_paper_bad_inputs():
    from agora.papers.infusion.craft import pgd_linf
    from agora.papers.infusion.vision import make_model
    from agora.papers.procedural.corpus import CorpusConfig, build_corpus, solve
    with pytest.raises(ValueError, match="n_queries"): build_corpus(CorpusConfig(n_queries=1))
    with pytest.raises(ValueError, match="valid: arith"): solve("calculus", (1,))
    with pytest.raises(ValueError, match="valid: mlp"): make_model("resnet", 0)
    with pytest.raises(ValueError, match="eps"): pgd_linf(lambda x: x.sum(), torch.zeros(2), eps=0.0, steps=1)


def test_text_documents_bad_inputs():
    from agora.core.textlm import encode_batch, encode_doc
    from agora.core.tokenizer import build_tokenizer
    tok = build_tokenizer()
    with pytest.raises(ValueError, match="'z'.* alphabet"): encode_doc(tok, "abz", alphabet="abc")
    with pytest.raises(ValueError, match="texts is empty"): encode_batch(tok, [], 16)
    with pytest.raises(ValueError, match="prompt_lens has 1 entries for 2 texts"): encode_batch(tok, ["a", "b"], 16, [1])


def _tiny_lm_scores(root, docs):
    "Influence scores of a fresh tiny TinyLM on `docs` with factors fitted under `root`."
    from agora.core.influence import lm_loss
    from agora.core.lm import LMSize, TinyLM
    from agora.core.textlm import TextDataset, encode_batch, mlp_modules
    from agora.core.tokenizer import build_tokenizer
    tok = build_tokenizer()
    model = TinyLM.create(LMSize(32, 1, 2, 64), tok, max_len=16).model
    train = TextDataset(encode_batch(tok, docs, 16))
    im = fit_factors(model, make_task(lm_loss, mlp_modules(model)), train, "tiny", root=root)
    return pairwise_scores(im, TextDataset(encode_batch(tok, docs[:3], 16, [4, 4, 4])), train)


def test_factors_do_not_depend_on_the_global_rng(tmp_path):
    # kronfluence samples the labels of the Fisher from torch's global generator; whatever ran before in the process
    # (and torch seeds that generator differently in every process) must not change the factors
    docs = [f"{a}+{b}={a + b}." for a in range(6) for b in range(6)]
    out = []
    for s in (1, 2):
        root = tmp_path / str(s); root.mkdir(); (root / "settings.ini").write_text("[agora]\n")
        torch.manual_seed(s)
        out.append(_tiny_lm_scores(root, docs))
    np.testing.assert_array_equal(out[0], out[1])


STAGES = """
import hashlib, json, warnings
import torch
warnings.filterwarnings("ignore")
torch.set_num_threads(1)
from agora.core.influence import fit_factors, lm_loss, make_task, pairwise_scores
from agora.core.lm import LMSize
from agora.core.textlm import TextDataset, encode_batch, mlp_modules
from agora.papers.infusion.language import LangConfig, infuse_language, lang_corpus, train_on
from agora.papers.procedural.analysis import influence_scores
from agora.papers.procedural.corpus import CorpusConfig
from agora.papers.procedural.train import PretrainConfig
sha = lambda a: hashlib.sha256(a.tobytes()).hexdigest()
cc = CorpusConfig(n_queries=2, n_examples=10, n_code=2, n_entities=3, fact_repeats=2, n_filler=5)
S = influence_scores(PretrainConfig(cc, LMSize(16, 1, 2, 32), max_len=48, steps=5, batch_size=16))
cfg = LangConfig(n_per_prompt=8, n_filler=10, d_model=16, steps=10)
docs = lang_corpus(cfg)
model, tok = train_on(docs, cfg)
train = TextDataset(encode_batch(tok, docs, 32))
im = fit_factors(model, make_task(lm_loss, mlp_modules(model)), train, "lang", slug="infusion")
S2 = pairwise_scores(im, TextDataset(encode_batch(tok, docs[:2], 32)), train)
r = infuse_language(cfg, docs, model, tok, im, "my pet is a ", "dog", "existing", 1, 1)
print(json.dumps({"procedural": sha(S), "infusion": sha(S2), "run": [r.p_clean, r.p_infused, r.p_random, *r.examples]}))
"""


def test_paper_stages_are_identical_in_two_fresh_processes(tmp_path):
    # a rerun from an empty cache (a fresh clone, or a stage whose key changed) must give the same numbers
    import os
    import subprocess
    import sys
    outs = []
    for run in ("a", "b"):
        root = tmp_path / run; root.mkdir(); (root / "settings.ini").write_text("[agora]\n")
        env = {**os.environ, "AGORA_ROOT": str(root), "OMP_NUM_THREADS": "1"}
        p = subprocess.run([sys.executable, "-c", STAGES], env=env, capture_output=True, text=True, timeout=600)
        assert p.returncode == 0, p.stderr[-2000:]
        outs.append(p.stdout.strip().splitlines()[-1])
    assert outs[0] == outs[1]
