"""agora.core.endpoint: the client against `ChatServer`, a test double serving a TinyLM with vLLM's extensions and
faults on demand (the client against a real server, `transformers serve`: test_serve.py)."""
from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import pytest

from agora.core.endpoint import ChatServer, EndpointChatModel, EndpointError
from agora.core.lm import TinyLM


CONVS = [[{"role": "user", "content": "What is 3 + 4?"}],
         [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Reverse the list [1, 2, 3]."},
          {"role": "student", "content": "ANSWER: [1, 2, 3]"}, {"role": "teacher", "content": "Check the order."}],
         [{"role": "user", "content": "hi"}]]
HI = [{"role": "user", "content": "hi"}]


# a hang is a failure, not a stuck suite; tiny models: one thread is fastest
pytestmark = [pytest.mark.timeout(60), pytest.mark.usefixtures("one_thread")]


@pytest.fixture(scope="module")
def lm() -> TinyLM:
    return TinyLM.create("1m", seed=0)


@pytest.fixture(scope="module")
def saved(lm, tmp_path_factory):
    d = tmp_path_factory.mktemp("tinylm")
    lm.save_pretrained(d)
    return d


# --- the client against a served TinyLM ---


def test_endpoint_client_against_served_tinylm(saved):
    local = TinyLM.from_pretrained(saved)
    with ChatServer(TinyLM.from_pretrained(saved)) as srv:
        client = EndpointChatModel(srv.url, native_roles=True, concurrency=3)
        assert client.generate(CONVS, max_new_tokens=10) == local.generate(CONVS, max_new_tokens=10)
        s = client.generate(CONVS, max_new_tokens=10, temperature=1.0, seed=3)
        assert s == client.generate(CONVS, max_new_tokens=10, temperature=1.0, seed=3)
        comps = ["ANSWER: 7", "ANSWER: [3, 2, 1]", "hello"]
        assert client.logprobs(CONVS, comps) == pytest.approx(local.logprobs(CONVS, comps), abs=1e-3)
        with pytest.raises(EndpointError, match="HTTP 400"):
            client.complete([])


def test_endpoint_retries_and_timeouts(lm):
    with ChatServer(lm, fail_first=2) as srv:
        client = EndpointChatModel(srv.url, native_roles=True, retries=2, backoff=0.01)
        assert client.generate(CONVS[:1], max_new_tokens=4) == lm.generate(CONVS[:1], max_new_tokens=4)
        assert srv.n_requests == 3
    with ChatServer(lm, fail_first=5) as srv:
        with pytest.raises(EndpointError, match="no answer after 2 attempts"):
            EndpointChatModel(srv.url, retries=1, backoff=0.01).generate(CONVS[:1], max_new_tokens=2)
    with ChatServer(lm, delay=1.0) as srv:
        with pytest.raises(EndpointError, match="TimeoutError|timed out"):
            EndpointChatModel(srv.url, timeout=0.2, retries=0).generate(CONVS[:1], max_new_tokens=2)


def test_fifty_concurrent_requests(lm):
    convs = [[{"role": "user", "content": f"What is {i} + 1?"}] for i in range(50)]
    with ChatServer(lm) as srv:
        client = EndpointChatModel(srv.url, native_roles=True, retries=0, timeout=30)
        with ThreadPoolExecutor(50) as ex:
            got = list(ex.map(lambda c: client.complete(c, max_new_tokens=6), convs))
        assert srv.n_requests == 50
    assert got == lm.generate(convs, max_new_tokens=6)


def test_client_names_the_field_of_a_400_and_does_not_retry(lm):
    with ChatServer(lm, fail_first=1, fail_status=400, fail_param="temperature") as srv:
        with pytest.raises(EndpointError, match=r"HTTP 400: injected fault") as e:
            EndpointChatModel(srv.url, retries=3, backoff=0.01).complete(HI, temperature=5.0)
        assert (e.value.status, e.value.param, srv.n_requests) == (400, "temperature", 1)


# --- the double's own lifecycle ---


def test_stop_without_start_returns(lm):
    srv = ChatServer(lm)
    done = threading.Thread(target=srv.stop, daemon=True)
    done.start(); done.join(3)
    assert not done.is_alive()
