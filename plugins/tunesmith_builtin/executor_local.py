"""Built-in training executor "local": runs a job's command as a child process of the trainer.

The child gets its own session (process group), so cancel() reaches everything it started:
SIGTERM to the group first, then SIGKILL to the group if the child is still running after a
grace period (10 s by default), from a background thread so cancel() returns at once.
stdout and stderr both go to the job's log file (appended).
"""
from __future__ import annotations

import os
import signal
import subprocess
import threading
from pathlib import Path

from tunesmith.core.errors import InvalidArgument
from tunesmith.core.plugins import hookimpl

DEFAULT_GRACE_SECONDS = 10.0


class LocalProcessHandle:
    """A running (or finished) local job process. poll()/wait() give the exit code: negative
    means killed by that signal (-15 after SIGTERM, -9 after SIGKILL)."""

    def __init__(self, job_id: str, process: subprocess.Popen, log_path: str, grace_seconds: float):
        self.job_id = job_id
        self.process = process
        self.pid = process.pid
        self.log_path = log_path
        self.grace_seconds = grace_seconds
        self.cancel_requested = False
        self._killer: threading.Thread | None = None
        self._lock = threading.Lock()

    def poll(self) -> int | None:
        return self.process.poll()

    @property
    def returncode(self) -> int | None:
        return self.process.poll()

    def wait(self, timeout: float | None = None) -> int | None:
        try:
            return self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            return None

    def _signal_group(self, sig: int) -> None:
        # The pgid equals the child's pid (start_new_session=True). The pid cannot be reused
        # while the child is unreaped, and we only signal while poll() says it is running.
        try:
            os.killpg(self.pid, sig)
        except (ProcessLookupError, PermissionError):
            pass

    def cancel(self, grace_seconds: float | None = None) -> None:
        """SIGTERM the job's process group; SIGKILL it if still running after the grace period.

        Returns immediately; calling it again (or after the process ended) is harmless.
        """
        grace = self.grace_seconds if grace_seconds is None else grace_seconds
        with self._lock:
            self.cancel_requested = True
            if self.process.poll() is not None:
                return
            self._signal_group(signal.SIGTERM)
            if self._killer is not None:
                return
            self._killer = threading.Thread(
                target=self._kill_after, args=(grace,), name=f"cancel-{self.job_id}", daemon=True
            )
            self._killer.start()

    def _kill_after(self, grace: float) -> None:
        if self.wait(grace) is None:
            with self._lock:
                if self.process.poll() is None:
                    self._signal_group(signal.SIGKILL)
            self.process.wait()

    def __repr__(self) -> str:
        return f"LocalProcessHandle(job_id={self.job_id!r}, pid={self.pid}, returncode={self.process.poll()})"


class LocalProcessExecutor:
    """Runs training jobs as local subprocesses (see the module docstring)."""

    name = "local"

    def __init__(self, grace_seconds: float = DEFAULT_GRACE_SECONDS):
        self.grace_seconds = grace_seconds

    def submit(self, job_id: str, argv: list[str], env: dict[str, str], log_path: str) -> LocalProcessHandle:
        """Start `argv` with the service's environment plus `env`; output appended to log_path."""
        if not argv or not all(isinstance(a, str) for a in argv):
            raise InvalidArgument(f"job {job_id}: argv must be a non-empty list of strings, got {argv!r}", field="argv")
        child_env = {**os.environ, **{str(k): str(v) for k, v in (env or {}).items()}}
        log = Path(log_path)
        log.parent.mkdir(parents=True, exist_ok=True)
        with open(log, "ab") as log_file:  # the child keeps its own copy of the descriptor
            try:
                process = subprocess.Popen(
                    argv,
                    env=child_env,
                    stdin=subprocess.DEVNULL,
                    stdout=log_file,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                    close_fds=True,
                )
            except OSError as exc:
                raise InvalidArgument(f"job {job_id}: cannot start {argv[0]!r}: {exc}", field="argv") from exc
        return LocalProcessHandle(job_id, process, str(log), self.grace_seconds)


@hookimpl
def register_training_executors(register):
    register("local", LocalProcessExecutor())
