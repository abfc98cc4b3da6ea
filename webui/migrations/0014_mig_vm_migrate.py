from django.db import migrations


def add_vm_migrate(apps, schema_editor):
    """VM.Migrate (Proxmox's privilege for ``pct migrate``) given to the built-in roles that hold it."""
    from webui.privileges import BUILTIN_ROLES

    Role = apps.get_model("webui", "Role")
    for name in ("Administrator", "ContainerAdmin"):
        Role.objects.filter(name=name, builtin=True).update(privileges=BUILTIN_ROLES[name])


class Migration(migrations.Migration):
    dependencies = [("webui", "0013_cluster_join_tokens")]
    operations = [migrations.RunPython(add_vm_migrate, migrations.RunPython.noop)]
