"""``python -m tasks.leave``: this node leaves the cluster, once ``scripts/run.sh leave`` stopped its daemons.

The node is marked offline at once and the jobs left queued on it end as failed; it is removed from
the console (its row, mirrors, job history and periodic tick) when it holds no containers. Otherwise it
stays, offline, with its containers listed, since their disks are still here: move or destroy them and
leave again. Exit codes: 0 removed, 6 left but kept (containers), 3 no such node.
"""

from __future__ import annotations

import argparse
import sys


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tasks.leave", description=__doc__.split("\n\n")[0])
    parser.add_argument("--name", help="the node (default: this node, CAISSON_NODE)")
    args = parser.parse_args(argv)
    import django

    django.setup()
    from django.conf import settings
    from django.utils import timezone

    from webui.models import Job, Node
    from webui.models.cluster import NodeBusy, forget_node

    name = args.name or settings.CAISSON_NODE
    node = Node.objects.filter(name=name).first()
    if node is None:
        print(f"leave: no node '{name}' in the cluster's database", file=sys.stderr)
        return 3
    Node.objects.filter(pk=node.pk).update(last_seen=None)
    # Its agent is stopped (run.sh leave stops it first): a job still queued or marked running here would
    # never run or end; it ends now, saying why, as the agent's recovery would at its next start.
    closed = Job.objects.filter(node=node, status__in=Job.ACTIVE).update(
        status=Job.Status.ERROR, message="the node left the cluster before this job ended", ended=timezone.now()
    )
    if closed:
        print(f"leave: {closed} job(s) of node '{name}' ended unrun", file=sys.stderr)
    try:
        forget_node(node)
    except NodeBusy as exc:
        print(f"leave: node '{name}' is offline but kept: {exc}", file=sys.stderr)
        return 6
    print(f"leave: node '{name}' removed from the cluster")
    return 0


if __name__ == "__main__":
    sys.exit(main())
