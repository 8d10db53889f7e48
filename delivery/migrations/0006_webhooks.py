from django.db import migrations


class Migration(migrations.Migration):
    dependencies = [("delivery", "0005_event_types_queue_control")]

    operations = []
