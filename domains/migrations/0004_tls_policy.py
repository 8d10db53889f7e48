from django.db import migrations


class Migration(migrations.Migration):
    dependencies = [("domains", "0003_tenant_plan_rate")]

    operations = []
