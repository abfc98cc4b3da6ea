"""Cluster membership from the command line (what Datacenter -> Cluster does in the API).

    manage.py node list                  # nodes, online or not, their load and containers
    manage.py node token --minutes 30    # a single-use join token (shown once), for scripts/run.sh join
    manage.py node remove NAME           # forget a node that is gone (refused while online or holding containers)

Every change goes through the same checks and rights (``Sys.Modify`` on ``/``) as the API, as ``--user``
(default ``$CAISSON_ADMIN_USER`` or ``admin``). Exit codes: 0 done, 2 bad input or refused, 3 no such node
or user, 4 permission denied.
"""

from __future__ import annotations

import json

from django.contrib.auth import get_user_model
from django.core.exceptions import PermissionDenied, ValidationError
from django.core.management.base import CommandError

from webui.access import Access
from webui.actions import cluster
from webui.management.admin_command import AdminCommand
from webui.management.commands.policy import table
from webui.models import Container, MetricSample, Node

BAD_INPUT, NOT_FOUND, DENIED = 2, 3, 4


def node_rows() -> list[dict]:
    rows = []
    for node in Node.objects.all():
        step = MetricSample.RESOLUTIONS["hour"][0]
        last = MetricSample.objects.filter(scope=f"node/{node.name}", step=step).order_by("-ts").first()
        rows.append(
            {
                "name": node.name,
                "online": node.online,
                "last_seen": node.last_seen,
                "cpu": round(last.cpu, 2) if last else None,
                "memory_used": last.memory if last else None,
                "memory_total": node.memory_total,
                "containers": Container.objects.filter(node=node).count(),
            }
        )
    return rows


class Command(AdminCommand):
    help = "Cluster nodes: list them, make a join token, remove a node that is gone."

    def add_arguments(self, parser):
        super().add_arguments(parser)
        parser.add_argument("--minutes", type=int, default=60, help="token: how long it stays valid (default: 60)")
        parser.add_argument("verb", choices=["list", "token", "remove"], help="what to do (see above)")
        parser.add_argument("name", nargs="?", help="remove: the node's name")

    def emit(self, data) -> None:
        self.stdout.write(json.dumps(data, indent=2, sort_keys=True, default=str) + "\n")

    def handle(self, *args, **options):
        user = get_user_model().objects.filter(username=options["user"], is_active=True).first()
        if user is None:
            raise CommandError(f"no active user '{options['user']}' (see --user)", returncode=NOT_FOUND)
        access, as_json, verb = Access(user), options["output"] == "json", options["verb"]
        try:
            if verb == "list":
                rows = node_rows()
                if as_json:
                    return self.emit(rows)
                headers = ["name", "online", "cpu", "memory_used", "memory_total", "containers"]
                return table(headers, [[r[h] if r[h] is not None else "-" for h in headers] for r in rows], self.stdout)
            if verb == "token":
                row, token = cluster.make_join_token(access, options["minutes"])
                if as_json:
                    return self.emit({"token": token, "expires": row.expires})
                self.stdout.write(f"{token}\n")
                self.stderr.write(f"single use, valid until {row.expires:%Y-%m-%d %H:%M:%S} UTC; shown only now\n")
                return
            if not options["name"]:
                raise CommandError("remove needs the node's name", returncode=BAD_INPUT)
            node = Node.objects.filter(name=options["name"]).first()
            if node is None:
                raise CommandError(f"no node '{options['name']}'", returncode=NOT_FOUND)
            cluster.remove_node(access, node)
            self.stdout.write(f"node '{options['name']}' removed\n")
        except ValidationError as exc:
            detail = exc.message_dict if hasattr(exc, "error_dict") else {"error": exc.messages}
            raise CommandError(
                "; ".join(f"{k}: {' '.join(map(str, v))}" for k, v in detail.items()), returncode=BAD_INPUT
            ) from None
        except PermissionDenied as exc:
            raise CommandError(f"permission denied: {exc}", returncode=DENIED) from None
