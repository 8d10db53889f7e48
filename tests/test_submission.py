"""SMTP submission over the wire: extensions and enhanced codes on every reply, session
limits, AUTH throttling, sender rules, durable accept while the database is locked,
smuggling and STARTTLS injection, 8-bit and UTF-8, and swaks on both ports.

Most tests talk to the session's platform (a real ``smtpd`` and ``qcluster``); the ones
that need small limits start their own ``smtpd`` (``strict``) on the same database. Tests
whose AUTH fails, or that count connections, connect from their own loopback address:
the throttle counts per client address in a cache every process of the run shares.
"""

from __future__ import annotations

import base64
import os
import re
import signal
import smtplib
import socket
import ssl
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
from django.conf import settings

from delivery import auth_throttle
from delivery.credentials import create_smtp_credential
from delivery.models import Message, Recipient
from tests.conftest import platform_env, wait_until
from tests.database_locks import write_lock_held
from tests.peers.ports import free_port
from tests.peers.processes import REPO_ROOT, ManagedProcess, manage_py

pytestmark = [pytest.mark.peers, pytest.mark.django_db(transaction=True)]

ENHANCED = re.compile(r"^[245]\d\d [245]\.\d{1,3}\.\d{1,3} ")
STRICT_LIMITS = {
    "SENDMSG_MAX_RECIPIENTS": "3",
    "SENDMSG_SMTP_MAX_RECIPIENTS_PER_SESSION": "5",
    "SENDMSG_SMTP_MAX_MESSAGES_PER_SESSION": "3",
    "SENDMSG_SMTP_MAX_CONNECTIONS_PER_ADDRESS": "3",
    "SENDMSG_SMTP_PROCESSES": "3",  # the connection limit holds across processes
    "SENDMSG_SMTP_TIMEOUT": "3",
    "SENDMSG_MESSAGE_SIZE_LIMIT": "100000",
    "SENDMSG_AUTH_SLOWDOWN_AFTER": "2",
    "SENDMSG_AUTH_DELAY_SECONDS": "0.3",
    "SENDMSG_AUTH_LOCKOUT_AFTER": "4",
    "SENDMSG_AUTH_LOCKOUT_SECONDS": "3",
    "SENDMSG_DB_LOCK_TIMEOUT": "1",
}


# -- a raw client: exactly the bytes a test writes reach the server ----------------------


class Wire:
    """An SMTP client on a plain socket that sends bytes as given and reads whole replies."""

    def __init__(self, port: int, *, source: str = "127.0.0.1", tls: ssl.SSLContext | None = None):
        self.sock = socket.create_connection(
            ("127.0.0.1", port), timeout=10, source_address=(source, 0)
        )
        if tls is not None:
            self.sock = tls.wrap_socket(self.sock, server_hostname="localhost")
        self.buffer = b""

    def close(self) -> None:
        self.sock.close()

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def reply(self) -> tuple[int, list[str]]:
        """The next reply: its code and its lines (without the code)."""
        lines = []
        while True:
            while b"\r\n" not in self.buffer:
                chunk = self.sock.recv(65536)
                if not chunk:
                    raise EOFError(f"connection closed; unread {self.buffer!r}, read {lines!r}")
                self.buffer += chunk
            line, self.buffer = self.buffer.split(b"\r\n", 1)
            text = line.decode("utf-8")
            lines.append(text)
            if text[3:4] != "-":
                return int(text[:3]), [entry[4:] for entry in lines]

    def cmd(self, line: str | bytes) -> str:
        """Send one command; the final line of its reply, code included."""
        self.send((line.encode() if isinstance(line, str) else line) + b"\r\n")
        code, lines = self.reply()
        return f"{code} {lines[-1]}"

    def ehlo(self) -> list[str]:
        self.send(b"EHLO client.test\r\n")
        code, lines = self.reply()
        assert code == 250, lines
        return lines[1:]

    def starttls(self, context: ssl.SSLContext) -> None:
        assert self.cmd("STARTTLS").startswith("220 2.0.0 ")
        self.sock = context.wrap_socket(self.sock, server_hostname="localhost")

    def login(self, username: str, password: str) -> str:
        blob = base64.b64encode(f"\0{username}\0{password}".encode()).decode()
        return self.cmd(f"AUTH PLAIN {blob}")

    def eof(self) -> bool:
        """True once the server has closed the connection (waits up to the socket timeout)."""
        try:
            return self.sock.recv(1) == b""
        except (ConnectionResetError, ssl.SSLError):
            return True


def submission(port: int, tls: ssl.SSLContext, credentials: tuple[str, str], **kw) -> Wire:
    """A session on the STARTTLS port, encrypted and logged in."""
    wire = Wire(port, **kw)
    assert wire.reply()[0] == 220
    wire.ehlo()
    wire.starttls(tls)
    wire.ehlo()
    assert wire.login(*credentials) == "235 2.7.0 Authentication successful"
    return wire


def message(to: str, subject: str = "hello", sender: str = "news@acme.test") -> bytes:
    return (f"From: Acme <{sender}>\r\nTo: {to}\r\nSubject: {subject}\r\n\r\nHello.\r\n").encode()


def send(wire: Wire, to: list[str], data: bytes, sender: str = "news@acme.test") -> str:
    """One whole transaction; the reply to the end of DATA."""
    assert wire.cmd(f"MAIL FROM:<{sender}>") == "250 2.1.0 Sender OK"
    for address in to:
        assert wire.cmd(f"RCPT TO:<{address}>") == "250 2.1.5 Recipient OK"
    assert wire.cmd("DATA").startswith("354 ")
    wire.send(data + b".\r\n")
    code, lines = wire.reply()
    return f"{code} {lines[-1]}"


def assert_stored(*recipients: str) -> None:
    assert sorted(Recipient.objects.values_list("address", flat=True)) == sorted(recipients)


def assert_delivered(mx, *recipients: str) -> list:
    """Every recipient reached the MX exactly once, and nothing else did (recipients of
    one message at one domain arrive in one transaction)."""
    wait_until(lambda: sum(len(m.rcpt_tos) for m in mx.messages) >= len(recipients))
    received = list(mx.messages)
    time.sleep(0.3)  # anything extra (a smuggled message) would have arrived by now
    assert sorted(a for m in mx.messages for a in m.rcpt_tos) == sorted(recipients)
    return received


@pytest.fixture
def login(verified_domain) -> tuple[str, str]:
    credential, password = create_smtp_credential(tenant=verified_domain.tenant)
    return credential.username, password


@dataclass
class Server:
    process: ManagedProcess
    port: int
    tls_port: int


@pytest.fixture(scope="module")
def strict(platform, tmp_path_factory):
    """A second smtpd with small limits (STRICT_LIMITS), on the same database and cache."""
    port, tls_port = free_port(), free_port()
    env = platform_env()
    env.update(STRICT_LIMITS)
    env.update({"SENDMSG_SUBMISSION_PORT": str(port), "SENDMSG_SUBMISSION_TLS_PORT": str(tls_port)})
    process = ManagedProcess(
        "smtpd-strict",
        manage_py("smtpd", "submission", "submission-tls"),
        env=env,
        cwd=REPO_ROOT,
        log_dir=tmp_path_factory.mktemp("strict-logs"),
    )
    process.start()
    try:
        process.wait_for_port("127.0.0.1", port)
        process.wait_for_port("127.0.0.1", tls_port)
        yield Server(process, port, tls_port)
    finally:
        process.stop()


# -- protocol: extensions, enhanced codes, limits -----------------------------------------


def test_ehlo_extensions_and_an_enhanced_code_on_every_reply(platform, login, client_tls, mx):
    wire = Wire(settings.SENDMSG_SUBMISSION_PORT)
    assert wire.reply()[0] == 220
    before_tls = wire.ehlo()
    for keyword in ("SIZE 26214400", "8BITMIME", "SMTPUTF8", "PIPELINING", "ENHANCEDSTATUSCODES"):
        assert keyword in before_tls
    assert "STARTTLS" in before_tls and not any(k.startswith("AUTH") for k in before_tls)
    assert wire.cmd("MAIL FROM:<news@acme.test>").startswith("530 5.7.0 ")
    wire.starttls(client_tls)
    # STARTTLS forgot the EHLO (RFC 3207 §4.2); without EHLO a reply has no enhanced code.
    assert wire.cmd("MAIL FROM:<news@acme.test>") == "503 Error: send HELO first"
    after_tls = wire.ehlo()
    assert "AUTH LOGIN PLAIN" in after_tls and "STARTTLS" not in after_tls
    assert "ENHANCEDSTATUSCODES" in after_tls and "SIZE 26214400" in after_tls
    # Unauthenticated: no relaying to an outside address.
    assert wire.cmd("RCPT TO:<alice@dest.test>").startswith("530 5.7.0 ")
    assert wire.cmd("DATA").startswith("530 5.7.0 ")
    assert wire.login(*login) == "235 2.7.0 Authentication successful"

    replies = {
        "unknown command": (wire.cmd("FROB"), "500 5.5.2 "),
        "empty line": (wire.cmd(""), "500 5.5.2 "),
        "command too long": (wire.cmd("NOOP " + "x" * 1200), "500 5.5.2 "),
        "bad syntax": (wire.cmd("MAIL TO:<news@acme.test>"), "501 5.5.4 "),
        "bad sequence": (wire.cmd("RCPT TO:<alice@dest.test>"), "503 5.5.1 "),
        "data first": (wire.cmd("DATA"), "503 5.5.1 "),
        "auth again": (wire.login(*login), "503 5.5.1 "),
        "size": (wire.cmd("MAIL FROM:<news@acme.test> SIZE=999999999"), "552 5.3.4 "),
        "body type": (wire.cmd("MAIL FROM:<news@acme.test> BODY=9BIT"), "501 5.5.4 "),
        "parameter": (wire.cmd("MAIL FROM:<news@acme.test> FOO=1"), "555 5.5.4 "),
        "expn": (wire.cmd("EXPN staff"), "502 5.5.1 "),
        "vrfy": (wire.cmd("VRFY alice"), "252 2.5.0 "),
        "help": (wire.cmd("HELP"), "250 2.0.0 "),
        "noop": (wire.cmd("NOOP"), "250 2.0.0 "),
        "rset": (wire.cmd("RSET"), "250 2.0.0 "),
    }
    for what, (reply, expected) in replies.items():
        assert ENHANCED.match(reply) and reply.startswith(expected), (what, reply)

    # A message line over 1000 octets is refused after the data, and nothing is stored.
    assert wire.cmd("MAIL FROM:<news@acme.test>") == "250 2.1.0 Sender OK"
    assert wire.cmd("RCPT TO:<alice@dest.test>") == "250 2.1.5 Recipient OK"
    assert wire.cmd("DATA").startswith("354 ")
    wire.send(message("alice@dest.test") + b"x" * 1200 + b"\r\n.\r\n")
    code, lines = wire.reply()
    assert f"{code} {lines[-1]}".startswith("500 5.6.0 "), lines
    assert not Message.objects.exists()

    # The session goes on: a good message is accepted and delivered.
    reply = send(wire, ["alice@dest.test"], message("alice@dest.test"))
    assert reply.startswith("250 2.0.0 Ok: queued as ")
    assert wire.cmd("QUIT").startswith("221 2.0.0 ")
    wire.close()
    assert_stored("alice@dest.test")
    assert_delivered(mx, "alice@dest.test")


def test_too_much_data_and_a_size_over_the_limit(strict, login, client_tls, mx):
    wire = submission(strict.port, client_tls, login)
    assert "SIZE 100000" in wire.ehlo()
    assert wire.cmd("MAIL FROM:<news@acme.test> SIZE=100001").startswith("552 5.3.4 ")
    assert wire.cmd("MAIL FROM:<news@acme.test> SIZE=2000") == "250 2.1.0 Sender OK"
    assert wire.cmd("RCPT TO:<big@dest.test>") == "250 2.1.5 Recipient OK"
    assert wire.cmd("DATA").startswith("354 ")
    wire.send(message("big@dest.test") + (b"y" * 998 + b"\r\n") * 120 + b".\r\n")
    assert wire.reply() == (552, ["5.3.4 Error: Too much mail data"])
    assert not Message.objects.exists()
    assert send(wire, ["small@dest.test"], message("small@dest.test")).startswith("250 2.0.0 ")
    wire.close()
    assert_stored("small@dest.test")
    assert_delivered(mx, "small@dest.test")


def test_recipient_limits_per_message_and_per_session(strict, login, client_tls, mx):
    wire = submission(strict.port, client_tls, login)
    assert wire.cmd("MAIL FROM:<news@acme.test>") == "250 2.1.0 Sender OK"
    for n in range(3):
        assert wire.cmd(f"RCPT TO:<r{n}@dest.test>") == "250 2.1.5 Recipient OK"
    assert wire.cmd("RCPT TO:<r3@dest.test>").startswith("452 4.5.3 ")
    assert wire.cmd("DATA").startswith("354 ")
    wire.send(message("r0@dest.test") + b".\r\n")
    assert wire.reply()[0] == 250
    # Per session: five recipients, then 452 for the sixth and 421 for the next MAIL.
    assert wire.cmd("MAIL FROM:<news@acme.test>") == "250 2.1.0 Sender OK"
    assert wire.cmd("RCPT TO:<r3@dest.test>") == "250 2.1.5 Recipient OK"
    assert wire.cmd("RCPT TO:<r4@dest.test>") == "250 2.1.5 Recipient OK"
    assert wire.cmd("RCPT TO:<r5@dest.test>").startswith("452 4.5.3 Too many recipients in this")
    assert wire.cmd("DATA").startswith("354 ")
    wire.send(message("r3@dest.test") + b".\r\n")
    assert wire.reply()[0] == 250
    assert wire.cmd("MAIL FROM:<news@acme.test>").startswith("421 4.7.0 ")
    assert wire.eof()
    assert Message.objects.count() == 2
    assert_stored(*(f"r{n}@dest.test" for n in range(5)))
    assert_delivered(mx, *(f"r{n}@dest.test" for n in range(5)))


def test_messages_per_session(strict, login, client_tls, mx):
    wire = submission(strict.port, client_tls, login)
    for n in range(3):
        assert send(wire, [f"m{n}@dest.test"], message(f"m{n}@dest.test")).startswith("250 ")
    assert wire.cmd("MAIL FROM:<news@acme.test>").startswith("421 4.7.0 Too many messages")
    assert wire.eof()
    # A new session goes on.
    wire = submission(strict.port, client_tls, login)
    assert send(wire, ["m3@dest.test"], message("m3@dest.test")).startswith("250 ")
    wire.close()
    assert Message.objects.count() == 4
    assert_stored(*(f"m{n}@dest.test" for n in range(4)))
    assert_delivered(mx, *(f"m{n}@dest.test" for n in range(4)))


def test_connections_per_client_address(strict, login, client_tls, mx):
    crowd = [Wire(strict.port, source="127.0.0.21") for _ in range(3)]
    for wire in crowd:
        assert wire.reply()[0] == 220
    extra = Wire(strict.port, source="127.0.0.21")
    assert extra.reply() == (421, ["4.7.0 Too many connections from your address; try again later"])
    assert extra.eof()
    other = Wire(strict.tls_port, source="127.0.0.22", tls=client_tls)  # another address
    assert other.reply()[0] == 220
    other.close()
    crowd.pop().close()

    def admitted() -> Wire | None:
        wire = Wire(strict.port, source="127.0.0.21")
        if wire.reply()[0] == 220:
            return wire
        wire.close()
        return None

    wire = wait_until(admitted, timeout=5)
    wire.ehlo()
    wire.starttls(client_tls)
    wire.ehlo()
    wire.login(*login)
    assert send(wire, ["crowd@dest.test"], message("crowd@dest.test")).startswith("250 ")
    for each in [wire, *crowd]:
        each.close()
    assert_stored("crowd@dest.test")
    assert_delivered(mx, "crowd@dest.test")


def test_idle_timeout_answers_421_and_a_slow_upload_is_not_idle(strict, login, client_tls, mx):
    wire = submission(strict.port, client_tls, login)
    assert wire.cmd("MAIL FROM:<news@acme.test>") == "250 2.1.0 Sender OK"
    assert wire.cmd("RCPT TO:<slow@dest.test>") == "250 2.1.5 Recipient OK"
    assert wire.cmd("DATA").startswith("354 ")
    # The message takes longer than the timeout (3 s) to arrive, but bytes keep coming.
    wire.send(message("slow@dest.test"))
    for _ in range(4):
        time.sleep(1)
        wire.send(b"more\r\n")
    wire.send(b".\r\n")
    assert wire.reply()[0] == 250
    # Then nothing for longer than the timeout.
    started = time.monotonic()
    code, lines = wire.reply()
    assert (code, lines[-1][:6]) == (421, "4.4.2 "), lines
    assert 2.5 < time.monotonic() - started < 6
    assert wire.eof()
    assert_stored("slow@dest.test")
    [received] = assert_delivered(mx, "slow@dest.test")
    assert received.data.endswith(b"Hello.\r\nmore\r\nmore\r\nmore\r\nmore\r\n")


# -- AUTH throttling -----------------------------------------------------------------------


def test_repeated_auth_failures_are_slowed_then_locked_out(strict, verified_domain, client_tls, mx):
    target, password = create_smtp_credential(tenant=verified_domain.tenant)
    other, other_password = create_smtp_credential(tenant=verified_domain.tenant)
    attacker = "127.0.0.23"
    wire = Wire(strict.port, source=attacker)
    wire.reply()
    wire.ehlo()
    wire.starttls(client_tls)
    wire.ehlo()
    took = []
    for _ in range(4):
        started = time.monotonic()
        assert (
            wire.login(target.username, "wrong") == "535 5.7.8 Authentication credentials invalid"
        )
        took.append(time.monotonic() - started)
    # The 1st failure is answered at once; from the 2nd on after 0.3 s, doubling.
    assert took[0] < 0.3 <= took[1] and 0.6 <= took[2] and 1.2 <= took[3], took
    # Locked: even the right password is not checked.
    locked = wire.login(target.username, password)
    assert locked.startswith("454 4.7.0 Too many failed logins"), locked
    # The address is locked for other logins, and the username from other addresses.
    assert wire.login(other.username, other_password).startswith("454 4.7.0 ")
    elsewhere = Wire(strict.tls_port, source="127.0.0.24", tls=client_tls)
    elsewhere.reply()
    elsewhere.ehlo()
    assert elsewhere.login(target.username, password).startswith("454 4.7.0 ")
    assert auth_throttle.locked_for(auth_throttle.Subject(attacker, target.username)) > 0
    assert "AUTH lockout started" in strict.process.log()

    for each in (wire, elsewhere):
        each.close()

    # The lockout ends by itself (3 s here).
    time.sleep(3.2)
    wire = submission(strict.port, client_tls, (target.username, password), source=attacker)
    assert send(wire, ["unlocked@dest.test"], message("unlocked@dest.test")).startswith("250")
    wire.close()
    auth_throttle.forget(auth_throttle.Subject(attacker, target.username))
    assert_stored("unlocked@dest.test")
    assert_delivered(mx, "unlocked@dest.test")


# -- sender rules ----------------------------------------------------------------------


def test_sender_and_recipient_rules(platform, login, client_tls, mx):
    wire = submission(settings.SENDMSG_SUBMISSION_PORT, client_tls, login)
    refused = {
        "<news@@acme.test>": "553 5.1.3 ",
        "<news@acme>": "553 5.1.7 ",
        "<ceo@globex.test>": "553 5.7.1 ",
        "<news@acme.test.evil.test>": "553 5.7.1 ",
    }
    for address, expected in refused.items():
        assert wire.cmd(f"MAIL FROM:{address}").startswith(expected), address
    assert wire.cmd("MAIL FROM:<News@ACME.Test>") == "250 2.1.0 Sender OK"
    bad_recipients = {
        "<bob>": "501 5.1.3 ",
        "<bob@@dest.test>": "553 5.1.3 ",
        "<bob@-bad-.test>": "553 5.1.2 ",
        "<bob@[127.0.0.1]>": "553 5.1.2 ",
    }
    for address, expected in bad_recipients.items():
        assert wire.cmd(f"RCPT TO:{address}").startswith(expected), address
    assert wire.cmd("RCPT TO:<bob@dest.test>") == "250 2.1.5 Recipient OK"
    assert wire.cmd("RCPT TO:<bob@DEST.test>").startswith("250 2.1.5 Recipient OK (already")
    assert wire.cmd("DATA").startswith("354 ")
    wire.send(message("bob@dest.test", sender="ceo@globex.test") + b".\r\n")
    code, lines = wire.reply()
    assert code == 550 and lines[-1].startswith("5.7.1 ") and "globex.test" in lines[-1], lines
    assert not Message.objects.exists()
    assert send(wire, ["bob@dest.test"], message("bob@dest.test")).startswith("250 2.0.0 ")
    wire.close()
    assert_stored("bob@dest.test")
    assert_delivered(mx, "bob@dest.test")


# -- durable accept ------------------------------------------------------------------------


def test_sessions_at_once_each_get_their_own_answer(platform, login, client_tls, mx):
    """Messages that arrive together share a commit (and, with several listener
    processes, take turns at the database); each 250 is still its own stored message, and
    one refused among them leaves nothing behind and costs the others nothing."""
    sessions = 12
    wires = [
        submission(settings.SENDMSG_SUBMISSION_PORT, client_tls, login) for _ in range(sessions)
    ]
    for i, wire in enumerate(wires):
        assert wire.cmd("MAIL FROM:<news@acme.test>") == "250 2.1.0 Sender OK"
        assert wire.cmd(f"RCPT TO:<r{i}@dest.test>") == "250 2.1.5 Recipient OK"
        assert wire.cmd("DATA").startswith("354 ")
    # Every message's last line goes out at once; then the replies are read.
    for i, wire in enumerate(wires):
        author = "ceo@globex.test" if i == 5 else "news@acme.test"
        wire.send(message(f"r{i}@dest.test", subject=f"at once {i}", sender=author) + b".\r\n")
    replies = [wire.reply() for wire in wires]
    for wire in wires:
        wire.close()
    refused = replies.pop(5)
    assert refused[0] == 550 and refused[1][-1].startswith("5.7.1 "), refused
    queue_ids = []
    for code, lines in replies:
        assert code == 250 and lines[-1].startswith("2.0.0 Ok: queued as "), lines
        queue_ids.append(lines[-1].rsplit(" ", 1)[1])
    stored = dict(Message.objects.values_list("queue_id", "subject"))
    assert sorted(stored) == sorted(queue_ids)
    assert "at once 5" not in stored.values()
    others = [f"r{i}@dest.test" for i in range(sessions) if i != 5]
    assert_stored(*others)
    assert_delivered(mx, *others)


def test_input_a_database_would_refuse_gets_an_answer_not_a_retry(platform, login, client_tls, mx):
    """A local part over 64 octets is refused with its reason; a NUL in the subject is
    stored as U+FFFD. Neither may reach the database as it is: PostgreSQL refuses both,
    and the client would get a 451 and retry the same message forever."""
    wire = submission(settings.SENDMSG_SUBMISSION_PORT, client_tls, login)
    long_local = "x" * 65
    assert wire.cmd(f"MAIL FROM:<{long_local}@acme.test>") == (
        f"553 5.1.7 Sender '{long_local}@acme.test' is not a valid address"
    )
    assert wire.cmd("MAIL FROM:<news@acme.test>") == "250 2.1.0 Sender OK"
    assert wire.cmd(f"RCPT TO:<{long_local}@dest.test>") == (
        f"501 5.1.3 '{long_local}@dest.test' is not a valid recipient address"
    )
    assert wire.cmd(f"RCPT TO:<{'x' * 64}@dest.test>") == "250 2.1.5 Recipient OK"
    assert wire.cmd("DATA").startswith("354 ")
    wire.send(message(f"{'x' * 64}@dest.test", subject="before\0after") + b".\r\n")
    code, lines = wire.reply()
    assert code == 250, lines
    wire.close()
    assert Message.objects.get().subject == "before\ufffdafter"
    assert_stored(f"{'x' * 64}@dest.test")
    (received,) = assert_delivered(mx, f"{'x' * 64}@dest.test")
    assert b"Subject: before\0after" in received.data


def test_database_locked_gives_451_and_the_retry_succeeds(strict, login, client_tls, mx):
    client = smtplib.SMTP("localhost", strict.port, timeout=15)
    client.starttls(context=client_tls)
    client.login(*login)
    assert client.mail("news@acme.test")[0] == 250
    assert client.rcpt("locked@dest.test")[0] == 250
    with write_lock_held(Message) as logged:
        code, text = client.data(message("locked@dest.test"))
    assert (code, text) == (451, b"4.3.0 Temporary server error; please try again later")
    assert not Message.objects.exists()
    assert client.noop()[0] == 250  # the session, and the server, go on
    client.sendmail("news@acme.test", ["locked@dest.test"], message("locked@dest.test"))
    client.quit()
    assert Message.objects.count() == 1
    assert_stored("locked@dest.test")
    assert_delivered(mx, "locked@dest.test")
    assert logged in strict.process.log()  # logged, never told


@pytest.mark.skipif(
    not settings.DATABASES["default"]["ENGINE"].endswith("sqlite3"),
    reason="the listeners' group commit and its lock file are SQLite's",
)
def test_a_failing_database_thread_answers_451_and_goes_on(strict, login, client_tls, mx):
    """If the group commit cannot even start (here: its lock file cannot be opened), the
    messages waiting get 451 and the database thread keeps serving the next ones."""
    lock = Path(settings.DATABASES["default"]["NAME"]).with_suffix(".write-lock")
    lock.unlink(missing_ok=True)
    lock.mkdir()  # a directory cannot be opened for appending
    try:
        client = smtplib.SMTP("localhost", strict.port, timeout=15)
        client.starttls(context=client_tls)
        client.login(*login)
        assert client.mail("news@acme.test")[0] == 250
        assert client.rcpt("first@dest.test")[0] == 250
        code, text = client.data(message("first@dest.test"))
        assert (code, text) == (451, b"4.3.0 Temporary server error; please try again later")
    finally:
        lock.rmdir()
    client.sendmail("news@acme.test", ["first@dest.test"], message("first@dest.test"))
    client.quit()
    assert_stored("first@dest.test")
    assert_delivered(mx, "first@dest.test")


# -- smuggling and STARTTLS injection ------------------------------------------------------

END_OF_DATA_LOOKALIKES = [
    b"\n.\n",
    b"\r.\r",
    b"\n.\r\n",
    b"\r\n.\n",
    b"\r\n.\r",
    b"\r.\n",
    b"\n.\r",
    b"\r.\r\n",
    b"\r\n\x00.\r\n",
]


def test_bare_cr_and_lf_never_end_the_data(platform, login, client_tls, mx):
    wire = submission(settings.SENDMSG_SUBMISSION_PORT, client_tls, login)
    for n, lookalike in enumerate(END_OF_DATA_LOOKALIKES):
        assert wire.cmd("MAIL FROM:<news@acme.test>") == "250 2.1.0 Sender OK"
        assert wire.cmd(f"RCPT TO:<real{n}@dest.test>") == "250 2.1.5 Recipient OK"
        assert wire.cmd("DATA").startswith("354 ")
        wire.send(
            message(f"real{n}@dest.test", subject=f"variant {n}")
            + b"first part"
            + lookalike
            + b"MAIL FROM:<news@acme.test>\r\nRCPT TO:<smuggled@dest.test>\r\nDATA\r\n"
            + b"From: news@acme.test\r\nSubject: smuggled\r\n\r\nsmuggled body\r\n.\r\n"
        )
        code, lines = wire.reply()
        assert code == 250 and lines[-1].startswith("2.0.0 Ok: queued as "), (lookalike, lines)
        # Had the lookalike ended the data, the smuggled commands' replies would come next.
        assert wire.cmd("NOOP") == "250 2.0.0 OK", lookalike
    wire.close()
    real = [f"real{n}@dest.test" for n in range(len(END_OF_DATA_LOOKALIKES))]
    assert Message.objects.count() == len(real)
    assert_stored(*real)
    for stored in Message.objects.all():
        raw = bytes(stored.raw)
        assert b"smuggled body\r\n" in raw and b"RCPT TO:<smuggled@dest.test>\r\n" in raw
        assert re.search(rb"\r(?!\n)|(?<!\r)\n", raw) is None  # CRLF only
    received = assert_delivered(mx, *real)
    assert mx.attempts == len(real)
    assert all(b"smuggled body" in m.data for m in received)


def test_commands_pipelined_with_starttls_are_discarded(platform, login, client_tls, mx):
    wire = Wire(settings.SENDMSG_SUBMISSION_PORT)
    wire.reply()
    wire.ehlo()
    # A man in the middle appends commands to the plaintext STARTTLS.
    wire.send(b"STARTTLS\r\nEHLO injected.test\r\nMAIL FROM:<news@acme.test>\r\n")
    assert wire.reply()[0] == 220
    wire.sock = client_tls.wrap_socket(wire.sock, server_hostname="localhost")
    # The first reply inside TLS answers our NOOP: nothing injected was executed.
    assert wire.cmd("NOOP") == "250 OK"  # no EHLO yet in this (new) session: no codes
    assert wire.cmd("MAIL FROM:<news@acme.test>").startswith("503 ")
    wire.ehlo()
    assert wire.login(*login).startswith("235 ")
    assert send(wire, ["tls@dest.test"], message("tls@dest.test")).startswith("250 ")
    wire.close()
    assert_stored("tls@dest.test")
    assert_delivered(mx, "tls@dest.test")


# -- 8-bit and UTF-8 -----------------------------------------------------------------------

EIGHT_BIT = (
    b"From: Acme <news@acme.test>\r\nTo: eight@dest.test\r\nSubject: 8bit\r\n"
    b"MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n"
    b"Content-Transfer-Encoding: 8bit\r\n\r\n"
    b"Gr\xc3\xbc\xc3\x9fe, na\xc3\xafve caf\xc3\xa9 \xe2\x9c\x93\r\n"
)


def test_8bit_body_is_relayed_intact(platform, login, client_tls, mx):
    with smtplib.SMTP("localhost", settings.SENDMSG_SUBMISSION_PORT, timeout=15) as client:
        client.starttls(context=client_tls)
        client.login(*login)
        assert client.has_extn("8bitmime")
        client.sendmail("news@acme.test", ["eight@dest.test"], EIGHT_BIT, ["BODY=8BITMIME"])
    stored = Message.objects.get()
    assert bytes(stored.raw).endswith(EIGHT_BIT)
    assert_stored("eight@dest.test")
    [received] = assert_delivered(mx, "eight@dest.test")
    assert received.data.endswith(EIGHT_BIT)


def test_utf8_addresses_need_smtputf8(platform, login, client_tls, mx):
    wire = submission(settings.SENDMSG_SUBMISSION_PORT, client_tls, login)
    assert wire.cmd("MAIL FROM:<nëws@acme.test>").startswith("553 5.6.7 ")
    assert wire.cmd("MAIL FROM:<news@acme.test>") == "250 2.1.0 Sender OK"
    assert wire.cmd("RCPT TO:<jösé@dest.test>").startswith("553 5.6.7 ")
    assert wire.cmd("RSET").startswith("250 ")
    assert wire.cmd("MAIL FROM:<news@acme.test> SMTPUTF8") == "250 2.1.0 Sender OK"
    assert wire.cmd("RCPT TO:<jösé@dest.test>") == "250 2.1.5 Recipient OK"
    assert wire.cmd("DATA").startswith("354 ")
    wire.send(message("jösé@dest.test") + b".\r\n")
    assert wire.reply()[0] == 250
    wire.close()
    assert_stored("jösé@dest.test")
    [received] = assert_delivered(mx, "jösé@dest.test")
    assert "To: jösé@dest.test\r\n".encode() in received.data


# -- real clients: swaks on both ports -----------------------------------------------------


@pytest.mark.parametrize("implicit_tls", [False, True], ids=["starttls", "tls-on-connect"])
def test_swaks_submits_on_both_ports(platform, login, mx, implicit_tls):
    port = (
        settings.SENDMSG_SUBMISSION_TLS_PORT if implicit_tls else settings.SENDMSG_SUBMISSION_PORT
    )
    to = f"swaks-{'tls' if implicit_tls else 'starttls'}@dest.test"
    result = subprocess.run(
        [
            "swaks",
            "--server", "127.0.0.1",
            "--port", str(port),
            "--tls-on-connect" if implicit_tls else "--tls",
            "--auth", "PLAIN",
            "--auth-user", login[0],
            "--auth-password", login[1],
            "--from", "news@acme.test",
            "--to", to,
            "--header", "Subject: sent by swaks",
            "--body", "Hello from swaks.",
            "--timeout", "15",
        ],
        capture_output=True,
        text=True,
        timeout=30,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    assert re.search(r"<~  250 2\.0\.0 Ok: queued as \w+", result.stdout), result.stdout
    assert_stored(to)
    [received] = assert_delivered(mx, to)
    assert b"Subject: sent by swaks" in received.data
    assert b"Hello from swaks." in received.data


def test_listener_processes_stop_when_their_parent_is_killed(platform, tmp_path):
    """SIGKILL leaves the parent no chance to forward a signal: the forked listeners must
    still stop (the kernel tells them), not keep serving the port."""
    port = free_port()
    env = platform_env()
    env.update({"SENDMSG_SUBMISSION_PORT": str(port), "SENDMSG_SMTP_PROCESSES": "2"})
    process = ManagedProcess(
        "smtpd-orphans", manage_py("smtpd", "submission"), env=env, cwd=REPO_ROOT, log_dir=tmp_path
    )
    process.start()
    try:
        process.wait_for_port("127.0.0.1", port)
        wait_until(lambda: len(children(process.pid)) == 2, timeout=10)
        listeners = children(process.pid)
        os.kill(process.pid, signal.SIGKILL)
        wait_until(lambda: not any(running(pid) for pid in listeners), timeout=10)
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(("127.0.0.1", port), timeout=2)
    finally:
        process.stop()


def children(pid: int) -> list[int]:
    with open(f"/proc/{pid}/task/{pid}/children") as f:
        return [int(child) for child in f.read().split()]


def running(pid: int) -> bool:
    """Whether ``pid`` exists and is not a zombie."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except FileNotFoundError:
        return False
    return stat[stat.rfind(b")") + 2 : stat.rfind(b")") + 3] != b"Z"
