import django.db.models.deletion
import django.utils.timezone
from django.db import migrations, models

SCHEDULE_NAME = "webhook dispatcher"


def add_schedule(apps, schema_editor):
    Schedule = apps.get_model("django_q", "Schedule")
    Schedule.objects.update_or_create(
        name=SCHEDULE_NAME,
        defaults={
            "func": "delivery.webhooks.tasks.dispatch",
            "schedule_type": "I",
            "minutes": 1,
            "repeats": -1,
        },
    )


def remove_schedule(apps, schema_editor):
    apps.get_model("django_q", "Schedule").objects.filter(name=SCHEDULE_NAME).delete()


class Migration(migrations.Migration):
    dependencies = [
        ("delivery", "0005_event_types_queue_control"),
        ("domains", "0001_initial"),
        ("django_q", "0018_task_success_index"),
    ]

    operations = [
        migrations.CreateModel(
            name="WebhookOutbox",
            fields=[
                (
                    "id",
                    models.BigAutoField(
                        auto_created=True, primary_key=True, serialize=False, verbose_name="ID"
                    ),
                ),
                ("name", models.CharField(max_length=32, unique=True)),
                ("position", models.BigIntegerField(default=0)),
                ("gap_seen_at", models.DateTimeField(blank=True, null=True)),
                ("updated_at", models.DateTimeField(default=django.utils.timezone.now)),
            ],
        ),
        migrations.CreateModel(
            name="WebhookEndpoint",
            fields=[
                (
                    "id",
                    models.BigAutoField(
                        auto_created=True, primary_key=True, serialize=False, verbose_name="ID"
                    ),
                ),
                ("url", models.CharField(max_length=2000)),
                ("description", models.CharField(blank=True, max_length=200)),
                (
                    "event_types",
                    models.JSONField(default=list, help_text="The event types sent here."),
                ),
                ("active", models.BooleanField(default=True)),
                ("secret_encrypted", models.BinaryField()),
                ("previous_secret_encrypted", models.BinaryField(blank=True, default=b"")),
                ("previous_secret_until", models.DateTimeField(blank=True, null=True)),
                (
                    "first_event_id",
                    models.BigIntegerField(
                        default=0,
                        help_text="Events after this one are sent (the newest event when the endpoint was created or last enabled).",
                    ),
                ),
                ("created_at", models.DateTimeField(default=django.utils.timezone.now)),
                ("updated_at", models.DateTimeField(default=django.utils.timezone.now)),
                (
                    "tenant",
                    models.ForeignKey(
                        on_delete=django.db.models.deletion.CASCADE,
                        related_name="webhook_endpoints",
                        to="domains.tenant",
                    ),
                ),
            ],
        ),
        migrations.CreateModel(
            name="WebhookDelivery",
            fields=[
                (
                    "id",
                    models.BigAutoField(
                        auto_created=True, primary_key=True, serialize=False, verbose_name="ID"
                    ),
                ),
                (
                    "state",
                    models.CharField(
                        choices=[
                            ("pending", "Pending: will be sent (again)"),
                            ("sending", "Being sent"),
                            ("succeeded", "Succeeded: the endpoint answered 2xx"),
                            ("failed", "Failed: no 2xx answer within the retry window"),
                        ],
                        default="pending",
                        max_length=12,
                    ),
                ),
                ("attempts", models.PositiveIntegerField(default=0)),
                ("next_attempt_at", models.DateTimeField(default=django.utils.timezone.now)),
                ("lease_token", models.CharField(blank=True, db_index=True, max_length=32)),
                ("lease_until", models.DateTimeField(blank=True, null=True)),
                ("created_at", models.DateTimeField(default=django.utils.timezone.now)),
                ("updated_at", models.DateTimeField(default=django.utils.timezone.now)),
                (
                    "event",
                    models.ForeignKey(
                        blank=True,
                        null=True,
                        on_delete=django.db.models.deletion.CASCADE,
                        related_name="+",
                        to="delivery.event",
                    ),
                ),
                (
                    "endpoint",
                    models.ForeignKey(
                        on_delete=django.db.models.deletion.CASCADE,
                        related_name="deliveries",
                        to="delivery.webhookendpoint",
                    ),
                ),
            ],
            options={
                "indexes": [
                    models.Index(fields=["state", "next_attempt_at"], name="webhook_delivery_due"),
                    models.Index(fields=["state", "updated_at"], name="webhook_delivery_done"),
                ],
                "constraints": [
                    models.UniqueConstraint(
                        fields=("endpoint", "event"), name="one_delivery_per_event"
                    ),
                ],
            },
        ),
        migrations.CreateModel(
            name="WebhookAttempt",
            fields=[
                (
                    "id",
                    models.BigAutoField(
                        auto_created=True, primary_key=True, serialize=False, verbose_name="ID"
                    ),
                ),
                (
                    "number",
                    models.PositiveIntegerField(
                        help_text="1 for the first attempt of the delivery."
                    ),
                ),
                ("started_at", models.DateTimeField(default=django.utils.timezone.now)),
                ("duration_ms", models.PositiveIntegerField(default=0)),
                ("status_code", models.PositiveSmallIntegerField(blank=True, null=True)),
                ("error", models.CharField(blank=True, max_length=500)),
                ("response_excerpt", models.TextField(blank=True)),
                ("succeeded", models.BooleanField(default=False)),
                (
                    "delivery",
                    models.ForeignKey(
                        on_delete=django.db.models.deletion.CASCADE,
                        related_name="attempt_log",
                        to="delivery.webhookdelivery",
                    ),
                ),
                (
                    "endpoint",
                    models.ForeignKey(
                        on_delete=django.db.models.deletion.CASCADE,
                        related_name="attempts",
                        to="delivery.webhookendpoint",
                    ),
                ),
            ],
            options={
                "ordering": ["-started_at", "-id"],
                "indexes": [
                    models.Index(fields=["endpoint", "started_at"], name="webhook_attempt_recent"),
                ],
            },
        ),
        migrations.RunPython(add_schedule, remove_schedule),
    ]
