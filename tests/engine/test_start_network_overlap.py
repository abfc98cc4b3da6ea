"""The start's network steps run while init builds the container's tree (``StartSpec.prepare_late``).

Init waits for them before its setup steps; when one fails, init is told to exit, the start fails
naming the step, and nothing is left: no init, no process of the start, no interface, no cgroup.
The bridge here is this test's own (``cbr<hex>o``, no address); no traffic is sent.
"""

from __future__ import annotations

import os
import secrets
import subprocess

import pytest

from engine import network as net
from engine.errors import StartError

RUN = secrets.token_hex(2)
BRIDGE = f"cbr{RUN}o"


@pytest.fixture(scope="module")
def node(engine):
    path = engine.layout.root / "network" / "interfaces"
    path.parent.mkdir(exist_ok=True)
    path.write_text(f"auto {BRIDGE}\niface {BRIDGE} inet manual\n    bridge-ports none\n")
    node = net.NodeNetwork(engine.layout.root)
    node.ensure_bridges()
    yield node
    node.remove_bridge(BRIDGE)
    path.unlink()


def _children() -> set[int]:
    """This process's children (running or zombies)."""
    found = set()
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat", "rb") as handle:
                    data = handle.read()
            except OSError:
                continue
            if int(data[data.rfind(b")") + 2 :].split()[1]) == os.getpid():
                found.add(int(entry))
    return found


def _links(ctid: int) -> list[str]:
    out = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True, check=True).stdout
    return [line for line in out.splitlines() if f"veth{ctid}i" in line]


def test_a_failing_network_step_stops_init_and_leaves_nothing(engine, node, busybox_template, ctid_factory):
    ctid = ctid_factory()
    engine.create(ctid, busybox_template, {"hostname": f"o{ctid}", "net0": f"name=eth0,bridge={BRIDGE},mtu=1500"})
    subprocess.run(["ip", "link", "set", BRIDGE, "mtu", "1400"], check=True)  # the step refuses a larger MTU
    before = _children()
    try:
        with pytest.raises(StartError, match="mtu 1500 is above the MTU 1400") as info:
            engine.start(ctid)
    finally:
        subprocess.run(["ip", "link", "set", BRIDGE, "mtu", "1500"], check=True)
    assert info.value.step == "network"
    assert engine.status(ctid, stats=False).status == "stopped"
    assert _children() <= before  # init and the setup child exited and were reaped
    assert _links(ctid) == []
    assert not engine.cgroups.exists(str(ctid))
    # The same container starts once the bridge allows it, and its interface is there inside.
    engine.start(ctid)
    try:
        code, out, _ = engine.exec_output(ctid, ["cat", "/sys/class/net/eth0/mtu"])
        assert (code, out.strip()) == (0, b"1500")
    finally:
        engine.stop(ctid)
