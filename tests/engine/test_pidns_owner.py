"""The container's user namespace owns its pid namespace, as in LXC: what its root may do with it.

reboot(2) inside ends init: the kernel kills the namespace's init with SIGHUP for a restart and SIGINT for a
power-off; the reaping engine notes that status and the node agent's tick starts a rebooted container again,
whatever its restart policy, and leaves a powered-off one stopped.  A procfs of the namespace may be mounted
by its root only with nesting (its masks not locked): without, the kernel refuses it
(``test_locked_mounts.test_no_fresh_procfs_or_sysfs``).
"""

from __future__ import annotations

import os
import signal
import time

import pytest

from engine.oci.restart import due, exit_status


def _until_stopped(engine, ctid, rounds: int = 400) -> None:
    for _ in range(rounds):  # a bound, not a timing assert: busybox's forced reboot is at once
        if engine.status(ctid).status == "stopped":
            return
        time.sleep(0.05)
    raise AssertionError(f"container {ctid} is still running")


@pytest.mark.parametrize(
    ("command", "sig", "restarted"), [("reboot", signal.SIGHUP, True), ("poweroff", signal.SIGINT, False)]
)
def test_reboot_inside_ends_init_and_a_restart_is_due(engine, busybox_template, ctid_factory, command, sig, restarted):
    ctid = ctid_factory()
    engine.create(ctid, busybox_template, {"hostname": f"rb{ctid}"})  # restart policy: none
    engine.start(ctid)
    # -f: busybox calls reboot(2) at once, without asking init (which would take its own time)
    engine.exec_output(ctid, ["/bin/sh", "-c", f"{command} -f"])
    _until_stopped(engine, ctid)
    status = exit_status(engine.layout, ctid)  # this engine is the reaper: it saw how init ended
    assert status is not None and os.WIFSIGNALED(status) and os.WTERMSIG(status) == sig, status
    wanted = due(engine.node)
    assert (ctid in wanted) is restarted
    if restarted:
        assert wanted[ctid] == "reboot inside"  # the start job's reason in the task log
        engine.start(ctid)  # what the agent's start job does
        assert engine.status(ctid).status == "running"
        engine.stop(ctid)


def test_with_nesting_root_mounts_a_procfs_of_its_own_pid_namespace(engine, busybox_template, ctid_factory):
    ctid = ctid_factory()
    engine.create(ctid, busybox_template, {"hostname": f"pn{ctid}", "features": "nesting=1"})
    engine.start(ctid)
    script = "mkdir -p /tmp/p && mount -t proc proc /tmp/p && tr '\\0' ' ' < /tmp/p/1/cmdline && ls /tmp/p"
    code, out, err = engine.exec_output(ctid, ["/bin/sh", "-c", script])
    assert code == 0, err.decode()
    words = out.decode().split()
    assert words[0] == "init"  # the container's init is PID 1 of the procfs it mounted
    assert len([w for w in words if w.isdigit()]) < 10, words  # and no host process is in it
    engine.stop(ctid)
