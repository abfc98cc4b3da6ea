"""API tokens with Proxmox's privilege separation: a token's own access entries, and the flag that makes them
limit it (``/api2/json`` tokens)."""

import django.db.models.deletion
from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [("webui", "0010_template_sources")]

    operations = [
        migrations.AddField(model_name="apitoken", name="privsep", field=models.BooleanField(default=False)),
        migrations.RemoveConstraint(model_name="accessentry", name="access_entry_user_xor_group"),
        migrations.AddField(
            model_name="accessentry",
            name="token",
            field=models.ForeignKey(
                blank=True,
                null=True,
                on_delete=django.db.models.deletion.CASCADE,
                related_name="access_entries",
                to="webui.apitoken",
            ),
        ),
        migrations.AddConstraint(
            model_name="accessentry",
            constraint=models.CheckConstraint(
                condition=models.Q(user__isnull=False, group__isnull=True, token__isnull=True)
                | models.Q(user__isnull=True, group__isnull=False, token__isnull=True)
                | models.Q(user__isnull=True, group__isnull=True, token__isnull=False),
                name="access_entry_one_subject",
            ),
        ),
    ]
