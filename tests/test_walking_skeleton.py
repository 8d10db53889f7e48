"""One message, the whole way, for real: SMTP submission with STARTTLS + AUTH, the accept
path, a real qcluster worker, MX lookup in a real DNS server, DKIM signing, relay to a
real SMTP receiver, and two DKIM verifiers that share no code with dkimpy."""

from __future__ import annotations

import smtplib
from email import policy
from email.message import EmailMessage

import pytest
from django.conf import settings

from delivery.models import Event, Recipient, RecipientState
from tests.conftest import publish_domain, run_command, run_json, wait_until
from tests.peers.dkim_verifiers import verify_mail_dkim, verify_opendkim

pytestmark = [pytest.mark.peers, pytest.mark.django_db(transaction=True)]


def submission(context) -> smtplib.SMTP:
    client = smtplib.SMTP("localhost", settings.SENDMSG_SUBMISSION_PORT, timeout=15)
    client.starttls(context=context)
    return client


def first_message(sender: str = "news@acme.test", to: str = "alice@dest.test") -> bytes:
    message = EmailMessage()
    message["From"] = f"Acme News <{sender}>"
    message["To"] = to
    message["Subject"] = "Walking skeleton"
    message.set_content("Hello Alice,\n.a line that starts with a dot\nBye.\n")
    return message.as_bytes(policy=policy.SMTP)  # CRLF, as real clients send


def test_one_message_travels_the_whole_way(platform, dns_server, mx, client_tls, tmp_path):
    tenant = run_json("tenant", "create", "Acme", "--owner", "owner@acme.test")
    assert tenant["name"] == "Acme"
    domain = run_json("domain", "add", "--tenant", "Acme", "acme.test")
    assert domain["status"] == "pending"
    assert run_command("domain", "check", "acme.test").splitlines()[-1] == "pending"

    publish_domain(dns_server, "acme.test")
    check = run_command("domain", "check", "acme.test").splitlines()
    assert check[-1] == "verified", check
    credential = run_json("smtpcredential", "create", "--tenant", "Acme")

    with submission(client_tls) as client:
        client.login(credential["username"], credential["password"])
        assert client.mail("news@acme.test")[0] == 250
        assert client.rcpt("alice@dest.test")[0] == 250
        code, reply = client.data(first_message())
    assert code == 250
    queue_id = reply.decode().rsplit(" ", 1)[-1]
    # The 250 came after the commit: the rows are there the moment the client has it.
    recipient = Recipient.objects.get(message__queue_id=queue_id)
    assert recipient.address == "alice@dest.test"

    received = mx.wait_for(1, timeout=30)[0]
    assert received.rcpt_tos == ["alice@dest.test"]
    local, _, host = received.mail_from.partition("@")
    assert host == "rp.acme.test" and local.startswith("b-")
    assert received.ehlo == settings.SENDMSG_HOSTNAME
    assert received.data.startswith(b"DKIM-Signature:")
    assert b"\r\n..a line that starts with a dot\r\n" not in received.data  # unstuffed on receipt
    assert b"\r\n.a line that starts with a dot\r\n" in received.data

    assert verify_mail_dkim(received.data, dns_host=dns_server.host, dns_port=dns_server.port) == [
        "pass"
    ]
    ok, output = verify_opendkim(
        received.data, dns_host=dns_server.host, dns_port=dns_server.port, workdir=tmp_path
    )
    assert ok, output

    recipient = wait_until(
        lambda: Recipient.objects.filter(pk=recipient.pk, state=RecipientState.DELIVERED).first()
    )
    assert recipient.last_code == 250 and recipient.mx_host == "mx.dest.test"
    events = list(Event.objects.filter(recipient=recipient).values_list("type", "code"))
    assert events == [("accepted", None), ("delivered", 250)]


def test_submission_refuses_bad_input(platform, verified_domain, client_tls):
    from delivery.credentials import create_smtp_credential

    _, password = create_smtp_credential(tenant=verified_domain.tenant)
    username = verified_domain.tenant.smtp_credentials.get().username

    # AUTH before STARTTLS
    with smtplib.SMTP("localhost", settings.SENDMSG_SUBMISSION_PORT, timeout=15) as client:
        client.ehlo()
        code, text = client.docmd("AUTH", "PLAIN AGZvbwBiYXI=")
        assert (code, text.split()[0]) in {(538, b"5.7.11"), (530, b"5.7.0")}
        code, text = client.docmd("MAIL", "FROM:<news@acme.test>")
        assert code == 530

    with submission(client_tls) as client:
        with pytest.raises(smtplib.SMTPAuthenticationError) as failed:
            client.login(username, password + "x")
        assert failed.value.smtp_code == 535
        assert failed.value.smtp_error.startswith(b"5.7.8")

    with submission(client_tls) as client:
        client.login(username, password)
        code, text = client.mail("ceo@globex.test")
        assert code in (550, 553) and text.startswith(b"5.7.1"), text
        # Header From: on a foreign domain is refused at DATA, and nothing is stored.
        assert client.mail("news@acme.test")[0] == 250
        assert client.rcpt("bob@dest.test")[0] == 250
        code, text = client.data(first_message(sender="ceo@globex.test"))
        assert code in (550, 553) and b"globex.test" in text, text
    assert not Recipient.objects.exists()


@pytest.mark.parametrize("initial_response", [True, False])
def test_auth_login_mechanism(platform, verified_domain, client_tls, initial_response):
    from delivery.credentials import create_smtp_credential

    credential, password = create_smtp_credential(tenant=verified_domain.tenant)
    with submission(client_tls) as client:
        client.ehlo()
        client.user, client.password = credential.username, password + "x"
        with pytest.raises(smtplib.SMTPAuthenticationError):
            client.auth("LOGIN", client.auth_login, initial_response_ok=initial_response)
        client.password = password
        code, text = client.auth("LOGIN", client.auth_login, initial_response_ok=initial_response)
        assert (code, text) == (235, b"2.7.0 Authentication successful")


def test_implicit_tls_port_accepts_authenticated_mail(platform, verified_domain, tls_ca, mx):
    import ssl

    from delivery.credentials import create_smtp_credential

    credential, password = create_smtp_credential(tenant=verified_domain.tenant)
    context = ssl.create_default_context()
    tls_ca.configure_trust(context)
    with smtplib.SMTP_SSL(
        "localhost", settings.SENDMSG_SUBMISSION_TLS_PORT, context=context, timeout=15
    ) as client:
        client.login(credential.username, password)
        client.sendmail("news@acme.test", ["carol@dest.test"], first_message(to="carol@dest.test"))
    assert mx.wait_for(1)[0].rcpt_tos == ["carol@dest.test"]


def test_django_smtp_email_backend_submits(
    platform, verified_domain, tls_ca, mx, monkeypatch, tmp_path
):
    """Django's own SMTP backend, verifying our certificate, as a tenant's app would use it."""
    from django.core import mail

    from delivery.credentials import create_smtp_credential

    credential, password = create_smtp_credential(tenant=verified_domain.tenant)
    ca_file = tmp_path / "ca.pem"
    tls_ca.cert_pem.write_to_path(str(ca_file))
    monkeypatch.setenv("SSL_CERT_FILE", str(ca_file))
    connection = mail.get_connection(
        "django.core.mail.backends.smtp.EmailBackend",
        host="localhost",
        port=settings.SENDMSG_SUBMISSION_PORT,
        username=credential.username,
        password=password,
        use_tls=True,
        timeout=15,
    )
    sent = mail.EmailMessage(
        "From Django",
        "Sent by Django's SMTP backend.",
        "app@acme.test",
        ["dora@dest.test"],
        connection=connection,
    ).send()
    assert sent == 1
    received = mx.wait_for(1)[0]
    assert received.rcpt_tos == ["dora@dest.test"]
    assert b"Subject: From Django" in received.data


def test_sweeper_hands_a_crashed_workers_recipient_to_the_cluster(platform, verified_domain, mx):
    """A worker died holding a lease: once it expires, the sweeper's wake-up delivers it."""
    from django.utils import timezone

    from delivery.accept import Sender, accept_message
    from delivery.models import Source
    from delivery.tasks import sweep

    mx.hang_after("CONNECT")  # hold the first delivery so we can play the crashed worker
    message = accept_message(
        sender=Sender(tenant_id=verified_domain.tenant_id),
        mail_from="news@acme.test",
        recipients=["erin@dest.test"],
        raw=b"From: news@acme.test\r\nTo: erin@dest.test\r\nSubject: swept\r\n\r\nx\r\n",
        source=Source.API,
    )
    wait_until(lambda: Recipient.objects.filter(message=message, state="sending").exists())
    # The worker "crashed": its lease has run out, and the receiver works again.
    mx.hang_after(None)
    Recipient.objects.filter(message=message).update(
        lease_until=timezone.now(), lease_token="crashed-worker"
    )
    assert sweep() >= 1
    recipient = wait_until(
        lambda: Recipient.objects.filter(message=message, state="delivered").first()
    )
    assert recipient.events.filter(type="delivered").count() == 1
    assert any(m.rcpt_tos == ["erin@dest.test"] for m in mx.messages)
