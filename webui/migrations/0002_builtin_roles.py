from django.db import migrations


def add_roles(apps, schema_editor):
    from webui.privileges import BUILTIN_ROLES

    Role = apps.get_model("webui", "Role")
    for name, privileges in BUILTIN_ROLES.items():
        Role.objects.update_or_create(name=name, defaults={"privileges": privileges, "builtin": True})


class Migration(migrations.Migration):
    dependencies = [("webui", "0001_initial")]
    operations = [migrations.RunPython(add_roles, migrations.RunPython.noop)]
