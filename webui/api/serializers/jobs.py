"""Jobs and their log lines as the API shows them."""

from __future__ import annotations

from rest_framework import serializers

from webui.models import Job, JobLine

# Named once for the schema's enums (settings.SPECTACULAR_SETTINGS["ENUM_NAME_OVERRIDES"]).
JOB_STATUS = Job.Status


class JobSerializer(serializers.ModelSerializer):
    upid = serializers.CharField(read_only=True)
    node = serializers.CharField(source="node.name", read_only=True)
    user = serializers.CharField(source="user.username", read_only=True, allow_null=True)

    class Meta:
        model = Job
        fields = [
            "id",
            "upid",
            "node",
            "kind",
            "target",
            "path",
            "user",
            "status",
            "progress",
            "progress_text",
            "message",
            "created",
            "started",
            "ended",
        ]
        read_only_fields = fields

    def to_representation(self, job):
        return job.summary()


class JobAcceptedSerializer(serializers.Serializer):
    job = JobSerializer()
    location = serializers.CharField(help_text="where to follow the job")


class JobLineSerializer(serializers.ModelSerializer):
    class Meta:
        model = JobLine
        fields = ["seq", "time", "text"]


class JobLogSerializer(serializers.Serializer):
    job = serializers.IntegerField()
    status = serializers.CharField()
    lines = JobLineSerializer(many=True)
    next = serializers.IntegerField(help_text="the 'start' to ask for next")
    complete = serializers.BooleanField(help_text="the job has ended and every line was read")
