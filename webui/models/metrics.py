"""Sampled metrics kept bounded like an RRD: a fixed number of buckets per resolution."""

from __future__ import annotations

from django.db import models


class MetricSample(models.Model):
    # resolution name -> (bucket width in seconds, buckets kept)
    RESOLUTIONS = {
        "hour": (10, 360),
        "day": (300, 288),
        "week": (1800, 336),
        "month": (10800, 248),  # 3 h buckets, 31 days
        "year": (86400, 366),  # 1 day buckets
    }

    scope = models.CharField(max_length=64)  # "node/<name>" or "ct/<id>"
    step = models.PositiveIntegerField()  # bucket width in seconds
    ts = models.BigIntegerField()  # bucket start, Unix seconds
    samples = models.PositiveIntegerField(default=1)  # how many readings the averages hold
    cpu = models.FloatField(default=0)  # CPUs busy (1.0 = one full CPU)
    memory = models.BigIntegerField(default=0)
    memory_total = models.BigIntegerField(default=0)
    net_in = models.FloatField(default=0)  # bytes per second
    net_out = models.FloatField(default=0)
    disk_used = models.BigIntegerField(default=0)
    disk_total = models.BigIntegerField(default=0)
    io_read = models.FloatField(default=0)  # block I/O, bytes per second (containers)
    io_write = models.FloatField(default=0)

    class Meta:
        ordering = ["scope", "step", "ts"]
        constraints = [models.UniqueConstraint(fields=["scope", "step", "ts"], name="metric_bucket_unique")]
