"""The platform's own processes, started by a test beside the session's ones
(tests/conftest.py ``platform``): SMTP submission listeners on ports of their own, delivery
workers, and a sweeper run, all in the environment the test gives (its broker, its
timeouts)."""

from __future__ import annotations

import pathlib
import subprocess

from tests.conftest import platform_env
from tests.peers.ports import free_port
from tests.peers.processes import REPO_ROOT, ManagedProcess, manage_py


def environment(**extra: str) -> dict[str, str]:
    """The session's platform environment (the test database) with ``extra`` on top."""
    return {**platform_env(), **extra}


def listener(name: str, log_dir: pathlib.Path, env: dict[str, str]) -> tuple[ManagedProcess, int]:
    """`manage.py smtpd submission` on a free port; returns the process and the port."""
    port = free_port()
    process = ManagedProcess(
        name,
        manage_py("smtpd", "submission"),
        env={**env, "SENDMSG_SUBMISSION_PORT": str(port)},
        cwd=REPO_ROOT,
        log_dir=log_dir,
    )
    process.start()
    process.wait_for_port("127.0.0.1", port)
    return process, port


def worker(name: str, log_dir: pathlib.Path, env: dict[str, str]) -> ManagedProcess:
    """`manage.py qcluster`, running."""
    process = ManagedProcess(name, manage_py("qcluster"), env=env, cwd=REPO_ROOT, log_dir=log_dir)
    process.start()
    process.wait_for_log("running", timeout=30)
    return process


def sweep_now(env: dict[str, str]) -> int:
    """Run the sweeper once, as its schedule would, in a process of ``env`` (so its
    wake-ups go to that environment's broker); returns how many messages it woke."""
    done = subprocess.run(
        manage_py("shell", "-c", "from delivery.tasks import sweep; print(sweep())"),
        env=env,
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return int(done.stdout.split()[-1])
