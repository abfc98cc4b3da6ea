"""``/api/protection-policies/`` and ``/api/notification-targets/``: Sys.Audit on ``/`` to read, Sys.Modify
to change."""

from __future__ import annotations

from rest_framework import mixins, serializers
from rest_framework.decorators import action
from rest_framework.exceptions import ValidationError as ApiValidationError
from rest_framework.response import Response
from rest_framework.routers import SimpleRouter

from webui.actions import protection
from webui.api.serializers.protection import (
    NotificationTargetSerializer,
    ProtectionPolicySerializer,
    RestoreTestSerializer,
)
from webui.api.views.backups import _body, job_answer
from webui.api.views.base import ApiViewSet
from webui.models import Container, NotificationTarget, ProtectionPolicy, RestoreTest

READ = {"list": ("Sys.Audit", "/"), "retrieve": ("Sys.Audit", "/")}


class ProtectionPolicyViewSet(ApiViewSet, mixins.ListModelMixin, mixins.RetrieveModelMixin):
    """Policies: selection, snapshot schedule/pattern/expiry/retention, ``backup`` (a backup job's fields or
    null), notification ``targets``; ``POST .../run/`` takes the snapshots now."""

    serializer_class = ProtectionPolicySerializer
    queryset = ProtectionPolicy.objects.select_related("pool", "backup").prefetch_related("targets")
    path_privileges = READ

    def create(self, request, *args, **kwargs):
        policy = protection.save_policy(self.access, _body(request), address=self.address)
        return Response(self.get_serializer(policy).data, status=201)

    def update(self, request, *args, **kwargs):
        policy = protection.save_policy(self.access, _body(request), self.get_object(), address=self.address)
        return Response(self.get_serializer(policy).data)

    partial_update = update  # fields left out keep their value either way

    def destroy(self, request, *args, **kwargs):
        protection.delete_policy(self.access, self.get_object(), address=self.address)
        return Response(status=204)

    @action(detail=True, methods=["post"])
    def run(self, request, *args, **kwargs):
        return job_answer(protection.run_now(self.access, self.get_object(), address=self.address))

    @action(detail=True, methods=["post"], url_path="restore-test")
    def restore_test(self, request, *args, **kwargs):
        """Restore the newest archive of each selected container as a throwaway, boot and check it."""
        return job_answer(protection.restore_test_now(self.access, self.get_object(), address=self.address))


class RestoreTestViewSet(ApiViewSet, mixins.ListModelMixin, mixins.RetrieveModelMixin):
    """Restore test results, newest first (Sys.Audit on ``/``); ``?ctid=``, ``?passed=0|1``."""

    serializer_class = RestoreTestSerializer
    queryset = RestoreTest.objects.select_related("node", "policy")
    path_privileges = READ

    def get_queryset(self):
        rows = super().get_queryset()
        ctid, passed = self.request.query_params.get("ctid"), self.request.query_params.get("passed")
        if ctid:
            if not ctid.isdigit():
                raise ApiValidationError({"ctid": [f"'{ctid}' is not a container ID"]})
            rows = rows.filter(ctid=int(ctid))
        if passed:
            if passed not in ("0", "1"):
                raise ApiValidationError({"passed": ["0 or 1"]})
            rows = rows.filter(passed=passed == "1")
        return rows


class NotificationTargetViewSet(ApiViewSet, mixins.ListModelMixin, mixins.RetrieveModelMixin):
    """Mail targets (``mail_to``) and webhooks (``url``, POSTed a JSON object after each run)."""

    serializer_class = NotificationTargetSerializer
    queryset = NotificationTarget.objects.all()
    path_privileges = READ

    def create(self, request, *args, **kwargs):
        target = protection.save_target(self.access, _body(request), address=self.address)
        return Response(self.get_serializer(target).data, status=201)

    def update(self, request, *args, **kwargs):
        target = protection.save_target(self.access, _body(request), self.get_object(), address=self.address)
        return Response(self.get_serializer(target).data)

    partial_update = update

    def destroy(self, request, *args, **kwargs):
        protection.delete_target(self.access, self.get_object(), address=self.address)
        return Response(status=204)


class EolRowSerializer(serializers.Serializer):
    ctid = serializers.IntegerField()
    hostname = serializers.CharField()
    node = serializers.CharField()
    os = serializers.CharField(help_text="PRETTY_NAME of its os-release")
    distro = serializers.CharField()
    version = serializers.CharField()
    name = serializers.CharField()
    eol = serializers.DateField(allow_null=True, help_text="end of regular security support")
    lts = serializers.DateField(allow_null=True, help_text="end of extended support, where there is one")
    end_of_life = serializers.BooleanField()


class EolReportViewSet(ApiViewSet):
    """``/api/eol-report/``: containers on a distribution release past its end of life (``?all=1``: every
    container whose release is known), among those the user may see (VM.Audit)."""

    serializer_class = EolRowSerializer
    queryset = Container.objects.none()  # the schema's type; the rows are computed

    def list(self, request, *args, **kwargs):
        from webui.eol import report

        visible = [c for c in Container.objects.select_related("node") if self.access.can("VM.Audit", c)]
        return Response(report(visible, all_known=request.query_params.get("all") == "1"))


router = SimpleRouter()
router.register(r"protection-policies", ProtectionPolicyViewSet, basename="protection-policy")
router.register(r"restore-tests", RestoreTestViewSet, basename="restore-test")
router.register(r"notification-targets", NotificationTargetViewSet, basename="notification-target")
router.register(r"eol-report", EolReportViewSet, basename="eol-report")
