"""A tenant's recipients by state and latest change (the Overview's recent failures and
queue read a handful of rows instead of scanning every recipient; bench/message_log.py)."""

from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("delivery", "0012_apikey_role"),
    ]

    operations = [
        migrations.AddIndex(
            model_name="recipient",
            index=models.Index(
                fields=["tenant", "state", "updated_at", "message"],
                name="recipient_tenant_state",
            ),
        ),
    ]
