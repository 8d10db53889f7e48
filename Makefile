# The README's two promises: `make run` and `make test`, each from a fresh Debian machine.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
SUDO := $(shell [ "$$(id -u)" = 0 ] || command -v sudo >/dev/null && [ "$$(id -u)" != 0 ] && echo sudo)
APT_INSTALL := DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get -o DPkg::Lock::Timeout=600 install -y --no-install-recommends --no-upgrade
# The real peers the tests start: DNS server, DKIM verifiers, an SMTP client, a browser,
# PostgreSQL (a throwaway cluster per run; the system's own is not used), Redis (the
# production broker, likewise); and the tools
# that read deploy/: docker-compose (config only, no engine), Caddy, systemd-analyze.
TEST_PACKAGES := unbound swaks libnet-ssleay-perl libmail-dkim-perl libcryptx-perl opendkim opendkim-tools chromium postgresql redis-server docker-compose caddy systemd

.PHONY: run test install install-test peers clean bench

run: install
	$(PY) manage.py serve

# The whole suite twice: on SQLite (the embedded default), then on PostgreSQL.
test: install-test peers
	$(PY) -m ruff check .
	$(PY) -m pytest
	SENDMSG_TEST_DATABASE=postgres $(PY) -m pytest

# Every benchmark on SQLite, then on PostgreSQL, in one table (bench/README.md; about
# 20 minutes on 2 cores). Postfix is installed with apt-get by the benches if missing.
bench: install-test peers
	$(PY) bench/suite.py

$(PY):
	@$(PYTHON) -m venv $(VENV) 2>/dev/null || { \
	  echo "python3-venv is missing; installing it with apt-get"; \
	  rm -rf $(VENV); \
	  DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get update -q && $(APT_INSTALL) python3-venv && \
	  $(PYTHON) -m venv $(VENV); }
	$(PY) -m pip install -q --upgrade pip

$(VENV)/.installed: pyproject.toml | $(PY)
	$(PY) -m pip install -q -e .
	touch $@

$(VENV)/.installed-test: pyproject.toml | $(PY)
	$(PY) -m pip install -q -e ".[test]"
	touch $(VENV)/.installed $@

install: $(VENV)/.installed

install-test: $(VENV)/.installed-test

peers:
	@missing=$$(for p in $(TEST_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || echo $$p; done); \
	if [ -n "$$missing" ]; then \
	  echo "Installing test peers with apt-get:" $$missing; \
	  DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get update -q && $(APT_INSTALL) $$missing; \
	fi

clean:
	rm -rf $(VENV)
