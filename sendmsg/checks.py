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
