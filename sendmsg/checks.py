"""System checks for unsafe combinations of settings (STYLE #8)."""

from django.conf import settings
from django.core.checks import Error, Warning, register


@register()
def queue_timeouts(app_configs, **kwargs):
    from delivery.relay import worst_transaction_seconds

    errors = []
    q = settings.Q_CLUSTER
    worst_transaction = worst_transaction_seconds()
    if q["timeout"] <= worst_transaction:
        errors.append(
            Error(
                f"django-q2 timeout ({q['timeout']} s) must exceed an SMTP transaction "
                f"({worst_transaction} s at SENDMSG_RELAY_TIMEOUT="
                f"{settings.SENDMSG_RELAY_TIMEOUT}).",
                hint="Raise SENDMSG_TASK_TIMEOUT or lower SENDMSG_RELAY_TIMEOUT.",
                id="sendmsg.E001",
            )
        )
    if q["retry"] <= q["timeout"]:
        errors.append(
            Error(
                "django-q2 retry must exceed its timeout, or a slow task runs twice at once.",
                id="sendmsg.E002",
            )
        )
    if settings.SENDMSG_LEASE_SECONDS <= q["timeout"]:
        errors.append(
            Error(
                "SENDMSG_LEASE_SECONDS must exceed the task timeout, or the sweeper hands a "
                "recipient to a second worker while the first is still sending.",
                id="sendmsg.E003",
            )
        )
    return errors


@register(deploy=True)
def relay_safety(app_configs, **kwargs):
    if settings.SENDMSG_RELAY_ALLOW_PRIVATE:
        return [
            Warning(
                "SENDMSG_RELAY_ALLOW_PRIVATE is on: mail may be relayed to private addresses.",
                id="sendmsg.W001",
            )
        ]
    return []


@register()
def retention_days(app_configs, **kwargs):
    return [
        Error(
            f"{name} must be 0 (keep forever) or a number of days, not {getattr(settings, name)}.",
            id="sendmsg.E010",
        )
        for name in ("SENDMSG_BODY_RETENTION_DAYS", "SENDMSG_METADATA_RETENTION_DAYS")
        if getattr(settings, name) < 0
    ]


@register()
def tls_ca_file(app_configs, **kwargs):
    import ssl

    path = settings.SENDMSG_TLS_CA_FILE
    if not path:
        return []
    try:
        ssl.create_default_context(cafile=path)
    except (OSError, ssl.SSLError) as exc:
        return [
            Error(
                f"SENDMSG_TLS_CA_FILE ({path}) cannot be loaded as a CA bundle: {exc}",
                hint="Give a readable PEM file, or leave it empty for the system's CAs.",
                id="sendmsg.E020",
            )
        ]
    return []
