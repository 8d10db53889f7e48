"""Where a run of deliveries sends each destination's mail, asked once per run.

A deliver task relays up to SENDMSG_WAKE_CHUNK messages, often to the same few domains:
their MX hosts, the hosts' addresses and the TLS policy (MTA-STS) are looked up for the
first message and kept for the run (seconds), on top of the per-process DNS cache
(delivery/mx.py). A lookup that fails is kept as failed for the run too.
"""

from __future__ import annotations

from delivery import tls_policy
from delivery.mx import MxError, host_addresses, mx_hosts, relay_resolver
from delivery.tls_policy import TlsPolicy
from domains.models import Domain


class Routes:
    def __init__(self) -> None:
        self.resolver = relay_resolver()
        self._hosts: dict[str, list[str] | MxError] = {}
        self._addresses: dict[str, list[str]] = {}
        self._tls: dict[tuple[str, int], TlsPolicy] = {}

    def mx_hosts(self, domain: str) -> list[str]:
        """MX hosts of ``domain``, best first; raises MxError (delivery/mx.py)."""
        if domain not in self._hosts:
            try:
                self._hosts[domain] = mx_hosts(domain, self.resolver)
            except MxError as exc:
                self._hosts[domain] = exc
        found = self._hosts[domain]
        if isinstance(found, MxError):
            raise found
        return found

    def addresses(self, host: str) -> list[str]:
        if host not in self._addresses:
            self._addresses[host] = host_addresses(host, self.resolver)
        return self._addresses[host]

    def tls(self, domain: str, sender: Domain) -> TlsPolicy:
        key = (domain, sender.pk)
        if key not in self._tls:
            self._tls[key] = tls_policy.for_destination(
                domain=domain, sender=sender, resolver=self.resolver
            )
        return self._tls[key]
