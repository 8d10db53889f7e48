"""Settings from the environment: typed, loud on bad values, secrets generated once."""

from __future__ import annotations

import subprocess
from concurrent.futures import ThreadPoolExecutor

import pytest
from django.core.exceptions import ImproperlyConfigured

from sendmsg.env import env_bool, env_int, env_secret
from tests.conftest import platform_env
from tests.peers.processes import REPO_ROOT, manage_py


def test_bad_values_fail_loudly(monkeypatch):
    monkeypatch.setenv("X_PORT", "25a")
    with pytest.raises(ImproperlyConfigured, match="X_PORT must be an integer"):
        env_int("X_PORT", 1)
    monkeypatch.setenv("X_FLAG", "maybe")
    with pytest.raises(ImproperlyConfigured, match="X_FLAG must be true or false"):
        env_bool("X_FLAG", False)


def test_secret_is_generated_once_even_when_processes_race(tmp_path, monkeypatch):
    monkeypatch.delenv("X_SECRET", raising=False)
    with ThreadPoolExecutor(8) as pool:
        values = set(
            pool.map(lambda _: env_secret("X_SECRET", data_dir=tmp_path, filename="x"), range(16))
        )
    assert len(values) == 1
    assert (tmp_path / "x").stat().st_mode & 0o777 == 0o600
    assert env_secret("X_SECRET", data_dir=tmp_path, filename="x") == values.pop()


def test_secret_from_file(tmp_path, monkeypatch):
    (tmp_path / "s").write_text("from-a-file\n")
    monkeypatch.setenv("X_SECRET_FILE", str(tmp_path / "s"))
    assert env_secret("X_SECRET", data_dir=tmp_path, filename="y") == "from-a-file"


def test_check_deploy_is_clean_with_production_settings(tmp_path):
    env = platform_env()
    env.pop("SENDMSG_RELAY_ALLOW_PRIVATE")
    env.pop("DATABASE_URL")
    env.update(
        {
            "SENDMSG_DATA_DIR": str(tmp_path),
            "SENDMSG_SECURE": "true",
            "SENDMSG_ALLOWED_HOSTS": "mail.example.com",
            "SENDMSG_HOSTNAME": "mail.example.com",
        }
    )
    done = subprocess.run(
        manage_py("check", "--deploy", "--fail-level", "WARNING"),
        env=env,
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "no issues" in done.stdout


def test_unsafe_queue_timeouts_are_refused(tmp_path):
    env = platform_env()
    env.update(
        {
            "SENDMSG_DATA_DIR": str(tmp_path),
            "SENDMSG_TASK_TIMEOUT": "10",
            "SENDMSG_RELAY_TIMEOUT": "60",
        }
    )
    env.pop("DATABASE_URL")
    done = subprocess.run(
        manage_py("check"), env=env, cwd=REPO_ROOT, capture_output=True, text=True, timeout=60
    )
    assert done.returncode != 0
    assert "sendmsg.E001" in done.stderr
