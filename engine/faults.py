"""A test hook: the process kills itself with SIGKILL at a named step, to test recovery from a crash.

``CAISSON_FAULT_AT=<step>`` in a process's environment (e.g. ``snapshot:volumes``,
``backup:first-pass``, ``create:unpack``) makes the first :func:`point` of that
name send SIGKILL to the process, or, with ``CAISSON_FAULT_GROUP=1``, to its
whole process group (a node agent and its pool workers at once, as an
operator's ``kill -9`` of the service would).  The variable is read only from
the environment of the process itself: nothing a job, an API call or a config
carries reaches it, so a web user cannot set it; only whoever starts the
agent or the command can.  The steps are listed in ``docs/architecture.md``
(Recovery) and exercised by ``tests/faults/``.

``CAISSON_FAULT_HOLD=<step>`` with ``CAISSON_FAULT_HOLD_FILE=<path>`` instead
makes the process wait at that step: it creates the file and goes on once
someone removes it, so a test restarts a service (PostgreSQL, Redis) while a
job is surely in the middle of its run.
"""

from __future__ import annotations

import os
import signal
import time

ENV = "CAISSON_FAULT_AT"


def point(name: str) -> None:
    """Die here, at once and without cleanup, if the test hook names this step (or wait, with the hold hook)."""
    if os.environ.get("CAISSON_FAULT_HOLD") == name and (hold := os.environ.get("CAISSON_FAULT_HOLD_FILE")):
        with open(hold, "w") as mark:
            mark.write(str(os.getpid()))
        while os.path.exists(hold):
            time.sleep(0.05)
    if os.environ.get(ENV) != name:
        return
    if os.environ.get("CAISSON_FAULT_GROUP") == "1":
        os.killpg(0, signal.SIGKILL)
    os.kill(os.getpid(), signal.SIGKILL)
