"""What every API view shares: authentication, permission classes, pagination, the 202 job answer, metrics."""

from __future__ import annotations

from django.urls import reverse
from rest_framework import viewsets
from rest_framework.exceptions import ValidationError
from rest_framework.pagination import LimitOffsetPagination
from rest_framework.permissions import IsAuthenticated
from rest_framework.response import Response

from webui.access import ACTING_TOKEN, Access, access_for
from webui.api.permissions import ObjectPrivilege, PathPrivilege, client_address
from webui.api.serializers.jobs import JobAcceptedSerializer
from webui.models import Job, MetricSample

# The answer of an action queued as a job: its schema, for every view that queues one.
ACCEPTED = {202: JobAcceptedSerializer}


class Pagination(LimitOffsetPagination):
    default_limit = 100
    max_limit = 1000


class ApiViewSet(viewsets.GenericViewSet):
    """Authenticated, paginated, and checked by the view's ``object_privileges`` / ``path_privileges`` tables."""

    permission_classes = [IsAuthenticated, PathPrivilege, ObjectPrivilege]
    pagination_class = Pagination
    object_privileges: dict[str, str] = {}
    path_privileges: dict[str, tuple[str, str]] = {}

    def initial(self, request, *args, **kwargs):
        # The token a job queued by this request records (webui.access.ACTING_TOKEN), reset when it ends.
        self._acting = ACTING_TOKEN.set(None)
        super().initial(request, *args, **kwargs)
        ACTING_TOKEN.set(request.auth if hasattr(request.auth, "privsep") else None)

    def finalize_response(self, request, response, *args, **kwargs):
        if getattr(self, "_acting", None) is not None:
            ACTING_TOKEN.reset(self._acting)
            self._acting = None
        return super().finalize_response(request, response, *args, **kwargs)

    def check_permissions(self, request):
        # DRF checks throttles after permissions, so an anonymous caller, always refused, would never
        # be throttled: count it first.
        if not request.user.is_authenticated:
            self.check_throttles(request)
        super().check_permissions(request)

    @property
    def access(self) -> Access:
        return access_for(self.request)

    @property
    def address(self) -> str | None:
        return client_address(self.request)

    def paged(self, queryset, serializer_class=None):
        serializer_class = serializer_class or self.get_serializer_class()
        page = self.paginate_queryset(queryset)
        if page is None:
            return Response(serializer_class(queryset, many=True).data)
        return self.get_paginated_response(serializer_class(page, many=True).data)


def accepted(job: Job) -> Response:
    """A long action's answer: 202 at once, with the job and where to follow it."""
    location = reverse("job-detail", args=[job.pk])
    return Response({"job": job.summary(), "location": location}, status=202, headers={"Location": location})


def int_param(request, name: str, default: int, low: int, high: int) -> int:
    raw = request.query_params.get(name)
    if raw in (None, ""):
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ValidationError({name: [f"expected an integer, got '{raw}'"]}) from None
    if not low <= value <= high:
        raise ValidationError({name: [f"between {low} and {high}"]})
    return value


def flag_param(request, name: str) -> bool:
    raw = request.query_params.get(name, "").lower()
    if raw in ("", "0", "false", "no"):
        return False
    if raw in ("1", "true", "yes"):
        return True
    raise ValidationError({name: [f"expected 1 or 0, got '{raw}'"]})


METRIC_FIELDS = ["cpu", "memory", "memory_total", "net_in", "net_out", "disk_used", "disk_total"]


def metrics(request, scope: str) -> Response:
    """One resolution of a scope's history as parallel arrays, oldest first."""
    timeframe = request.query_params.get("timeframe", "hour")
    if timeframe not in MetricSample.RESOLUTIONS:
        raise ValidationError({"timeframe": [f"one of {', '.join(MetricSample.RESOLUTIONS)}"]})
    step, _ = MetricSample.RESOLUTIONS[timeframe]
    rows = list(MetricSample.objects.filter(scope=scope, step=step).order_by("ts").values_list("ts", *METRIC_FIELDS))
    columns = list(zip(*rows, strict=True)) if rows else [() for _ in range(len(METRIC_FIELDS) + 1)]
    data = {"timeframe": timeframe, "step": step, "ts": list(columns[0])}
    data.update({name: list(values) for name, values in zip(METRIC_FIELDS, columns[1:], strict=True)})
    return Response(data)
