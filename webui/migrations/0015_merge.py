"""Joins the migrations of parts developed side by side; nothing to change."""

from django.db import migrations


class Migration(migrations.Migration):
    dependencies = [
        ("webui", "0014_mig_vm_migrate"),
        ("webui", "0014_prot_protection_followups"),
    ]
    operations = []
