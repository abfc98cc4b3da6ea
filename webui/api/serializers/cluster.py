"""Cluster membership as the API shows it: join tokens."""

from __future__ import annotations

from rest_framework import serializers

from webui.models.cluster import MAX_MINUTES


class JoinTokenRequestSerializer(serializers.Serializer):
    minutes = serializers.IntegerField(
        default=60, min_value=1, max_value=MAX_MINUTES, help_text="how long the token stays valid"
    )


class JoinTokenSerializer(serializers.Serializer):
    token = serializers.CharField(help_text="single use; shown only in this answer (only its digest is kept)")
    expires = serializers.DateTimeField()
