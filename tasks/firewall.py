"""The firewall on a node: the files mirrored, the job that writes one and applies it live, the packet log.

The files (``<state root>/firewall/``) are Proxmox's (``engine.network.fwconfig``); the web tier edits them
through ``caisson.firewall.set`` jobs and reads them from ``FirewallFile`` rows.  Logged packets (rules or
policies with a log level) reach the kernel log with the prefix ``caisson-fw <veth> <in|out> <verdict>:``;
the agent's tick keeps the last of this node's containers' lines in ``Node.info["fwlog"]``.
"""

from __future__ import annotations

import errno
import os
import re
import time
from datetime import UTC, datetime

from django.db import transaction

from tasks.base import JobContext, JobTask
from tasks.celery import app
from tasks.runtime import node_engine, this_node
from webui.live import publish
from webui.models import FirewallFile, Node

FILE_NAME = re.compile(r"^(cluster|host|\d{3,9})\.fw$")
LOG_KEEP = 200
_kmsg: dict[str, int] = {}  # the open /dev/kmsg of this process, read on from where it stopped


def sync_firewall(node: Node) -> None:
    """The node's firewall files into ``FirewallFile`` rows (a file gone, its row gone)."""
    from engine.network.fwcompile import firewall_dir

    directory = firewall_dir(node_engine().layout.root)
    found = {}
    for path in directory.iterdir() if directory.is_dir() else []:
        if FILE_NAME.match(path.name) and path.is_file():
            found[path.name] = path.read_text(errors="replace")
    with transaction.atomic():
        FirewallFile.objects.filter(node=node).exclude(name__in=list(found)).delete()
        rows = {r.name: r for r in FirewallFile.objects.filter(node=node)}
        for name, text in found.items():
            if name not in rows or rows[name].text != text:
                FirewallFile.objects.update_or_create(node=node, name=name, defaults={"text": text})


def read_firewall_log(node: Node) -> None:
    """New ``caisson-fw`` lines of the kernel log about this node's containers, kept in ``Node.info``."""
    lines = []
    ours = {str(c) for c in node_engine().ids()}
    boot = time.time() - time.monotonic()
    for seconds, text in _kmsg_records():
        match = re.search(r"caisson-fw veth(\d+)i\d+ ", text)
        if match and match.group(1) in ours:
            when = datetime.fromtimestamp(boot + seconds, UTC).isoformat(timespec="seconds")
            lines.append({"time": when, "ctid": int(match.group(1)), "text": text[match.start() :][:400]})
    if not lines:
        return
    with transaction.atomic():
        row = Node.objects.select_for_update().get(pk=node.pk)
        row.info = {**(row.info or {}), "fwlog": [*(row.info or {}).get("fwlog", []), *lines][-LOG_KEEP:]}
        row.save(update_fields=["info"])
    publish([node.path], {"type": "fwlog", "node": node.name})


def _kmsg_records():
    """(seconds since boot, message) of the kernel log records not read yet by this process."""
    if "fd" not in _kmsg:
        try:
            _kmsg["fd"] = os.open("/dev/kmsg", os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
        except OSError:
            return
    while True:
        try:
            record = os.read(_kmsg["fd"], 8192).decode(errors="replace")
        except OSError as exc:
            if exc.errno == errno.EPIPE:  # overwritten before we read it: go on with the next
                continue
            return  # EAGAIN: nothing more now
        head, _, message = record.partition(";")
        fields = head.split(",")
        if len(fields) >= 3 and fields[2].isdigit():
            yield int(fields[2]) / 1e6, message.split("\n", 1)[0]


class SetFirewall(JobTask):
    """``params``: ``level`` (cluster, host, ct), ``text`` (the whole file, checked; empty removes it); the
    target is the container's ID for ``ct``.  Applied at once to the running containers it concerns."""

    name = "caisson.firewall.set"

    def perform(self, ctx: JobContext) -> str:
        from engine.config import write_atomic
        from engine.errors import NotFound, ValidationError
        from engine.network import fwconfig
        from engine.network.container import reload_firewall
        from engine.network.fwcompile import file_of, policy_for

        engine, level, text = node_engine(), ctx.params.get("level"), ctx.params.get("text", "")
        if level not in fwconfig.KINDS:
            raise ValidationError(f"level must be one of {', '.join(fwconfig.KINDS)}", key="level")
        ctid = int(ctx.job.target) if level == "ct" else None
        if ctid is not None and not engine.exists(ctid):
            raise NotFound(f"container {ctid} does not exist on this node")
        if text:
            fwconfig.parse(text, level)  # refused before anything changes
        path = file_of(engine.layout.root, level, ctid)
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        if text:
            write_atomic(path, text, 0o600)
        else:
            path.unlink(missing_ok=True)
        ctx.log(f"{path.name}: {'written' if text else 'removed'}")
        if level in ("host", "cluster"):
            from engine.network import hostfw

            for warning in hostfw.apply(engine.layout.root):
                ctx.log(f"node level: {warning}")
        if level == "host":
            return f"{path.name} saved and applied to what the node's containers send to the host"
        applied = 0
        for one in [ctid] if ctid is not None else engine.ids():
            try:
                if engine.status(one, stats=False).status != "running":
                    continue
                for warning in policy_for(engine.layout.root, one).warnings:
                    ctx.log(f"CT {one}: {warning}")
                reload_firewall(engine.layout.root, one, engine.config(one))
                applied += 1
            except NotFound:
                continue
        return f"{path.name} saved; applied to {applied} running container(s)"

    def after(self, ctx: JobContext) -> None:
        sync_firewall(this_node())


app.register_task(SetFirewall())
