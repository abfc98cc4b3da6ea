"""Container root against the masks, read-only mounts and host-global knobs, privileged and unprivileged.

The tree is built by host root and copied into a mount namespace owned by the container's user
namespace: the kernel locks every such mount (no umount, no clearing of ro/nosuid/nodev/noexec) and
refuses a fresh procfs or sysfs while the existing ones are not fully visible.
"""

from __future__ import annotations

import os

import pytest

KNOBS = [
    "/proc/sys/kernel/core_pattern",
    "/proc/sys/kernel/modprobe",
    "/proc/sysrq-trigger",
    "/sys/kernel/uevent_helper",
    "/proc/sys/kernel/hostname",
]
MASKS = ["/proc/kcore", "/proc/keys", "/proc/timer_list", "/proc/sched_debug", "/sys/firmware", "/proc/acpi"]
READ_ONLY = ["/proc/sys", "/proc/sysrq-trigger", "/proc/irq", "/proc/bus", "/proc/fs", "/sys"]


def sh(engine, ctid, script: str) -> tuple[int, str, str]:
    code, out, err = engine.exec_output(ctid, ["/bin/sh", "-c", script])
    return code, out.decode(), err.decode()


@pytest.fixture(params=["unprivileged", "privileged"])
def guest(request, engine, busybox_template, ctid_factory):
    ctid = ctid_factory()
    unprivileged = "1" if request.param == "unprivileged" else "0"
    engine.create(ctid, busybox_template, {"hostname": f"lk{ctid}", "unprivileged": unprivileged})
    engine.start(ctid)
    return ctid


def mountinfo(engine, ctid) -> str:
    return sh(engine, ctid, "cat /proc/self/mountinfo")[1]


def present(engine, ctid, path: str) -> bool:
    return sh(engine, ctid, f"test -e {path}")[0] == 0


def test_masks_and_read_only_mounts_cannot_be_unmounted(engine, guest):
    before = mountinfo(engine, guest)
    tried = 0
    for path in MASKS + READ_ONLY:
        if not present(engine, guest, path):
            continue
        tried += 1
        for command in (f"umount {path}", f"umount -l {path}"):
            code, _, err = sh(engine, guest, command)
            assert code != 0, command
            assert "Invalid argument" in err or "Operation not permitted" in err, (command, err)
    assert tried >= 6
    assert mountinfo(engine, guest) == before
    assert sh(engine, guest, "cat /proc/timer_list /proc/keys")[1] == ""
    assert sh(engine, guest, "ls -A /sys/firmware")[1] == ""


@pytest.mark.parametrize("path", READ_ONLY)
def test_read_only_mounts_cannot_be_made_writable(engine, guest, path):
    if not present(engine, guest, path):
        pytest.skip(f"this kernel has no {path}")
    before = mountinfo(engine, guest)
    for command in (
        f"mount -o remount,rw {path}",
        f"mount -o remount,bind,rw {path}",
        f"mkdir -p /tmp/rw && mount --bind {path} /tmp/rw && mount -o remount,bind,rw /tmp/rw",
    ):
        assert sh(engine, guest, command)[0] != 0, command
        sh(engine, guest, "umount /tmp/rw 2>/dev/null")
    assert mountinfo(engine, guest) == before


@pytest.mark.parametrize("fstype", ["proc", "sysfs"])
def test_no_fresh_procfs_or_sysfs(engine, guest, fstype):
    code, _, err = sh(engine, guest, f"mkdir -p /tmp/fresh && mount -t {fstype} {fstype} /tmp/fresh")
    assert code != 0 and "permission denied" in err.lower(), err
    # Nor from a mount namespace of its own.
    assert sh(engine, guest, f"unshare -m sh -c 'mount -t {fstype} {fstype} /tmp/fresh'")[0] != 0


def test_a_bind_mount_reveals_nothing_masked(engine, guest):
    """A plain bind of /proc is refused (locked mounts below it); a recursive one carries the masks."""
    code, _, _ = sh(engine, guest, "mkdir -p /tmp/b && mount --bind /proc /tmp/b")
    assert code != 0
    code, out, _ = sh(
        engine,
        guest,
        "mount --rbind /proc /tmp/b && cat /tmp/b/timer_list /tmp/b/keys; "
        "umount /tmp/b/timer_list; cat /tmp/b/timer_list",
    )
    assert out == ""
    code, out, _ = sh(engine, guest, "mount --rbind /sys /tmp/b 2>/dev/null; ls -A /tmp/b/firmware")
    assert out == ""


@pytest.mark.parametrize("knob", KNOBS)
def test_host_global_knobs_cannot_be_written(engine, guest, knob):
    if not os.path.exists(knob):
        pytest.skip(f"this host's kernel has no {knob}")
    with open(knob, "rb") as handle:
        before = handle.read() if knob != "/proc/sysrq-trigger" else b""
    code, _, err = sh(engine, guest, f"echo '|/tmp/evil' > {knob}")
    assert code != 0
    assert "Read-only file system" in err or "Permission denied" in err or "nonexistent" in err, err
    if knob != "/proc/sysrq-trigger":
        with open(knob, "rb") as handle:
            assert handle.read() == before


def test_privileged_root_is_root_of_its_own_user_namespace_only(engine, guest):
    pid = engine.status(guest).pid
    assert os.stat(f"/proc/{pid}/ns/user").st_ino != os.stat("/proc/self/ns/user").st_ino
    with open(f"/proc/{pid}/uid_map") as handle:
        fields = handle.read().split()
    privileged = not engine.config(guest).unprivileged
    assert fields == (["0", "0", "4294967295"] if privileged else ["0", "100000", "65536"])
    code, _, err = sh(engine, guest, "mknod /tmp/disk b 8 0")
    assert code != 0 and "Operation not permitted" in err


def test_no_nested_user_namespace_without_nesting(engine, guest):
    code, _, err = sh(engine, guest, "unshare -U true")
    assert code != 0 and "Operation not permitted" in err, err
    assert sh(engine, guest, "unshare -m -u -i -n true")[0] == 0  # other namespaces stay possible
