"""The "local" training executor: real child processes, logs, exit codes, cancellation."""
from __future__ import annotations

import os
import signal
import sys
import textwrap
import time
from pathlib import Path

import pytest

from tunesmith.core.contracts import ExecutionHandle, TrainingExecutor
from tunesmith.core.errors import InvalidArgument
from tunesmith.core.plugins import PluginRegistry
from tunesmith_builtin.executor_local import LocalProcessExecutor

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="POSIX process groups")


def _wait_for(path: Path, timeout: float = 20.0) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists() and path.read_text().strip():
            return path.read_text().strip()
        time.sleep(0.05)
    raise AssertionError(f"{path} did not appear within {timeout} s")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # an unreaped zombie (no init reaping in some containers) counts as dead
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        return state not in ("Z", "X")
    except (OSError, IndexError):
        return True


def test_plugin_registers_local_executor():
    reg = PluginRegistry(builtins=("tunesmith_builtin.executor_local",), entry_points=False)
    executor = reg.get("training_executors", "local")
    assert isinstance(executor, TrainingExecutor)
    assert executor.name == "local"


def test_runs_a_child_that_writes_a_file(tmp_path, monkeypatch):
    monkeypatch.setenv("TUNESMITH_TEST_FROM_PARENT", "inherited")
    out = tmp_path / "out.txt"
    code = textwrap.dedent(
        """
        import os, sys
        open(sys.argv[1], "w").write(os.environ["JOB_VALUE"] + "/" + os.environ["TUNESMITH_TEST_FROM_PARENT"])
        print("hello on stdout", flush=True)
        print("hello on stderr", file=sys.stderr, flush=True)
        """
    )
    log = tmp_path / "logs" / "worker.log"
    handle = LocalProcessExecutor().submit("job-1", [sys.executable, "-c", code, str(out)], {"JOB_VALUE": "42"}, str(log))
    assert isinstance(handle, ExecutionHandle)
    assert handle.wait(60) == 0
    assert handle.poll() == 0
    assert out.read_text() == "42/inherited"
    text = log.read_text()
    assert "hello on stdout" in text and "hello on stderr" in text


def test_exit_code_and_log_append(tmp_path):
    log = tmp_path / "worker.log"
    log.write_text("previous attempt\n")
    handle = LocalProcessExecutor().submit("job-2", [sys.executable, "-c", "import sys; print('boom'); sys.exit(3)"], {}, str(log))
    assert handle.wait(60) == 3
    assert log.read_text().startswith("previous attempt\nboom")


def test_wait_times_out_with_none_then_cancel_terminates(tmp_path):
    ready = tmp_path / "ready"
    code = f"import time; open({str(ready)!r}, 'w').write('up'); time.sleep(120)"
    handle = LocalProcessExecutor().submit("job-3", [sys.executable, "-c", code], {}, str(tmp_path / "log"))
    _wait_for(ready)
    assert handle.poll() is None
    assert handle.wait(0.2) is None
    t0 = time.monotonic()
    handle.cancel()
    assert time.monotonic() - t0 < 1.0  # cancel() does not block
    code = handle.wait(10)
    assert code == -signal.SIGTERM
    assert handle.poll() == -signal.SIGTERM
    handle.cancel()  # harmless after the end


def test_cancel_kills_a_child_that_ignores_sigterm_after_the_grace(tmp_path):
    ready = tmp_path / "ready"
    code = textwrap.dedent(
        f"""
        import signal, time
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        open({str(ready)!r}, "w").write("up")
        time.sleep(120)
        """
    )
    handle = LocalProcessExecutor(grace_seconds=0.5).submit("job-4", [sys.executable, "-c", code], {}, str(tmp_path / "log"))
    _wait_for(ready)
    handle.cancel()
    assert handle.wait(0.3) is None  # SIGTERM ignored: still running within the grace
    assert handle.wait(15) == -signal.SIGKILL


def test_cancel_reaches_grandchildren(tmp_path):
    pid_file = tmp_path / "grandchild.pid"
    code = textwrap.dedent(
        f"""
        import subprocess, sys, time
        p = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
        open({str(pid_file)!r}, "w").write(str(p.pid))
        time.sleep(120)
        """
    )
    handle = LocalProcessExecutor(grace_seconds=2).submit("job-5", [sys.executable, "-c", code], {}, str(tmp_path / "log"))
    grandchild = int(_wait_for(pid_file))
    assert _alive(grandchild)
    handle.cancel()
    assert handle.wait(15) is not None
    deadline = time.monotonic() + 10
    while _alive(grandchild) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _alive(grandchild)


def test_bad_argv_is_invalid_argument(tmp_path):
    executor = LocalProcessExecutor()
    with pytest.raises(InvalidArgument):
        executor.submit("job-6", [], {}, str(tmp_path / "log"))
    with pytest.raises(InvalidArgument, match="cannot start"):
        executor.submit("job-7", [str(tmp_path / "no-such-program")], {}, str(tmp_path / "log"))
