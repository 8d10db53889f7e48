"""A private Postfix instance for the benchmarks, STARTTLS + AUTH PLAIN: accept-only (hold)
or relaying to a local sink.

Used by bench/submission.py --postfix (hold mode) and bench/e2e_relay.py (relay mode,
below). Everything lives in one temp directory (its own
config, queue and data directories, its own SASL database); the system's Postfix
configuration is neither read nor changed, and the instance is started and stopped with
`postfix -c CONFIG_DIR start|stop`.

What the instance does (README.md, "Postfix as the anchor", shows the generated files):

* listens on 127.0.0.1:PORT only (smtpd in master.cf);
* requires STARTTLS (smtpd_tls_security_level = encrypt) with a copy of the platform's
  certificate and key, and offers AUTH only after it (smtpd_tls_auth_only = yes);
* AUTH PLAIN/LOGIN through Cyrus SASL against a sasldb file made with saslpasswd2;
* relays only for authenticated clients (permit_sasl_authenticated, reject);
* puts every accepted message on hold (smtpd_data_restrictions = check_client_access
  static:HOLD): Postfix's cleanup writes and fsyncs the queue file before smtpd answers
  250, and nothing is delivered afterwards, so its cost is accept + queue, like a
  sendmsg submission listener with no delivery workers;
* logs to a file in the temp dir through postlogd (Postfix always logs; with no
  syslog here, a file keeps that cost in).

Relay mode (``relay_port=PORT``): the same instance and front door, but nothing is put on
hold: the HOLD restriction is removed and ``relayhost = [127.0.0.1]:PORT`` sends every
accepted message on to that port (a local sink), with opportunistic STARTTLS
(smtp_tls_security_level = may, as sendmsg's relay does). Queue, concurrency (20 per
destination) and connection caching are Postfix's defaults. Postfix does no DKIM signing.

Debian's Postfix looks for Cyrus SASL's smtpd.conf in CONFIG_DIR/sasl/ (a Debian patch;
it did not honour cyrus_sasl_config_path here), so that is where it is written. The
temp dir must be reachable by the postfix user (mode 755 on it and its parents).
"""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import time
from pathlib import Path

REALM = "pf.bench.test"
QUEUES = ("maildrop", "incoming", "active", "deferred", "hold")
DEBCONF = (
    "postfix postfix/main_mailer_type select No configuration\n"
    "postfix postfix/mailname string bench.localhost\n"
)
PACKAGES = ["postfix", "sasl2-bin", "libsasl2-modules"]

MAIN_CF = """\
# private benchmark instance written by bench/postfix_private.py
compatibility_level = 3.6
queue_directory = {root}/spool
data_directory = {root}/data
myhostname = {realm}
mydomain = bench.test
myorigin = $myhostname
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
mydestination =
local_recipient_maps =
local_transport = error:local delivery disabled
relay_domains =
smtpd_relay_restrictions = permit_sasl_authenticated, reject
smtpd_recipient_restrictions = permit_sasl_authenticated, reject
smtpd_data_restrictions = check_client_access static:HOLD
smtpd_tls_cert_file = {cert}
smtpd_tls_key_file = {key}
smtpd_tls_security_level = encrypt
smtpd_tls_auth_only = yes
smtpd_sasl_auth_enable = yes
smtpd_sasl_type = cyrus
smtpd_sasl_path = smtpd
smtpd_sasl_local_domain = {realm}
soft_bounce = yes
biff = no
append_dot_mydomain = no
alias_maps =
alias_database =
maillog_file = {root}/maillog
maillog_file_prefixes = {root}
message_size_limit = 52428800
"""

# Relay mode: main.cf as above, then these edits through `postconf -c CONFIG_DIR`.
HOLD_SETTING = "smtpd_data_restrictions"
RELAY_SETTINGS = (
    "relayhost = [127.0.0.1]:{relay_port}",
    "smtp_tls_security_level = may",
)

SASL_CONF = """\
pwcheck_method: auxprop
auxprop_plugin: sasldb
mech_list: PLAIN LOGIN
sasldb_path: {root}/sasldb
"""


def ensure_installed() -> None:
    """Install Debian's postfix and Cyrus SASL tools if missing (debconf: No configuration)."""
    if shutil.which("postfix") and shutil.which("saslpasswd2"):
        return
    if os.geteuid() != 0:
        raise SystemExit("postfix and sasl2-bin are missing; installing them needs root")
    print("installing postfix, sasl2-bin, libsasl2-modules with apt-get", flush=True)
    subprocess.run(["debconf-set-selections"], input=DEBCONF, text=True, check=True)
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    cmd = ["apt-get", "install", "-y", "-q", "--no-install-recommends", *PACKAGES]
    if subprocess.run(cmd, env=env).returncode != 0:
        subprocess.run(["apt-get", "update", "-q"], env=env, check=True)
        subprocess.run(cmd, env=env, check=True)


class PrivatePostfix:
    """One Postfix instance in ``root`` (created here; removed by the caller)."""

    def __init__(
        self,
        root: Path,
        port: int,
        cert: Path,
        key: Path,
        user: str,
        password: str,
        relay_port: int | None = None,
    ):
        self.root, self.port = root, port
        self.cert, self.key = cert, key
        self.user, self.password = user, password
        # None: hold every message (accept-only cost); a port: relay to [127.0.0.1]:port
        self.relay_port = relay_port
        self.conf = root / "conf"
        self.master_pid: int | None = None

    # -- setup

    def configure(self) -> None:
        postfix = pwd.getpwnam("postfix")
        self.root.mkdir(parents=True, exist_ok=True)
        os.chmod(self.root, 0o755)  # postfix's processes must reach their queue and sasldb
        for sub in ("conf", "conf/sasl", "spool", "data"):
            (self.root / sub).mkdir(parents=True, exist_ok=True)
        os.chown(self.root / "data", postfix.pw_uid, postfix.pw_gid)
        # the platform's own TLS pair, copied: smtpd reads it as root before dropping privileges
        cert, key = self.conf / "cert.pem", self.conf / "key.pem"
        shutil.copyfile(self.cert, cert)
        shutil.copyfile(self.key, key)
        os.chmod(key, 0o600)
        fields = {"root": self.root, "realm": REALM, "cert": cert, "key": key}
        (self.conf / "main.cf").write_text(MAIN_CF.format(**fields))
        (self.conf / "sasl" / "smtpd.conf").write_text(SASL_CONF.format(**fields))
        # master.cf: Debian's stock file; smtpd moved to 127.0.0.1:PORT; no chroot
        stock = Path("/usr/share/postfix/master.cf.dist").read_text().splitlines()
        lines = [
            f"127.0.0.1:{self.port} inet  n       -       n       -       -       smtpd"
            if line.split()[:2] == ["smtp", "inet"]
            else line
            for line in stock
        ]
        (self.conf / "master.cf").write_text("\n".join(lines) + "\n")
        self._run(["postconf", "-c", str(self.conf), "-F", "*/*/chroot = n"])
        if self.relay_port is not None:
            self._run(["postconf", "-c", str(self.conf), "-X", HOLD_SETTING])
            settings = [line.format(relay_port=self.relay_port) for line in RELAY_SETTINGS]
            self._run(["postconf", "-c", str(self.conf), "-e", *settings])
        sasldb = self.root / "sasldb"
        self._run(
            ["saslpasswd2", "-p", "-c", "-f", str(sasldb), "-u", REALM, self.user],
            input=self.password,
        )
        os.chown(sasldb, postfix.pw_uid, postfix.pw_gid)
        os.chmod(sasldb, 0o600)
        self._run(["postfix", "-c", str(self.conf), "check"])

    def _run(self, argv: list[str], input: str | None = None) -> str:
        done = subprocess.run(argv, input=input, capture_output=True, text=True, timeout=120)
        if done.returncode != 0:
            raise SystemExit(
                f"{' '.join(argv[:2])} failed:\n{done.stdout}\n{done.stderr}\n{self.log_tail()}"
            )
        return done.stdout

    # -- life cycle

    def start(self) -> None:
        self._run(["postfix", "-c", str(self.conf), "start"])
        pid_file = self.root / "spool" / "pid" / "master.pid"
        end = time.monotonic() + 30
        while time.monotonic() < end:
            try:
                self.master_pid = int(pid_file.read_text().strip())
                return
            except (OSError, ValueError):
                time.sleep(0.1)
        raise SystemExit("Postfix did not write its master pid")

    def stop(self) -> None:
        if self.master_pid is None:
            return
        subprocess.run(["postfix", "-c", str(self.conf), "stop"], capture_output=True, timeout=60)
        end = time.monotonic() + 20
        while time.monotonic() < end and Path(f"/proc/{self.master_pid}").exists():
            time.sleep(0.1)
        self.master_pid = None

    # -- queue

    def queued(self) -> int:
        """Queue files in every queue (in hold mode they all end up in hold; in relay mode
        a file is removed once the relayhost has taken its message)."""
        spool = self.root / "spool"
        return sum(len(files) for q in QUEUES for _, _, files in os.walk(spool / q))

    def flush(self) -> None:
        """Delete every queued message (outside the timed window)."""
        self._run(["postsuper", "-c", str(self.conf), "-d", "ALL"])

    def log_tail(self, chars: int = 3000) -> str:
        try:
            return (self.root / "maillog").read_text(errors="replace")[-chars:]
        except OSError:
            return ""
