"agora.core.didactic: the configs every sml/rl2f notebook builds, methods passed as functions, paper methods in workers."
from __future__ import annotations

import os
from pathlib import Path

import pytest

from agora.core.didactic import (BaseConfig, MethodConfig, base_model, build_models, experiment_arms, experiment_configs,
                                 method_name, multi_turn_rl, trained_model)

ROOT = Path(__file__).parents[1]
NOTEBOOKS = {"sml": ["10_methods", "30_eval", "40_transfer_sharded"],
             "rl2f": ["10_train", "30_gap_transfer", "40_self_correction"]}


pytestmark = pytest.mark.usefixtures("one_thread")  # tiny models: one thread is fastest


def notebook_params(slug: str, name: str, profile: str) -> dict:
    "A notebook's parameters as the runner sets them: its defaults, overridden by the profile (shared and per notebook)."
    from agora.core.claims import load_card
    from agora.core.profiles import notebook_parameters, resolve_parameters
    paths = load_card(slug, ROOT).notebook_paths(ROOT)
    path, = [p for p in paths if p.stem == name]
    return {**notebook_parameters(path), **resolve_parameters(slug, profile, paths, ROOT)[name]}


@pytest.mark.parametrize("profile", ["smoke", "cpu", "gpu"])
def test_every_didactic_notebook_builds_the_same_configs(profile):
    # the six notebooks share their models through the cache only if they build the same configs from their parameters
    built = {(s, n): experiment_configs(notebook_params(s, n, profile)) for s, ns in NOTEBOOKS.items() for n in ns}
    first = built[("sml", "10_methods")]
    assert all(b == first for b in built.values()), [k for k, b in built.items() if b != first]
    bases, methods = first
    assert [b.seed for b in bases] == [m.seed for m in methods] == notebook_params("sml", "10_methods", profile)["seeds"]


@pytest.mark.parametrize("profile", ["smoke", "cpu", "gpu"])
def test_every_reference_override_is_a_notebook_parameter(profile):
    # each notebook takes the overrides it declares; a key no notebook of the paper declares is a typo
    for slug, names in NOTEBOOKS.items():
        params = [notebook_params(slug, n, profile) for n in names]
        ref = params[0]["reference"]
        assert all(p["reference"] == ref for p in params), slug
        declared = set().union(*params)
        assert set(ref) <= declared, (slug, sorted(set(ref) - declared))
        arms = [experiment_arms(p) for p in params]
        assert all(len(a) == (2 if ref else 1) for a in arms)
        if ref:  # the reference arm builds the same configs in every notebook too
            assert all(experiment_configs(a[1][1]) == experiment_configs(arms[0][1][1]) for a in arms), slug


def test_experiment_configs_maps_the_notebook_parameters():
    p = dict(seeds=[1], student="tinylm:1m", n_pretrain=1500, pretrain_chunk=100, pretrain_steps=600, n_val=48, train_turns=4,
             sft_steps=60, rl_steps=30, problems_per_step=8, group_size=8, collect_per_problem=2, max_new_tokens=64,
             base_domains=["math", "code", "maze"], jobs=2)
    (b,), (m,) = experiment_configs(p)
    assert b == BaseConfig(student="tinylm:1m", domains=("math", "code", "maze"), n_problems=1500, chunk_steps=100, max_steps=600,
                           n_val=48, seed=1)
    assert m == MethodConfig(train_turns=4, sft_steps=60, rl_steps=30, problems_per_step=8, group_size=8,
                             collect_per_problem=2, max_new_tokens=64, seed=1)
    with pytest.raises(KeyError, match="missing notebook parameters: n_val, rl_steps"):
        experiment_configs({k: v for k, v in p.items() if k not in ("n_val", "rl_steps")})


def test_a_method_is_a_function_not_a_name():
    assert method_name(multi_turn_rl) == "multi_turn_rl"
    for bad in ("multi_turn_rl", lambda chat, tasks, cfg: {}, None):
        with pytest.raises(TypeError, match="a method is a named function"):
            method_name(bad)


def test_a_paper_method_trains_in_a_spawned_worker(tmp_path, monkeypatch):
    # the worker gets q_primed_rl by reference (module and name): no module to import by name, no registry
    from agora.papers.sml.methods import METHODS, q_primed_rl
    (tmp_path / "settings.ini").write_text("[agora]\n")
    monkeypatch.setenv("AGORA_ROOT", str(tmp_path))
    b = BaseConfig(student="tinylm:0.1m", domains=("math",), target_domains=("math",), n_problems=20, chunk_steps=2, max_steps=2,
                   n_val=2)
    m = MethodConfig(max_new_tokens=4, sft_steps=1, sft_batch=2, collect_per_problem=1, rl_steps=1, problems_per_step=1,
                     group_size=2, train_turns=2)
    base_model(b)  # built here first, so that the worker only trains the method
    log, = build_models([(trained_model, (q_primed_rl, "math", 2, b, m))], jobs=2)
    assert "prime" in log and len(log["rl"]) == 1
    cached, = (tmp_path / "runs" / "cache" / "didactic").glob("method-q_primed_rl-math-*[!k]")
    assert (cached / ".done").is_file()
    assert trained_model(q_primed_rl, "math", 2, b, m)[1] == log  # cached: the worker's model, found by its function
    assert "q_primed_rl" in [method_name(f) for f in METHODS]


def test_worker_processes_wait_passively_with_the_threads_asked(monkeypatch):
    monkeypatch.delenv("OMP_WAIT_POLICY", raising=False)  # as in a notebook started outside the runner
    from agora.core.didactic import parallel_calls
    got = parallel_calls([(os.getenv, ("OMP_WAIT_POLICY",)), (os.getenv, ("OMP_NUM_THREADS",))], jobs=2, threads=1)
    assert got == ["PASSIVE", "1"] and "OMP_WAIT_POLICY" not in os.environ
