"""deploy/: what an operator runs in production, checked by the tools that will read it.

The compose file by docker-compose, the Caddyfile by Caddy, the systemd units by
systemd-analyze, env.example against the settings the code reads, and
`manage.py check --deploy` with production settings. None of these is skipped: `make
test` installs the tools (Makefile, TEST_PACKAGES).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys

import pytest
import yaml

from tests.peers.processes import REPO_ROOT

DEPLOY = REPO_ROOT / "deploy"
ENV_EXAMPLE = DEPLOY / "env.example"
APP_DIRS = ["sendmsg", "domains", "delivery", "reputation"]
# Read by compose.yaml itself (interpolation), not by the code.
COMPOSE_ONLY = {"SENDMSG_DB_PASSWORD", "SENDMSG_ENV_FILE", "SENDMSG_PROXY_SUBNET"}

ENV_READ = re.compile(r"\benv_(?:str|int|bool|list|float|secret)\(\s*[\"']([A-Z][A-Z0-9_]*)[\"']")
OS_READ = re.compile(r"os\.(?:environ\.get\(|environ\[|getenv\()\s*[\"']([A-Z][A-Z0-9_]*)[\"']")
EXAMPLE_LINE = re.compile(r"^#?\s?([A-Z][A-Z0-9_]*)=(.*)$")


def tool(name: str) -> str:
    path = shutil.which(name)
    assert path, f"{name} is missing: `make test` installs it (Makefile, TEST_PACKAGES)"
    return path


def clean_environment(**extra: str) -> dict[str, str]:
    """This process's environment without the test settings' SENDMSG_* and DATABASE_URL."""
    env = {
        k: v for k, v in os.environ.items() if not k.startswith("SENDMSG_") and k != "DATABASE_URL"
    }
    env.update(extra)
    return env


def names_read_by_code() -> set[str]:
    names = set()
    for app in APP_DIRS:
        for path in (REPO_ROOT / app).rglob("*.py"):
            if "migrations" in path.parts:
                continue
            source = path.read_text()
            names |= set(ENV_READ.findall(source)) | set(OS_READ.findall(source))
    return names


def example_entries() -> dict[str, tuple[str, bool]]:
    """NAME -> (value, active) for every NAME=value line of env.example, commented or not."""
    entries = {}
    for line in ENV_EXAMPLE.read_text().splitlines():
        match = EXAMPLE_LINE.match(line)
        if match:
            entries[match[1]] = (match[2], not line.startswith("#"))
    return entries


def production_environment(data_dir) -> dict[str, str]:
    """env.example's active (production) lines, plus the secrets an operator sets."""
    active = {name: value for name, (value, on) in example_entries().items() if on}
    return clean_environment(
        **active,
        SENDMSG_DATA_DIR=str(data_dir),
        SENDMSG_SECRET_KEY="k" * 20 + "-production-secret-key-of-fifty-chars+",
        SENDMSG_DKIM_ENCRYPTION_KEY="dkim-encryption-key-for-the-test",
        SENDMSG_HASH_KEY="hash-key-for-the-test",
        DJANGO_SETTINGS_MODULE="sendmsg.settings",
    )


# -- env.example -------------------------------------------------------------------------


def test_the_code_reads_settings_the_scan_can_see():
    """Guards the scan below: if it found nothing, every later check would pass."""
    names = names_read_by_code()
    assert {"SENDMSG_HOSTNAME", "DATABASE_URL", "SENDMSG_TRUSTED_PROXIES"} <= names
    assert "SENDMSG_COMPLAINT_ADDRESS" in names  # a call split over lines


def test_env_example_documents_every_setting_the_code_reads():
    missing = sorted(names_read_by_code() - example_entries().keys())
    assert not missing, f"add these to deploy/env.example with default and meaning: {missing}"


def test_env_example_lists_nothing_the_code_does_not_read():
    unknown = sorted(example_entries().keys() - names_read_by_code() - COMPOSE_ONLY)
    assert not unknown, f"deploy/env.example lists variables nothing reads: {unknown}"


def test_every_env_example_entry_has_a_comment():
    lines = ENV_EXAMPLE.read_text().splitlines()
    for number, line in enumerate(lines):
        match = EXAMPLE_LINE.match(line)
        if not match:
            continue
        above = lines[:number]
        # the nearest line above that is not another variable is a comment on it
        while above and EXAMPLE_LINE.match(above[-1]):
            above.pop()
        assert above and above[-1].startswith("#"), f"{match[1]} has no explanation"


def test_env_example_values_read_the_same_in_compose_and_systemd():
    """compose interpolates "$" and systemd strips quotes: values use neither."""
    for name, (value, _) in example_entries().items():
        assert not re.search(r"[$\"'\s]", value), f"{name}={value}"


# -- manage.py check --deploy ------------------------------------------------------------


def test_check_deploy_is_clean_with_production_settings(tmp_path):
    result = subprocess.run(
        [sys.executable, "manage.py", "check", "--deploy", "--fail-level", "WARNING"],
        cwd=REPO_ROOT,
        env=production_environment(tmp_path),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "System check identified no issues" in result.stdout
    assert "WARNING" not in result.stderr + result.stdout


def test_check_deploy_does_warn_without_them(tmp_path):
    """The check above is a real check: development settings are not clean."""
    env = production_environment(tmp_path)
    env["SENDMSG_SECURE"] = "false"
    result = subprocess.run(
        [sys.executable, "manage.py", "check", "--deploy", "--fail-level", "WARNING"],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode != 0
    assert "security.W004" in result.stderr  # no HSTS


# -- compose.yaml ------------------------------------------------------------------------


def docker_compose(*args: str, env_file=ENV_EXAMPLE, **environment: str):
    """docker-compose on deploy/compose.yaml as an operator runs it after `cp env.example
    .env`: env.example is both compose's own variables (--env-file) and the containers'
    env_file. Nothing else of this process's environment leaks in."""
    return subprocess.run(
        [tool("docker-compose"), "--env-file", str(env_file), "-f", "compose.yaml", *args],
        cwd=DEPLOY,
        env=clean_environment(SENDMSG_ENV_FILE=str(ENV_EXAMPLE), **environment),
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.fixture(scope="module")
def compose() -> dict:
    quiet = docker_compose("config", "-q")  # as an operator would check it: exit 0
    assert quiet.returncode == 0, quiet.stderr
    result = docker_compose("config")
    assert result.returncode == 0, result.stderr
    return yaml.safe_load(result.stdout)


def test_compose_file_is_valid_and_has_every_process(compose):
    assert set(compose["services"]) == {
        "postgres",
        "redis",
        "bootstrap",
        "web",
        "submission",
        "inbound",
        "workers",
        "proxy",
    }


def test_compose_refuses_to_start_without_the_settings_it_needs(tmp_path):
    empty = tmp_path / "empty.env"
    empty.write_text("")
    result = docker_compose("config", "-q", env_file=empty)
    assert result.returncode != 0
    assert "SENDMSG_DB_PASSWORD" in result.stderr
    result = docker_compose("config", "-q", env_file=empty, SENDMSG_DB_PASSWORD="s3cret")
    assert result.returncode != 0
    assert "SENDMSG_PUBLIC_URL" in result.stderr or "SENDMSG_ALLOWED_HOSTS" in result.stderr


def test_compose_runs_the_platform_commands(compose):
    services = compose["services"]
    assert services["bootstrap"]["command"] == ["python", "manage.py", "bootstrap"]
    assert services["web"]["command"][:2] == ["gunicorn", "sendmsg.wsgi"]
    assert services["submission"]["command"][-2:] == ["submission", "submission-tls"]
    assert services["inbound"]["command"][-1] == "inbound"
    assert services["workers"]["command"] == ["python", "manage.py", "qcluster"]
    published = {
        name: {int(port["published"]) for port in services[name].get("ports", [])}
        for name in ("submission", "inbound", "proxy")
    }
    assert published == {"submission": {587, 465}, "inbound": {25}, "proxy": {80, 443}}
    assert "ports" not in services["web"]  # only through the proxy


def test_compose_waits_for_bootstrap_and_healthy_peers(compose):
    for name in ("web", "submission", "inbound", "workers"):
        depends = compose["services"][name]["depends_on"]
        assert depends["bootstrap"]["condition"] == "service_completed_successfully"
        assert depends["postgres"]["condition"] == "service_healthy"
        assert depends["redis"]["condition"] == "service_healthy"
    assert compose["services"]["bootstrap"]["restart"] == "no"


def test_compose_health_checks_use_the_platform_probes(compose):
    services = compose["services"]
    expected = {
        "web": ["manage.py", "health", "web"],
        "submission": ["manage.py", "health", "smtp"],
        "inbound": ["manage.py", "health", "smtp"],
        "workers": ["manage.py", "health", "workers"],
    }
    for name, probe in expected.items():
        assert services[name]["healthcheck"]["test"][-3:] == probe, name
    assert "pg_isready" in services["postgres"]["healthcheck"]["test"]
    assert "ping" in services["redis"]["healthcheck"]["test"]


def test_compose_stops_gracefully(compose):
    from delivery.management.commands.smtpd import SHUTDOWN_GRACE_SECONDS

    for name in ("web", "submission", "inbound", "workers"):
        service = compose["services"][name]
        assert service["stop_signal"] == "SIGTERM"
        grace = re.fullmatch(r"(\d+)s", service["stop_grace_period"])
        assert grace, service["stop_grace_period"]
        # more than the SMTP listeners' own wait for open sessions after SIGTERM
        assert int(grace[1]) > SHUTDOWN_GRACE_SECONDS, name


def test_compose_environment_names_settings_that_exist(compose):
    """A typo in compose.yaml's environment would silently fall back to a default."""
    known = names_read_by_code()
    for name in ("bootstrap", "web", "submission", "inbound", "workers"):
        environment = compose["services"][name]["environment"]
        assert environment["DATABASE_URL"] == "postgres://sendmsg:change-me@postgres:5432/sendmsg"
        assert environment["SENDMSG_BROKER"].startswith("redis://")
        assert environment["SENDMSG_CACHE"].startswith("redis://")
        unknown = {k for k in environment if k.startswith("SENDMSG_")} - known - COMPOSE_ONLY
        assert not unknown, (name, unknown)
    web = compose["services"]["web"]["environment"]
    assert web["SENDMSG_TRUSTED_PROXIES"] == "172.31.254.0/24"
    assert compose["networks"]["front"]["ipam"]["config"][0]["subnet"] == "172.31.254.0/24"
    assert "127.0.0.1" in web["SENDMSG_ALLOWED_HOSTS"].split(",")  # for the health probe


def test_dockerfile_copies_every_app_and_runs_unprivileged():
    dockerfile = (DEPLOY / "Dockerfile").read_text()
    assert re.search(r"^FROM python:3\.11-slim", dockerfile, re.M)
    copied = set(re.findall(r"^COPY (\S+) ", dockerfile, re.M))
    packages = {
        p.name
        for p in REPO_ROOT.iterdir()
        if (p / "__init__.py").exists() and p.name not in {"tests", "bench"}
    }
    assert packages | {"templates", "manage.py", "pyproject.toml"} <= copied
    assert "data" not in copied and "." not in copied  # never the checkout's secrets
    assert re.search(r"^RUN pip install \.$", dockerfile, re.M)
    assert re.search(r"^USER sendmsg$", dockerfile, re.M)


def test_caddyfile_is_valid_for_caddy(tmp_path):
    result = subprocess.run(
        [
            tool("caddy"),
            "validate",
            "--config",
            str(DEPLOY / "Caddyfile"),
            "--adapter",
            "caddyfile",
        ],
        env={
            "PATH": os.environ["PATH"],
            "HOME": str(tmp_path),
            "XDG_DATA_HOME": str(tmp_path / "data"),
            "XDG_CONFIG_HOME": str(tmp_path / "config"),
            "SENDMSG_PUBLIC_URL": "https://mail.example.net",
        },
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert "Valid configuration" in result.stderr + result.stdout


# -- systemd units -----------------------------------------------------------------------

UNITS = {
    "sendmsg-bootstrap.service": "bootstrap",
    "sendmsg-web.service": "gunicorn sendmsg.wsgi",
    "sendmsg-smtp-submission.service": "smtpd submission submission-tls",
    "sendmsg-smtp-inbound.service": "smtpd inbound",
    "sendmsg-workers.service": "qcluster",
}
LONG_RUNNING = [name for name in UNITS if name != "sendmsg-bootstrap.service"]


def unit_settings(name: str) -> dict[str, list[str]]:
    """KEY -> values of one unit file ([Section]Key), continuation lines joined."""
    found: dict[str, list[str]] = {}
    section = ""
    text = (DEPLOY / "systemd" / name).read_text().replace("\\\n", " ")
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("["):
            section = line.strip("[]")
            continue
        key, _, value = line.partition("=")
        found.setdefault(f"{section}.{key}", []).append(value)
    return found


def test_systemd_units_pass_systemd_analyze_verify(tmp_path):
    """Verified as installed into this checkout and this virtualenv (verify checks that
    ExecStart's programs exist)."""
    venv_bin = os.path.dirname(sys.executable)
    for name in UNITS:
        text = (DEPLOY / "systemd" / name).read_text()
        text = text.replace("/opt/sendmsg/.venv/bin", venv_bin)
        (tmp_path / name).write_text(text.replace("/opt/sendmsg", str(REPO_ROOT)))
    result = subprocess.run(
        [tool("systemd-analyze"), "verify", "--man=no", *sorted(UNITS)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    # verify exits 0 on unknown keys and bad values, but names them: nothing may be said.
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "" and result.stderr.strip() == "", result.stderr


@pytest.mark.parametrize("name", sorted(UNITS))
def test_systemd_unit_runs_its_process_as_sendmsg_hardened(name):
    unit = unit_settings(name)
    exec_start = " ".join(unit["Service.ExecStart"])
    assert UNITS[name] in " ".join(exec_start.split()), exec_start
    assert unit["Service.User"] == ["sendmsg"] and unit["Service.Group"] == ["sendmsg"]
    assert unit["Service.WorkingDirectory"] == ["/opt/sendmsg"]
    assert unit["Service.EnvironmentFile"] == ["/etc/sendmsg/env"]
    assert unit["Service.NoNewPrivileges"] == ["true"]
    assert unit["Service.ProtectSystem"] == ["strict"]
    assert unit["Service.ReadWritePaths"] == ["/var/lib/sendmsg"]
    assert unit["Service.PrivateTmp"] == ["true"]
    assert unit["Install.WantedBy"] == ["multi-user.target"]


@pytest.mark.parametrize("name", LONG_RUNNING)
def test_systemd_long_running_units_restart_and_stop_gracefully(name):
    unit = unit_settings(name)
    assert unit["Service.Restart"][0] in ("on-failure", "always")
    assert unit["Service.RestartSec"]
    assert unit["Service.KillSignal"] == ["SIGTERM"]
    assert unit["Service.TimeoutStopSec"]
    assert "sendmsg-bootstrap.service" in " ".join(unit["Unit.After"])


def test_systemd_only_the_smtp_units_may_bind_low_ports():
    for name in UNITS:
        unit = unit_settings(name)
        if name.startswith("sendmsg-smtp-"):
            assert unit["Service.AmbientCapabilities"] == ["CAP_NET_BIND_SERVICE"]
            assert unit["Service.CapabilityBoundingSet"] == ["CAP_NET_BIND_SERVICE"]
        else:
            assert "Service.AmbientCapabilities" not in unit
            assert unit["Service.CapabilityBoundingSet"] == [""]


def test_bootstrap_unit_is_a_oneshot():
    unit = unit_settings("sendmsg-bootstrap.service")
    assert unit["Service.Type"] == ["oneshot"]
    assert unit["Service.RemainAfterExit"] == ["yes"]
