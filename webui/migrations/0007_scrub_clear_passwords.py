"""Root passwords given at create were kept in clear in job parameters and the audit log; SSH keys were in the
audit log's text.  A job keeps its password as the SHA-512 crypt hash (a queued create still works); the audit
log keeps only whether one was set and how many keys were given."""
from django.db import migrations


def scrub(apps, schema_editor):
    from webui.models.queue import audited_params, protect_secrets

    Job, AuditEntry = apps.get_model("webui", "Job"), apps.get_model("webui", "AuditEntry")
    for job in Job.objects.filter(params__has_key="password").iterator():
        try:
            job.params = protect_secrets(job.params)
        except Exception:  # noqa: BLE001 - a password the engine would refuse: no hash to keep
            job.params = {**{k: v for k, v in job.params.items() if k != "password"}, "password_hash": None}
        job.save(update_fields=["params"])
    for entry in AuditEntry.objects.filter(detail__has_key="params").iterator():
        params = entry.detail.get("params")
        if not isinstance(params, dict) or not ({"password", "password_hash", "ssh_public_keys"} & set(params)):
            continue
        if "password" in params:
            params = {**{k: v for k, v in params.items() if k != "password"}, "password_hash": params["password"]}
        entry.detail = {**entry.detail, "params": audited_params(params)}
        entry.save(update_fields=["detail"])


class Migration(migrations.Migration):
    dependencies = [("webui", "0006_container_snapshots")]
    operations = [migrations.RunPython(scrub, migrations.RunPython.noop)]
