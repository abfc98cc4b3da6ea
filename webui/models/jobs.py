"""Jobs: every action is one, with a record and a log, in the spirit of Proxmox's UPIDs."""

from __future__ import annotations

from django.conf import settings
from django.db import models
from django.utils import timezone

from webui.models.inventory import Node
from webui.userid import userid


class Job(models.Model):
    class Status(models.TextChoices):
        QUEUED = "queued", "queued"
        RUNNING = "running", "running"
        OK = "ok", "OK"
        ERROR = "error", "error"
        CANCELLED = "cancelled", "cancelled"

    ACTIVE = (Status.QUEUED, Status.RUNNING)

    node = models.ForeignKey(Node, on_delete=models.PROTECT, related_name="jobs")
    kind = models.CharField(max_length=32)  # vzstart, vzcreate, download, ... (see tasks.registry)
    target = models.CharField(max_length=255, blank=True)  # container ID, template name, node name
    path = models.CharField(max_length=255)  # the access path the job acts on, e.g. /ct/100
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True)
    params = models.JSONField(default=dict, blank=True)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.QUEUED)
    progress = models.FloatField(null=True, blank=True)  # 0..1 when the job knows its size
    progress_text = models.CharField(max_length=255, blank=True)
    message = models.TextField(blank=True)  # the result line: "OK" or what went wrong
    cancel_requested = models.BooleanField(default=False)
    created = models.DateTimeField(default=timezone.now)
    started = models.DateTimeField(null=True, blank=True)
    ended = models.DateTimeField(null=True, blank=True)
    worker = models.CharField(max_length=255, blank=True)  # host:pid of the process that ran it

    class Meta:
        ordering = ["-created", "-id"]
        indexes = [models.Index(fields=["path", "-created"]), models.Index(fields=["status"])]

    def __str__(self) -> str:
        return self.upid

    @property
    def upid(self) -> str:
        """Proxmox's unique process ID, field for field, so its clients decode it:
        ``UPID:node:pid:pstart:starttime:type:id:user@realm:`` (pid, pstart and starttime in hex).

        A job is not one process of one host, so its number stands for the pid and its creation time,
        in hundredths of a second as Proxmox's pstart counts clock ticks, for the process start.
        """
        created = self.created.timestamp()
        pstart = int(created * 100) & 0xFFFFFFFF
        return (
            f"UPID:{self.node.name}:{self.pk:08X}:{pstart:08X}:{int(created):08X}:{self.kind}:{self.target}:"
            f"{userid(self.user)}:"
        )

    @property
    def active(self) -> bool:
        return self.status in self.ACTIVE

    def summary(self) -> dict:
        """What the task panel and the live stream show of a job (and the safety snapshot it took, if any)."""
        safety = (self.params.get("result") or {}).get("safety_snapshot") if isinstance(self.params, dict) else None
        return ({"safety_snapshot": safety} if safety else {}) | {
            "id": self.pk,
            "upid": self.upid,
            "node": self.node.name,
            "kind": self.kind,
            "target": self.target,
            "path": self.path,
            "user": self.user.username if self.user else None,
            "status": self.status,
            "progress": self.progress,
            "progress_text": self.progress_text,
            "message": self.message,
            "created": self.created.isoformat(),
            "started": self.started.isoformat() if self.started else None,
            "ended": self.ended.isoformat() if self.ended else None,
        }


class JobLine(models.Model):
    """One line of a job's log, numbered so a page can read history and then follow the live stream."""

    job = models.ForeignKey(Job, on_delete=models.CASCADE, related_name="lines")
    seq = models.PositiveIntegerField()
    time = models.DateTimeField(default=timezone.now)
    text = models.TextField()

    class Meta:
        ordering = ["job", "seq"]
        constraints = [models.UniqueConstraint(fields=["job", "seq"], name="job_line_unique_seq")]
