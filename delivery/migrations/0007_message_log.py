from django.db import migrations, models

SCHEDULE_NAME = "message log retention"


def add_schedule(apps, schema_editor):
    Schedule = apps.get_model("django_q", "Schedule")
    Schedule.objects.update_or_create(
        name=SCHEDULE_NAME,
        defaults={
            "func": "delivery.retention.scheduled_clean_up",
            "schedule_type": "H",
            "repeats": -1,
        },
    )


def remove_schedule(apps, schema_editor):
    apps.get_model("django_q", "Schedule").objects.filter(name=SCHEDULE_NAME).delete()


class Migration(migrations.Migration):
    dependencies = [("delivery", "0006_webhooks"), ("django_q", "0018_task_success_index")]

    operations = [
        migrations.AddField(
            model_name="message",
            name="body_removed_at",
            field=models.DateTimeField(
                blank=True,
                help_text="When retention removed the body; raw then holds only the header section.",
                null=True,
            ),
        ),
        migrations.AddIndex(
            model_name="message",
            index=models.Index(
                condition=models.Q(("body_removed_at__isnull", True)),
                fields=["created_at"],
                name="message_body_kept",
            ),
        ),
        migrations.RunPython(add_schedule, remove_schedule),
    ]
