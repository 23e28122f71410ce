"agora.core.endpoint: the client against a served TinyLM, and a server that answers every request and never hangs."
from __future__ import annotations

import json
import socket
import threading
import time
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
def never(lm) -> TinyLM:
    "A TinyLM that never ends its turn: every token that would end it is suppressed."
    return TinyLM.create("1m", seed=0, suppress_ids=sorted(lm.stop_ids))


@pytest.fixture(scope="module")
def saved(lm, tmp_path_factory):
    d = tmp_path_factory.mktemp("tinylm")
    lm.save_pretrained(d)
    return d


@pytest.fixture(scope="module")
def server(lm):
    "A server for requests that fail validation (they never reach the model)."
    with ChatServer(lm, max_tokens_cap=256) as srv: yield srv


def raw(srv: ChatServer, data: bytes, timeout: float = 10.0) -> tuple[int, dict]:
    "Send `data` as it is on a fresh connection; the answer's status and JSON body."
    with socket.create_connection(srv.httpd.server_address[:2], timeout=timeout) as s:
        s.sendall(data)
        got = b""
        while chunk := s.recv(65536): got += chunk
    head, _, body = got.partition(b"\r\n\r\n")
    return int(head.split()[1]), json.loads(body)


def post(srv: ChatServer, body: dict | bytes, timeout: float = 10.0) -> tuple[int, dict]:
    "POST a chat-completion request body (JSON-encoded unless bytes)."
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    head = f"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Length: {len(data)}\r\n\r\n".encode()
    return raw(srv, head + data, timeout)


def wait_until(cond, timeout: float = 5.0) -> bool:
    "Poll `cond` until it holds or `timeout` seconds pass; whether it held."
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if cond(): return True
        time.sleep(0.01)
    return False


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


def test_client_names_the_field_of_a_400(server):
    client = EndpointChatModel(server.url, retries=0)
    with pytest.raises(EndpointError, match=r"temperature.*\[0, 2\]") as e:
        client.complete(HI, temperature=5.0)
    assert (e.value.status, e.value.param) == (400, "temperature")
    with pytest.raises(EndpointError, match=r"max_tokens.*256") as e:
        client.complete(HI, max_new_tokens=257)
    assert (e.value.status, e.value.param) == (400, "max_tokens")


# --- malformed input: a 400 in OpenAI's error shape, naming the field ---

MSG = '"messages": [{"role": "user", "content": "hi"}]'
BAD = [  # (body, the field named, words of the message)
    (b'\xff\xfe{"messages": []}', None, "UTF-8"),
    (b'{"messages": ', None, "JSON"),
    (b'[1, 2]', None, "JSON object"),
    (b'{}', "messages", "required"),
    (b'{"messages": []}', "messages", "non-empty"),
    (b'{"messages": "hi"}', "messages", "non-empty list"),
    (b'{"messages": [3]}', "messages[0]", "object"),
    (b'{"messages": [{"role": "user"}]}', "messages[0].content", "required"),
    (b'{"messages": [{"role": "user", "content": null}]}', "messages[0].content", "string"),
    (b'{"messages": [{"role": "user", "content": 5}]}', "messages[0].content", "string"),
    (b'{"messages": [{"role": "robot", "content": "x"}]}', "messages[0].role", "robot"),
    (b'{"messages": [{"content": "x"}]}', "messages[0].role", "required"),
    (f'{{{MSG}, "temperature": NaN}}'.encode(), "temperature", "[0, 2]"),
    (f'{{{MSG}, "temperature": Infinity}}'.encode(), "temperature", "[0, 2]"),
    (f'{{{MSG}, "temperature": -1}}'.encode(), "temperature", "[0, 2]"),
    (f'{{{MSG}, "temperature": 1e30}}'.encode(), "temperature", "[0, 2]"),
    (f'{{{MSG}, "temperature": "hot"}}'.encode(), "temperature", "number"),
    (f'{{{MSG}, "temperature": true}}'.encode(), "temperature", "number"),
    (f'{{{MSG}, "max_tokens": -5}}'.encode(), "max_tokens", ">= 1"),
    (f'{{{MSG}, "max_tokens": 0}}'.encode(), "max_tokens", ">= 1"),
    (f'{{{MSG}, "max_tokens": 1.5}}'.encode(), "max_tokens", "integer"),
    (f'{{{MSG}, "max_tokens": "5"}}'.encode(), "max_tokens", "integer"),
    (f'{{{MSG}, "max_tokens": 1e9}}'.encode(), "max_tokens", "256"),
    (f'{{{MSG}, "max_tokens": 257}}'.encode(), "max_tokens", "256"),
    (f'{{{MSG}, "max_completion_tokens": 0}}'.encode(), "max_completion_tokens", ">= 1"),
    (f'{{{MSG}, "seed": "x"}}'.encode(), "seed", "integer"),
    (f'{{{MSG}, "seed": 1.5}}'.encode(), "seed", "integer"),
    (f'{{{MSG}, "stop": 5}}'.encode(), "stop", "string"),
    (f'{{{MSG}, "stop": [""]}}'.encode(), "stop", "empty"),
    (f'{{{MSG}, "stop": ["a", "b", "c", "d", "e"]}}'.encode(), "stop", "4"),
    (f'{{{MSG}, "n": 2}}'.encode(), "n", "1"),
    (f'{{{MSG}, "stream": true}}'.encode(), "stream", "not supported"),
    (f'{{{MSG}, "top_p": 0.5}}'.encode(), "top_p", "not supported"),
    (f'{{{MSG}, "generation_role": "robot"}}'.encode(), "generation_role", "robot"),
    (f'{{{MSG}, "prompt_logprobs": -1}}'.encode(), "prompt_logprobs", "0"),
    (f'{{{MSG}, "add_generation_prompt": "yes"}}'.encode(), "add_generation_prompt", "boolean"),
]


@pytest.mark.parametrize("body,param,words", BAD, ids=[b[:60].decode(errors="replace") for b, _, _ in BAD])
def test_malformed_body_is_a_400_naming_the_field(server, body, param, words):
    status, out = post(server, body)
    assert status == 400
    err = out["error"]
    assert set(err) == {"message", "type", "param", "code"}
    assert (err["type"], err["param"]) == ("invalid_request_error", param)
    assert words in err["message"]


@pytest.mark.parametrize("length,status,words", [("abc", 400, "Content-Length"), ("-3", 400, "Content-Length"),
                                                 (str(10**12), 413, "bytes"), (None, 411, "Content-Length")])
def test_bad_content_length_is_answered(server, length, status, words):
    head = "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n"
    if length is not None: head += f"Content-Length: {length}\r\n"
    got, out = raw(server, (head + "\r\n").encode())
    assert got == status and words in out["error"]["message"]


def test_messages_the_chat_template_refuses_are_a_400(lm):
    class Strict(TinyLM):  # stands for a real model whose chat template raises (e.g. "roles must alternate")
        def encode(self, conversation, role="student", continue_final=False):
            if len(conversation) > 1: raise ValueError("Conversation roles must alternate user/assistant")
            return super().encode(conversation, role, continue_final)
    with ChatServer(Strict(lm.model, lm.tokenizer)) as srv:
        assert post(srv, {"messages": HI, "max_tokens": 2})[0] == 200
        status, out = post(srv, {"messages": HI + HI, "max_tokens": 2})
    assert (status, out["error"]["param"]) == (400, "messages") and "must alternate" in out["error"]["message"]


# --- a server that never hangs ---


def test_stalled_client_gets_408_and_others_are_served(lm):
    with ChatServer(lm, read_timeout=0.3) as srv:
        with socket.create_connection(srv.httpd.server_address[:2], timeout=5) as s:
            s.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{\"mess")
            assert post(srv, {"messages": HI, "max_tokens": 3})[0] == 200
            t0 = time.monotonic()
            got = b""
            while chunk := s.recv(65536): got += chunk
        assert got.startswith(b"HTTP/1.0 408") and b"request_timeout" in got
        assert time.monotonic() - t0 < 2


def test_client_trickling_its_body_gets_408(lm):
    with ChatServer(lm, read_timeout=0.5) as srv, socket.create_connection(srv.httpd.server_address[:2], 5) as s:
        s.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n")
        t0, got = time.monotonic(), b""
        s.settimeout(0.1)
        while time.monotonic() - t0 < 5 and b"\r\n\r\n" not in got:  # one byte every 0.1 s: each read is quick
            try: s.sendall(b" ")
            except OSError: pass
            try: got += s.recv(65536)
            except TimeoutError: pass
        assert got.startswith(b"HTTP/1.0 408") and time.monotonic() - t0 < 2


def test_request_deadline_ends_a_generation_that_never_stops(never):
    with ChatServer(never, max_tokens_cap=10**9, request_timeout=0.5) as srv:
        client = EndpointChatModel(srv.url, retries=0, timeout=20)
        t0 = time.monotonic()
        with pytest.raises(EndpointError, match="HTTP 504.*0.5 s") as e:
            client.complete(HI, max_new_tokens=10**9)
        assert e.value.status == 504 and time.monotonic() - t0 < 3
        assert not srv.model_lock.locked()
        assert client.complete(HI, max_new_tokens=3) == never.generate([HI], 3)[0]


def test_client_that_gives_up_frees_the_model(never):
    with ChatServer(never, max_tokens_cap=10**9, request_timeout=600) as srv:
        impatient = EndpointChatModel(srv.url, retries=0, timeout=0.3)
        with pytest.raises(EndpointError, match="timed out|TimeoutError"):
            impatient.complete(HI, max_new_tokens=10**9)
        assert wait_until(lambda: not srv.model_lock.locked(), 2.0)  # the generation ended with its client
        t0 = time.monotonic()
        assert EndpointChatModel(srv.url, retries=0, timeout=5).complete(HI, max_new_tokens=3)
        assert time.monotonic() - t0 < 2


def test_full_queue_answers_503(never):
    with ChatServer(never, max_tokens_cap=10**9, queue_size=1, request_timeout=600) as srv:
        busy = threading.Thread(target=post, args=(srv, {"messages": HI, "max_tokens": 10**9}, 30), daemon=True)
        busy.start()
        assert wait_until(srv.model_lock.locked)
        status, out = post(srv, {"messages": HI, "max_tokens": 2})
        assert status == 503 and out["error"]["code"] == "queue_full"


def test_stop_returns_promptly_with_work_in_flight(never):
    srv = ChatServer(never, max_tokens_cap=10**9, request_timeout=600, read_timeout=600).start()
    answers = []
    busy = [threading.Thread(target=lambda: answers.append(post(srv, {"messages": HI, "max_tokens": 10**9}, 30)),
                             daemon=True) for _ in range(2)]  # one generates, one waits for the model
    for t in busy: t.start()
    stalled = socket.create_connection(srv.httpd.server_address[:2], timeout=30)
    stalled.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{")
    idle = socket.create_connection(srv.httpd.server_address[:2], timeout=30)  # sends nothing
    assert wait_until(lambda: srv.in_flight == 2 and srv.model_lock.locked())
    t0 = time.monotonic()
    srv.stop()
    assert time.monotonic() - t0 < 3
    for t in busy: t.join(5)
    assert [(a[0], a[1]["error"]["code"]) for a in answers] == [(503, "shutting_down")] * 2
    assert not srv.model_lock.locked() and srv.in_flight == 0
    assert not [t for t in threading.enumerate() if "process_request" in t.name]  # every request thread ended
    stalled.close(); idle.close()


def test_stop_without_start_returns(lm):
    srv = ChatServer(lm)
    done = threading.Thread(target=srv.stop, daemon=True)
    done.start(); done.join(3)
    assert not done.is_alive()
