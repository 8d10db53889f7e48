"""Bench-only settings for bench/api_send.py: the platform's own settings, with a urlconf
that adds the bare endpoint (bench/api_urls.py). The project's urls are not touched."""

from sendmsg.settings import *  # noqa: F403

ROOT_URLCONF = "bench.api_urls"
