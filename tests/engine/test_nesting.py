"""Nesting: a container that runs containers of its own (crun inside, a delegated cgroup, writable net sysctls), and
its refusals (real kernel)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from engine.errors import ValidationError
from tests.engine.test_machine import _make, _rootfs, _sh

NESTED_CONFIG = {
    "ociVersion": "1.0.2",
    "process": {
        "terminal": False,
        "user": {"uid": 0, "gid": 0},
        "args": ["sleep", "600"],
        "env": ["PATH=/bin"],
        "cwd": "/",
        "noNewPrivileges": True,
    },
    "root": {"path": "rootfs"},
    "hostname": "nested",
    "mounts": [
        {"destination": "/proc", "type": "proc", "source": "proc", "options": ["nosuid", "noexec", "nodev"]},
        {"destination": "/dev", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid", "mode=755"]},
        {"destination": "/sys", "type": "sysfs", "source": "sysfs", "options": ["nosuid", "noexec", "nodev", "ro"]},
    ],
    "linux": {
        "namespaces": [{"type": t} for t in ("pid", "ipc", "uts", "mount", "network")],
        "cgroupsPath": "/nested-c1",
    },
}


def _put_crun(root: Path) -> None:
    """Debian's crun and the libraries it links, copied into the container (its own /lib64 loader too),
    and a bundle whose rootfs is the container's static busybox."""
    import json

    crun = shutil.which("crun")
    if not crun:
        pytest.skip("crun is not installed (Debian package 'crun')")
    libs = root / "opt/crun/lib"
    libs.mkdir(parents=True)
    shutil.copy(crun, root / "opt/crun/crun")
    for line in subprocess.run(["ldd", crun], capture_output=True, text=True, check=True).stdout.splitlines():
        parts = line.split()
        lib = parts[2] if "=>" in parts and len(parts) > 2 else parts[0]
        if lib.startswith("/"):
            target = root / "lib64" if "ld-linux" in lib else libs
            target.mkdir(parents=True, exist_ok=True)
            shutil.copy(lib, target / Path(lib).name)
    bundle = root / "bundle"
    (bundle / "rootfs/bin").mkdir(parents=True)
    for name in ("proc", "dev", "sys", "tmp"):
        (bundle / "rootfs" / name).mkdir()
    busybox = root / "bin/busybox"
    shutil.copy(busybox, bundle / "rootfs/bin/busybox")
    for name in ("sh", "sleep", "hostname", "cat"):
        (bundle / "rootfs/bin" / name).symlink_to("busybox")
    (bundle / "config.json").write_text(json.dumps(NESTED_CONFIG))


CRUN = "LD_LIBRARY_PATH=/opt/crun/lib /opt/crun/crun --root /run/crun"
QUIET = "</dev/null >/tmp/crun.log 2>&1 || { cat /tmp/crun.log >&2; exit 1; }"


def _nested(engine, busybox_template, ctid_factory, features: str | None) -> int:
    options = {"features": features} if features else {}
    ctid = _make(engine, busybox_template, ctid_factory, **options)
    _put_crun(_rootfs(engine, ctid))
    engine.start(ctid)
    return ctid


def test_a_nested_container_runs_is_listed_and_stopped_inside(engine, busybox_template, ctid_factory):
    ctid = _nested(engine, busybox_template, ctid_factory, "nesting=1")
    # the nested container's output goes to a file: it would hold this exec's pipes open
    _sh(engine, ctid, f"mkdir -p /run/crun && {CRUN} run --no-new-keyring --detach --bundle /bundle c1 {QUIET}")
    listing = _sh(engine, ctid, f"{CRUN} list")
    assert "c1" in listing and "running" in listing
    # its own pid namespace (sleep is PID 1 there, a procfs of its own) and its own hostname
    assert _sh(engine, ctid, f"{CRUN} exec c1 hostname").strip() == "nested"
    assert _sh(engine, ctid, f"{CRUN} exec c1 cat /proc/1/cmdline").startswith("sleep")
    _sh(engine, ctid, f"{CRUN} kill c1 KILL")
    for _ in range(100):
        if "stopped" in _sh(engine, ctid, f"{CRUN} list"):
            break
    _sh(engine, ctid, f"{CRUN} delete c1")
    assert "c1" not in _sh(engine, ctid, f"{CRUN} list")


def test_without_nesting_a_nested_container_is_refused(engine, busybox_template, ctid_factory):
    ctid = _nested(engine, busybox_template, ctid_factory, None)
    code, _, err = engine.exec_output(
        ctid, ["sh", "-c", f"mkdir -p /run/crun && {CRUN} run --no-new-keyring --detach --bundle /bundle c1 {QUIET}"]
    )
    assert code != 0, "crun ran a container inside a container without nesting"
    log = _sh(engine, ctid, "cat /tmp/crun.log")
    assert "proc" in log and "Operation not permitted" in log, log
    # and container root cannot mount a procfs, nor lift a mask
    assert engine.exec_output(ctid, ["sh", "-c", "mkdir -p /tmp/p && mount -t proc proc /tmp/p"])[0] != 0
    assert engine.exec_output(ctid, ["umount", "/proc/kcore"])[0] != 0


def test_nesting_gives_a_delegated_cgroup_and_writable_net_sysctls(engine, busybox_template, ctid_factory):
    ctid = _make(engine, busybox_template, ctid_factory, features="nesting=1")
    engine.start(ctid)
    _sh(engine, ctid, "mkdir /sys/fs/cgroup/child && echo $$ > /sys/fs/cgroup/child/cgroup.procs")
    if engine.cgroups.mounts.v1.get("memory"):
        _sh(engine, ctid, "mkdir -p /tmp/mem && mount -t cgroup -o memory memory /tmp/mem && mkdir /tmp/mem/sub")
        _sh(engine, ctid, "echo 67108864 > /tmp/mem/sub/memory.limit_in_bytes")
        code, _, _ = engine.exec_output(ctid, ["sh", "-c", "echo -1 > /tmp/mem/memory.limit_in_bytes"])
        assert code != 0, "container root changed its own memory limit"
    _sh(engine, ctid, "echo 1 > /proc/sys/net/ipv4/ip_forward")
    code, _, _ = engine.exec_output(ctid, ["sh", "-c", "echo 1 > /proc/sys/kernel/panic"])
    assert code != 0, "a host-wide sysctl was writable"


def test_nesting_is_refused_for_a_privileged_container(engine, busybox_template, ctid_factory):
    ctid = _make(engine, busybox_template, ctid_factory, features="nesting=1", unprivileged="0")
    with pytest.raises(ValidationError, match="unprivileged"):
        engine.start(ctid)
    assert engine.status(ctid).status == "stopped"


def test_fuse_passes_dev_fuse(engine, busybox_template, ctid_factory):
    ctid = _make(engine, busybox_template, ctid_factory, features="fuse=1")
    engine.start(ctid)
    assert _sh(engine, ctid, "ls -l /dev/fuse").startswith("c")
    _sh(engine, ctid, "exec 3<>/dev/fuse")  # opens: the cgroup allows it
    other = _make(engine, busybox_template, ctid_factory)
    engine.start(other)
    assert engine.exec_output(other, ["ls", "/dev/fuse"])[0] != 0
