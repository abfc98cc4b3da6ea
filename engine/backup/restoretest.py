"""Proof that a backup restores: restore it as a throwaway container, boot it, check it, destroy it.

``verify`` only reads an archive; a restore test does what the day of need
does.  The archive is restored to a spare ID with ``isolate`` (no network
interfaces, no host bind mounts, no onboot or hook script: the copy cannot
answer on the original's addresses or write the host's data) and ``unique``
(fresh MACs), under the hostname ``restoretest-<ID>``, then started.  It
passes when

- init reached running: for systemd, ``systemctl is-system-running`` says
  ``running`` or ``degraded`` (it is polled while it says ``starting`` or
  ``initializing``); for the other inits, init is still alive after
  ``settle`` seconds and a shell inside runs;
- the optional command, run inside, exits 0;
- the optional TCP port is listening inside (read from the container's own
  ``/proc/<pid>/net/tcp``, ``tcp6``: the copy has no network to reach it by)
  or, with ``network="isolated"``, answers a connection from the host over a
  bridge the test makes for the copy alone and removes after
  (``engine.backup.testbridge``).

Whatever happens, the throwaway is stopped and destroyed.  The result says
pass or fail, the reason of a failure (naming the step), each step's
seconds and the log.
"""

from __future__ import annotations

import contextlib
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from engine.errors import EngineError, InitExited, NotFound

SYSTEMD_OK = ("running", "degraded")
SYSTEMD_WAIT = ("initializing", "starting", "")
NETWORKS = ("none", "isolated")
BOOT_ENDED = "init exited during boot (the container stopped)"


@dataclass(frozen=True)
class HealthCheck:
    command: tuple[str, ...] = ()  # run inside; must exit 0
    port: int | None = None  # a TCP port that must be listening inside
    boot_timeout: float = 60.0  # seconds for init (and the port) to come up
    settle: float = 1.0  # seconds a non-systemd init must stay alive
    network: str = "none"  # "none": no interface; "isolated": one on a bridge of its own, port checked over it

    def __post_init__(self):
        if self.network not in NETWORKS:
            raise ValueError(f"restore test network '{self.network}': one of {', '.join(NETWORKS)}")


@dataclass
class RestoreTestResult:
    archive: str
    ctid: int  # the throwaway's ID
    passed: bool = False
    reason: str = ""
    timings: dict[str, float] = field(default_factory=dict)
    log: list[str] = field(default_factory=list)

    def as_dict(self) -> dict:
        return asdict(self)


class _Failed(Exception):
    pass


def listening(pid: int, port: int) -> bool:
    """Whether a TCP socket listens on ``port`` in the network namespace of process ``pid``."""
    for name in ("tcp", "tcp6"):
        try:
            lines = Path(f"/proc/{pid}/net/{name}").read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if len(fields) > 3 and fields[3] == "0A" and int(fields[1].rsplit(":", 1)[1], 16) == port:
                return True
    return False


def _alive(engine, ctid: int) -> int:
    status = engine.status(ctid, stats=False)
    if status.status != "running" or not status.pid:
        raise _Failed(BOOT_ENDED)
    return status.pid


def _boot(engine, ctid: int, check: HealthCheck, note) -> None:
    deadline = time.monotonic() + check.boot_timeout
    status = engine.status(ctid, stats=False)
    if status.init == "systemd":
        state = ""
        while True:
            _alive(engine, ctid)
            code, out, _ = engine.exec_output(ctid, ["systemctl", "is-system-running"])
            state = out.decode(errors="replace").strip()
            if state in SYSTEMD_OK:
                note(f"systemd: {state}")
                return
            if state not in SYSTEMD_WAIT or time.monotonic() > deadline:
                raise _Failed(f"systemd did not reach running: '{state or code}'")
            time.sleep(0.2)
    time.sleep(check.settle)  # an init that cannot run its boot exits at once
    _alive(engine, ctid)
    code, _, err = engine.exec_output(ctid, ["/bin/sh", "-c", "exit 0"])
    if code != 0:
        raise _Failed(f"a shell inside does not run (exit {code}): {err.decode(errors='replace').strip()}")
    note(f"{status.init or 'init'}: running")


def _health(engine, ctid: int, check: HealthCheck, note, bridge=None) -> None:
    if check.command:
        code, out, err = engine.exec_output(ctid, list(check.command))
        text = (out + err).decode(errors="replace").strip()
        note(f"command {' '.join(check.command)}: exit {code}" + (f": {text[-500:]}" if text else ""))
        if code != 0:
            raise _Failed(f"the health command exited {code}" + (f": {text[-200:]}" if text else ""))
    if check.port is not None and bridge is not None:
        from engine.backup.testbridge import wait_reachable

        try:
            wait_reachable(bridge, check.port, time.monotonic() + check.boot_timeout, lambda: _alive(engine, ctid))
        except TimeoutError as exc:
            raise _Failed(str(exc)) from None
        note(f"TCP port {check.port}: answers at {bridge.guest} over {bridge.name}")
    elif check.port is not None:
        deadline = time.monotonic() + check.boot_timeout
        while not listening(_alive(engine, ctid), check.port):
            if time.monotonic() > deadline:
                raise _Failed(f"nothing listens on TCP port {check.port} inside")
            time.sleep(0.2)
        note(f"TCP port {check.port}: listening")


def restore_test(engine, archive: Path | str, scratch: int, check: HealthCheck, log=None) -> RestoreTestResult:
    """Restore ``archive`` as container ``scratch`` (a free ID), boot and check it, destroy it; never raises
    for the archive's or the container's faults (they are the result), only for a taken ``scratch``."""
    from engine.backup.restore import restore

    if engine.exists(scratch):
        raise EngineError(f"container {scratch} exists; a restore test needs a free ID")
    result = RestoreTestResult(str(archive), scratch)

    def note(text: str) -> None:
        result.log.append(text)
        if log is not None:
            log(text)

    step, began = "restore", time.monotonic()

    def timed(name: str) -> None:
        nonlocal step, began
        now = time.monotonic()
        result.timings[step] = round(now - began, 3)
        step, began = name, now

    stack = contextlib.ExitStack()
    bridge = None
    try:
        options = {"hostname": f"restoretest-{scratch}"}
        if check.network == "isolated":
            from engine.backup.testbridge import isolated_bridge

            bridge = stack.enter_context(isolated_bridge(scratch))
            stack.callback(note, f"bridge {bridge.name} removed")
            options["net0"] = bridge.net0()
            where = f"on bridge {bridge.name} alone, {bridge.guest}/30"
        else:
            where = "no network"
        note(f"restoring {os.path.basename(str(archive))} as CT {scratch} (isolated: {where})")
        restored = restore(engine, archive, scratch, options=options, unique=True, isolate=True)
        for text in restored.notes:
            note(text)
        timed("start")
        try:
            engine.start(scratch)
        except InitExited:
            timed("boot")  # init ran and ended by itself: its boot failed, whichever side of the start's end
            raise _Failed(BOOT_ENDED) from None
        timed("boot")
        _boot(engine, scratch, check, note)
        timed("health")
        _health(engine, scratch, check, note, bridge)
        timed("done")
        result.passed = True
        note("PASSED")
    except (_Failed, EngineError, OSError) as exc:
        failed = step
        timed("done")
        result.reason = f"{failed}: {exc}"
        note(f"FAILED at {result.reason}")
    finally:
        _destroy(engine, scratch, note)
        try:
            stack.close()
        except (EngineError, OSError) as exc:
            note(f"warning: the test bridge could not be removed: {exc}")
    return result


def _destroy(engine, ctid: int, note) -> None:
    try:
        if engine.exists(ctid):
            if engine.status(ctid, stats=False).status == "running":
                engine.stop(ctid)
            engine.destroy(ctid)
            note(f"CT {ctid} destroyed")
        else:
            engine.clear_interrupted_create(ctid)
    except NotFound:
        pass
    except EngineError as exc:
        note(f"warning: the throwaway CT {ctid} could not be destroyed: {exc}")
