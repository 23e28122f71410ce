"agora.core.bench: the registered benchmarks run, print JSON lines, and take --help and bad input like the CLI."
from __future__ import annotations

import json
import subprocess
import sys

import pytest

from agora.core.bench import bench_rollout, bench_train
from agora.core.lm import TinyLM
from conftest import AGORA


pytestmark = pytest.mark.usefixtures("one_thread")  # tiny models: one thread is fastest


def test_bench_prints_json_lines_and_ratio(capsys):
    assert bench_rollout(["--size", "1m", "--batches", "1,4", "--episodes", "4", "--naive-episodes", "2",
                          "--turns", "2", "--max-new-tokens", "6", "--memory", "off"]) == 0
    lines = [json.loads(x) for x in capsys.readouterr().out.strip().splitlines()]
    assert [x["setting"] for x in lines] == ["naive-generate", "engine", "engine", "engine-no-cache-reuse",
                                             "engine-feed-every-row", "generate-vs-hf", "ratio"]
    assert {"engine_b1_over_naive", "engine_b4_over_naive", "engine_b4_over_feed_every_row_cpu"} <= set(lines[-1])


def test_bench_rollout_takes_a_model_spec_and_compares_with_hf_generate(capsys):
    assert bench_rollout(["--model", "tinylm:1m", "--batches", "4", "--episodes", "4", "--naive-episodes", "1",
                          "--turns", "2", "--max-new-tokens", "4"]) == 0
    lines = [json.loads(x) for x in capsys.readouterr().out.strip().splitlines()]
    assert [x["setting"] for x in lines] == ["naive-generate", "engine", "engine-no-cache-reuse", "engine-feed-every-row",
                                             "generate-vs-hf", "memory", "ratio"]
    gen, mem = lines[4], lines[5]
    assert gen["model"] == "tinylm:1m" and gen["batch"] == 4 and gen["engine_tokens"] == gen["hf_generate_tokens"] > 0
    assert gen["same_text"] == 1.0  # greedy: the engine writes what plain generate writes
    assert mem["rollout_peak_mb"] >= mem["model_mb"] > 0
    assert {"engine_over_hf_generate_b4_tokens_per_s", "rollout_b4_peak_mb"} <= set(lines[-1])


def test_bench_rollout_bad_model_is_one_line(capsys):
    for spec, why in [("tinylm:7q", "unknown size"), ("./nowhere", "not a directory with a saved model")]:
        with pytest.raises(SystemExit) as e:
            bench_rollout(["--model", spec])
        err = capsys.readouterr().err.strip()
        assert e.value.code == 2 and len(err.splitlines()) == 1 and "--model" in err and why in err, err


def test_bench_train_runs_each_variant(capsys):
    assert bench_train(["--model", "tinylm:1m", "--batch", "2", "--seq-len", "8", "--steps", "1", "--warmup", "0",
                        "--dtypes", "bf16"]) == 0  # fp32 runs the same code without autocast (09a_bench runs it)
    lines = [json.loads(x) for x in capsys.readouterr().out.strip().splitlines()]
    rows, ratio = lines[:-1], lines[-1]
    assert [(x["setting"], x["dtype"]) for x in rows] == [("full", "bf16"), ("lora", "bf16"), ("frozen-lower", "bf16")]
    for x in rows:
        assert x["tokens_per_s"] > 0 and x["peak_mb"] > 0 and x["achieved_flops"] > 0 and x["peak_fraction"] > 0
    full, lora, frozen = rows
    assert lora["trainable_params"] < frozen["trainable_params"] < full["trainable_params"] == full["params"]
    assert ratio["setting"] == "ratio" and {"bf16_matmul_peak_gflops", "full_bf16_peak_fraction",
                                            "lora_over_full_bf16_tokens_per_s"} <= set(ratio)


@pytest.mark.parametrize("args, arg", [(["--batch", "0"], "--batch"), (["--seq-len", "x"], "--seq-len"),
                                        (["--variants", "full,qlora"], "--variants"), (["--dtypes", "fp16"], "--dtypes"),
                                        (["--model", "tinylm:7q"], "--model")])
def test_bench_train_bad_input_is_one_line_exit_2(args, arg, capsys):
    with pytest.raises(SystemExit) as e:
        bench_train(args)
    err = capsys.readouterr().err.strip()
    assert e.value.code == 2 and len(err.splitlines()) == 1 and arg in err and "Traceback" not in err, err


def test_train_is_a_registered_benchmark():
    import tomllib
    from pathlib import Path
    eps = tomllib.loads(Path(__file__).parents[1].joinpath("pyproject.toml").read_text())["project"]["entry-points"]
    assert eps["agora.bench"]["train"] == "agora.core.bench:bench_train"
    with pytest.raises(SystemExit) as e:
        bench_train(["--help"])
    assert e.value.code == 0


def test_bench_rolls_out_a_saved_model(tmp_path, capsys):
    TinyLM.create("1m", seed=2).save_pretrained(tmp_path / "student")
    assert bench_rollout(["--model", str(tmp_path / "student"), "--batches", "4", "--episodes", "4",
                          "--naive-episodes", "1", "--turns", "2", "--max-new-tokens", "4"]) == 0
    lines = [json.loads(x) for x in capsys.readouterr().out.strip().splitlines()]
    assert {x.get("model") for x in lines[:-1]} == {"student"}
    with pytest.raises(SystemExit) as e:
        bench_rollout(["--model", str(tmp_path / "nothing")])
    assert e.value.code == 2 and "not a directory with a saved model" in capsys.readouterr().err


@pytest.mark.parametrize("name", ["rollout", "games", "sandbox", "maze"])
def test_every_benchmark_has_help(name):
    r = subprocess.run([AGORA, "bench", name, "--help"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith(f"usage: agora bench {name}") and not r.stderr


def test_bad_benchmark_arguments_exit_2_with_one_line():
    r = subprocess.run([AGORA, "bench", "sandbox", "zero"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and "invalid int value: 'zero'" in r.stderr and "Traceback" not in r.stderr
    r = subprocess.run([AGORA, "bench", "sandbox", "0"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and r.stderr.strip() == "agora bench sandbox: argument programs: must be >= 1, got 0"



@pytest.mark.parametrize("fn, args", [("bench_rollout", ["--batches", "x"]), ("bench_rollout", ["--batches", "0"]),
                                      ("bench_rollout", ["--naive-episodes", "0"]), ("bench_games", ["--envs", "0"])])
def test_bad_benchmark_arguments_in_process(fn, args, capsys):
    # the entry points themselves (the CLI above hands them its arguments): one line, exit 2, no traceback
    import agora.core.bench as B
    with pytest.raises(SystemExit) as e:
        getattr(B, fn)(args)
    err = capsys.readouterr().err.strip()
    assert e.value.code == 2 and len(err.splitlines()) == 1 and "Traceback" not in err, err


def test_sandbox_bench_runs(capsys):
    from agora.core.bench import bench_sandbox
    assert bench_sandbox(["4"]) == 0
    lines = [json.loads(x) for x in capsys.readouterr().out.strip().splitlines()]
    assert [x["mode"] for x in lines] == ["one_per_sandbox", "batched"] and all(x["programs"] == 4 for x in lines)


@pytest.mark.parametrize("module", ["agora", "agora.core.cli"])
def test_python_dash_m_is_the_agora_command(module):
    r = subprocess.run([sys.executable, "-m", module, "bench", "nope"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and "unknown benchmark 'nope'" in r.stderr
    r = subprocess.run([sys.executable, "-m", module], capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and "list" in r.stderr and "reproduce" in r.stderr
