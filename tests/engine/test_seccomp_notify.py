"""features: mknod=1 and mount=: calls answered by the container's seccomp supervisor (real kernel)."""

from __future__ import annotations

import os
import signal
import stat
from pathlib import Path

import pytest

from engine import notify

ACTIONS = Path("/proc/sys/kernel/seccomp/actions_avail")
pytestmark = pytest.mark.skipif(
    not ACTIONS.exists() or "user_notif" not in ACTIONS.read_text().split(),
    reason="the kernel has no SECCOMP_RET_USER_NOTIF (Linux 5.0+, actions_avail lacks user_notif)",
)


def _make(engine, template, ctid_factory, **options) -> int:
    ctid = ctid_factory()
    engine.create(ctid, template, {"hostname": f"n{ctid}", **options})
    return ctid


def _rootfs(engine, ctid) -> Path:
    _, driver, vol = engine.node.rootfs_volume(engine.config(ctid))
    return driver.rootfs(vol)


def _sh(engine, ctid, script: str) -> tuple[int, str]:
    code, out, err = engine.exec_output(ctid, ["sh", "-c", script])
    return code, (out + err).decode()


def _ok(engine, ctid, script: str) -> str:
    code, text = _sh(engine, ctid, script)
    assert code == 0, (script, text)
    return text


def _supervisor_pids(engine, ctid) -> list[int]:
    """The supervisor of this container (started by this test's engine), found by its socket argument."""
    path = str(notify.socket_path(engine.node.layout.run, ctid)).encode()
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                argv = Path(f"/proc/{entry}/cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            if b"engine.notify_supervisor" in argv and path in argv:
                found.append(int(entry))
    return found


def _wait_a_little() -> None:
    import time

    time.sleep(0.05)


@pytest.fixture
def mknod_ct(engine, busybox_template, ctid_factory):
    ctid = _make(engine, busybox_template, ctid_factory, features="mknod=1")
    local = _rootfs(engine, ctid) / "etc/rc.local"  # run by rcS, a child of init
    local.write_text("#!/bin/sh\nmknod /root/from-init c 1 5 2>/root/from-init.err\n")
    local.chmod(0o755)
    engine.start(ctid)
    yield ctid


def test_mknod_makes_the_safe_nodes_owned_by_the_caller(engine, mknod_ct):
    ctid = mknod_ct
    out = _ok(engine, ctid, "mknod /tmp/null c 1 3 && mknod -m 600 /tmp/urandom c 1 9 && ls -ln /tmp/null /tmp/urandom")
    null, urandom = (next(x for x in out.splitlines() if x.endswith(name)) for name in ("/null", "/urandom"))
    assert null.startswith("crw") and " 0 " in null and "1,   3" in null, out
    assert urandom.startswith("crw-------") and "1,   9" in urandom, out
    host = _rootfs(engine, ctid) / "tmp/null"
    info = host.lstat()
    assert stat.S_ISCHR(info.st_mode) and os.major(info.st_rdev) == 1 and os.minor(info.st_rdev) == 3
    idmap = engine.node.idmap_of(engine.config(ctid))
    assert info.st_uid == idmap.host_uid(0)  # container root's, not the host's root
    # a whiteout (0:0), as overlayfs makes them
    _ok(engine, ctid, "mknod /tmp/wh c 0 0")


def test_mknod_refuses_other_devices(engine, mknod_ct):
    ctid = mknod_ct
    for script in ("mknod /tmp/mem c 1 1", "mknod /tmp/kmsg c 1 11", "mknod /tmp/sda b 8 0", "mknod /tmp/tty1 c 4 1"):
        code, text = _sh(engine, ctid, script)
        assert code != 0 and "Operation not permitted" in text, (script, text)
    assert not (_rootfs(engine, ctid) / "tmp/mem").exists()
    _ok(engine, ctid, "mknod /tmp/fifo p && test -p /tmp/fifo")  # a fifo is never asked about


def test_a_terminal_in_the_container_is_answered_too(engine, mknod_ct):
    """A pty session (``enter``, the web console) hands its listener over after the pty."""
    pid, master = engine.open_terminal(mknod_ct, ["sh", "-c", "mknod /tmp/from-pty c 1 8; echo made-$?"])
    output = b""
    try:
        while True:  # until the command ends (EIO once its side of the pty is closed)
            try:
                chunk = os.read(master, 4096)
            except OSError:
                break
            if not chunk:
                break
            output += chunk
    finally:
        os.close(master)
        os.waitpid(pid, 0)
    assert b"made-0" in output, output
    assert stat.S_ISCHR((_rootfs(engine, mknod_ct) / "tmp/from-pty").lstat().st_mode)


def test_mknod_needs_cap_mknod_in_the_container(engine, mknod_ct):
    code, text = _sh(engine, mknod_ct, "su -s /bin/sh -c 'mknod /tmp/by-nobody c 1 3' nobody")
    assert code != 0 and "Operation not permitted" in text, text
    assert not (_rootfs(engine, mknod_ct) / "tmp/by-nobody").exists()


def test_mknod_resolves_inside_the_container_root(engine, mknod_ct):
    ctid = mknod_ct
    root = _rootfs(engine, ctid)
    marker = f"caisson-notify-{os.getpid()}-{ctid}"
    _ok(engine, ctid, f"ln -s /etc /tmp/etc-link && mknod /tmp/etc-link/{marker} c 1 3")
    assert (root / "etc" / marker).exists() and not Path("/etc", marker).exists()
    _ok(engine, ctid, f"cd /tmp && mknod ../../../../../../{marker} c 1 5")
    assert (root / marker).exists() and not Path("/", marker).exists()
    code, text = _sh(engine, ctid, f"ln -s /proc/self/root /tmp/magic && mknod /tmp/magic/{marker}.2 c 1 3")
    assert code != 0, text  # a magic link is never followed
    code, text = _sh(engine, ctid, "mknod /tmp/null2 c 1 3 && mknod /tmp/null2 c 1 3")
    assert code != 0 and "exists" in text, text


def test_init_and_its_children_are_answered_too(engine, mknod_ct):
    root = _rootfs(engine, mknod_ct)
    err = root / "root/from-init.err"  # made by the shell before mknod runs: done when it has text
    for _ in range(200):  # rcS runs as the start returns
        if (root / "root/from-init").exists() or (err.exists() and err.stat().st_size):
            break
        _wait_a_little()
    assert (root / "root/from-init").exists(), err.read_text() if err.exists() else "rc.local did not run"
    assert stat.S_ISCHR((root / "root/from-init").lstat().st_mode)


def test_without_the_supervisor_the_call_fails_instead_of_waiting(engine, mknod_ct):
    ctid = mknod_ct
    pids = _supervisor_pids(engine, ctid)
    assert len(pids) == 1
    os.kill(pids[0], signal.SIGKILL)
    code, text = _sh(engine, ctid, "mknod /tmp/late c 1 3")
    assert code != 0 and "not implemented" in text.lower(), text
    assert engine.status(ctid).status == "running"


def test_the_supervisor_ends_with_its_container(engine, mknod_ct):
    ctid = mknod_ct
    assert _supervisor_pids(engine, ctid)
    engine.stop(ctid)
    for _ in range(200):  # it sees POLLHUP once the last task is gone (a zombie has no command line)
        if not _supervisor_pids(engine, ctid):
            break
        _wait_a_little()
    assert not _supervisor_pids(engine, ctid)
    assert not notify.socket_path(engine.node.layout.run, ctid).exists()


def test_without_the_feature_device_nodes_stay_refused(engine, busybox_template, ctid_factory):
    ctid = _make(engine, busybox_template, ctid_factory)
    engine.start(ctid)
    code, text = _sh(engine, ctid, "mknod /tmp/null c 1 3")
    assert code != 0 and "Operation not permitted" in text
    assert not _supervisor_pids(engine, ctid)


def _has_fs(name: str) -> bool:
    return any(line.split()[-1] == name for line in Path("/proc/filesystems").read_text().splitlines())


def test_mount_makes_only_the_listed_types(engine, busybox_template, ctid_factory):
    if not _has_fs("hugetlbfs") or not _has_fs("debugfs"):
        pytest.skip("the kernel lacks hugetlbfs or debugfs (the test's allowed and refused types)")
    ctid = _make(engine, busybox_template, ctid_factory, features="mount=hugetlbfs")
    engine.start(ctid)
    _ok(engine, ctid, "mkdir -p /tmp/h && mount -t hugetlbfs none /tmp/h")
    line = next(x for x in _ok(engine, ctid, "cat /proc/mounts").splitlines() if " /tmp/h " in x)
    assert "hugetlbfs" in line and "nosuid" in line and "nodev" in line, line
    code, text = _sh(engine, ctid, "mkdir -p /tmp/d && mount -t debugfs none /tmp/d")
    assert code != 0, text
    _ok(engine, ctid, "mkdir -p /tmp/t && mount -t tmpfs none /tmp/t")  # the kernel's own rules, as before
    code, text = _sh(engine, ctid, "ln -s /proc/self/root /tmp/m && mount -t hugetlbfs none /tmp/m/tmp")
    assert code != 0, text


def test_without_the_feature_the_type_is_refused(engine, busybox_template, ctid_factory):
    if not _has_fs("hugetlbfs"):
        pytest.skip("the kernel lacks hugetlbfs")
    ctid = _make(engine, busybox_template, ctid_factory)
    engine.start(ctid)
    code, text = _sh(engine, ctid, "mkdir -p /tmp/h && mount -t hugetlbfs none /tmp/h")
    assert code != 0, text
