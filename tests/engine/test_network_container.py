"""Real busybox containers networked by the engine itself: create, start, list, hot-plug, DHCP, firewall, stop.

The test's node gets its own bridge (``cbr<hex>c``) with an address, a pool
and a DHCP range on 10.213.x.0/24; traffic flows only between the host and
these containers, and everything is removed afterwards.
"""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from engine import network as net
from engine.errors import ValidationError
from engine.network import firewall
from tests.engine.test_systemd import debian_template  # noqa: F401 - fixture

RUN = secrets.token_hex(2)
SUBNET = 210 + int(RUN, 16) % 40  # apart from test_network.py's range
BRIDGE = f"cbr{RUN}c"
GW = f"10.213.{SUBNET}.1"


def ip(host: int) -> str:
    return f"10.213.{SUBNET}.{host}"


def host_links() -> str:
    return subprocess.run(["ip", "-o", "link"], capture_output=True, text=True).stdout


@pytest.fixture(scope="module")
def node(engine):
    dhcp_dir = Path(f"/run/caisson-test-{RUN}")
    dhcp_dir.mkdir(mode=0o755, exist_ok=True)
    os.environ["CAISSON_DHCP_DIR"] = str(dhcp_dir)
    path = engine.layout.root / "network" / "interfaces"
    path.parent.mkdir(exist_ok=True)
    path.write_text(
        f"auto {BRIDGE}\niface {BRIDGE} inet static\n    address {GW}/24\n    bridge-ports none\n"
        f"    caisson-pool {ip(100)}-{ip(109)}\n    caisson-dhcp {ip(200)}-{ip(209)}\n"
    )
    node = net.NodeNetwork(engine.layout.root)
    node.ensure_bridges()
    yield node
    from engine.network.container import dhcp_server

    server = dhcp_server(engine.layout.root, node, BRIDGE)
    if server is not None:
        server.stop()
    node.remove_bridge(BRIDGE)
    path.unlink()
    del os.environ["CAISSON_DHCP_DIR"]
    shutil.rmtree(dhcp_dir, ignore_errors=True)


def make(engine, template, ctid_factory, **options) -> int:
    ctid = ctid_factory()
    engine.create(ctid, template, {"hostname": f"n{ctid}", "memory": "128", **options})
    return ctid


def sh(engine, ctid, script: str):
    code, out, err = engine.exec_output(ctid, ["sh", "-c", script])
    return code, out.decode(), err.decode()


def test_two_containers_reach_each_other_and_the_bridge(engine, node, busybox_template, ctid_factory):
    a = make(engine, busybox_template, ctid_factory, net0=f"name=eth0,bridge={BRIDGE},ip={ip(2)}/24,gw={GW}")
    b = make(engine, busybox_template, ctid_factory, net0=f"name=eth0,bridge={BRIDGE},ip=pool")
    config_b = engine.config(b).get("net0")
    assert config_b["ip"] == f"{ip(100)}/24" and config_b["gw"] == GW  # drawn from the pool and persisted
    assert engine.config(a).get("net0")["hwaddr"] == net.generate_mac(a, 0)
    engine.start(a)
    engine.start(b)
    assert sh(engine, a, f"ping -c1 -W2 {GW}")[0] == 0
    assert sh(engine, a, f"ping -c1 -W2 {ip(100)}")[0] == 0
    assert sh(engine, b, f"ping -c1 -W2 {ip(2)}")[0] == 0
    listed = {s.ctid: s for s in engine.list()}
    assert listed[a].ipv4 == [ip(2)] and listed[b].ipv4 == [ip(100)]
    assert listed[a].net["eth0"]["tx_packets"] > 0
    engine.stop(a)
    engine.stop(b)
    links = host_links()
    assert f"veth{a}i0" not in links and f"veth{b}i0" not in links


def test_hotplug_through_set_needs_no_restart_and_leaves_nothing(engine, node, busybox_template, ctid_factory):
    ctid = make(engine, busybox_template, ctid_factory)
    pid = engine.start(ctid).pid
    live = engine.set(ctid, {"net1": f"name=eth1,bridge={BRIDGE},ip={ip(3)}/24"})
    assert live == ["net1"]
    assert sh(engine, ctid, f"ping -c1 -W2 {GW}")[0] == 0
    assert engine.status(ctid).pid == pid  # no restart
    engine.set(ctid, {"net1": f"name=eth1,bridge={BRIDGE},ip={ip(4)}/24"})
    assert engine.status(ctid).ipv4 == [ip(4)]
    engine.set(ctid, delete=["net1"])
    assert sh(engine, ctid, "ls /sys/class/net")[1].split() == ["lo"]
    assert f"veth{ctid}i1" not in host_links()
    engine.stop(ctid)


def wait_for(check, seconds: float = 15.0):
    deadline = time.monotonic() + seconds
    while not (result := check()):
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.1)
    return result


def test_dhcp_lease_comes_from_the_containers_own_client_and_goes_at_stop(engine, node, busybox_template, ctid_factory):
    ctid = make(engine, busybox_template, ctid_factory, net0=f"name=eth0,bridge={BRIDGE},ip=dhcp")
    engine.start(ctid)
    # Nothing runs a client by hand: busybox init respawns udhcpc from the engine's inittab block.
    leased = wait_for(lambda: engine.status(ctid).ipv4)
    assert len(leased) == 1 and ip(200) <= leased[0] <= ip(209)
    listed = {s.ctid: s for s in engine.list()}
    assert listed[ctid].ipv4 == leased
    code, out, _ = sh(engine, ctid, "ps; ip route")
    assert "udhcpc -f -i eth0" in out and f"default via {GW}" in out
    from engine.network.container import dhcp_server

    server = dhcp_server(engine.layout.root, node, BRIDGE)
    mac = engine.config(ctid).get("net0")["hwaddr"]
    assert any(lease.mac.upper() == mac for lease in server.leases())
    engine.stop(ctid)
    assert not any(lease.mac.upper() == mac for lease in server.leases())
    # Without ip=dhcp the block goes at the next start, the template's own lines stay.
    engine.set(ctid, {"net0": f"name=eth0,bridge={BRIDGE},ip={ip(6)}/24"})
    engine.start(ctid)
    inittab = sh(engine, ctid, "cat /etc/inittab")[1]
    assert "udhcpc" not in inittab and "::sysinit:/etc/init.d/rcS" in inittab
    assert engine.status(ctid).ipv4 == [ip(6)]  # a static address is set from outside on busybox
    engine.stop(ctid)


def test_resolv_conf_from_the_config_keeps_the_users_lines(engine, node, busybox_template, ctid_factory):
    ctid = make(
        engine,
        busybox_template,
        ctid_factory,
        net0=f"name=eth0,bridge={BRIDGE},ip={ip(10)}/24",
        nameserver="192.0.2.53 2001:db8::53",
        searchdomain="example.test",
    )
    engine.start(ctid)
    resolv = sh(engine, ctid, "cat /etc/resolv.conf")[1]
    assert "search example.test\nnameserver 192.0.2.53\nnameserver 2001:db8::53\n" in resolv
    sh(engine, ctid, "echo 'options ndots:2' >> /etc/resolv.conf")
    engine.stop(ctid)
    engine.set(ctid, {"nameserver": "192.0.2.54"})
    engine.start(ctid)
    lines = sh(engine, ctid, "cat /etc/resolv.conf")[1].splitlines()
    assert "nameserver 192.0.2.54" in lines and "nameserver 192.0.2.53" not in lines
    assert "options ndots:2" in lines and lines.count("# --- BEGIN PVE ---") == 1
    engine.stop(ctid)


def test_firewall_applies_live_and_goes_at_stop(engine, node, busybox_template, ctid_factory):
    ctid = make(
        engine, busybox_template, ctid_factory, net0=f"name=eth0,bridge={BRIDGE},ip={ip(5)}/24,gw={GW},firewall=1"
    )
    rules = engine.layout.root / "firewall" / f"{ctid}.fw"
    rules.parent.mkdir(exist_ok=True)
    rules.write_text("[OPTIONS]\nenable: 1\npolicy_in: DROP\npolicy_out: ACCEPT\n")
    engine.start(ctid)
    host = subprocess.run(["busybox", "ping", "-c1", "-W1", ip(5)], capture_output=True)
    assert host.returncode != 0  # inbound ICMP dropped by the policy
    rules.write_text("[OPTIONS]\nenable: 1\npolicy_in: DROP\n\n[RULES]\nIN ACCEPT -p icmp\n")
    from engine.network.container import reload_firewall

    reload_firewall(engine.layout.root, ctid, engine.config(ctid))
    deadline = time.monotonic() + 5
    while subprocess.run(["busybox", "ping", "-c1", "-W1", ip(5)], capture_output=True).returncode != 0:
        assert time.monotonic() < deadline, "the new rule did not apply"
    # A forged source address is dropped at the bridge port.
    sh(engine, ctid, f"ip addr add {ip(66)}/24 dev eth0")
    assert sh(engine, ctid, f"ping -c1 -W1 -I {ip(66)} {GW}")[0] != 0
    assert sh(engine, ctid, f"ping -c1 -W1 -I {ip(5)} {GW}")[0] == 0
    engine.stop(ctid)
    assert f"ct{ctid}i0" not in firewall.ruleset_for(ctid)


def test_a_routed_32_reaches_a_gateway_outside_its_subnet(engine, node, busybox_template, ctid_factory):
    """Proxmox's routed set-up (a /32 and the provider's gateway): the default route is on-link."""
    ctid = make(engine, busybox_template, ctid_factory, net0=f"name=eth0,bridge={BRIDGE},ip={ip(12)}/32,gw={GW}")
    engine.start(ctid)
    code, out, _ = sh(engine, ctid, "ip route")
    assert code == 0 and f"default via {GW} dev eth0" in out and "onlink" in out
    assert sh(engine, ctid, f"ping -c1 -W2 {GW}")[0] == 0
    engine.stop(ctid)


@pytest.mark.parametrize(
    "option, words",
    [
        ("name=eth0,bridge=vmbr7", "bridge 'vmbr7' does not exist"),
        ("name=eth0,bridge={bridge},ip=10.0.0.1/33", "not a valid IPv4 CIDR"),
        ("name=eth0,bridge={bridge},ip={addr}/24,gw={addr}", "the interface's own address"),
    ],
)
def test_bad_interfaces_create_nothing(engine, node, busybox_template, ctid_factory, option, words):
    ctid = ctid_factory()
    with pytest.raises(ValidationError, match=words) as info:
        engine.create(ctid, busybox_template, {"net0": option.format(bridge=BRIDGE, addr=ip(7))})
    assert info.value.key == "net0"
    assert not engine.exists(ctid) and not engine.layout.image_dir(ctid).exists()


def test_duplicate_address_is_refused_and_the_running_container_unchanged(engine, node, busybox_template, ctid_factory):
    first = make(engine, busybox_template, ctid_factory, net0=f"name=eth0,bridge={BRIDGE},ip={ip(8)}/24")
    second = make(engine, busybox_template, ctid_factory)
    engine.start(second)
    before = engine.layout.config_path(second).read_text()
    with pytest.raises(ValidationError, match=f"already used by container {first}"):
        engine.set(second, {"net0": f"name=eth0,bridge={BRIDGE},ip={ip(8)}/24"})
    assert engine.layout.config_path(second).read_text() == before
    assert sh(engine, second, "ls /sys/class/net")[1].split() == ["lo"]
    engine.stop(second)


def test_tagged_containers_meet_on_a_per_tag_bridge_move_live_and_leave_nothing(
    engine, node, busybox_template, ctid_factory
):
    with pytest.raises(ValidationError, match=f"net0: ip=pool with tag=10 on bridge '{BRIDGE}'"):
        engine.create(ctid_factory(), busybox_template, {"net0": f"name=eth0,bridge={BRIDGE},ip=pool,tag=10"})
    a = make(engine, busybox_template, ctid_factory, net0=f"name=eth0,bridge={BRIDGE},ip={ip(21)}/24,tag=10")
    b = make(engine, busybox_template, ctid_factory, net0=f"name=eth0,bridge={BRIDGE},ip={ip(22)}/24,tag=20")
    engine.start(a)
    engine.start(b)
    assert net.host_side(a, 0)["bridge"] == f"{BRIDGE}v10"
    assert sh(engine, a, f"ping -c1 -W1 {ip(22)}")[0] != 0  # another tag
    assert sh(engine, a, f"ping -c1 -W1 {GW}")[0] != 0  # the untagged bridge, and the host does not answer
    neighbours = sh(engine, a, "ip neigh")[1].splitlines()
    assert not any(line.startswith(f"{GW} ") and "lladdr" in line for line in neighbours)  # not even by ARP
    assert engine.set(b, {"net0": f"name=eth0,bridge={BRIDGE},ip={ip(22)}/24,tag=10"})
    assert sh(engine, b, f"ping -c1 -W2 {ip(21)}")[0] == 0
    assert f"{BRIDGE}v20" not in host_links() and f"{BRIDGE}v10" in host_links()
    engine.stop(a)
    assert f"{BRIDGE}v10" in host_links()  # b is still on it
    engine.stop(b)
    assert f"{BRIDGE}v" not in host_links()


def test_cli_shows_bridges_addresses_and_installs_firewall_rules(
    engine, node, busybox_template, ctid_factory, tmp_path
):
    import json
    import sys

    env = {
        **os.environ,
        "CAISSON_ROOT": str(engine.layout.root),
        "CAISSON_RUN": str(engine.layout.run),
        "CAISSON_CGROUP_PARENT": engine.cgroups.parent,
    }

    def cli(*args):
        return subprocess.run(
            [sys.executable, "-m", "engine", *args],
            env=env,
            capture_output=True,
            text=True,
            cwd=Path(__file__).resolve().parents[2],
            timeout=60,
        )

    bridges = json.loads(cli("-o", "json", "network").stdout)
    mine = next(b for b in bridges if b["name"] == BRIDGE)
    assert mine["present"] and mine["address"] == f"{GW}/24" and mine["dhcp"] == f"{ip(200)}-{ip(209)}"
    ctid = make(engine, busybox_template, ctid_factory, net0=f"name=eth0,bridge={BRIDGE},ip={ip(9)}/24,firewall=1")
    engine.start(ctid)
    row = next(line.split() for line in cli("list").stdout.splitlines() if line.split()[0] == str(ctid))
    assert ip(9) in row  # the IPV4 column (LOCK comes after it)
    bad = tmp_path / "bad.fw"
    bad.write_text("[RULES]\nIN ACCEPT -p tcp -dport 99999\n")
    result = cli("firewall", str(ctid), "--rules", str(bad))
    assert result.returncode == 2 and "99999" in result.stderr
    good = tmp_path / "good.fw"
    good.write_text("[OPTIONS]\nenable: 1\npolicy_in: DROP\n\n[RULES]\nIN ACCEPT -p tcp -dport 22\n")
    result = cli("firewall", str(ctid), "--rules", str(good))
    assert result.returncode == 0, result.stderr
    assert "dport 22" in result.stdout and f"ct{ctid}i0" in result.stdout
    engine.stop(ctid)


@pytest.mark.slow
def test_debian_keeps_its_static_address_across_a_networking_restart(
    engine,
    node,
    debian_template,  # noqa: F811
    ctid_factory,
):
    from tests.engine.test_systemd import wait_running

    ctid = make(
        engine,
        debian_template,
        ctid_factory,
        net0=f"name=eth0,bridge={BRIDGE},ip={ip(11)}/24,gw={GW}",
        memory="512",
        nameserver="192.0.2.53",
    )
    engine.start(ctid)
    assert wait_running(engine, ctid) == "running", sh(engine, ctid, "systemctl --failed --no-pager")
    interfaces = sh(engine, ctid, "cat /etc/network/interfaces")[1]
    # Proxmox's in-place stanza (Debian >= 10: the address with its prefix), no block around it
    assert f"auto eth0\niface eth0 inet static\n\taddress {ip(11)}/24\n\tgateway {GW}\n" in interfaces
    assert "BEGIN PVE" not in interfaces
    assert "source /etc/network/interfaces.d/*" in interfaces  # the template's own line stays
    sh(engine, ctid, "echo '# kept by the user' >> /etc/network/interfaces")
    code, out, err = sh(engine, ctid, "systemctl restart networking && ip -4 -o addr show dev eth0 && ip route")
    assert code == 0, (out, err)
    assert f"inet {ip(11)}/24" in out and f"default via {GW}" in out
    assert sh(engine, ctid, f"ping -c1 -W2 {GW}")[0] == 0
    assert "nameserver 192.0.2.53" in sh(engine, ctid, "cat /etc/resolv.conf")[1]
    engine.stop(ctid)
    engine.start(ctid)
    interfaces = sh(engine, ctid, "cat /etc/network/interfaces")[1]
    assert "# kept by the user" in interfaces and interfaces.count("iface eth0 inet static") == 1
    assert wait_running(engine, ctid) == "running", sh(engine, ctid, "systemctl --failed --no-pager")
    engine.stop(ctid)
