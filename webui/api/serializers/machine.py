"""Bodies of a container's machine actions: move a volume, migrate, push and pull a file (strict: see ``base``)."""

from __future__ import annotations

from rest_framework.serializers import ListField

from webui.api.serializers.base import BooleanField, CharField, IntegerField, StrictSerializer


class MoveVolumeSerializer(StrictSerializer):
    volume = CharField(help_text="rootfs or mpN")
    storage = CharField(help_text="the target storage (content rootdir)")
    delete = BooleanField(required=False, help_text="remove the old volume (default: kept as unusedN)")


class MigrateSerializer(StrictSerializer):
    target = CharField(help_text="the node to migrate to")
    restart = BooleanField(required=False, help_text="a running container: stop, move, start on the target")
    online = BooleanField(required=False, help_text="live migration (refused: no working CRIU on the nodes)")
    drop_snapshots = BooleanField(
        required=False, help_text="leave the snapshots behind (by default they travel between btrfs storages)"
    )


class MigrateAllSerializer(StrictSerializer):
    target = CharField(help_text="the node every container goes to")
    restart = BooleanField(required=False, help_text="running containers too (stopped, moved, started there)")
    vms = ListField(child=IntegerField(), required=False, help_text="only these containers of the node")


class PushSerializer(StrictSerializer):
    path = CharField(help_text="absolute destination path inside the container")
    user = CharField(required=False, help_text="owner: a user name of the container or a numeric id")
    group = CharField(required=False, help_text="group: a group name of the container or a numeric id")
    perms = CharField(required=False, help_text="mode, octal by default (0x for hexadecimal), e.g. 0640")


class PullSerializer(StrictSerializer):
    path = CharField(help_text="absolute path of a regular file inside the container")
