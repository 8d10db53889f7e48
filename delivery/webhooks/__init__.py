"""Webhooks: every event of a tenant, signed and POSTed to the endpoints it registered.

- ``endpoints``: registering, changing, rotating the secret of and testing an endpoint.
- ``targets``: which URLs and addresses may be called (no private, loopback, link-local…).
- ``signing``: the ``Sendmsg-Signature`` header (HMAC-SHA256 over timestamp and body).
- ``outbox``: reads new events by id and creates one delivery per endpoint and event.
- ``sender``: claims due deliveries, POSTs them, logs each attempt, retries with backoff.
- ``tasks``: the django-q2 schedule's entry point (every minute).
"""
