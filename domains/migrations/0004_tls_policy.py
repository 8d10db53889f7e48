from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [("domains", "0003_tenant_plan_rate")]

    operations = [
        migrations.AddField(
            model_name="domain",
            name="require_tls",
            field=models.BooleanField(
                default=False,
                help_text=(
                    "Relay this domain's mail only over STARTTLS with a certificate valid for "
                    "the receiving MX host; otherwise defer it (4.7.x) instead of sending in "
                    "clear."
                ),
            ),
        ),
    ]
