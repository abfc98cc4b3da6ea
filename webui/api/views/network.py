"""``/api/nodes/<name>/network/``: the node's bridges, as Proxmox's node network API.

GET (Sys.Audit on the node) lists the bridges the node's interfaces file defines, as its agent last
reported them; POST creates one, PUT on the list applies the whole file, PUT and DELETE on
``network/<iface>`` redefine or remove one (Sys.Modify on the node); each change answers 202 with its job.
"""

from __future__ import annotations

from django.shortcuts import get_object_or_404
from drf_spectacular.utils import extend_schema
from rest_framework.exceptions import NotFound
from rest_framework.response import Response

from webui.access import require
from webui.actions import network as actions
from webui.api.serializers.base import validated
from webui.api.serializers.network import BridgeCreateSerializer, BridgeFieldsSerializer, BridgeSerializer
from webui.api.views.base import ACCEPTED, ApiViewSet, accepted
from webui.models import Node
from webui.nic_rights import managed_bridges


@extend_schema(tags=["nodes"])
class NetworkViewSet(ApiViewSet):
    serializer_class = BridgeSerializer

    def _node(self, name: str, privilege: str = "Sys.Audit") -> Node:
        node = get_object_or_404(Node, name=name)
        require(self.access, privilege, node, address=self.address)
        return node

    @extend_schema(responses=BridgeSerializer(many=True))
    def list(self, request, name=None):
        node = self._node(name)
        return Response([_row(b) for b in managed_bridges(node).values()])

    @extend_schema(responses=BridgeSerializer)
    def retrieve(self, request, name=None, iface=None):
        bridge = managed_bridges(self._node(name)).get(iface)
        if bridge is None:
            raise NotFound(f"node '{name}' defines no bridge '{iface}'")
        return Response(_row(bridge))

    @extend_schema(request=BridgeCreateSerializer, responses=ACCEPTED)
    def create(self, request, name=None):
        body = validated(BridgeCreateSerializer, request.data)
        iface = body.pop("iface")
        node = self._node(name, "Sys.Modify")
        return accepted(actions.bridge_job(self.access, node, iface, body, create=True, address=self.address))

    @extend_schema(request=BridgeFieldsSerializer, responses=ACCEPTED)
    def update(self, request, name=None, iface=None):
        body = validated(BridgeFieldsSerializer, request.data)
        node = self._node(name, "Sys.Modify")
        return accepted(actions.bridge_job(self.access, node, iface, body, create=False, address=self.address))

    @extend_schema(request=None, responses=ACCEPTED)
    def destroy(self, request, name=None, iface=None):
        node = self._node(name, "Sys.Modify")
        return accepted(actions.delete_job(self.access, node, iface, address=self.address))

    @extend_schema(
        request=None,
        responses=ACCEPTED,
        operation_id="nodes_network_apply",
        description="Apply the interfaces file as it stands.",
    )
    def apply(self, request, name=None):
        node = self._node(name, "Sys.Modify")
        return accepted(actions.apply_job(self.access, node, address=self.address))


def _row(bridge: dict) -> dict:
    keys = ("name", "ipv4", "ipv6", "pool", "dhcp", "vids", "mtu")
    return {
        **{k: bridge.get(k) for k in keys},
        "ports": bridge.get("ports", []),
        "vlan_aware": bool(bridge.get("vlan_aware")),
        "nat": bool(bridge.get("nat")),
        "active": bool(bridge.get("active")),
    }
