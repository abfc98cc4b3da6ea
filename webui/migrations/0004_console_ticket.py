import django.db.models.deletion
import django.utils.timezone
from django.conf import settings
from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ("webui", "0003_container_digest"),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = [
        migrations.CreateModel(
            name="ConsoleTicket",
            fields=[
                ("id", models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name="ID")),
                ("token_hash", models.CharField(max_length=64, unique=True)),
                ("mode", models.CharField(choices=[("shell", "shell"), ("tty", "tty"), ("console", "console")],
                                          default="shell", max_length=8)),
                ("session", models.CharField(blank=True, max_length=32)),
                ("created", models.DateTimeField(default=django.utils.timezone.now)),
                ("expires", models.DateTimeField()),
                ("used", models.DateTimeField(blank=True, null=True)),
                ("container", models.ForeignKey(on_delete=django.db.models.deletion.CASCADE,
                                                related_name="console_tickets", to="webui.container")),
                ("user", models.ForeignKey(on_delete=django.db.models.deletion.CASCADE,
                                           related_name="console_tickets", to=settings.AUTH_USER_MODEL)),
            ],
            options={
                "ordering": ["-created"],
                "indexes": [models.Index(fields=["expires"], name="webui_conso_expires_482068_idx")],
            },
        ),
    ]
