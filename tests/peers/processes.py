"""Running the platform's own processes (web, SMTP server, workers) in tests.

Each ``ManagedProcess`` runs in its own session (``start_new_session=True``), so its
process id is also its process group id: ``stop()`` ends that group and so also the
children it forked (gunicorn or django-q2 workers), and never anything the test run did
not start. Output goes to ``log_dir/<name>.log`` so a failing test can show it.
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import os
import pathlib
import signal
import socket
import subprocess
import sys
import time
import weakref
from types import TracebackType
from typing import IO, Self

log = logging.getLogger(__name__)

REPO_ROOT = pathlib.Path(__file__).resolve().parents[2]
"""The repository root: the parent of ``tests/``."""

LOG_TAIL_CHARS = 4000

# Processes still running when the interpreter exits (a test crashed before its
# teardown, or Ctrl-C) are stopped by the atexit hook below instead of leaking.
_running: weakref.WeakSet[ManagedProcess] = weakref.WeakSet()


def manage_py(*args: str) -> list[str]:
    """Command line for ``manage.py`` with this interpreter: ``[python, manage.py, *args]``."""
    return [sys.executable, str(REPO_ROOT / "manage.py"), *args]


class ManagedProcess:
    """One subprocess with its own process group, log file and readiness checks.

    ``env`` is the child's complete environment (it is not merged with ``os.environ``),
    except that ``PYTHONUNBUFFERED=1`` is added unless given: Python children would
    otherwise hold back ``print`` output in a block buffer and ``wait_for_log`` would not
    see it. ``start()`` may be called again after ``stop()``; ``log()`` and
    ``wait_for_log()`` only look at the output of the current run.
    """

    def __init__(
        self,
        name: str,
        args: list[str],
        *,
        env: dict[str, str],
        cwd: pathlib.Path,
        log_dir: pathlib.Path,
    ) -> None:
        self.name = name
        self.args = list(args)
        self.env = {"PYTHONUNBUFFERED": "1", **env}
        self.cwd = cwd
        self.log_path = log_dir / f"{name}.log"
        self._proc: subprocess.Popen[bytes] | None = None
        self._log_file: IO[bytes] | None = None
        self._log_offset = 0

    @property
    def pid(self) -> int:
        """Process id of the started process (also its process group id)."""
        if self._proc is None:
            raise RuntimeError(f"{self.name}: not started")
        return self._proc.pid

    @property
    def returncode(self) -> int | None:
        """Exit code once it has exited (negative: killed by that signal), else None."""
        return None if self._proc is None else self._proc.poll()

    def start(self) -> None:
        """Start the process; stdout and stderr are appended to ``log_dir/<name>.log``."""
        if self._proc is not None and self._proc.poll() is None:
            raise RuntimeError(f"{self.name}: already running (pid {self._proc.pid})")
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        # Append, so a restart keeps the earlier run's output for post-mortems; the
        # offset marks where this run's output begins.
        self._log_file = open(self.log_path, "ab")  # noqa: SIM115 (closed in stop())
        self._log_file.write(f"==== {time.strftime('%H:%M:%S')} start {self.args!r}\n".encode())
        self._log_file.flush()
        self._log_offset = self._log_file.tell()
        self._proc = subprocess.Popen(
            self.args,
            env=self.env,
            cwd=self.cwd,
            stdin=subprocess.DEVNULL,
            stdout=self._log_file,
            stderr=subprocess.STDOUT,
            # Own session = own process group whose id is the child's pid; stop() signals
            # exactly that group.
            start_new_session=True,
        )
        _running.add(self)

    def log(self) -> str:
        """Everything the current run has written so far (stdout and stderr)."""
        try:
            with open(self.log_path, "rb") as f:
                f.seek(self._log_offset)
                return f.read().decode("utf-8", "replace")
        except FileNotFoundError:
            return ""

    def _tail(self) -> str:
        text = self.log()
        if len(text) > LOG_TAIL_CHARS:
            text = "…" + text[-LOG_TAIL_CHARS:]
        return f"--- {self.log_path} (tail) ---\n{text}--- end ---"

    def _check_alive(self, waiting_for: str) -> None:
        if self._proc is None:
            raise RuntimeError(f"{self.name}: not started")
        code = self._proc.poll()
        if code is not None:
            raise RuntimeError(
                f"{self.name} exited with code {code} while waiting for {waiting_for}\n"
                f"{self._tail()}"
            )

    def wait_for_port(self, host: str, port: int, timeout: float = 30.0) -> None:
        """Block until ``host:port`` accepts a TCP connection.

        Raises RuntimeError with the tail of the log if the process exits first, and
        TimeoutError with it after ``timeout`` seconds. A port that another process
        already listens on passes at once: give each test its own free port.
        """
        deadline = time.monotonic() + timeout
        while True:
            self._check_alive(f"{host}:{port}")
            try:
                with socket.create_connection((host, port), timeout=0.5):
                    return
            except OSError:
                pass
            if time.monotonic() >= deadline:
                raise TimeoutError(
                    f"{self.name}: {host}:{port} not accepting after {timeout}s\n{self._tail()}"
                )
            time.sleep(0.05)

    def wait_for_log(self, text: str, timeout: float = 30.0) -> None:
        """Block until ``text`` appears in this run's output.

        Raises RuntimeError with the log tail if the process exits without writing it,
        TimeoutError after ``timeout`` seconds.
        """
        deadline = time.monotonic() + timeout
        while True:
            if text in self.log():
                return
            try:
                self._check_alive(repr(text))
            except RuntimeError:
                # It may have written the text just before exiting.
                if text in self.log():
                    return
                raise
            if time.monotonic() >= deadline:
                raise TimeoutError(
                    f"{self.name}: {text!r} not logged after {timeout}s\n{self._tail()}"
                )
            time.sleep(0.05)

    def signal(self, signum: int) -> None:
        """Send ``signum`` to the process itself (not its group), as a service manager
        with ``KillMode=mixed`` does."""
        if self._proc is None:
            raise RuntimeError(f"{self.name}: not started")
        self._proc.send_signal(signum)

    def wait(self, timeout: float) -> int:
        """Wait for the process to exit by itself; returns its exit code. Raises
        subprocess.TimeoutExpired after ``timeout`` seconds (it is left running)."""
        if self._proc is None:
            raise RuntimeError(f"{self.name}: not started")
        return self._proc.wait(timeout=timeout)

    def stop(self, timeout: float = 15.0) -> int:
        """SIGTERM the leader, wait up to ``timeout`` s, then SIGKILL the process group.

        Only the leader gets SIGTERM, as from systemd with ``KillMode=mixed``: it stops
        the children it forked itself. (django-q2's qcluster, given SIGTERM together with
        its children, never exits: each stop then cost the whole timeout.) Members of the
        group that outlive the leader (orphaned workers) get SIGTERM, then SIGKILL once
        the timeout is up. Returns the exit code (negative for death by signal, e.g. -15).
        Safe to call again; returns the same code.
        """
        proc = self._proc
        if proc is None:
            raise RuntimeError(f"{self.name}: not started")
        # The group id is the pid because start_new_session made the child a session
        # leader; signalling it reaches nothing outside what we started.
        pgid = proc.pid
        deadline = time.monotonic() + timeout
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                _signal_group(pgid, signal.SIGKILL)
                proc.wait()
        # Give the rest of the group what is left of the timeout to follow its leader.
        if group_exists(pgid):
            _signal_group(pgid, signal.SIGTERM)
        while group_exists(pgid) and time.monotonic() < deadline:
            time.sleep(0.05)
        if group_exists(pgid):
            _signal_group(pgid, signal.SIGKILL)
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None
        _running.discard(self)
        assert proc.returncode is not None
        return proc.returncode

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def group_members(pgid: int) -> list[int]:
    """The live (not zombie) processes of process group ``pgid``."""
    members = []
    with os.scandir("/proc") as entries:
        pids = [entry.name for entry in entries if entry.name.isdigit()]
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat", "rb") as f:
                stat = f.read()
        except OSError:
            continue  # exited meanwhile
        # Fields after the ")" closing the command name: state ppid pgrp ...
        fields = stat[stat.rfind(b")") + 2 :].split()
        if int(fields[2]) == pgid and fields[0] != b"Z":
            members.append(int(pid))
    return members


def group_exists(pgid: int) -> bool:
    """Whether any live process is left in group ``pgid``.

    Orphans are reparented to PID 1, which may not reap them in a container; a zombie
    cannot run anything, so it does not count (signal 0 alone would count zombies).
    """
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return bool(group_members(pgid))


def _signal_group(pgid: int, sig: signal.Signals) -> None:
    # ProcessLookupError: the whole group already exited.
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pgid, sig)


@atexit.register
def _stop_leftovers() -> None:
    for process in list(_running):
        try:
            process.stop(timeout=5)
        except Exception:  # best effort at interpreter exit; say why it failed
            log.exception("could not stop %s (pid %s)", process.name, process.pid)
