"""`make run`'s promise, through `manage.py serve` itself: set-up on an empty data folder,
every listener up, the README's first-message steps with swaks, and Ctrl-C stopping all."""

from __future__ import annotations

import http.cookiejar
import json
import os
import re
import signal
import socket
import subprocess
import time
import urllib.parse
import urllib.request

import pytest

from tests.conftest import platform_env
from tests.peers.ports import free_port
from tests.peers.processes import REPO_ROOT, ManagedProcess, manage_py

pytestmark = pytest.mark.peers


@pytest.fixture
def serve_env(tmp_path):
    env = platform_env()
    for name in ("DATABASE_URL", "SENDMSG_TLS_CERT", "SENDMSG_TLS_KEY"):
        env.pop(name, None)  # the embedded defaults: SQLite and a generated TLS pair
    env["SENDMSG_DATA_DIR"] = str(tmp_path / "data")
    for name in ("WEB_PORT", "SUBMISSION_PORT", "SUBMISSION_TLS_PORT", "INBOUND_PORT"):
        env[f"SENDMSG_{name}"] = str(free_port())
    env["SENDMSG_WORKERS"] = "1"
    env["SENDMSG_WEB_WORKERS"] = "1"
    return env


def manage(env: dict, *args: str) -> str:
    done = subprocess.run(
        manage_py(*args), env=env, cwd=REPO_ROOT, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def port_open(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def admin_login(base: str, username: str, password: str) -> str:
    """Log in to the admin like a browser (CSRF cookie and token); returns the final URL."""
    jar = http.cookiejar.CookieJar()
    opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(jar))
    opener.open(f"{base}/admin/login/", timeout=10).read()
    token = next(c.value for c in jar if c.name == "csrftoken")
    form = urllib.parse.urlencode(
        {
            "csrfmiddlewaretoken": token,
            "username": username,
            "password": password,
            "next": "/admin/",
        }
    ).encode()
    request = urllib.request.Request(
        f"{base}/admin/login/", data=form, headers={"Referer": f"{base}/admin/login/"}
    )
    with opener.open(request, timeout=10) as response:
        return response.geturl()


def test_serve_runs_everything_and_the_readme_steps_work(serve_env, dns_server, mx, tmp_path):
    serve = ManagedProcess(
        "serve", manage_py("serve"), env=serve_env, cwd=REPO_ROOT, log_dir=tmp_path
    )
    started = time.monotonic()
    serve.start()
    try:
        ports = [
            int(serve_env[f"SENDMSG_{n}"])
            for n in ("WEB_PORT", "SUBMISSION_PORT", "SUBMISSION_TLS_PORT", "INBOUND_PORT")
        ]
        for port in ports:
            serve.wait_for_port("127.0.0.1", port, timeout=60)
        serve.wait_for_log("running", timeout=60)
        assert time.monotonic() - started < 15
        log = serve.log()
        for port in ports:
            assert f":{port}" in log  # every address is printed
        login = re.search(r"Operator account created: user (\S+)\s+password (\S+)", log)
        assert login, log

        base = f"http://127.0.0.1:{serve_env['SENDMSG_WEB_PORT']}"
        for path in ("/login/", "/admin/login/", "/api/v1/schema/", "/static/sendmsg/site.css"):
            with urllib.request.urlopen(base + path, timeout=10) as response:
                assert response.status == 200, path
        assert admin_login(base, login.group(1), login.group(2)) == f"{base}/admin/"
        assert admin_login(base, login.group(1), "wrong") != f"{base}/admin/"

        # The README's steps, as a new user types them.
        manage(serve_env, "tenant", "create", "Shop", "--owner", "owner@shop.test")
        manage(serve_env, "domain", "add", "--tenant", "Shop", "shop.test")
        records = manage(serve_env, "domain", "records", "shop.test")
        dns_server.set_zone(
            "shop.test",
            [line for line in records.splitlines() if line and not line.startswith(";")],
        )
        assert manage(serve_env, "domain", "check", "shop.test").splitlines()[-1] == "verified"
        cred = json.loads(
            manage(serve_env, "smtpcredential", "create", "--tenant", "Shop", "--json")
        )
        swaks = subprocess.run(
            [
                "swaks",
                "--server",
                "127.0.0.1",
                "--port",
                serve_env["SENDMSG_SUBMISSION_PORT"],
                "--tls",
                "--auth",
                "PLAIN",
                "--auth-user",
                cred["username"],
                "--auth-password",
                cred["password"],
                "--from",
                "hello@shop.test",
                "--to",
                "frank@dest.test",
                "--timeout",
                "20",
            ],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert swaks.returncode == 0, swaks.stdout + swaks.stderr
        assert re.search(r"250 2\.0\.0 Ok: queued as [0-9A-F]+", swaks.stdout)
        received = mx.wait_for(1, timeout=30)[0]
        assert received.rcpt_tos == ["frank@dest.test"]
        assert b"d=shop.test;" in received.data

        # Ctrl-C in the terminal: SIGINT to the whole foreground group.
        os.killpg(serve.pid, signal.SIGINT)
        deadline = time.monotonic() + 25
        while serve.returncode is None and time.monotonic() < deadline:
            time.sleep(0.1)
        assert serve.returncode == 0, serve.log()[-3000:]
        assert "sendmsg stopped." in serve.log()
        assert not any(port_open(port) for port in ports)
    finally:
        serve.stop()

    # Set-up is idempotent: a second bootstrap creates no second operator.
    assert "Operator account created" not in manage(serve_env, "bootstrap")
