"""The test peers themselves: the scripted SMTP receiver and ManagedProcess.

These prove the receiver records what crossed the wire byte for byte and that each
scripted failure really reaches a client, so tests of the relay can trust it. They need
no Django and no database:

    .venv/bin/python -m pytest -p no:django tests/test_peers_smtp.py
"""

from __future__ import annotations

import os
import pathlib
import signal
import smtplib
import ssl
import sys
import textwrap
import time
from collections.abc import Iterator

import pytest
import trustme

from tests.peers.ports import free_port
from tests.peers.processes import ManagedProcess
from tests.peers.smtp_receiver import SmtpReceiver

pytestmark = pytest.mark.peers

MX_HOST = "127.0.0.2"
MX_NAME = "mx.dest.test"
# A line that starts with "." is dot-stuffed by smtplib ("..") and must come out as sent;
# the 8-bit line checks that nothing re-encodes the body.
MESSAGE = (
    b"From: Alice <alice@tenant.test>\r\n"
    b"To: bob@dest.test\r\n"
    b"Subject: wire check\r\n"
    b"MIME-Version: 1.0\r\n"
    b"Content-Type: text/plain; charset=utf-8\r\n"
    b"Content-Transfer-Encoding: 8bit\r\n"
    b"\r\n"
    b"Hello Bob,\r\n"
    b".leading dot\r\n"
    b"..two dots\r\n"
    b"gr\xc3\xbc\xc3\x9fe\r\n"
    b"\r\n"
)


@pytest.fixture
def mx() -> Iterator[SmtpReceiver]:
    with SmtpReceiver(MX_HOST, 0, hostname=MX_NAME) as receiver:
        yield receiver


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture
def tls_mx(ca: trustme.CA, tmp_path: pathlib.Path) -> Iterator[SmtpReceiver]:
    cert = ca.issue_cert(MX_NAME)
    certfile, keyfile = tmp_path / "mx.pem", tmp_path / "mx.key"
    cert.private_key_and_cert_chain_pem.write_to_path(str(certfile))
    cert.private_key_pem.write_to_path(str(keyfile))
    with SmtpReceiver(MX_HOST, 0, tls_cert=(str(certfile), str(keyfile)), hostname=MX_NAME) as r:
        yield r


def connect(mx: SmtpReceiver, timeout: float = 5.0) -> smtplib.SMTP:
    return smtplib.SMTP(MX_HOST, mx.port, local_hostname="relay.platform.test", timeout=timeout)


def test_plain_delivery_is_recorded_byte_exact(mx: SmtpReceiver) -> None:
    # Bind the client to another loopback address so `peer` is shown to be the client's.
    with smtplib.SMTP(
        MX_HOST, mx.port, local_hostname="relay.platform.test", source_address=("127.0.0.9", 0)
    ) as client:
        client.ehlo()
        assert client.has_extn("8bitmime") and client.has_extn("smtputf8")
        assert not client.has_extn("starttls")
        refused = client.sendmail(
            "alice@tenant.test", ["bob@dest.test"], MESSAGE, mail_options=["BODY=8BITMIME"]
        )
    assert refused == {}

    [msg] = mx.wait_for(1, timeout=5)
    assert msg.data == MESSAGE
    assert msg.mail_from == "alice@tenant.test"
    assert msg.rcpt_tos == ["bob@dest.test"]
    assert msg.ehlo == "relay.platform.test"
    assert msg.tls is False
    assert msg.peer == "127.0.0.9"
    assert mx.attempts == 1 and mx.connections == 1


def test_null_sender_and_smtputf8_recipient(mx: SmtpReceiver) -> None:
    with connect(mx) as client:
        client.sendmail("", ["jörg@dest.test"], b"Subject: bounce\r\n\r\nx\r\n", ["SMTPUTF8"])
    [msg] = mx.wait_for(1, timeout=5)
    assert msg.mail_from == ""
    assert msg.rcpt_tos == ["jörg@dest.test"]


def test_starttls_verified_against_test_ca(tls_mx: SmtpReceiver, ca: trustme.CA) -> None:
    context = ssl.create_default_context()
    ca.configure_trust(context)
    with connect(tls_mx) as client:
        client.ehlo()
        assert client.has_extn("starttls")
        # smtplib checks the certificate against the host it connected to; the relay
        # connects to an MX address but must verify the MX *name*.
        client._host = MX_NAME  # type: ignore[attr-defined]
        client.starttls(context=context)
        client.sendmail("alice@tenant.test", ["bob@dest.test"], MESSAGE)

    [msg] = tls_mx.wait_for(1, timeout=5)
    assert msg.tls is True
    assert msg.data == MESSAGE
    assert msg.ehlo == "relay.platform.test"  # re-sent after STARTTLS (RFC 3207 4.2)


def test_starttls_fails_for_client_without_the_ca(tls_mx: SmtpReceiver) -> None:
    with connect(tls_mx) as client:
        client._host = MX_NAME  # type: ignore[attr-defined]
        with pytest.raises(ssl.SSLCertVerificationError):
            client.starttls(context=ssl.create_default_context())
    # The receiver survives a failed handshake.
    with connect(tls_mx) as client:
        client.sendmail("alice@tenant.test", ["bob@dest.test"], MESSAGE)
    [msg] = tls_mx.wait_for(1, timeout=5)
    assert msg.tls is False


def test_per_recipient_rejection(mx: SmtpReceiver) -> None:
    mx.reply_rcpt("Nobody@Dest.test", "550 5.1.1 no such user")
    with connect(mx) as client:
        refused = client.sendmail(
            "alice@tenant.test", ["nobody@dest.test", "bob@dest.test"], MESSAGE
        )
    assert refused == {"nobody@dest.test": (550, b"5.1.1 no such user")}
    [msg] = mx.wait_for(1, timeout=5)
    assert msg.rcpt_tos == ["bob@dest.test"]


def test_temporary_failure_after_data_is_not_recorded(mx: SmtpReceiver) -> None:
    mx.reply_data("451 4.3.0 try later")
    with connect(mx) as client:
        with pytest.raises(smtplib.SMTPDataError) as failure:
            client.sendmail("alice@tenant.test", ["bob@dest.test"], MESSAGE)
        assert failure.value.smtp_code == 451
        assert mx.messages == [] and mx.attempts == 1

        mx.reply_data(None)  # the retry in the same session is accepted
        client.sendmail("alice@tenant.test", ["bob@dest.test"], MESSAGE)
    assert len(mx.wait_for(1, timeout=5)) == 1
    assert mx.attempts == 2


def test_421_greeting_then_close(mx: SmtpReceiver) -> None:
    mx.reply_greeting("421 4.3.2 busy")
    with pytest.raises(smtplib.SMTPConnectError) as failure:
        connect(mx)
    assert failure.value.smtp_code == 421
    assert failure.value.smtp_error == b"4.3.2 busy"

    mx.reply_greeting(None)
    with connect(mx) as client:
        assert client.noop()[0] == 250


def test_hang_after_data_makes_client_time_out(mx: SmtpReceiver) -> None:
    mx.hang_after("DATA")
    client = connect(mx, timeout=2)
    started = time.monotonic()
    with pytest.raises(smtplib.SMTPServerDisconnected, match="timed out"):
        client.sendmail("alice@tenant.test", ["bob@dest.test"], MESSAGE)
    assert 1.9 <= time.monotonic() - started < 5
    assert mx.messages == [] and mx.attempts == 1


def test_hang_after_final_dot(mx: SmtpReceiver) -> None:
    mx.hang_after(".")
    client = connect(mx, timeout=1)
    with pytest.raises(smtplib.SMTPServerDisconnected, match="timed out"):
        client.sendmail("alice@tenant.test", ["bob@dest.test"], MESSAGE)
    assert mx.messages == [] and mx.attempts == 1


def test_drop_in_data_disconnects_client(mx: SmtpReceiver) -> None:
    mx.drop_in_data(True)
    client = connect(mx)
    with pytest.raises(smtplib.SMTPServerDisconnected):
        client.sendmail("alice@tenant.test", ["bob@dest.test"], MESSAGE)
    assert mx.messages == [] and mx.attempts == 1

    mx.reset()
    with connect(mx) as client:
        client.sendmail("alice@tenant.test", ["bob@dest.test"], MESSAGE)
    assert mx.wait_for(1, timeout=5)[0].data == MESSAGE


def test_wait_for_timeout_lists_what_arrived(mx: SmtpReceiver) -> None:
    with connect(mx) as client:
        client.sendmail("alice@tenant.test", ["bob@dest.test"], MESSAGE)
    with pytest.raises(TimeoutError, match=r"(?s)got 1 .*subject='wire check'"):
        mx.wait_for(2, timeout=0.2)


def test_restart_on_same_port() -> None:
    # An MX that goes away and comes back: same address, same port.
    receiver = SmtpReceiver(MX_HOST, 0)
    receiver.start()
    port = receiver.port
    with connect(receiver) as client:
        client.sendmail("a@tenant.test", ["b@dest.test"], MESSAGE)
    receiver.stop()
    with pytest.raises(ConnectionRefusedError):
        connect(receiver, timeout=1)
    with receiver:
        assert receiver.port == port
        with connect(receiver) as client:
            client.sendmail("a@tenant.test", ["b@dest.test"], MESSAGE)
        assert len(receiver.wait_for(2, timeout=5)) == 2


# --------------------------------------------------------------------- ManagedProcess

TCP_SERVER = textwrap.dedent(
    """
    import socket, subprocess, sys
    # A grandchild in the same process group: stop() must end it too.
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    print("child", child.pid)
    server = socket.create_server(("127.0.0.1", int(sys.argv[1])))
    print("listening")
    while True:
        conn, _ = server.accept()
        conn.close()
    """
)


def _running(pid: int) -> bool:
    """True if ``pid`` exists and is not a zombie (PID 1 may not reap orphans here)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except FileNotFoundError:
        return False
    return stat[stat.rfind(b")") + 2 :].split()[0] != b"Z"


def test_managed_process_start_wait_stop(tmp_path: pathlib.Path) -> None:
    port = free_port()
    server = ManagedProcess(
        "tcp-server",
        [sys.executable, "-c", TCP_SERVER, str(port)],
        env=dict(os.environ),
        cwd=tmp_path,
        log_dir=tmp_path / "logs",
    )
    server.start()
    try:
        server.wait_for_port("127.0.0.1", port, timeout=10)
        server.wait_for_log("listening", timeout=5)
        child_pid = int(server.log().split("child ")[1].split()[0])
        assert os.getpgid(server.pid) == server.pid
        assert _running(child_pid)
    finally:
        code = server.stop(timeout=5)
    assert code == -signal.SIGTERM
    assert not _running(server.pid)
    deadline = time.monotonic() + 2
    while _running(child_pid) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert not _running(child_pid)
    assert "listening" in (tmp_path / "logs" / "tcp-server.log").read_text()


def test_managed_process_death_is_reported_with_log(tmp_path: pathlib.Path) -> None:
    process = ManagedProcess(
        "crasher",
        [sys.executable, "-c", "print('boom: bad settings'); raise SystemExit(3)"],
        env=dict(os.environ),
        cwd=tmp_path,
        log_dir=tmp_path,
    )
    process.start()
    with pytest.raises(RuntimeError, match=r"(?s)exited with code 3.*boom: bad settings"):
        process.wait_for_port("127.0.0.1", free_port(), timeout=10)
    assert process.stop() == 3


def test_managed_process_ignoring_sigterm_is_killed(tmp_path: pathlib.Path) -> None:
    script = (
        "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
        "print('ready'); time.sleep(60)"
    )
    process = ManagedProcess(
        "stubborn", [sys.executable, "-c", script], env={}, cwd=tmp_path, log_dir=tmp_path
    )
    process.start()
    process.wait_for_log("ready", timeout=10)
    started = time.monotonic()
    assert process.stop(timeout=0.5) == -signal.SIGKILL
    assert time.monotonic() - started < 3
