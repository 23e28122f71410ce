"agora.core.endpoint against a real server: `transformers serve` (transformers[serving], FastAPI) serving SmolLM2."
from __future__ import annotations

import importlib.util
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from agora.core.dialogue import DialogueConfig, DidacticEnv
from agora.core.endpoint import EndpointChatModel, EndpointError
from agora.core.lm import HFChatModel, load_chat_model, materialize
from agora.core.tasks import sample_tasks

MODEL = "smollm2-135m-instruct"
CONVS = [[{"role": "user", "content": "What is 3 + 4?"}],
         [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Reverse the list [1, 2, 3]."},
          {"role": "student", "content": "ANSWER: [1, 2, 3]"}, {"role": "teacher", "content": "Check the order."}],
         [{"role": "user", "content": "hi"}]]

pytestmark = [pytest.mark.timeout(120), pytest.mark.usefixtures("one_thread")]


def _serve_missing() -> str | None:
    "Why `transformers serve` cannot run here, or None."
    missing = [m for m in ("fastapi", "uvicorn", "openai") if importlib.util.find_spec(m) is None]
    return f"transformers[serving] is not installed (missing: {', '.join(missing)})" if missing else None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _answers(url: str) -> bool:
    "Whether the server lists its models."
    try:
        with urllib.request.urlopen(url + "/models", timeout=2) as r: return r.status == 200
    except OSError: return False


@pytest.fixture(scope="module")
def model_dir() -> Path:
    try: return materialize(MODEL)
    except ModuleNotFoundError as e: pytest.skip(str(e))


@pytest.fixture(scope="module")
def served(model_dir, tmp_path_factory):
    "`transformers serve` on a free loopback port, the model preloaded from its local directory, offline."
    if why := _serve_missing(): pytest.skip(why)
    port, log = _free_port(), tmp_path_factory.mktemp("serve") / "serve.log"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "OMP_WAIT_POLICY": "PASSIVE"}
    cmd = [sys.executable, "-m", "transformers.cli.transformers", "serve", str(model_dir), "--host", "127.0.0.1", "--port", str(port), "--device", "cpu",
           "--dtype", "float32", "--log-level", "warning"]
    with open(log, "wb") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    url, end = f"http://127.0.0.1:{port}/v1", time.monotonic() + 60
    try:
        while not _answers(url):
            if proc.poll() is not None or time.monotonic() > end:
                pytest.fail(f"transformers serve did not start (exit {proc.returncode}):\n{log.read_text()[-3000:]}")
            time.sleep(0.25)
        yield url, str(model_dir)
    finally:
        os.killpg(proc.pid, signal.SIGTERM)  # the server and any process it started
        try: proc.wait(10)
        except subprocess.TimeoutExpired: os.killpg(proc.pid, signal.SIGKILL); proc.wait()


@pytest.fixture(scope="module")
def local() -> HFChatModel:
    return load_chat_model(MODEL, device="cpu", dtype="float32")


@pytest.fixture(scope="module")
def client(served) -> EndpointChatModel:
    url, name = served
    return EndpointChatModel(url, model=name, retries=0, timeout=60, concurrency=3)


def test_server_lists_the_model(served):
    url, name = served
    with urllib.request.urlopen(url + "/models", timeout=5) as r: ids = [m["id"] for m in json.loads(r.read())["data"]]
    assert ids == [name]


def test_greedy_turns_equal_the_local_model(client, local):
    # same weights, same chat template (the server applies the one in the model directory), greedy decoding
    got = client.generate(CONVS, max_new_tokens=24)
    assert all(got) and got == local.generate(CONVS, max_new_tokens=24)
    # the server returns the stop string with the text; the client cuts it off as OpenAI's API documents
    assert client.generate(CONVS[:1], 24, stop=["\n"]) == local.generate(CONVS[:1], 24, stop=["\n"]) == ["3 + 4 = 7"]


def test_logprobs_is_a_clear_error(client):
    # transformers serve ignores OpenAI's `logprobs` and refuses vLLM's `prompt_logprobs` with a 422
    with pytest.raises(EndpointError, match="prompt_logprobs.*refused.*HTTP 422.*Unexpected fields") as e:
        client.logprobs(CONVS[:1], ["7"])
    assert e.value.status == 422


def test_native_roles_are_refused_with_the_servers_message(served):
    url, name = served
    with pytest.raises(EndpointError, match="HTTP 422.*generation_role"):
        EndpointChatModel(url, model=name, retries=0, native_roles=True).complete(CONVS[1])


def test_didactic_episodes_against_the_served_model(client, local):
    tasks = sample_tasks("arithmetic", 2, seed=0, difficulty=1)
    cfg = DialogueConfig(max_turns=2, max_new_tokens=24, temperature=0.0)
    remote = DidacticEnv(client, cfg=cfg).run(tasks)
    assert [len([t for t in e.turns if t.role == "student"]) for e in remote] == [e.solved_at or 2 for e in remote]
    assert remote == DidacticEnv(local, cfg=cfg).run(tasks)
