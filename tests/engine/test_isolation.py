"""Inside a running container: what it can see and do, checked from both sides."""

from __future__ import annotations

import os
import stat

import pytest

from engine import syscalls
from engine.start import DROPPED_CAPABILITIES


def sh(engine, ctid, script: str) -> tuple[int, str, str]:
    code, out, err = engine.exec_output(ctid, ["/bin/sh", "-c", script])
    return code, out.decode(), err.decode()


def test_hostname_and_pid1(engine, container):
    assert sh(engine, container, "hostname")[1].strip() == f"bb{container}"
    assert sh(engine, container, "cat /etc/hostname")[1].strip() == f"bb{container}"
    assert sh(engine, container, "tr '\\0' ' ' < /proc/1/cmdline")[1].strip() == "init"


def test_no_host_process_is_visible(engine, container):
    code, out, _ = sh(engine, container, "ls /proc | grep -E '^[0-9]+$'")
    pids = sorted(int(p) for p in out.split())
    assert code == 0
    assert pids[0] == 1
    assert len(pids) < 10, f"too many processes visible: {pids}"
    code, out, _ = sh(engine, container, "cat /proc/1/status | grep ^PPid")
    assert out.split()[1] == "0"


def test_container_root_is_uid_100000_on_the_host(engine, container):
    assert sh(engine, container, "id -u; touch /root/made-inside")[0] == 0
    rootfs = engine._rootfs(engine.config(container))
    assert os.stat(rootfs / "root" / "made-inside").st_uid == 100000
    status = engine.status(container)
    with open(f"/proc/{status.pid}/status") as handle:
        uids = next(line for line in handle if line.startswith("Uid:")).split()[1:]
    assert uids == ["100000"] * 4


@pytest.mark.parametrize("path", ["/proc/sys/kernel/hostname", "/proc/sysrq-trigger", "/sys/kernel/uevent_helper"])
def test_kernel_knobs_are_read_only(engine, container, path):
    if not os.path.exists(path):
        pytest.skip(f"this host's kernel has no {path}")
    code, _, err = sh(engine, container, f"echo x > {path}")
    assert code != 0
    assert "Read-only file system" in err or "Permission denied" in err


def test_masked_paths_read_empty(engine, container):
    for path in ("/proc/timer_list", "/proc/keys", "/proc/sched_debug"):
        code, out, _ = sh(engine, container, f"cat {path} 2>/dev/null; true")
        assert out == "", path
    assert sh(engine, container, "ls -A /sys/firmware")[1] == ""


def test_mknod_is_refused(engine, container):
    code, _, err = sh(engine, container, "mknod /tmp/mem c 1 1")
    assert code != 0 and "Operation not permitted" in err


def test_minimal_dev(engine, container):
    names = set(sh(engine, container, "ls -A /dev")[1].split())
    assert {"null", "zero", "full", "random", "urandom", "tty", "ptmx", "pts", "shm"} <= names
    assert not {"kmsg", "mem", "sda", "vda", "loop0"} & names
    assert sh(engine, container, "echo hi > /dev/null && head -c 4 /dev/urandom | wc -c")[1].strip() == "4"


def test_capability_bounding_set_is_as_designed(engine, container):
    expected = 0
    for number in range(syscalls.cap_last() + 1):
        expected |= 1 << number
    for name in DROPPED_CAPABILITIES:
        expected &= ~(1 << syscalls.CAPABILITIES[name])
    out = sh(engine, container, "grep CapBnd /proc/self/status; grep CapBnd /proc/1/status")[1]
    values = [int(line.split()[1], 16) for line in out.splitlines()]
    assert values == [expected, expected]


def test_seccomp_filter_is_on_for_init_and_exec(engine, container):
    status = engine.status(container)
    with open(f"/proc/{status.pid}/status") as handle:
        assert "Seccomp:\t2" in handle.read()
    assert "Seccomp:\t2" in sh(engine, container, "cat /proc/self/status")[1]


def test_no_host_fd_leaks_into_the_container(engine, container):
    status = engine.status(container)
    for fd in os.listdir(f"/proc/{status.pid}/fd"):
        target = os.readlink(f"/proc/{status.pid}/fd/{fd}")
        assert int(fd) <= 2 or target.startswith(("/dev/", "pipe:", "socket:", "anon_inode:")), (fd, target)
    out = sh(engine, container, "ls /proc/self/fd")[1].split()
    assert sorted(int(x) for x in out) <= [0, 1, 2, 3]


def test_cgroup_v1_gives_no_way_out(engine, container):
    """CVE-2022-0492: even a v1 hierarchy mounted inside shows only the container's own
    cgroup (cgroup namespace), owned by host root: no release_agent, no limit or child to write."""
    code, out, _ = sh(
        engine, container, "mkdir -p /tmp/cg && mount -t cgroup -o memory cgroup /tmp/cg 2>/dev/null && ls /tmp/cg"
    )
    if code != 0:
        return  # the kernel refused the mount outright: nothing more to check
    assert "release_agent" not in out.split()
    for attempt in (
        "echo 1 > /tmp/cg/memory.limit_in_bytes",
        "mkdir /tmp/cg/child",
        "echo /evil > /tmp/cg/release_agent",
        "echo 1 > /tmp/cg/notify_on_release",
    ):
        assert sh(engine, container, attempt)[0] != 0, attempt


def test_container_directory_is_closed_to_other_host_users(engine, container):
    directory = engine.layout.image_dir(container)
    assert stat.S_IMODE(os.stat(directory).st_mode) == 0o700
    pid = syscalls.fork_quietly()
    if pid == 0:
        try:
            os.setgid(65534)
            os.setuid(65534)
            os.listdir(directory)
            os._exit(1)
        except PermissionError:
            os._exit(0)
        except BaseException:  # noqa: BLE001
            os._exit(2)
    assert os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) == 0


def test_network_namespace_has_only_loopback(engine, container):
    out = sh(engine, container, "ls /sys/class/net")[1].split()
    assert out == ["lo"]
    assert sh(engine, container, "cat /sys/class/net/lo/operstate")[1].strip() in ("unknown", "up")


def test_programs_inside_start_with_default_signals(engine, container):
    """Nothing the engine's Python ignores or blocks reaches the container: a pipe's reader going away ends
    its writer, in the container's init as in a command run inside."""
    code, out, _ = sh(engine, container, "grep -E '^Sig(Ign|Blk)' /proc/self/status /proc/1/status")
    assert code == 0
    ignored = {line.split(":")[0]: int(line.split()[-1], 16) for line in out.splitlines()}
    sigpipe, sigxfsz = 1 << 12, 1 << 24
    assert all(not mask & (sigpipe | sigxfsz) for mask in ignored.values()), out
    code, out, _ = sh(engine, container, "timeout 10 sh -c 'yes | head -n 1'; echo rc=$?")
    assert out.split() == ["y", "rc=0"]
