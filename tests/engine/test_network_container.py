"""A real busybox container started with the network step, before the engine calls it on its own.

``start_with`` is the engine's start sequence (``Engine._start``) with extra
``StartSpec.prepare`` steps: it shows what the integration adds, and that a
veth can be born inside the network namespace of an unprivileged container
whose init has not yet run.
"""
from __future__ import annotations

import secrets
import subprocess
import time

import pytest

from engine import inits, procfs, start
from engine import network as net
from engine.errors import StartError
from engine.reverter import Reverter
from engine.state import RunRecord, container_lock

RUN = secrets.token_hex(2)
SUBNET = 210 + int(RUN, 16) % 40  # apart from test_network.py's range
BRIDGE = f"cbr{RUN}c"
GW = f"10.213.{SUBNET}.1"


def start_with(engine, ctid: int, steps: list) -> int:
    """Start ``ctid`` as ``Engine._start`` does, with ``steps`` as StartSpec.prepare; returns init's pid."""
    with container_lock(engine.layout, ctid):
        config = engine.config(ctid)
        rootfs = engine._rootfs(config)
        idmap = engine._idmap(config)
        name = str(ctid)
        with Reverter() as revert:
            engine.cgroups.create(name, idmap.host_uid(0), idmap.host_gid(0))
            revert.add(engine._cleanup_cgroup, name)
            engine.cgroups.apply(name, engine.limits(config))
            spec = start.StartSpec(ctid=ctid, rootfs=rootfs, hostname=config.hostname, idmap=idmap,
                                   cgroup_procs=engine.cgroups.procs_file(name),
                                   cgroup2=engine.cgroups.ns_path(name) is not None,
                                   console_log=engine.layout.console_log(ctid), prepare=steps)
            pid = start.spawn(spec)
            RunRecord(pid, procfs.proc_starttime(pid) or 0, inits.detect(rootfs).name,
                      time.time()).save(engine.layout.run_record(ctid))
            revert.success()
        return pid


@pytest.fixture(scope="module")
def node(tmp_path_factory):
    root = tmp_path_factory.mktemp("netnode")
    (root / "network").mkdir()
    (root / "network" / "interfaces").write_text(
        f"auto {BRIDGE}\niface {BRIDGE} inet static\n    address {GW}/24\n    bridge-ports none\n")
    node = net.NodeNetwork(root)
    node.ensure_bridges()
    yield node
    node.remove_bridge(BRIDGE)


@pytest.fixture
def stopped(engine, busybox_template, ctid_factory):
    ctid = ctid_factory()
    engine.create(ctid, busybox_template, {"hostname": f"bb{ctid}", "memory": "128", "swap": "0"})
    yield ctid
    if engine.status(ctid, stats=False).status == "running":
        engine.stop(ctid)
    net.teardown_nics(ctid, [])


def test_a_container_starts_with_its_interface_and_reaches_the_bridge(engine, node, stopped):
    ctid = stopped
    eth0 = net.parse_nic(0, f"name=eth0,bridge={BRIDGE},ip=10.213.{SUBNET}.2/24,gw={GW},rate=10")
    started = time.perf_counter()
    pid = start_with(engine, ctid, [net.prepare_nics(ctid, [eth0], node)])
    assert time.perf_counter() - started < 2
    code, out, err = engine.exec_output(ctid, ["/bin/ping", "-c1", "-W1", GW])
    assert code == 0, (out, err)
    code, out, _ = engine.exec_output(ctid, ["/bin/cat", "/sys/class/net/eth0/address"])
    assert out.decode().strip().upper() == net.generate_mac(ctid, 0)
    seen = {i["name"]: i for i in net.interfaces(pid)}
    assert seen["eth0"]["ipv4"] == [f"10.213.{SUBNET}.2/24"] and seen["lo"]["state"] == "unknown"
    engine.stop(ctid)
    net.teardown_nics(ctid, [eth0])
    links = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True).stdout
    assert f"veth{ctid}i0" not in links and f"ifb{ctid}i0" not in links


def test_a_failed_network_step_fails_the_start_by_name_and_leaves_nothing(engine, node, stopped):
    ctid = stopped
    nics = [net.parse_nic(0, f"name=eth0,bridge={BRIDGE}"), net.parse_nic(1, "name=eth1,bridge=vmbr7")]
    with pytest.raises(StartError, match="step 'network': net1: bridge 'vmbr7' does not exist"):
        start_with(engine, ctid, [net.prepare_nics(ctid, nics, node)])
    assert engine.status(ctid, stats=False).status == "stopped"
    assert f"veth{ctid}i" not in subprocess.run(["ip", "-o", "link"], capture_output=True, text=True).stdout
