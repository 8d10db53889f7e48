"""A tenant's recipients by address in any letter case: the message log's "recipient is"
filter reads the few matching recipients instead of probing every message
(delivery/message_log.py; bench/message_log.py)."""

import django.db.models.functions.text
from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("delivery", "0013_message_log_indexes"),
    ]

    operations = [
        migrations.AddIndex(
            model_name="recipient",
            index=models.Index(
                models.F("tenant"),
                django.db.models.functions.text.Lower("address"),
                models.F("message"),
                name="recipient_tenant_address",
            ),
        ),
    ]
