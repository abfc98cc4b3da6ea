"""Access control: ACL entries, roles, users, tokens, effective permissions, the audit log (only the API edits
them, so their serializers validate, on the strict base: unknown fields and wrong JSON types refused by name)."""

from __future__ import annotations

from django.contrib.auth.models import Group, User
from rest_framework import serializers

from webui.api.serializers.base import CharField, StrictModelSerializer
from webui.models import AccessEntry, ApiToken, AuditEntry, Role
from webui.privileges import PRIVILEGES


class AccessEntrySerializer(StrictModelSerializer):
    user = serializers.SlugRelatedField(
        slug_field="username", queryset=User.objects.all(), required=False, allow_null=True
    )
    group = serializers.SlugRelatedField(
        slug_field="name", queryset=Group.objects.all(), required=False, allow_null=True
    )
    role = serializers.SlugRelatedField(slug_field="name", queryset=Role.objects.all())
    token = serializers.CharField(read_only=True, default=None, help_text="user!name of an API token's entry")

    class Meta:
        model = AccessEntry
        fields = ["id", "path", "user", "group", "token", "role", "propagate"]

    def validate(self, attrs):
        if bool(attrs.get("user")) == bool(attrs.get("group")):
            raise serializers.ValidationError({"user": ["name exactly one user or one group"]})
        return attrs


class RoleSerializer(StrictModelSerializer):
    privileges = serializers.ListField(child=CharField())

    class Meta:
        model = Role
        fields = ["name", "privileges", "builtin"]
        read_only_fields = ["builtin"]

    def validate_privileges(self, value):
        unknown = sorted(set(value) - set(PRIVILEGES))
        if unknown:
            raise serializers.ValidationError(f"unknown privileges: {', '.join(unknown)}")
        return sorted(set(value))


class UserSerializer(StrictModelSerializer):
    password = CharField(write_only=True, required=False, min_length=8)
    groups = serializers.SlugRelatedField(slug_field="name", queryset=Group.objects.all(), many=True, required=False)

    class Meta:
        model = User
        fields = [
            "username",
            "email",
            "first_name",
            "last_name",
            "is_active",
            "is_superuser",
            "groups",
            "password",
            "last_login",
            "date_joined",
        ]
        read_only_fields = ["is_superuser", "last_login", "date_joined"]

    def create(self, validated):
        groups = validated.pop("groups", [])
        password = validated.pop("password", None)
        user = User(**validated)
        user.set_password(password) if password else user.set_unusable_password()
        user.save()
        user.groups.set(groups)
        return user

    def update(self, user, validated):
        password = validated.pop("password", None)
        if password:
            user.set_password(password)
        return super().update(user, validated)


class ApiTokenSerializer(StrictModelSerializer):
    class Meta:
        model = ApiToken
        fields = ["name", "comment", "created", "expires", "last_used", "privsep"]
        read_only_fields = ["created", "last_used"]


class ApiTokenIssuedSerializer(ApiTokenSerializer):
    value = serializers.CharField(read_only=True, help_text="the header value 'Token <value>'; shown only now")

    class Meta(ApiTokenSerializer.Meta):
        fields = [*ApiTokenSerializer.Meta.fields, "value"]


class PermissionsSerializer(serializers.Serializer):
    path = serializers.CharField()
    privileges = serializers.ListField(child=serializers.CharField())


class AuditEntrySerializer(serializers.ModelSerializer):
    class Meta:
        model = AuditEntry
        fields = ["id", "time", "username", "action", "path", "address", "outcome", "detail"]
