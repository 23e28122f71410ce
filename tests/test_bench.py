"agora.core.bench: the registered benchmarks run, print JSON lines, and take --help and bad input like the CLI."
from __future__ import annotations

import json
import subprocess
import sys

import pytest

from agora.core.bench import bench_rollout
from agora.core.lm import TinyLM
from conftest import AGORA


pytestmark = pytest.mark.usefixtures("one_thread")  # tiny models: one thread is fastest


def test_bench_prints_json_lines_and_ratio(capsys):
    assert bench_rollout(["--size", "1m", "--batches", "1,4", "--episodes", "4", "--naive-episodes", "2",
                          "--turns", "2", "--max-new-tokens", "6"]) == 0
    lines = [json.loads(x) for x in capsys.readouterr().out.strip().splitlines()]
    assert [x["setting"] for x in lines] == ["naive-generate", "engine", "engine", "engine-no-cache-reuse",
                                             "engine-feed-every-row", "ratio"]
    assert {"engine_b1_over_naive", "engine_b4_over_naive", "engine_b4_over_feed_every_row_cpu"} <= set(lines[-1])


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
    for name, args in [("rollout", ["--batches", "x"]), ("rollout", ["--batches", "0"]), ("rollout", ["--naive-episodes", "0"]),
                       ("games", ["--envs", "0"])]:
        r = subprocess.run([AGORA, "bench", name, *args], capture_output=True, text=True, timeout=120)
        assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1 and "Traceback" not in r.stderr, r.stderr


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
