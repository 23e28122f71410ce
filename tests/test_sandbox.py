"""The sandbox for model-written code (agora.core.sandbox).

Hostile programs covered, each of which must cost one failed attempt (or nothing) and never the run:
- infinite loop (wall-clock and CPU limits) -> error "timeout", and the next run works;
- fork bomb, plain and exception-swallowing (process-count limit, PID namespace) -> fails fast, no process left;
- huge allocation (address-space limit) -> error "memory";
- huge output (file-size limit on stdout/stderr) -> error "output_limit", output kept truncated;
- writes outside its directory (/etc, the repository, the host's /tmp) -> refused or invisible to the host;
  the scratch directory is removed afterwards;
- socket connections (to a server listening on the host's loopback) -> refused, the server sees nothing;
- orphaned child processes (a forked sleeper, a setsid daemon) -> killed when the program ends;
- signals to the parent (getppid, our real pid, kill(-1), killpg(0)) -> the test process survives;
- inherited secrets -> the environment is empty of them;
- programs of one batch cannot see each other's files or processes; one that kills the batch's harness costs only
  its own attempt (the batch is rerun one program per sandbox);
- without bubblewrap, code does not run unless the unsafe switch is given, and the error says so.
"""
import os
import socket
import tempfile
import threading
import time

import pytest

from agora.core import sandbox
from agora.core.sandbox import SandboxUnavailable, run_batch, run_many, run_python, sandbox_available

needs_bwrap = pytest.mark.skipif(not sandbox_available(), reason=f"bubblewrap unusable: {sandbox.sandbox_status()[1]}")
OK = ("def f(x):\n    return x + 1", ["assert f(1) == 2"])


def _still_works():
    assert run_python(*OK).passed


def _procs_of(uid: int) -> list[int]:
    out = []
    for p in os.listdir("/proc"):
        if p.isdigit():
            try:
                if os.stat(f"/proc/{p}").st_uid == uid and int(p) != os.getpid():
                    with open(f"/proc/{p}/stat") as f:
                        if f.read().rsplit(")", 1)[1].split()[0] != "Z": out.append(int(p))
            except OSError:
                pass
    return out


def _no_leftovers():
    "Nothing keeps running as the sandbox user after a run (checked when we run as root, where it is `nobody`)."
    if os.geteuid() != 0: return
    for _ in range(50):
        if not _procs_of(sandbox.SANDBOX_UID): return
        time.sleep(0.05)
    assert _procs_of(sandbox.SANDBOX_UID) == []


def test_ok_program_and_outcomes():
    r = run_python("def f(x):\n    print('hi')\n    return 2 * x", ["assert f(2) == 4", "assert f(3) == 7", "f(None)"])
    assert (r.passed, r.outcomes, r.error, r.first_failure) == (False, ["pass", "fail", "error:TypeError"], None, 1)
    assert r.stdout == "hi\nhi\nhi\n"
    assert run_python(*OK).passed
    assert run_python("def f(x) return x", ["assert f(1) == 1"]).error == "syntax"
    r = run_python("import sys\nsys.exit(3)", ["assert True"])
    assert (r.passed, r.error, r.outcomes) == (False, "load", ["not_run"])


@needs_bwrap
def test_infinite_loop_times_out():
    t0 = time.perf_counter()
    r = run_python("def f(x):\n    while True: pass", ["assert f(1) == 2", "assert True"], timeout_s=1)
    assert (r.passed, r.timed_out, r.error, r.outcomes) == (False, True, "timeout", ["not_run", "not_run"])
    assert time.perf_counter() - t0 < 5
    _still_works()


@needs_bwrap
@pytest.mark.parametrize("src", ["import os\nwhile True: os.fork()",
                                 "import os\nwhile True:\n    try: os.fork()\n    except OSError: pass"])
def test_fork_bomb(src):
    t0 = time.perf_counter()
    r = run_python(src, ["assert True"], timeout_s=1)
    assert not r.passed and r.error in ("load", "timeout")
    assert time.perf_counter() - t0 < 6
    _no_leftovers()
    _still_works()


@needs_bwrap
def test_huge_allocation():
    r = run_python("x = bytearray(8 * 2**30)", ["assert True"])
    assert (r.passed, r.error) == (False, "memory")
    r = run_python("def f():\n    return [0] * 10**10", ["f()"])
    assert (r.passed, r.outcomes) == (False, ["error:MemoryError"])
    _still_works()


@needs_bwrap
def test_huge_output():
    r = run_python("while True: print('x' * 10000)", ["assert True"], max_file_mb=0.5, max_output=1000)
    assert (r.passed, r.error) == (False, "output_limit")
    assert 0 < len(r.stdout) <= 1000
    r = run_python("import sys\nwhile True: sys.stderr.write('y' * 10000)", ["assert True"], max_file_mb=0.5)
    assert (r.passed, r.error) == (False, "output_limit")
    _still_works()


@needs_bwrap
def test_writes_outside_its_directory(tmp_path):
    repo_file = os.path.join(os.path.dirname(__file__), "agora_sandbox_probe.txt")
    host_tmp = os.path.join(tempfile.gettempdir(), "agora_sandbox_probe.txt")
    before = {n for n in os.listdir(tempfile.gettempdir()) if n.startswith("agora-sbx-")}
    for path in ("/etc/agora_probe", repo_file, str(tmp_path / "x")):
        r = run_python(f"open({path!r}, 'w').write('x')", ["assert True"])
        assert (r.passed, r.error) == (False, "load"), path
        assert not os.path.exists(path)
    # the private /tmp and the scratch dir are writable, but nothing reaches the host
    r = run_python(f"open({host_tmp!r}, 'w').write('x')\nopen('here.txt', 'w').write('y')",
                   ["assert open('here.txt').read() == 'y'"])
    assert r.passed and not os.path.exists(host_tmp)
    after = {n for n in os.listdir(tempfile.gettempdir()) if n.startswith("agora-sbx-")}
    assert after <= before  # scratch directories removed


@needs_bwrap
def test_no_network():
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0)); srv.listen(1); srv.settimeout(3)
    port = srv.getsockname()[1]
    hits = []
    th = threading.Thread(target=lambda: hits.append(_accept(srv)), daemon=True)
    th.start()
    r = run_python(f"import socket\nsocket.create_connection(('127.0.0.1', {port}), timeout=1)", ["assert True"])
    assert (r.passed, r.error) == (False, "load") and "Error" in r.error_detail
    r = run_python("import socket\nsocket.create_connection(('1.1.1.1', 80), timeout=1)", ["assert True"])
    assert not r.passed
    th.join(4)
    srv.close()
    assert hits == [None]


def _accept(srv):
    try:
        return srv.accept()
    except OSError:
        return None


def _sleepers() -> int:
    n = 0
    for p in os.listdir("/proc"):
        try:
            with open(f"/proc/{p}/cmdline", "rb") as f: n += f.read() == b"sleep\x0031\x00"
        except OSError:
            pass
    return n


@needs_bwrap
def test_orphans_are_killed():
    src = ("import os, subprocess, time\nsubprocess.Popen(['sleep', '31'])\n"
           "if os.fork() == 0:\n    os.setsid()\n    time.sleep(30)\n    os._exit(0)\n"
           "def f():\n    return 1")
    t0 = time.perf_counter()
    r = run_python(src, ["assert f() == 1"])
    assert r.passed and time.perf_counter() - t0 < 5
    assert _sleepers() == 0  # the orphaned `sleep 31` was killed with the sandbox
    _no_leftovers()  # and nothing else runs as the sandbox user


@needs_bwrap
def test_signals_to_parent():
    me = os.getpid()
    src = (f"import os, signal\n"
           f"for p in (os.getppid(), {me}, 1):\n    try: os.kill(p, signal.SIGKILL)\n    except OSError: pass\n"
           f"try: os.killpg(0, signal.SIGKILL)\nexcept OSError: pass\n")
    run_python(src, ["assert True"])  # whatever the verdict, we are still alive to check the next run
    r = run_python("import os\nos.kill(-1, 9)", ["assert True"])
    assert not r.passed
    _still_works()


@needs_bwrap
def test_environment_is_clean(monkeypatch):
    monkeypatch.setenv("AGORA_TEST_SECRET", "hunter2")
    r = run_python("import os\nenv = dict(os.environ)",
                   ["assert 'AGORA_TEST_SECRET' not in env", "assert set(env) <= {'PATH', 'HOME', 'LANG', 'PWD'}"])
    assert r.passed, r


@needs_bwrap
def test_batch_isolation():
    jobs = [("open('a.txt', 'w').write('x')\nopen('/tmp/b.txt', 'w').write('x')\n"
             "import subprocess\nsubprocess.Popen(['sleep', '30'])", ["assert True"]),
            ("import os", ["assert not os.path.exists('a.txt')", "assert not os.path.exists('/tmp/b.txt')",
                           "assert not any(p.isdigit() and int(p) > 2 and int(p) != os.getpid() "
                           "for p in os.listdir('/proc'))"]),
            ("while True: pass", ["assert True"]),
            OK]
    rs = run_batch(jobs, timeout_s=1)
    assert [r.passed for r in rs] == [True, True, False, True], rs[1]
    assert rs[2].error == "timeout"
    _no_leftovers()


def test_refuses_without_bwrap(monkeypatch):
    monkeypatch.setattr(sandbox, "sandbox_status", lambda: (False, "bwrap not found"))
    monkeypatch.delenv(sandbox.UNSAFE_ENV, raising=False)
    with pytest.raises(SandboxUnavailable, match="allow_unsandboxed=True"):
        run_python(*OK)
    r = run_python(*OK, allow_unsandboxed=True)
    assert r.passed and not r.sandboxed
    monkeypatch.setenv(sandbox.UNSAFE_ENV, "1")
    r = run_python("while True: pass", ["assert True"], timeout_s=1)
    assert (r.passed, r.error, r.sandboxed) == (False, "timeout", False)


def test_many_programs_in_one_batch():
    "Speed is measured by `agora bench sandbox`; here only that a large batch keeps each program's own outcome."
    jobs = [(f"def f(x):\n    return x + {i}", [f"assert f(1) == {i + 1}"]) for i in range(64)]
    jobs[5] = ("def f(x):\n    return 0", ["assert f(1) == 6"])
    rs = run_many(jobs)
    assert [r.passed for r in rs] == [i != 5 for i in range(64)]


@needs_bwrap
def test_batch_survives_a_program_that_kills_the_harness():
    jobs = [OK, ("import os\nos.kill(os.getppid(), 9)", ["assert True"]), ("import os\nos.kill(-1, 9)", []), OK]
    rs = run_batch(jobs)
    assert [r.passed for r in rs] == [True, False, False, True]
    assert rs[1].error == "killed"
