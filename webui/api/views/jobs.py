"""``/api/jobs/``: the task list, one job, its numbered log, cancel.

A user sees their own jobs, jobs on containers they audit, and jobs on
nodes where they hold Sys.Audit; any other job is 404.
"""

from __future__ import annotations

from django.db.models import CharField, Q, Value
from django.db.models.functions import Cast, Concat
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import mixins
from rest_framework.decorators import action
from rest_framework.response import Response

from webui.access import Access
from webui.actions import nodes as actions
from webui.api.serializers.jobs import JobLineSerializer, JobLogSerializer, JobSerializer
from webui.api.views.base import ApiViewSet, int_param
from webui.models import Container, Job, Node

LOG_LIMIT = 5000


def visible_jobs(access: Access, queryset):
    if access.superuser:
        return queryset
    containers = (
        access.visible_containers(Container.objects.all())
        .annotate(job_path=Concat(Value("/ct/"), Cast("ctid", output_field=CharField())))
        .values("job_path")
    )
    nodes = [node.path for node in Node.objects.only("name") if access.can("Sys.Audit", node)]
    return queryset.filter(Q(user=access.user) | Q(path__in=containers) | Q(path__in=nodes))


@extend_schema(tags=["jobs"])
class JobViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, ApiViewSet):
    queryset = Job.objects.select_related("node", "user")
    serializer_class = JobSerializer

    def get_queryset(self):
        return visible_jobs(self.access, super().get_queryset())

    @extend_schema(
        parameters=[
            OpenApiParameter("target", str, description="container ID, template name, ..."),
            OpenApiParameter("status", str, enum=[c for c, _ in Job.Status.choices]),
            OpenApiParameter("kind", str, description="vzstart, vzcreate, download, ..."),
            OpenApiParameter("node", str, description="node name"),
        ]
    )
    def list(self, request, *args, **kwargs):
        queryset = self.get_queryset()
        for param, field in (("target", "target"), ("status", "status"), ("kind", "kind"), ("node", "node__name")):
            if request.query_params.get(param):
                queryset = queryset.filter(**{field: request.query_params[param]})
        return self.paged(queryset)

    @extend_schema(
        responses=JobLogSerializer,
        parameters=[
            OpenApiParameter("start", int, description="the first line number wanted (lines count from 1)"),
            OpenApiParameter("limit", int, description=f"at most this many lines (default and maximum {LOG_LIMIT})"),
        ],
        description="Read the log from 'start' on, then follow the job's websocket group for new lines.",
    )
    @action(detail=True, methods=["get"])
    def log(self, request, pk=None):
        job = self.get_object()
        start = int_param(request, "start", 1, 1, 2**31 - 1)
        limit = int_param(request, "limit", LOG_LIMIT, 1, LOG_LIMIT)
        lines = list(job.lines.filter(seq__gte=start).order_by("seq")[:limit].values("seq", "time", "text"))
        following = lines[-1]["seq"] + 1 if lines else start
        more = job.lines.filter(seq__gte=following).exists() if len(lines) == limit else False
        return Response(
            {
                "job": job.pk,
                "status": job.status,
                "lines": JobLineSerializer(lines, many=True).data,
                "next": following,
                "complete": not job.active and not more,
            }
        )

    @extend_schema(
        request=None,
        responses=JobSerializer,
        description="The job's owner, or Sys.Modify on its node: a queued job is cancelled at once, a "
        "running one at its next check.",
    )
    @action(detail=True, methods=["post"])
    def cancel(self, request, pk=None):
        job = self.get_object()
        actions.cancel_job(self.access, job)
        job.refresh_from_db()
        return Response(job.summary())
