"""Exited container inits are reaped at once by their subreaper, and nothing else of its children is."""

from __future__ import annotations

import os
import subprocess
import sys
import time

from engine import procfs
from tests.faults.kit import ROOT


def _state(pid: int) -> str | None:
    stat = procfs.proc_stat(pid)
    return stat.state if stat else None


def _until(condition, timeout: float = 30.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.02)
    return False


def test_exited_init_is_reaped_and_other_children_are_not(engine, busybox_template, ctid_factory):
    """The session's engine is a subreaper (``reaper=True``, as the agent's): an init started by another
    process comes to it when that process exits, and is reaped by the reaper thread when it dies."""
    ctid = ctid_factory()
    engine.create(ctid, busybox_template, {"memory": "64"})
    env = {**os.environ, "CAISSON_CGROUP_PARENT": engine.cgroups.parent, "PYTHONPATH": str(ROOT)}
    subprocess.run(
        [sys.executable, "-m", "engine", "--root", str(engine.layout.root), "--run-dir", str(engine.layout.run)]
        + ["start", str(ctid)],
        env=env,
        check=True,
        capture_output=True,
        cwd=ROOT,
    )
    record = engine.node.running(ctid)
    assert record is not None
    assert _until(lambda: procfs.proc_stat(record.pid) and _ppid(record.pid) == os.getpid())  # re-parented here
    other = subprocess.Popen(["true"])  # a child of ours that is no container init
    assert _until(lambda: _state(other.pid) == "Z")
    os.kill(record.pid, 9)  # init dies on its own: nobody of the engine waits for it
    assert _until(lambda: _state(record.pid) is None), f"init {record.pid} left as {_state(record.pid)}"
    assert _state(other.pid) == "Z"  # the reaper took only the init
    assert other.wait() == 0  # its exit status is still its parent's to collect
    from engine.recovery import recover

    assert [a.what for a in recover(engine, ctid)] == ["cleaned"]  # its cgroup and run record
    assert not engine.cgroups.exists(str(ctid))


def _ppid(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/stat", "rb") as handle:
            data = handle.read()
    except OSError:
        return None
    return int(data[data.rfind(b")") + 2 :].split()[1])
