"""Running an engine command that kills itself at a named step (``CAISSON_FAULT_AT``), and the checks after.

A case runs the real command (``python -m engine …``, ``python -m engine.backup …``)
against the storage lab's node in a child process, with the fault hook set:
the process dies by SIGKILL at that step, as under ``kill -9``, leaving what it
left.  Then recovery runs as the agent runs it, and :func:`assert_whole`
checks the node: the container whole and usable (running if it was), no lock
recovery could release, no temporary file, mount, cgroup or intent left.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def run_killed(lab, module: str, args: list, fault: str, timeout: float = 120.0) -> subprocess.CompletedProcess:
    """Run ``python -m <module> --root … --run-dir … ARGS`` with the fault hook; it must die by SIGKILL there."""
    engine = lab.engine
    env = {
        **os.environ,
        "CAISSON_FAULT_AT": fault,
        "CAISSON_CGROUP_PARENT": engine.cgroups.parent,
        "PYTHONPATH": str(ROOT),
    }
    proc = subprocess.run(
        [sys.executable, "-m", module, *_node_options(module, engine), *map(str, args)],
        env=env,
        capture_output=True,
        timeout=timeout,
        cwd=ROOT,
    )
    assert proc.returncode == -signal.SIGKILL, (
        f"{module} {args} was to die at {fault}; exit {proc.returncode}: {proc.stderr.decode(errors='replace')[-2000:]}"
    )
    wait_guards(lab)
    return proc


def _node_options(module: str, engine) -> list[str]:
    if module == "engine.builders":  # no node state: the destination is an argument
        return []
    return ["--root", str(engine.layout.root), "--run-dir", str(engine.layout.run)]


def wait_guards(lab, timeout: float = 60.0) -> None:
    """A backup's guard (its own session) reacts to the kill; let it finish before recovery looks."""
    root = str(lab.engine.layout.root)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        busy = False
        for pid in filter(str.isdigit, os.listdir("/proc")):
            try:
                cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            if b"engine.backup.guard" in cmdline and root.encode() in cmdline:
                busy = True
        if not busy:
            return
        time.sleep(0.05)
    raise AssertionError("a backup guard did not finish")


def temporary_files(lab) -> list[str]:
    """What jobs write under temporary names, anywhere in the lab's storages and state."""
    found = []
    for top in (lab.engine.layout.root, lab.base):
        for dirpath, dirnames, filenames in os.walk(top):
            if "/images/" in dirpath + "/" or dirpath.endswith("/images"):
                dirnames[:] = [d for d in dirnames if d.isdigit()]  # volumes' insides are the containers'
            for name in dirnames + filenames:
                if name.startswith((".tmp-", ".vzdump-", ".restore-", ".debian-build-")) or (
                    name.startswith(".") and name.endswith(".part")
                ):
                    found.append(os.path.join(dirpath, name))
    return found


def image_dirs(lab, ctid: int) -> list[Path]:
    """Where the lab's storages keep volumes of ``ctid``."""
    found = []
    for definition in lab.engine.storages.definitions().values():
        path = Path(definition.path) / "images" / str(ctid)
        if path.exists():
            found.append(path)
    return found


def assert_whole(lab, ctid: int, running: bool | None) -> None:
    """The container after recovery: unlocked, in the state it should be, usable; nothing left behind."""
    engine = lab.engine
    config = engine.config(ctid)
    assert "lock" not in config.current.values, f"container {ctid} still locked: {config.current.values['lock']}"
    status = engine.status(ctid, stats=False)
    if running is not None:
        assert (status.status == "running") == running, f"container {ctid} is {status.status}"
    assert not engine.cgroups.frozen(str(ctid))
    assert not (engine.layout.root / "intent" / f"{ctid}.json").exists()
    if status.status != "running":
        assert not engine.cgroups.exists(str(ctid)), f"container {ctid} is stopped but its cgroup is left"
        engine.start(ctid)
    code, out = lab.sh(ctid, "timeout 20 sh -c 'echo usable > /root/.probe && cat /root/.probe'")
    assert (code, out.strip()) == (0, "usable")
    if not running:
        engine.stop(ctid)
    assert temporary_files(lab) == []


def assert_gone(lab, ctid: int) -> None:
    """A container whose create, restore or clone was killed: nothing of it left."""
    assert not lab.engine.exists(ctid)
    assert image_dirs(lab, ctid) == []
    assert not lab.engine.cgroups.exists(str(ctid))
    assert temporary_files(lab) == []
