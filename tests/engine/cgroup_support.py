"""Helpers for the cgroup driver tests: spawning children in a cgroup, reading files, probing devices."""

from __future__ import annotations

import itertools
import json
import os
import stat
import subprocess
import sys
import time

from engine.cgroups import read_mounts
from engine.cgroups.base import rmdir_tree, wait_until

MOUNTS = read_mounts()
HAS_V1 = "memory" in MOUNTS.v1 and "cpu" in MOUNTS.v1
_seq = itertools.count()
SPIN = "import time\nwhile True: pass"


def _cleanup(driver) -> None:
    for ctid in driver.list():
        try:
            driver.kill(ctid, timeout=5)
        except Exception:
            pass
    for root in driver._roots():
        rmdir_tree(os.path.join(root, driver.parent))


def spawn(driver, ctid: str, children: list, code: str | None = None, argv: list[str] | None = None):
    """Start a child that writes itself into the container's cgroups before exec (like the engine's exec)."""
    files = driver.procs_file(ctid)

    def join() -> None:
        for path in files:
            fd = os.open(path, os.O_WRONLY)
            os.write(fd, str(os.getpid()).encode())
            os.close(fd)

    argv = argv or [sys.executable, "-S", "-c", code]
    proc = subprocess.Popen(argv, preexec_fn=join, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    children.append(proc)
    return proc


def sleeper(children: list) -> subprocess.Popen:
    proc = subprocess.Popen(["sleep", "100"])
    children.append(proc)
    return proc


def read(path: str) -> str:
    with open(path) as fh:
        return fh.read().strip()


def cg(driver, controller: str | None, ctid: str, name: str = "") -> str:
    root = driver.mounts.v1[controller] if controller else driver.mounts.unified
    path = os.path.join(root, driver.parent, ctid)
    return os.path.join(path, name) if name else path


DEVICE_PROBE = """
import json, os, stat, sys
d = sys.argv[1]
out = {}
for name in ("null", "kmsg"):
    try:
        os.close(os.open(os.path.join(d, name), os.O_RDWR)); out[name] = "ok"
    except OSError as e:
        out[name] = e.errno
try:
    os.mknod(os.path.join(d, "kmsg2"), 0o600 | stat.S_IFCHR, os.makedev(1, 11)); out["mknod"] = "ok"
except OSError as e:
    out["mknod"] = e.errno
try:
    os.close(os.open(os.path.join(d, "kmsg"), os.O_RDONLY)); out["kmsg_ro"] = "ok"
except OSError as e:
    out["kmsg_ro"] = e.errno
print(json.dumps(out))
"""


def probe_devices(driver, ctid, children, tmp_path) -> dict:
    os.mknod(tmp_path / "null", 0o666 | stat.S_IFCHR, os.makedev(1, 3))
    # a node of an existing device that is not on the list (1:11 is /dev/kmsg, like /dev/mem a
    # host-sensitive device): EPERM can only come from the cgroup, not from a missing driver
    os.mknod(tmp_path / "kmsg", 0o600 | stat.S_IFCHR, os.makedev(1, 11))
    proc = spawn(driver, ctid, children, argv=[sys.executable, "-S", "-c", DEVICE_PROBE, str(tmp_path)])
    out, err = proc.communicate(timeout=20)
    assert proc.returncode == 0, err
    return json.loads(out)


# -- detection ------------------------------------------------------------------


def _mountinfo(tmp_path, lines: list[str]) -> str:
    path = tmp_path / "mountinfo"
    path.write_text("\n".join(lines) + "\n")
    return str(path)


HYBRID = [
    "25 30 0:23 / /sys rw,nosuid - sysfs sysfs rw",
    "31 25 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755",
    "32 31 0:29 / /sys/fs/cgroup/cpu,cpuacct rw,relatime - cgroup cgroup rw,cpu,cpuacct",
    "35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory",
    "40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,xattr,name=systemd",
    "41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw,nsdelegate",
    "50 31 0:32 /lxc/x /mnt/sub rw,relatime - cgroup cgroup rw,memory",
]


FORK = """
import errno, os
try:
    pid = os.fork()
except OSError as e:
    print(errno.errorcode[e.errno])
else:
    if pid == 0:
        os._exit(0)
    os.waitpid(pid, 0)
    print("forked")
"""


WORK = """
import time
t = time.process_time()
while time.process_time() - t < 0.2:
    pass
buf = b'x' * (32 << 20)
print('ready', flush=True)
time.sleep(100)
"""


def _frozen_makes_no_progress(driver, ctid: str) -> None:
    assert wait_until(lambda: driver.stats(ctid).cpu_ns > 50_000_000, 5)  # the spinner runs
    driver.freeze(ctid)
    before = driver.stats(ctid).cpu_ns
    time.sleep(0.3)
    assert driver.stats(ctid).cpu_ns == before
    driver.thaw(ctid)
    assert wait_until(lambda: driver.stats(ctid).cpu_ns > before + 50_000_000, 5)


TREE = """
import os, time
for _ in range(3):
    if os.fork() == 0:
        time.sleep(100)
        os._exit(0)
print('ready', flush=True)
time.sleep(100)
"""
