"""Proxmox's UPIDs for Caisson's jobs, both ways.

``Job.upid`` writes ``UPID:<node>:<pid>:<pstart>:<starttime>:<type>:<id>:<user>:``, the job's number standing
for the pid (8 hex digits).  Reading one back finds the job by that number and accepts it only when every
other field matches the job, so a made-up UPID never names a job it does not describe.
"""

from __future__ import annotations

import re

from webui.models import Job

UPID = re.compile(
    r"UPID:(?P<node>[a-zA-Z0-9]([a-zA-Z0-9\-]*[a-zA-Z0-9])?):(?P<pid>[0-9A-Fa-f]{8}):(?P<pstart>[0-9A-Fa-f]{8,9}):"
    r"(?P<start>[0-9A-Fa-f]{8}):(?P<type>[^:\s]+):(?P<id>[^:\s]*):(?P<user>[^:\s]+):"
)


def job_of(upid: str, node: str | None = None) -> Job | None:
    """The job ``upid`` names (on ``node`` when given), or None."""
    found = UPID.fullmatch(upid or "")
    if not found or (node is not None and found["node"] != node):
        return None
    job = Job.objects.select_related("node", "user").filter(pk=int(found["pid"], 16)).first()
    return job if job is not None and job.upid == upid else None
