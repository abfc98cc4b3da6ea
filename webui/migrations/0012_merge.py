"""Joins the migrations of parts developed side by side; nothing to change."""

from django.db import migrations


class Migration(migrations.Migration):
    dependencies = [
        ("webui", "0011_api_token_privsep"),
        ("webui", "0011_machb_paused"),
        ("webui", "0011_policy_protection"),
        ("webui", "0011_weba_firewall_files"),
        ("webui", "0011_webb_metrics_recordings"),
    ]
    operations = []
