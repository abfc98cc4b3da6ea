"""Backup archives and the datacenter's backup jobs as the API shows them."""

from __future__ import annotations

from django.utils import timezone
from rest_framework import serializers

from webui.api.serializers.base import BooleanField, CharField, ChoiceField, IntegerField, StrictSerializer
from webui.forms.backups import ScheduleForm
from webui.models import BackupArchive, BackupSchedule, Job
from webui.models.backups import BACKUP_MODES, COMPRESSIONS, next_runs


class BackupArchiveSerializer(serializers.ModelSerializer):
    node = serializers.CharField(source="node.name")
    volid = serializers.CharField(read_only=True)
    last_proven = serializers.SerializerMethodField(help_text="when a restore test last passed on it, or null")

    class Meta:
        model = BackupArchive
        fields = [
            "id",
            "volid",
            "node",
            "storage",
            "ctid",
            "name",
            "time",
            "size",
            "format",
            "protected",
            "notes",
            "last_proven",
        ]

    def get_last_proven(self, archive) -> str | None:
        from webui.models import RestoreTest

        # Annotated by the list (RestoreTest.annotate_proven, one query); else asked per archive.
        when = archive.proven if hasattr(archive, "proven") else RestoreTest.last_proven(archive)
        return when.isoformat() if when else None


class BackupScheduleSerializer(serializers.ModelSerializer):
    nodes = serializers.SlugRelatedField(slug_field="name", many=True, read_only=True)
    pool = serializers.SlugRelatedField(slug_field="name", read_only=True)
    next_runs = serializers.SerializerMethodField(help_text="the next five times the job runs")
    last_runs = serializers.SerializerMethodField(help_text="the latest runs, newest first")

    class Meta:
        model = BackupSchedule
        # What the page and the API edit (the form's fields), then what only the API shows.
        fields = ["id", *ScheduleForm.Meta.fields, "next_due", "last_slot", "next_runs", "last_runs"]

    def get_next_runs(self, schedule) -> list[str]:
        if not schedule.enabled:
            return []
        return [t.isoformat() for t in next_runs(schedule.schedule, timezone.now())]

    def get_last_runs(self, schedule) -> list[dict]:
        jobs = Job.objects.filter(kind="vzdumpjob", target=str(schedule.pk)).select_related("node", "user")[:5]
        return [j.summary() for j in jobs]


class ExcludeField(serializers.Field):
    """Path globs to leave out: a list of strings, or one string of lines (a form's textarea)."""

    def to_internal_value(self, data):
        if isinstance(data, str):
            data = [line.strip() for line in data.splitlines() if line.strip()]
        if (
            not isinstance(data, list)
            or len(data) > 64
            or not all(
                isinstance(p, str) and p.strip() and len(p) <= 1024 and "\n" not in p and "\x00" not in p for p in data
            )
        ):
            raise serializers.ValidationError("a list of at most 64 path globs, one per line")
        return data


def notes_field(**options) -> CharField:
    return CharField(max_length=1024, allow_blank=True, trim_whitespace=False, **options)


class BackupSerializer(StrictSerializer):
    """A backup of one container now (``POST /api/containers/<ID>/backups/`` and the Backup tab's form)."""

    storage = CharField(default="local", help_text="a storage that holds backups")
    mode = ChoiceField(choices=BACKUP_MODES, default=BACKUP_MODES[0])
    compress = ChoiceField(choices=COMPRESSIONS, default=COMPRESSIONS[0])
    exclude = ExcludeField(default=list, help_text="path globs to leave out")
    notes = notes_field(default="", help_text="the archive's notes ({{guestname}}, {{vmid}}, ...)")
    protected = BooleanField(default=False)


class RestoreSerializer(StrictSerializer):
    """A restore of an archive: to a new ID, or over a stopped container with ``force``."""

    ctid = IntegerField(required=False, help_text="default: the archive's container ID")
    force = BooleanField(default=False, help_text="restore over an existing, stopped container")
    unique = BooleanField(default=False, help_text="new MAC addresses")
    rootfs_storage = CharField(required=False, allow_blank=True, help_text="where the root disk goes")
    target_storage = CharField(required=False, allow_blank=True, help_text="an older name of rootfs_storage")
    hostname = CharField(required=False, allow_blank=True)


class ArchiveChangeSerializer(StrictSerializer):
    """An archive's protection and/or notes."""

    protected = BooleanField(required=False)
    notes = notes_field(required=False)
