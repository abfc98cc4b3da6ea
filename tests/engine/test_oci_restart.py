"""Restart policies: which application containers the node agent starts again after their PID 1 ended."""

from __future__ import annotations

import os
import signal
import time

import pytest

from engine.oci.restart import due, exit_status
from tests.engine.oci_images import ImageBuilder, busybox_base


def _archive(tmp_path, script: str, name: str):
    image = ImageBuilder()
    image.add_layer(busybox_base())
    image.config = {"Entrypoint": ["/bin/sh", "-c", script], "Env": ["PATH=/bin"]}
    return image.write_archive(tmp_path / f"{name}_1.tar")


def _until_handled(pid: int, sig: int, rounds: int = 400) -> None:
    """Until PID 1 has its handler for ``sig``: before, the kernel drops that signal from the host (the start
    returns at the exec, ahead of the shell's ``trap``)."""
    for _ in range(rounds):
        with open(f"/proc/{pid}/status") as handle:
            caught = next(int(line.split()[1], 16) for line in handle if line.startswith("SigCgt:"))
        if caught & (1 << (sig - 1)):
            return
        time.sleep(0.01)
    raise AssertionError(f"PID 1 never caught signal {sig}")


def _until_stopped(engine, ctid, timeout=30.0):
    deadline = time.monotonic() + timeout
    while engine.status(ctid).status == "running":
        assert time.monotonic() < deadline, "the application did not end"
        time.sleep(0.05)


@pytest.mark.parametrize(
    ("policy", "code", "restarted"),
    [("on-failure", 3, True), ("on-failure", 0, False), ("always", 0, True), ("no", 3, False)],
)
def test_an_application_that_ends_by_itself_is_due_as_its_policy_says(
    engine, ctid_factory, tmp_path, policy, code, restarted
):
    ctid = ctid_factory()
    archive = _archive(tmp_path, f"echo ending with {code}; exit {code}", f"exit{code}")
    engine.create(ctid, archive, {"hostname": f"r{ctid}", "restart": policy, "memory": "64", "swap": "0"})
    engine.start(ctid)
    _until_stopped(engine, ctid)
    wanted = due(engine.node)
    assert (ctid in wanted) is restarted
    assert wanted.get(ctid, "restart policy") == "restart policy"
    status = exit_status(engine.layout, ctid)  # this engine is the reaper: it saw how PID 1 ended
    assert status is not None and os.waitstatus_to_exitcode(status) == code
    if restarted:
        engine.start(ctid)  # what the agent's job does
        assert exit_status(engine.layout, ctid) is None  # a new run


def test_a_stopped_container_is_not_restarted(engine, ctid_factory, tmp_path):
    ctid = ctid_factory()
    archive = _archive(tmp_path, "trap 'exit 5' TERM; while :; do sleep 1; done", "loop")
    engine.create(ctid, archive, {"hostname": f"r{ctid}", "restart": "always", "memory": "64", "swap": "0"})
    engine.start(ctid)
    _until_handled(engine.node.running(ctid).pid, signal.SIGTERM)
    engine.shutdown(ctid, timeout=30, force_stop=False)
    assert ctid not in due(engine.node)


def test_a_container_that_keeps_failing_is_restarted_less_and_less_often(engine, ctid_factory, tmp_path):
    ctid = ctid_factory()
    archive = _archive(tmp_path, "exit 1", "crash")
    engine.create(ctid, archive, {"hostname": f"r{ctid}", "restart": "always", "memory": "64", "swap": "0"})
    engine.start(ctid)
    _until_stopped(engine, ctid)
    now = time.time()
    assert ctid in due(engine.node, now)  # the first restart at once
    assert ctid not in due(engine.node, now + 1)  # the second waits BACKOFF seconds
    assert ctid in due(engine.node, now + 6)
    assert ctid not in due(engine.node, now + 6 + 9)  # the third waits twice as long
    assert ctid in due(engine.node, now + 6 + 11)
