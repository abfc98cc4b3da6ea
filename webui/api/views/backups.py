"""Backups over the API: a container's archives (list, back up now, restore, verify, delete, protect) and the
datacenter's backup jobs (``/api/backup-schedules/``: CRUD, run now, and a preview of a schedule's next runs).

Checks live in ``webui.actions.backups`` and ``webui.actions.schedules``; long actions answer 202 with the job.
"""

from __future__ import annotations

from django.http import Http404
from django.urls import NoReverseMatch, reverse
from django.utils import timezone
from drf_spectacular.utils import extend_schema
from rest_framework import mixins
from rest_framework.decorators import action
from rest_framework.exceptions import ValidationError as ApiValidationError
from rest_framework.response import Response
from rest_framework.routers import SimpleRouter

from webui.actions import backups, schedules
from webui.api.serializers.backups import BackupArchiveSerializer, BackupScheduleSerializer
from webui.api.views.base import ApiViewSet
from webui.models import BackupArchive, BackupSchedule, Container, Job, RestoreTest
from webui.models.backups import next_runs


def job_answer(jobs: list[Job]) -> Response:
    """202 with the job(s) and where to follow the first."""
    first = jobs[0]
    try:
        location = reverse("job-detail", args=[first.pk])
    except NoReverseMatch:
        location = f"/api/jobs/{first.pk}/"
    body = {"job": first.summary(), "location": location}
    if len(jobs) > 1:
        body["jobs"] = [j.summary() for j in jobs]
    return Response(body, status=202, headers={"Location": location})


class ArchiveViewSet(ApiViewSet, mixins.ListModelMixin, mixins.RetrieveModelMixin):
    """``/api/backups/``: archives the user may see (VM.Backup on their container ID and Datastore.Audit on
    their storage); filter with ``?ctid=``, ``?node=``, ``?storage=``."""

    queryset = BackupArchive.objects.all()  # narrowed per user in get_queryset; here it types the schema
    lookup_value_regex = r"[0-9]+"

    serializer_class = BackupArchiveSerializer

    def get_queryset(self):
        rows = BackupArchive.objects.select_related("node")
        for key, field in (("ctid", "ctid"), ("node", "node__name"), ("storage", "storage")):
            value = self.request.query_params.get(key)
            if value:
                if key == "ctid" and not value.isdigit():
                    raise ApiValidationError({"ctid": [f"'{value}' is not a container ID"]})
                rows = rows.filter(**{field: value})
        return RestoreTest.annotate_proven(backups.visible_archives(self.access, rows))

    def destroy(self, request, *args, **kwargs):
        return job_answer([backups.delete(self.access, self.get_object(), address=self.address)])

    @action(detail=True, methods=["post"])
    def verify(self, request, *args, **kwargs):
        return job_answer([backups.verify(self.access, self.get_object(), address=self.address)])

    @action(detail=True, methods=["post"])
    def protect(self, request, *args, **kwargs):
        return job_answer([backups.protect(self.access, self.get_object(), _body(request), address=self.address)])

    @action(detail=True, methods=["post"])
    def restore(self, request, *args, **kwargs):
        return job_answer([backups.restore(self.access, self.get_object(), _body(request), address=self.address)])

    @extend_schema(responses={(200, "application/octet-stream"): bytes})
    @action(detail=True, methods=["get"])
    def download(self, request, *args, **kwargs):
        """The archive's bytes, streamed from its node through the broker (VM.Backup on its container ID and
        Datastore.AllocateSpace on its storage)."""
        from webui.views.storage import stream_response

        return stream_response(self.access, self.get_object(), self.address)


class ContainerBackupsViewSet(ArchiveViewSet, mixins.CreateModelMixin):
    """``/api/containers/<ctid>/backups/``: one container's archives; POST backs it up now."""

    def container(self) -> Container:
        found = self.access.visible_containers(
            Container.objects.select_related("node", "pool").filter(ctid=self.kwargs["ctid"])
        ).first()
        if found is None:
            raise Http404(f"CT {self.kwargs['ctid']} does not exist")
        return found

    def get_queryset(self):
        self.container()
        rows = BackupArchive.objects.select_related("node").filter(ctid=self.kwargs["ctid"])
        return RestoreTest.annotate_proven(backups.visible_archives(self.access, rows))

    def create(self, request, *args, **kwargs):
        return job_answer([backups.backup_now(self.access, self.container(), _body(request), address=self.address)])


class BackupScheduleViewSet(ApiViewSet, mixins.ListModelMixin, mixins.RetrieveModelMixin):
    """``/api/backup-schedules/``: the datacenter's backup jobs (Sys.Audit to read, Sys.Modify to change)."""

    serializer_class = BackupScheduleSerializer
    queryset = BackupSchedule.objects.prefetch_related("nodes").select_related("pool")
    path_privileges = {"list": ("Sys.Audit", "/"), "retrieve": ("Sys.Audit", "/")}

    def create(self, request, *args, **kwargs):
        schedule = schedules.save_schedule(self.access, _body(request), address=self.address)
        return Response(self.get_serializer(schedule).data, status=201)

    def update(self, request, *args, **kwargs):
        schedule = schedules.save_schedule(self.access, _body(request), self.get_object(), address=self.address)
        return Response(self.get_serializer(schedule).data)

    partial_update = update  # fields left out keep their value either way

    def destroy(self, request, *args, **kwargs):
        schedules.delete_schedule(self.access, self.get_object(), address=self.address)
        return Response(status=204)

    @action(detail=True, methods=["post"])
    def run(self, request, *args, **kwargs):
        return job_answer(schedules.run_now(self.access, self.get_object(), address=self.address))

    @action(detail=False, methods=["get"])
    def preview(self, request, *args, **kwargs):
        """``?schedule=mon..fri 02:00``: the next runs, or 400 saying what is wrong with the schedule."""
        text = request.query_params.get("schedule", "")
        raw = request.query_params.get("count", "5")
        runs = next_runs(text, timezone.now(), count=min(20, max(1, int(raw))) if raw.isdigit() else 5)
        return Response({"schedule": text, "next_runs": [t.isoformat() for t in runs]})


def _body(request) -> dict:
    if not isinstance(request.data, dict):
        raise ApiValidationError({"non_field_errors": ["the body must be a JSON object"]})
    return request.data


router = SimpleRouter()
router.register(r"backups", ArchiveViewSet, basename="backup")
router.register(r"containers/(?P<ctid>[0-9]+)/backups", ContainerBackupsViewSet, basename="ct-backup")
router.register(r"backup-schedules", BackupScheduleViewSet, basename="backup-schedule")
