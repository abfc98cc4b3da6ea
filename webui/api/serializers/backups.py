"""Backup archives and the datacenter's backup jobs as the API shows them."""
from __future__ import annotations

from django.utils import timezone
from rest_framework import serializers

from webui.models import BackupArchive, BackupSchedule, Job
from webui.models.backups import next_runs


class BackupArchiveSerializer(serializers.ModelSerializer):
    node = serializers.CharField(source="node.name")
    volid = serializers.CharField(read_only=True)

    class Meta:
        model = BackupArchive
        fields = ["id", "volid", "node", "storage", "ctid", "name", "time", "size", "format", "protected", "notes"]


class BackupScheduleSerializer(serializers.ModelSerializer):
    nodes = serializers.SlugRelatedField(slug_field="name", many=True, read_only=True)
    pool = serializers.SlugRelatedField(slug_field="name", read_only=True)
    next_runs = serializers.SerializerMethodField(help_text="the next five times the job runs")
    last_runs = serializers.SerializerMethodField(help_text="the latest runs, newest first")

    class Meta:
        model = BackupSchedule
        fields = ["id", "enabled", "schedule", "selection", "ctids", "pool", "nodes", "storage", "mode", "compress",
                  "keep_last", "keep_hourly", "keep_daily", "keep_weekly", "keep_monthly", "keep_yearly",
                  "mail_to", "mail_when", "notes", "comment", "next_due", "last_slot", "next_runs", "last_runs"]

    def get_next_runs(self, schedule) -> list[str]:
        if not schedule.enabled:
            return []
        return [t.isoformat() for t in next_runs(schedule.schedule, timezone.now())]

    def get_last_runs(self, schedule) -> list[dict]:
        jobs = Job.objects.filter(kind="vzdumpjob", target=str(schedule.pk)).select_related("node", "user")[:5]
        return [j.summary() for j in jobs]
