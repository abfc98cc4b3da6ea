"""A node's bridges as the API reads and writes them (Proxmox's ``/nodes/{node}/network``)."""

from __future__ import annotations

from rest_framework import serializers

from webui.api.serializers.base import BooleanField, CharField, IntegerField, StrictSerializer


class BridgeFieldsSerializer(StrictSerializer):
    """The JSON types; the meaning (CIDR, ranges inside the subnet, ports on the node) is checked by
    ``webui.actions.network.check_fields`` with the engine's own rules."""

    address = CharField(required=False, allow_blank=True, help_text="IPv4 address in CIDR form, e.g. 10.10.0.1/24")
    address6 = CharField(required=False, allow_blank=True, help_text="IPv6 address in CIDR form")
    ports = serializers.ListField(
        child=CharField(), required=False, help_text="the bridge's ports (host interfaces); empty: none"
    )
    vlan_aware = BooleanField(required=False, default=False)
    vids = CharField(required=False, allow_blank=True, help_text="VLAN IDs of a VLAN-aware bridge, e.g. 2-4094")
    mtu = IntegerField(required=False, allow_null=True)
    pool = CharField(required=False, allow_blank=True, help_text="addresses ip=pool draws from, first-last")
    dhcp = CharField(required=False, allow_blank=True, help_text="the range the node's DHCP server leases")
    nat = BooleanField(required=False, default=False, help_text="masquerade the subnet (nftables)")


class BridgeCreateSerializer(BridgeFieldsSerializer):
    iface = CharField(help_text="the bridge's name, e.g. vmbr1")


class BridgeSerializer(serializers.Serializer):
    name = serializers.CharField()
    ipv4 = serializers.CharField(allow_null=True)
    ipv6 = serializers.CharField(allow_null=True)
    ports = serializers.ListField(child=serializers.CharField())
    vlan_aware = serializers.BooleanField()
    vids = serializers.CharField(allow_null=True)
    mtu = serializers.IntegerField(allow_null=True)
    pool = serializers.CharField(allow_null=True)
    dhcp = serializers.CharField(allow_null=True)
    nat = serializers.BooleanField()
    active = serializers.BooleanField(help_text="present on the host")
