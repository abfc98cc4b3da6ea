"""Bodies of a container's machine actions: move a volume, push and pull a file (strict: see ``base``)."""

from __future__ import annotations

from webui.api.serializers.base import BooleanField, CharField, StrictSerializer


class MoveVolumeSerializer(StrictSerializer):
    volume = CharField(help_text="rootfs or mpN")
    storage = CharField(help_text="the target storage (content rootdir)")
    delete = BooleanField(required=False, help_text="remove the old volume (default: kept as unusedN)")


class PushSerializer(StrictSerializer):
    path = CharField(help_text="absolute destination path inside the container")
    user = CharField(required=False, help_text="owner: a user name of the container or a numeric id")
    group = CharField(required=False, help_text="group: a group name of the container or a numeric id")
    perms = CharField(required=False, help_text="mode, octal by default (0x for hexadecimal), e.g. 0640")


class PullSerializer(StrictSerializer):
    path = CharField(help_text="absolute path of a regular file inside the container")
