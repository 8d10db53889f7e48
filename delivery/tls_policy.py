"""How the relay uses TLS with one destination domain's MX hosts.

Three cases, decided once per destination domain (``for_destination``):

- opportunistic (RFC 7435), the default: STARTTLS when the MX offers it, any
  certificate accepted; in clear when it is not offered;
- required: STARTTLS with a certificate valid for the MX host's name, verified against
  SENDMSG_TLS_CA_FILE or the system's CAs; otherwise the host is skipped and, when no
  host qualifies, the recipients are deferred with a 4.7.x reply. Nothing goes in clear.
  Required when the domain's MTA-STS policy (RFC 8461) is in ``enforce`` mode, whose MX
  patterns also limit the hosts used, or when the sending domain has ``require_tls``;
- MTA-STS ``testing``: delivered as opportunistic, and what enforcing would have refused
  is logged.

The relay calls ``refuse_host`` before connecting to an MX host and ``start_tls`` right
after the first EHLO.
"""

from __future__ import annotations

import functools
import logging
import smtplib
import ssl
from dataclasses import dataclass

import dns.resolver
from django.conf import settings

from delivery import mta_sts
from delivery.mta_sts import Mode, StsPolicy
from delivery.replies import SmtpReply
from domains.models import Domain

log = logging.getLogger(__name__)


class TlsFailure(Exception):
    """The MX host cannot be used with the TLS the policy asks for.

    ``enforced`` False: only MTA-STS testing mode asked, so the relay delivers anyway,
    with opportunistic TLS on a new connection.
    """

    def __init__(self, reply: SmtpReply, *, enforced: bool) -> None:
        super().__init__(str(reply))
        self.reply = reply
        self.enforced = enforced


def opportunistic_context() -> ssl.SSLContext:
    """Encrypt when offered, without requiring a valid certificate (RFC 7435)."""
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


def verified_context() -> ssl.SSLContext:
    """A client context that checks the chain and the host name (TLS 1.2 at least)."""
    return _verified_context(settings.SENDMSG_TLS_CA_FILE)


@functools.lru_cache(maxsize=4)
def _verified_context(ca_file: str) -> ssl.SSLContext:
    # Loading the system's CA store takes a while; a context is safe to share.
    return ssl.create_default_context(cafile=ca_file or None)


@dataclass(frozen=True)
class TlsPolicy:
    domain: str
    """The destination domain."""
    required_by: str = ""
    """Who requires verified TLS, for replies and logs; empty when nobody does."""
    sts: StsPolicy | None = None
    """The domain's MTA-STS policy in enforce or testing mode."""

    @property
    def enforced(self) -> bool:
        return bool(self.required_by)

    @property
    def testing(self) -> bool:
        return not self.enforced and self.sts is not None and self.sts.mode == Mode.TESTING

    def opportunistic(self) -> TlsPolicy:
        return TlsPolicy(domain=self.domain)

    def refuse_host(self, host: str) -> SmtpReply | None:
        """Why MX ``host`` must not be used (it is not in the enforced MTA-STS policy's mx
        patterns), or None."""
        if self.sts is None or self.sts.matches(host):
            return None
        if self.sts.mode == Mode.ENFORCE:
            return SmtpReply(
                451, "4.7.0", f"MX host {host} is not listed in the MTA-STS policy of {self.domain}"
            )
        log.warning(
            "mta-sts testing domain=%s: MX host %s is not in the policy (enforce would skip it)",
            self.domain,
            host,
        )
        return None

    def start_tls(self, client: smtplib.SMTP, *, host: str) -> None:
        """STARTTLS on ``client`` (greeted, after EHLO) as the policy says, then EHLO again.

        ``host`` is the MX host's name: a required certificate must be valid for it.
        Raises TlsFailure when verified TLS cannot be had and is required (``enforced``)
        or would have been (MTA-STS testing); the connection is then unusable.
        """
        if not client.has_extn("starttls"):
            if self.enforced:
                raise TlsFailure(
                    SmtpReply(451, "4.7.4", f"{host} does not offer STARTTLS; {self.required_by}"),
                    enforced=True,
                )
            if self.testing:
                log.warning(
                    "mta-sts testing domain=%s: %s offers no STARTTLS (enforce would skip it)",
                    self.domain,
                    host,
                )
            return
        verify = self.enforced or self.testing
        # smtplib checks the certificate against the name it connected to, which for us
        # is the address our resolver gave; the name to check is the MX host's.
        client._host = host  # type: ignore[attr-defined]
        try:
            client.starttls(context=verified_context() if verify else opportunistic_context())
        except ssl.SSLCertVerificationError as exc:
            raise TlsFailure(
                SmtpReply(
                    451,
                    "4.7.5",
                    f"The certificate of {host} is not valid ({exc.verify_message}); "
                    + (self.required_by or f"the MTA-STS policy of {self.domain} (testing)"),
                ),
                enforced=self.enforced,
            ) from None
        except ssl.SSLError as exc:
            if not self.enforced:
                raise
            raise TlsFailure(
                SmtpReply(451, "4.7.5", f"TLS with {host} failed ({exc}); {self.required_by}"),
                enforced=True,
            ) from None
        except smtplib.SMTPResponseException as exc:
            if not self.enforced:
                raise
            reply = SmtpReply.parse(exc.smtp_code, exc.smtp_error)
            raise TlsFailure(
                SmtpReply(451, "4.7.4", f"{host} refused STARTTLS ({reply}); {self.required_by}"),
                enforced=True,
            ) from None
        client.ehlo()


def for_destination(*, domain: str, sender: Domain, resolver: dns.resolver.Resolver) -> TlsPolicy:
    """The TLS policy for relaying ``sender``'s mail to ``domain``'s MX hosts."""
    sts = mta_sts.policy_for(domain, resolver=resolver, context=verified_context())
    if sts is not None and sts.mode == Mode.NONE:
        sts = None
    if sts is not None and sts.mode == Mode.ENFORCE:
        required_by = f"the MTA-STS policy of {domain} requires verified TLS"
    elif sender.require_tls:
        required_by = f"the sending domain {sender.name} requires verified TLS"
    else:
        required_by = ""
    return TlsPolicy(domain=domain, required_by=required_by, sts=sts)
