"""A throwaway PostgreSQL cluster for one test run (RECIPES.md: ~1.3 s to start).

Started from tests/settings.py when ``SENDMSG_TEST_DATABASE=postgres``, before Django
reads its settings, and stopped when the run ends. The cluster lives in a 0755 temp dir
(PostgreSQL's own user must reach it), listens on 127.0.0.1 only, trusts local logins,
and runs without fsync: a test run needs no durability.
"""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

from tests.peers.ports import free_port


def bin_dir() -> Path:
    """The newest Debian PostgreSQL's binaries, else the ones on PATH."""
    candidates = sorted(
        glob.glob("/usr/lib/postgresql/*/bin/initdb"),
        key=lambda path: int(Path(path).parent.parent.name),
    )
    if candidates:
        return Path(candidates[-1]).parent
    found = shutil.which("initdb")
    if found is None:
        raise RuntimeError("PostgreSQL is not installed (Debian package: postgresql)")
    return Path(found).parent


class PostgresCluster:
    def __init__(self) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="sendmsg-pg-"))
        self.root.chmod(0o755)
        self.data = self.root / "data"
        self.port = free_port()
        self.bin = bin_dir()
        # initdb refuses to run as root: as root, run the cluster as PostgreSQL's user.
        self.as_user = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []

    @property
    def url(self) -> str:
        return f"postgres://postgres@127.0.0.1:{self.port}/postgres"

    def _run(self, *args: str) -> None:
        subprocess.run(
            [*self.as_user, str(self.bin / args[0]), *args[1:]],
            check=True,
            capture_output=True,
            timeout=120,
        )

    def start(self) -> None:
        if self.as_user:
            shutil.chown(self.root, "postgres", "postgres")
        self._run("initdb", "-D", str(self.data), "-U", "postgres", "--auth=trust", "--no-sync")
        options = (
            f"-c listen_addresses=127.0.0.1 -p {self.port} -k {self.root} "
            "-c fsync=off -c synchronous_commit=off -c full_page_writes=off "
            "-c max_connections=200"
        )
        self._run("pg_ctl", "-D", str(self.data), "-l", str(self.root / "log"), "-w", "start",
                  "-o", options)  # fmt: skip

    def stop(self) -> None:
        try:
            self._run("pg_ctl", "-D", str(self.data), "-m", "fast", "-w", "stop")
        finally:
            shutil.rmtree(self.root, ignore_errors=True)
