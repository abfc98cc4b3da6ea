"""Jobs of a container with a veth on a bridge and a firewall killed midway: no veth, ifb device or nftables
chain of it is left once recovery has run (a stopped container has none; a running one exactly its own)."""

from __future__ import annotations

import secrets
import subprocess

import pytest

from engine.recovery import recover
from tests.faults.kit import assert_whole, run_killed

pytestmark = pytest.mark.slow

RUN = secrets.token_hex(2)
BRIDGE = f"cbf{RUN}"
NET = 10 + int(RUN, 16) % 200


@pytest.fixture(scope="module")
def bridged(lab):
    from engine import network as net

    (lab.engine.layout.root / "network").mkdir(exist_ok=True)
    (lab.engine.layout.root / "network" / "interfaces").write_text(
        f"auto {BRIDGE}\niface {BRIDGE} inet static\n    address 10.214.{NET}.1/24\n"
        "    bridge-ports none\n    bridge-stp off\n"
    )
    net.NodeNetwork(lab.engine.layout.root).ensure_bridges()
    yield lab
    subprocess.run(["ip", "link", "del", BRIDGE], capture_output=True)
    (lab.engine.layout.root / "network" / "interfaces").unlink()


def _links(ctid: int) -> list[str]:
    out = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True).stdout
    return [line.split(":")[1].strip().split("@")[0] for line in out.splitlines() if f"{ctid}i" in line]


def _chains(ctid: int) -> list[str]:
    out = subprocess.run(["nft", "list", "ruleset"], capture_output=True, text=True).stdout
    return [line.strip() for line in out.splitlines() if line.strip().startswith("chain") and str(ctid) in line]


def _make(bridged, make, start: bool) -> int:
    return make(
        "dir",
        options={"net0": f"name=eth0,bridge={BRIDGE},ip=10.214.{NET}.50/24,firewall=1,rate=10"},
        start=start,
    )


@pytest.mark.parametrize("fault", ["start:cgroup", "start:firewall_rules", "start:network", "start:spawned"])
def test_start_with_network_killed(bridged, make, fault):
    ctid = _make(bridged, make, start=False)
    run_killed(bridged, "engine", ["start", ctid], fault)
    recover(bridged.engine)
    if bridged.engine.status(ctid, stats=False).status != "running":
        assert _links(ctid) == [] and _chains(ctid) == [], (_links(ctid), _chains(ctid))
    assert_whole(bridged, ctid, running=None)  # started if it was not, used, stopped
    assert _links(ctid) == [] and _chains(ctid) == []


@pytest.mark.parametrize(("verb", "fault"), [("stop", "stop:killed"), ("shutdown", "shutdown:exited")])
def test_stop_with_network_killed(bridged, make, verb, fault):
    ctid = _make(bridged, make, start=True)
    assert _links(ctid) and _chains(ctid)  # its veth, its ifb and its firewall chain while it runs
    run_killed(bridged, "engine", [verb, ctid], fault)
    recover(bridged.engine)
    assert _links(ctid) == [] and _chains(ctid) == [], (_links(ctid), _chains(ctid))
    assert_whole(bridged, ctid, running=False)
