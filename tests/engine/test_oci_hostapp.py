"""A host program run isolated in an application container built from the host's own /usr."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from engine.errors import ValidationError
from engine.oci.hostapp import create_host_app

REPO = Path(__file__).resolve().parents[2]
SCRIPT = (
    "echo pid=$$ host=$(hostname) uid=$(id -u); "
    "touch /usr/caisson-hostapp-probe 2>/dev/null && echo usr-writable || echo usr-read-only; "
    "echo private > /tmp/mine && echo tmp-ok; "
    "ls /proc | grep -c '^[0-9]' | sed 's/^/processes=/'; "
    "trap 'echo bye; exit 0' TERM; while :; do sleep 1; done"
)


def _wait_for(engine, ctid, text, timeout=30.0) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        log = engine.console_log(ctid).decode(errors="replace")
        if text in log:
            return log
        time.sleep(0.1)
    raise AssertionError(f"{text!r} not in {engine.console_log(ctid)!r}")


def test_a_host_program_runs_isolated_with_a_read_only_usr(engine, ctid_factory):
    ctid = ctid_factory()
    create_host_app(engine, ctid, ["/bin/sh", "-c", SCRIPT], {"memory": "128", "swap": "0"})
    config = engine.config(ctid)
    assert config.current.values["mp0"] == "/usr,mp=/usr,ro=1"
    rootfs = engine._rootfs(config)
    assert os.readlink(rootfs / "bin") == "usr/bin" and not any((rootfs / "usr").iterdir())
    engine.start(ctid)
    log = _wait_for(engine, ctid, "processes=")
    assert f"pid=1 host=app{ctid} uid=0" in log  # its own pid and uts namespaces, root inside
    assert "usr-read-only" in log and "tmp-ok" in log
    assert not os.path.exists("/usr/caisson-hostapp-probe")
    processes = int(log.split("processes=")[1].split()[0])
    assert processes <= 4  # sh, and the pipeline's ls, grep and sed: nothing of the host
    assert (rootfs / "tmp/mine").read_text() == "private\n"  # its writable layer, not the host's /tmp
    assert not os.path.exists("/tmp/mine") or open("/tmp/mine").read() != "private\n"
    engine.shutdown(ctid, timeout=30, force_stop=False)
    assert "bye" in engine.console_log(ctid).decode()


def test_only_programs_of_the_hosts_usr_are_taken(engine, ctid_factory, tmp_path):
    program = tmp_path / "prog"
    program.write_text("#!/bin/sh\n")
    program.chmod(0o755)
    for argv in ([str(program)], ["no-such-program-here"], []):
        ctid = ctid_factory()
        with pytest.raises(ValidationError):
            create_host_app(engine, ctid, argv)
        assert not engine.exists(ctid)


def test_the_cli_creates_and_starts_a_host_app(engine, ctid_factory):
    ctid = ctid_factory()
    env = {
        **os.environ,
        "CAISSON_ROOT": str(engine.layout.root),
        "CAISSON_RUN": str(engine.layout.run),
        "CAISSON_CGROUP_PARENT": engine.cgroups.parent,
    }
    argv = [sys.executable, "-m", "engine", "-o", "json", "create-host-app", str(ctid), "--start", "--memory", "64"]
    # The program stays a while after printing: what a PID 1 writes as it exits at once can be lost (see the notes
    # of engine.consolelog: the log lives in init's memfd until the start drains it).
    program = ["/bin/sh", "-c", "/usr/bin/env; sleep 30"]
    done = subprocess.run([*argv, "--", *program], cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["ctid"] == ctid
    log = _wait_for(engine, ctid, "container=lxc")  # env's output: the container's environment, not the host's
    assert "PATH=/usr/local/sbin" in log and "DATABASE_URL" not in log
