"""pct's machine verbs on real containers: suspend/resume, push/pull (and their symlink refusals), template,
pending, cpusets, console attach (engine.suspend, engine.files, engine.base_template, engine.console)."""

from __future__ import annotations

import io
import os
import pty
import select
import subprocess
import sys
import time
from pathlib import Path

import pytest

from engine.errors import InvalidState, ValidationError

REPO = Path(__file__).resolve().parents[2]


def cli_env(engine) -> dict:
    return {
        **os.environ,
        "CAISSON_ROOT": str(engine.layout.root),
        "CAISSON_RUN": str(engine.layout.run),
        "CAISSON_CGROUP_PARENT": engine.cgroups.parent,
        "TERM": "xterm",
    }


def cli(engine, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "engine", *args], capture_output=True, text=True, cwd=REPO, env=cli_env(engine)
    )


def sh(engine, ctid, script):
    code, out, err = engine.exec_output(ctid, ["/bin/sh", "-c", script])
    assert code == 0, err.decode()
    return out.decode()


@pytest.fixture
def running(engine, busybox_template, ctid_factory):
    ctid = ctid_factory()
    engine.create(ctid, busybox_template, {"hostname": "files", "memory": "128"})
    engine.start(ctid)
    yield ctid
    if engine.exists(ctid):
        engine.destroy(ctid, force=True)


# ---- suspend / resume ----------------------------------------------------------------------------
def test_suspend_freezes_every_process_and_resume_thaws(engine, running):
    sh(engine, running, "(while true; do date +%s%N > /tmp/tick; sleep 0.05; done) >/dev/null 2>&1 &")
    engine.suspend(running)
    status = engine.status(running)
    assert status.status == "running" and status.paused
    record = engine.node.running(running)
    tick = Path(f"/proc/{record.pid}/root/tmp/tick")
    frozen_at = tick.read_text()
    time.sleep(0.5)
    assert tick.read_text() == frozen_at  # nothing ran while frozen
    with pytest.raises(InvalidState, match="already suspended"):
        engine.suspend(running)
    with pytest.raises(InvalidState, match="suspended: resume it"):
        engine.exec_output(running, ["true"])
    with pytest.raises(InvalidState, match="suspended: resume it"):
        engine.shutdown(running, timeout=1)
    out = cli(engine, "list").stdout
    assert any(line.split()[:2] == [str(running), "paused"] for line in out.splitlines())
    engine.resume(running)
    assert not engine.status(running).paused
    deadline = time.monotonic() + 10
    while tick.read_text() == frozen_at and time.monotonic() < deadline:
        time.sleep(0.05)
    assert tick.read_text() != frozen_at
    with pytest.raises(InvalidState, match="not suspended"):
        engine.resume(running)


def test_a_suspended_container_stays_frozen_across_a_snapshot_and_stops_hard(engine, running):
    engine.suspend(running)
    engine.snapshot(running, "frozen")
    assert engine.status(running).paused  # the snapshot's freeze did not thaw it
    engine.stop(running)
    assert engine.status(running).status == "stopped"
    with pytest.raises(InvalidState, match="not running"):
        engine.suspend(running)


# ---- push / pull ---------------------------------------------------------------------------------
def test_push_and_pull_keep_owner_and_mode_through_the_id_map(engine, running):
    sh(engine, running, "echo 'web:x:1000:1001::/home:/bin/sh' >> /etc/passwd; echo 'webgrp:x:1001:' >> /etc/group")
    info = engine.push(running, io.BytesIO(b"hello\n"), "/tmp/hello.txt", "web", "webgrp", "640")
    assert (info.uid, info.gid, info.mode, info.user, info.group) == (1000, 1001, "0640", "web", "webgrp")
    host = Path(f"/proc/{engine.node.running(running).pid}/root/tmp/hello.txt")
    st = host.stat()
    idmap = engine.node.idmap_of(engine.config(running))
    assert (st.st_uid, st.st_gid, st.st_mode & 0o7777) == (idmap.host_uid(1000), idmap.host_gid(1001), 0o640)
    assert sh(engine, running, "ls -ln /tmp/hello.txt").split()[2:4] == ["1000", "1001"]
    # an existing file keeps its owner and mode when none is given; its content is replaced whole
    engine.push(running, io.BytesIO(b"again\n"), "/tmp/hello.txt")
    st = host.stat()
    assert (st.st_uid, st.st_mode & 0o7777) == (idmap.host_uid(1000), 0o640) and host.read_bytes() == b"again\n"
    sink = io.BytesIO()
    pulled = engine.pull(running, "/tmp/hello.txt", sink)
    assert sink.getvalue() == b"again\n" and pulled.user == "web" and pulled.mode == "0640"
    # a new file without options: root's, 0644 (pct push under umask 022)
    fresh = engine.push(running, io.BytesIO(b"x" * 200_000), "/root/big")
    assert (fresh.uid, fresh.mode, fresh.size) == (0, "0644", 200_000)
    with pytest.raises(ValidationError, match="no user 'ghost'"):
        engine.push(running, io.BytesIO(b""), "/tmp/x", user="ghost")
    with pytest.raises(ValidationError, match="not mapped"):
        engine.push(running, io.BytesIO(b""), "/tmp/x", user=70000)
    assert "x" not in sh(engine, running, "ls /tmp").split()  # a refused push leaves nothing
    with pytest.raises(ValidationError, match="invalid mode"):
        engine.push(running, io.BytesIO(b""), "/tmp/x", perms="rwx")


def test_push_and_pull_refuse_a_path_that_climbs_out_through_a_symlink(engine, running, tmp_path):
    sh(
        engine,
        running,
        "ln -s / /tmp/abs; ln -s ../../../../../../../ /tmp/up; ln -s /etc/hostname /tmp/final; mkdir /tmp/d",
    )
    host_passwd = Path("/etc/passwd").read_bytes()
    for path in ("/tmp/abs/etc/passwd", "/tmp/up/etc/passwd", "/tmp/d/../../../../etc/passwd"):
        with pytest.raises(ValidationError, match="leaves the container's root"):
            engine.push(running, io.BytesIO(b"owned\n"), path)
        with pytest.raises(ValidationError, match="leaves the container's root"):
            engine.pull(running, path, io.BytesIO())
    with pytest.raises(ValidationError, match="symlink"):
        engine.push(running, io.BytesIO(b"owned\n"), "/tmp/final")
    with pytest.raises(ValidationError, match="symlink"):
        engine.pull(running, "/tmp/final", io.BytesIO())
    with pytest.raises(ValidationError, match="magic link|leaves|symlink"):
        engine.pull(running, "/proc/1/root/etc/passwd", io.BytesIO())
    with pytest.raises(ValidationError, match="not a regular file"):
        engine.pull(running, "/dev/zero", io.BytesIO())
    assert Path("/etc/passwd").read_bytes() == host_passwd
    assert sh(engine, running, "cat /etc/hostname").strip() == "files"


def test_push_pull_cli_and_a_stopped_container(engine, running, tmp_path):
    src = tmp_path / "in.txt"
    src.write_text("from the host\n")
    done = cli(engine, "-o", "json", "push", str(running), str(src), "/etc/motd", "--perms", "0600")
    assert done.returncode == 0, done.stderr
    assert '"mode": "0600"' in done.stdout
    dest = tmp_path / "out.txt"
    done = cli(engine, "pull", str(running), "/etc/motd", str(dest), "--user", "nobody", "--perms", "0604")
    assert done.returncode == 0, done.stderr
    assert dest.read_text() == "from the host\n"
    assert dest.stat().st_mode & 0o777 == 0o604 and dest.stat().st_uid == 65534
    done = cli(engine, "push", str(running), str(src), "tmp/rel")
    assert done.returncode == 2 and "absolute path" in done.stderr
    engine.stop(running)
    done = cli(engine, "push", str(running), str(src), "/x")
    assert done.returncode == 5 and "not running" in done.stderr


# ---- template ------------------------------------------------------------------------------------
def test_template_is_a_read_only_base_that_clones_but_never_starts(engine, busybox_template, ctid_factory):
    ctid, clone = ctid_factory(), ctid_factory()
    engine.create(ctid, busybox_template, {"hostname": "base"})
    engine.start(ctid)
    with pytest.raises(InvalidState, match="running"):
        engine.template(ctid)
    engine.stop(ctid)
    engine.snapshot(ctid, "s1")
    with pytest.raises(InvalidState, match="snapshots"):
        engine.template(ctid)
    engine.delete_snapshot(ctid, "s1")
    engine.template(ctid)
    assert "template: 1" in engine.layout.config_path(ctid).read_text()
    for refused in (
        lambda: engine.start(ctid),
        lambda: engine.snapshot(ctid, "s2"),
        lambda: engine.set(ctid, {"mp0": "local:0,mp=/data"}),
        lambda: engine.template(ctid),
    ):
        with pytest.raises(InvalidState, match="template"):
            refused()
    with pytest.raises(ValidationError, match="managed by the engine"):
        engine.set(ctid, {}, ["template"])
    engine.set(ctid, {"memory": "256"})  # other settings still change (they pass to clones)
    engine.clone(ctid, clone, hostname="fromtemplate")
    assert "template:" not in engine.layout.config_path(clone).read_text()
    assert engine.start(clone).status == "running"
    engine.destroy(clone, force=True)
    engine.destroy(ctid)


# ---- pending, cpusets ----------------------------------------------------------------------------
def test_pending_shows_a_proxmox_pending_section(engine, busybox_template, ctid_factory):
    from engine.reports import pending, pending_lines

    ctid = ctid_factory()
    engine.create(ctid, busybox_template, {"hostname": "p", "memory": "256"})
    path = engine.layout.config_path(ctid)
    path.write_text(path.read_text() + "\n[pve:pending]\ncores: 2\ndelete: swap,!onboot\nmemory: 512\n")
    rows = {r["key"]: r for r in pending(engine.config(ctid))}
    assert rows["memory"] == {"key": "memory", "value": "256", "pending": "512"}
    assert rows["cores"] == {"key": "cores", "pending": "2"}
    assert rows["swap"]["delete"] == 1 and rows["onboot"]["delete"] == 2
    lines = pending_lines(list(rows.values()))
    assert "cur memory: 256" in lines and "new memory: 512" in lines and "new cores: 2" in lines


def test_cpusets_lists_each_running_container(engine, running):
    from engine.reports import cpusets, parse_cpus

    found = cpusets(engine)
    allowed = sorted(os.sched_getaffinity(0))
    assert running in found and set(found[running]) <= set(range(os.cpu_count()))
    assert found[running] and set(found[running]) & set(allowed)
    assert parse_cpus("0-2,5") == [0, 1, 2, 5]


# ---- console -------------------------------------------------------------------------------------
def _pty_run(engine, *args: str) -> tuple[int, int]:
    pid, fd = pty.fork()
    if pid == 0:
        os.chdir(REPO)
        os.execve(sys.executable, [sys.executable, "-m", "engine", *args], cli_env(engine))
    return pid, fd


def _read_until(fd: int, needle: bytes, timeout: float = 20.0) -> bytes:
    seen = b""
    deadline = time.monotonic() + timeout
    while needle not in seen:
        left = deadline - time.monotonic()
        assert left > 0, f"{needle!r} not seen in {seen[-500:]!r}"
        ready, _, _ = select.select([fd], [], [], left)
        if ready:
            try:
                chunk = os.read(fd, 65536)
            except OSError:
                break
            if not chunk:
                break
            seen += chunk
    assert needle in seen, f"{needle!r} not seen in {seen[-500:]!r}"
    return seen


def test_console_attach_follows_what_init_prints_and_detaches(engine, busybox_template, ctid_factory):
    ctid = ctid_factory()
    engine.create(ctid, busybox_template, {"hostname": "con", "cmode": "console"})
    rootfs = engine._rootfs(engine.config(ctid))
    with open(rootfs / "etc" / "inittab", "a") as inittab:
        inittab.write(
            "::once:/bin/sh -c 'echo INIT-SAYS-HELLO; n=0; while true; do n=$((n+1)); echo tick-$n; sleep 0.3; done'\n"
        )
    engine.start(ctid)
    pid, fd = _pty_run(engine, "console", str(ctid))
    try:
        _read_until(fd, b"INIT-SAYS-HELLO")
        _read_until(fd, b"tick-5")  # followed live
        os.write(fd, b"\x01q")
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0
    finally:
        os.close(fd)
    engine.destroy(ctid, force=True)


def test_console_tty_mode_logs_in_on_the_container_getty(engine, busybox_template, ctid_factory):
    from engine.credentials import set_credentials

    ctid = ctid_factory()
    engine.create(ctid, busybox_template, {"hostname": "ttyhost"})  # no cmode: tty, Proxmox's default
    set_credentials(engine, ctid, "tty-pass-123", None)
    engine.start(ctid)
    pid, fd = _pty_run(engine, "console", str(ctid))
    try:
        _read_until(fd, b"login:")
        os.write(fd, b"root\r")
        _read_until(fd, b"assword:")
        os.write(fd, b"tty-pass-123\r")
        _read_until(fd, b"ttyhost:")
        os.write(fd, b"echo LOGGED-$((6*7))\r")
        _read_until(fd, b"LOGGED-42")
        os.write(fd, b"\x01\x01\x01q")  # escape twice sends one Ctrl-a to the shell; then detach
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0
    finally:
        os.close(fd)
    engine.destroy(ctid, force=True)


def test_dev_console_and_ttys_are_ptys_held_from_the_start(engine, busybox_template, ctid_factory):
    """tty: 2 and console: 1 (the defaults): /dev/console, /dev/tty1 and /dev/tty2 are devpts ptys bound
    inside; what is written to /dev/console reaches the console log; an attach reaches the getty that runs
    on tty1 since boot, and a later attach finds the session left there."""
    from engine import ttys
    from engine.credentials import set_credentials

    ctid = ctid_factory()
    engine.create(ctid, busybox_template, {"hostname": "heldtty"})
    set_credentials(engine, ctid, "held-pass-123", None)
    rootfs = engine._rootfs(engine.config(ctid))
    with open(rootfs / "etc" / "inittab", "a") as inittab:
        inittab.write("tty1::respawn:/sbin/getty 38400 tty1\n::once:/bin/sh -c 'echo TO-DEV-CONSOLE > /dev/console'\n")
    engine.start(ctid)
    listing = sh(engine, ctid, "ls -l /dev/console /dev/tty1 /dev/tty2; ls /dev/tty3 2>&1 || true")
    for name in ("console", "tty1", "tty2"):
        line = next(x for x in listing.splitlines() if x.endswith(f"/dev/{name}"))
        assert line.startswith("c") and " 136, " in line, listing
    assert "No such file" in listing  # tty: 2 gives two
    deadline = time.monotonic() + 20  # the node's holder may still be starting (the first start does not wait)
    while ttys.held(engine.layout.run, ctid) != ["console", "tty1", "tty2"]:
        assert time.monotonic() < deadline, ttys.held(engine.layout.run, ctid)
        time.sleep(0.05)
    deadline = time.monotonic() + 10
    while b"TO-DEV-CONSOLE" not in engine.console_log(ctid):
        assert time.monotonic() < deadline, engine.console_log(ctid)
        time.sleep(0.1)

    pid, fd = _pty_run(engine, "console", str(ctid))
    try:
        _read_until(fd, b"login:")
        os.write(fd, b"root\r")
        _read_until(fd, b"assword:")
        os.write(fd, b"held-pass-123\r")
        _read_until(fd, b"heldtty:")
        os.write(fd, b"tty; echo ON-$((40+2))\r")
        seen = _read_until(fd, b"ON-42")
        assert b"/dev/tty1" in seen
        with pytest.raises(InvalidState, match="attached elsewhere"):
            ttys.attach(engine.layout.run, ctid, "tty1")
        os.write(fd, b"\x01q")
        assert os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) == 0
    finally:
        os.close(fd)
    pid, fd = _pty_run(engine, "console", str(ctid))  # the shell left on tty1 is still there
    try:
        os.write(fd, b"echo AGAIN-$((1+1))\r")
        _read_until(fd, b"AGAIN-2")
        os.write(fd, b"exit\r\x01q")
        os.waitpid(pid, 0)
    finally:
        os.close(fd)
    engine.destroy(ctid, force=True)
    assert ttys.held(engine.layout.run, ctid) == []


def test_restore_is_a_verb_of_the_engine_cli(engine, busybox_template, ctid_factory, tmp_path):
    from engine.backup.dump import backup

    ctid, newid = ctid_factory(), ctid_factory()
    engine.create(ctid, busybox_template, {"hostname": "orig", "memory": "128"})
    (engine._rootfs(engine.config(ctid)) / "marker").write_text("kept\n")
    archive = backup(engine, ctid, dumpdir=tmp_path, mode="stop").archive
    done = cli(engine, "-o", "json", "restore", str(newid), str(archive), "--hostname", "copy", "--memory", "256")
    assert done.returncode == 0, done.stderr
    config = engine.config(newid)
    assert (config.hostname, config.current.values["memory"]) == ("copy", "256")
    assert (engine._rootfs(config) / "marker").read_text() == "kept\n"
    again = cli(engine, "restore", str(newid), str(archive))
    assert again.returncode == 4 and "exists" in again.stderr
    engine.destroy(newid)
    engine.destroy(ctid)
