"""A tenant's events in time order: the events API's pages, the held-senders check and the
soft-bounce count read a tenant's recent events by (tenant, created_at, id) instead of
sorting or filtering every event the tenant ever had (tests/test_hot_queries.py).

Built without blocking writes on PostgreSQL (sendmsg/migration_operations.py), so it
needs no maintenance window."""

from django.db import migrations, models

from sendmsg.migration_operations import AddIndexConcurrently


class Migration(migrations.Migration):
    atomic = False  # CREATE INDEX CONCURRENTLY cannot run in a transaction

    dependencies = [
        ("delivery", "0014_message_log_lookup"),
    ]

    operations = [
        AddIndexConcurrently(
            model_name="event",
            index=models.Index(fields=["tenant", "created_at", "id"], name="event_tenant_time"),
        ),
    ]
