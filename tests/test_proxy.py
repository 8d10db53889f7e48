"""Behind a reverse proxy: X-Forwarded-For is believed only from SENDMSG_TRUSTED_PROXIES.

What is at stake is real: /metrics answers loopback clients, and a proxy on the same host
makes every visitor look like loopback unless the middleware restores the client address;
the per-address limits (public check, sign-ups) count REMOTE_ADDR too.
"""

from __future__ import annotations

import pytest
from django.core.exceptions import ImproperlyConfigured
from django.http import HttpResponse
from django.test import Client, RequestFactory

from domains.ratelimit import client_address as limited_address
from sendmsg.proxy import TrustedProxyMiddleware, client_address, trusted_networks

PROXIES = trusted_networks(["127.0.0.1", "10.0.0.0/24", "fd00::/64"])


@pytest.mark.parametrize(
    ("peer", "forwarded_for", "expected"),
    [
        # an untrusted peer's header is ignored, whatever it claims
        ("198.51.100.7", "127.0.0.1", None),
        ("198.51.100.7", "10.0.0.5, 127.0.0.1", None),
        # a trusted proxy: the rightmost hop it did not add itself is the client
        ("127.0.0.1", "203.0.113.9", "203.0.113.9"),
        ("127.0.0.1", "127.0.0.1, 203.0.113.9", "203.0.113.9"),  # spoofed entry on the left
        ("127.0.0.1", "203.0.113.9, 10.0.0.5", "203.0.113.9"),  # two proxies in a row
        ("10.0.0.5", "2001:db8::1", "2001:db8::1"),
        ("::ffff:127.0.0.1", "203.0.113.9", "203.0.113.9"),  # dual-stack socket
        ("fd00::2", "203.0.113.9", "203.0.113.9"),
        # every hop trusted: the leftmost (the first proxy's own client)
        ("127.0.0.1", "10.0.0.6, 10.0.0.5", "10.0.0.6"),
        # no header, or junk: keep the peer, or stop at the last hop vouched for
        ("127.0.0.1", "", None),
        ("127.0.0.1", "not-an-address", None),
        ("127.0.0.1", "203.0.113.1, junk, 10.0.0.5", "10.0.0.5"),
    ],
)
def test_client_address(peer, forwarded_for, expected):
    assert client_address(peer, forwarded_for, PROXIES) == expected


def test_a_bad_entry_stops_the_process_at_start():
    with pytest.raises(ImproperlyConfigured, match="not-a-network"):
        trusted_networks(["10.0.0.0/8", "not-a-network"])


def test_without_trusted_proxies_the_header_is_ignored(settings):
    settings.SENDMSG_TRUSTED_PROXIES = []
    # A remote client cannot reach the loopback-only /metrics by claiming loopback.
    response = Client().get(
        "/metrics", REMOTE_ADDR="198.51.100.7", HTTP_X_FORWARDED_FOR="127.0.0.1"
    )
    assert response.status_code == 403


def test_an_untrusted_peer_cannot_spoof_its_address(settings):
    settings.SENDMSG_TRUSTED_PROXIES = ["10.0.0.2"]
    response = Client().get(
        "/metrics", REMOTE_ADDR="198.51.100.7", HTTP_X_FORWARDED_FOR="127.0.0.1"
    )
    assert response.status_code == 403


def test_a_proxy_on_loopback_no_longer_opens_metrics_to_everyone(settings):
    """Without the setting, a proxy on 127.0.0.1 would hand /metrics to any visitor."""
    settings.SENDMSG_TRUSTED_PROXIES = ["127.0.0.1"]
    response = Client().get("/metrics", REMOTE_ADDR="127.0.0.1", HTTP_X_FORWARDED_FOR="203.0.113.9")
    assert response.status_code == 403


@pytest.mark.django_db
def test_a_trusted_proxy_is_honoured(settings):
    settings.SENDMSG_TRUSTED_PROXIES = ["10.0.0.2"]
    # The proxy forwards a request of a client on its own loopback (a local scraper).
    response = Client().get("/metrics", REMOTE_ADDR="10.0.0.2", HTTP_X_FORWARDED_FOR="127.0.0.1")
    assert response.status_code == 200
    # Direct requests from loopback, without the proxy, are unaffected.
    assert Client().get("/metrics").status_code == 200


def test_limits_count_the_client_behind_the_proxy(settings):
    """The per-address limits (public check, sign-ups) count each client, not the proxy."""
    settings.SENDMSG_TRUSTED_PROXIES = ["10.0.0.2"]
    seen = []

    def view(request):
        seen.append(limited_address(request))
        return HttpResponse()

    middleware = TrustedProxyMiddleware(view)
    for client in ("203.0.113.1", "2001:db8:1:2::5"):
        middleware(RequestFactory().get("/", REMOTE_ADDR="10.0.0.2", HTTP_X_FORWARDED_FOR=client))
    assert seen == ["203.0.113.1", "2001:db8:1:2::/64"]


def test_the_middleware_runs_first():
    """Every other middleware (and the views) must see the client's address."""
    from django.conf import settings

    assert settings.MIDDLEWARE[0] == "sendmsg.proxy.TrustedProxyMiddleware"
