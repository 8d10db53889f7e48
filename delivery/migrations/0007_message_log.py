from django.db import migrations


class Migration(migrations.Migration):
    dependencies = [("delivery", "0006_webhooks")]

    operations = []
