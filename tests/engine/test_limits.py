"""Resource limits enforced by the kernel on real containers, changed live, read back."""

from __future__ import annotations

import os
import time

import pytest


def limit_file(engine, ctid, controller: str, name: str) -> str:
    if engine.cgroups.name != "v1":
        pytest.skip("these checks read v1 files; the v2 driver has its own tests")
    return os.path.join(engine.cgroups.mounts.v1[controller], engine.cgroups.parent, str(ctid), name)


def test_memory_limit_kills_inside_and_spares_the_host(engine, container):
    engine.set(container, {"memory": "64", "swap": "0"})
    # busybox tail keeps a line without a newline in memory: 256 MiB of zeros is one such line.
    code, _, _ = engine.exec_output(container, ["sh", "-c", "head -c 268435456 /dev/zero | tail -n 1 > /dev/null"])
    assert code == 128 + 9, "the allocation past the limit should be killed by the OOM killer"
    status = engine.status(container)
    assert status.status == "running"
    assert engine.exec(container, ["true"]) == 0
    with open(limit_file(engine, container, "memory", "memory.oom_control")) as handle:
        kills = dict(line.split() for line in handle)
    assert int(kills["oom_kill"]) >= 1


def test_fork_bomb_is_stopped_by_the_pids_limit(engine, container):
    engine.set(container, {"pids": "64"})
    bomb = "b() { b | b & }; b"
    engine.exec_output(container, ["sh", "-c", f"({bomb}) >/dev/null 2>&1 & sleep 2; exit 0"])
    usage = engine.cgroups.stats(str(container))
    assert usage.pids <= 64
    # The node is still responsive, and a hard stop clears the bomb completely.
    assert os.getloadavg() is not None
    engine.stop(container)
    assert engine.cgroups.exists(str(container)) is False


def test_cpu_limit_changes_live(engine, container):
    engine.set(container, {"cpulimit": "0.2"})
    with open(limit_file(engine, container, "cpu", "cpu.cfs_quota_us")) as handle:
        assert int(handle.read()) == 20000
    before = engine.cgroups.stats(str(container)).cpu_ns
    engine.exec_output(container, ["sh", "-c", "timeout 1 sh -c 'while :; do :; done'; true"])
    used = engine.cgroups.stats(str(container)).cpu_ns - before
    # One second of a busy loop under a 0.2 CPU quota gets about 0.2 s of CPU time.
    assert used < 0.6e9, f"used {used / 1e9:.2f} s of CPU in 1 s under a 0.2 CPU limit"
    engine.set(container, delete=["cpulimit"])
    with open(limit_file(engine, container, "cpu", "cpu.cfs_quota_us")) as handle:
        assert int(handle.read()) == -1


def test_cores_pin_the_container_to_cpus(engine, container):
    if len(os.sched_getaffinity(0)) < 2:
        pytest.skip("needs two CPUs")
    engine.set(container, {"cores": "1"})
    code, out, _ = engine.exec_output(container, ["grep", "Cpus_allowed_list", "/proc/self/status"])
    assert code == 0 and out.split()[1].decode() in {str(c) for c in os.sched_getaffinity(0)}


def test_accounting_reads_back(engine, container):
    engine.exec_output(container, ["sh", "-c", "i=0; while [ $i -lt 20000 ]; do i=$((i+1)); done"])
    status = engine.status(container)
    assert status.cpu_ns > 0
    assert 0 < status.memory_bytes <= status.memory_limit_bytes
    assert status.pids >= 1
    assert status.uptime >= 0
    time.sleep(0.01)


def test_a_cpuset_pins_the_container_to_those_cpus(engine, container):
    online = sorted(os.sched_getaffinity(0))
    if len(online) < 2:
        pytest.skip("needs two CPUs")
    engine.set(container, {"cores": "1", "cpuset": str(online[-1])})  # the set wins over cores' own pick
    code, out, _ = engine.exec_output(container, ["grep", "Cpus_allowed_list", "/proc/self/status"])
    assert code == 0 and out.split()[1].decode() == str(online[-1])
    for bad in ("1-0", "a", "0,,1"):
        with pytest.raises(Exception, match="cpuset"):
            engine.set(container, {"cpuset": bad})
