"""``/api/pools/``: resource pools (a container's pool is set through ``/api/containers/<id>/pool/``)."""

from __future__ import annotations

from drf_spectacular.utils import extend_schema
from rest_framework import mixins
from rest_framework.response import Response

from webui.actions import pools as actions
from webui.api.serializers.base import validated
from webui.api.serializers.pools import PoolCreateSerializer, PoolSerializer
from webui.api.views.base import ApiViewSet
from webui.models import Pool


@extend_schema(tags=["pools"])
class PoolViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, ApiViewSet):
    """Pools the user holds Pool.Audit on; creating one needs Pool.Allocate on /, removing it on the pool."""

    queryset = Pool.objects.prefetch_related("containers")
    serializer_class = PoolSerializer
    lookup_field = "name"
    lookup_value_regex = r"[A-Za-z0-9][A-Za-z0-9_.-]*"
    path_privileges = {"create": ("Pool.Allocate", "/")}
    object_privileges = {"destroy": "Pool.Allocate"}

    def get_queryset(self):
        access = self.access
        visible = [pool.pk for pool in Pool.objects.only("name") if access.can("Pool.Audit", pool)]
        return super().get_queryset().filter(pk__in=visible)

    @extend_schema(request=PoolCreateSerializer, responses={201: PoolSerializer})
    def create(self, request):
        body = validated(PoolCreateSerializer, request.data)
        pool = actions.create_pool(self.access, body["name"], body["comment"], address=self.address)
        return Response(PoolSerializer(pool).data, status=201)

    def destroy(self, request, name=None):
        actions.delete_pool(self.access, self.get_object(), address=self.address)
        return Response(status=204)
