from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("delivery", "0011_message_unsubscribe_alter_event_type"),
    ]

    operations = [
        migrations.AddField(
            model_name="apikey",
            name="role",
            field=models.CharField(
                choices=[
                    ("owner", "Owner"),
                    ("admin", "Admin"),
                    ("developer", "Developer"),
                    ("viewer", "Viewer"),
                ],
                default="admin",
                max_length=16,
            ),
        ),
    ]
