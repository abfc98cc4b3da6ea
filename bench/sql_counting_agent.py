"""``python -m bench.sql_counting_agent``: the node agent (``tasks.agent``) with the SQL statements of each
task counted, for ``bench/cluster_idle.py``.

Every database connection the worker opens gets an execute wrapper that counts the statements Django sends;
after each task one line ``<task name> <statements>`` is appended to ``$CAISSON_SQL_COUNTS``. Nothing else
changes: the agent is the production one.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path


def install(out: Path) -> None:
    from celery.signals import task_postrun, task_prerun
    from django.db.backends.signals import connection_created

    count = [0]

    def counted(execute, sql, params, many, context):
        count[0] += 1
        return execute(sql, params, many, context)

    def wrap(sender, connection, **_) -> None:
        if counted not in connection.execute_wrappers:  # a reopened connection keeps its wrappers
            connection.execute_wrappers.append(counted)

    def reset(**_) -> None:
        count[0] = 0

    def write(task=None, **_) -> None:
        with open(out, "a") as f:
            f.write(f"{task.name} {count[0]}\n")

    connection_created.connect(wrap, weak=False)
    task_prerun.connect(reset, weak=False)
    task_postrun.connect(write, weak=False)


if __name__ == "__main__":
    install(Path(os.environ["CAISSON_SQL_COUNTS"]))
    from tasks.agent import main

    sys.exit(main(sys.argv[1:]))
