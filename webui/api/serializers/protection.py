"""Protection policies and notification targets as the API shows them (writes go through the forms)."""

from __future__ import annotations

from django.utils import timezone
from rest_framework import serializers

from webui.api.serializers.backups import BackupScheduleSerializer
from webui.forms.protection import BACKUP_FIELDS, PolicyForm, TargetForm
from webui.models import Job, NotificationTarget, ProtectionPolicy, RestoreTest
from webui.models.backups import next_runs


class NotificationTargetSerializer(serializers.ModelSerializer):
    """A webhook's secret headers show by name only (``header_names``): their values are never sent back."""

    class Meta:
        model = NotificationTarget
        fields = ["id", *TargetForm.Meta.fields, "header_names"]


class RestoreTestSerializer(serializers.ModelSerializer):
    node = serializers.CharField(source="node.name")
    policy = serializers.SlugRelatedField(slug_field="name", read_only=True)
    job = serializers.PrimaryKeyRelatedField(read_only=True)

    class Meta:
        model = RestoreTest
        fields = [
            "id",
            "node",
            "ctid",
            "storage",
            "archive",
            "policy",
            "job",
            "passed",
            "reason",
            "timings",
            "log",
            "created",
        ]


class ProtectionPolicySerializer(serializers.ModelSerializer):
    pool = serializers.SlugRelatedField(slug_field="name", read_only=True)
    targets = serializers.SlugRelatedField(slug_field="name", many=True, read_only=True)
    backup = serializers.SerializerMethodField(help_text="the policy's backup job (its fields), or null")
    next_runs = serializers.SerializerMethodField(help_text="the next snapshot and backup runs, merged, soonest first")
    last_runs = serializers.SerializerMethodField(help_text="the latest snapshot and backup runs, newest first")

    class Meta:
        model = ProtectionPolicy
        fields = [
            "id",
            *PolicyForm.Meta.fields,
            "backup",
            "next_due",
            "last_slot",
            "restore_test_next_due",
            "restore_test_last_slot",
            "next_runs",
            "last_runs",
        ]

    def get_backup(self, policy) -> dict | None:
        if policy.backup is None:
            return None
        data = BackupScheduleSerializer(policy.backup).data
        return {"id": policy.backup.pk, **{k: data[k] for k in BACKUP_FIELDS}, "next_due": data["next_due"]}

    def get_next_runs(self, policy) -> list[dict]:
        return preview(policy)

    def get_last_runs(self, policy) -> list[dict]:
        snaps = Job.objects.filter(kind__in=("snapshotjob", "restoretest"), target=str(policy.pk))
        backups = Job.objects.filter(kind="vzdumpjob", target=str(policy.backup_id)) if policy.backup_id else []
        jobs = sorted([*snaps[:5], *backups[:5]], key=lambda j: j.created, reverse=True)[:5]
        return [j.summary() for j in jobs]


def preview(policy: ProtectionPolicy, count: int = 5) -> list[dict]:
    """The policy's next ``count`` runs: ``{"time", "kind"}`` with kind ``snapshot``, ``backup`` or
    ``restore-test``."""
    if not policy.enabled:
        return []
    now, runs = timezone.now(), []
    if policy.snapshot_schedule:
        runs += [{"time": t, "kind": "snapshot"} for t in next_runs(policy.snapshot_schedule, now, count)]
    if policy.restore_test_schedule:
        runs += [{"time": t, "kind": "restore-test"} for t in next_runs(policy.restore_test_schedule, now, count)]
    if policy.backup is not None and policy.backup.enabled:
        runs += [{"time": t, "kind": "backup"} for t in next_runs(policy.backup.schedule, now, count)]
    runs.sort(key=lambda r: (r["time"], r["kind"]))
    return [{"time": r["time"].isoformat(), "kind": r["kind"]} for r in runs[:count]]
