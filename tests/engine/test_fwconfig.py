"""Proxmox's firewall files (cluster.fw, host.fw, <vmid>.fw): parse and write as pve-firewall does, and a
container's rules compiled with the datacenter's groups, aliases and IP sets, enforced on a real bridge."""

from __future__ import annotations

import os
import shutil
import socket
from pathlib import Path

import pytest

from engine.errors import ValidationError
from engine.network import firewall
from engine.network.firewall import Port
from engine.network.fwcompile import compile_policy
from engine.network.fwconfig import parse, render
from tests.engine.netlab import BASE_ID, TIMEOUT

ROOT = Path(__file__).resolve().parents[2]
PEER = ROOT.parent / "shared" / "peer-fixtures" / "pve-firewall"  # pve-firewall's test/*/*.fw when present
CLUSTER = """[OPTIONS]

enable: 1
policy_in: DROP

[ALIASES]

admin 10.214.0.0/16 # the admins' network
Web6 fd00:1::/64

[IPSET blocked] # never these

10.214.9.10 # a printer
10.214.9.9

[RULES]

IN SSH(ACCEPT) -i vmbr0

[group web] # web servers

IN HTTP(ACCEPT)
IN ACCEPT -source admin -p tcp -dport 8080:8090

"""
CT = """[OPTIONS]

enable: 1
ipfilter: 1
log_level_in: info
policy_in: DROP

[ALIASES]

me 10.214.1.5

[RULES]

GROUP web -i net0
|IN ACCEPT -p tcp -dport 9000 # disabled
IN DROP -source +dc/blocked -p tcp -dport 22 -log warning
IN ACCEPT -source dc/admin -p tcp -dport ssh
OUT Ping(ACCEPT) -dest me

"""


def test_our_files_are_written_back_byte_for_byte():
    assert render(parse(CLUSTER, "cluster")) == CLUSTER
    assert render(parse(CT, "ct")) == CT
    host = "[OPTIONS]\n\nenable: 1\nnf_conntrack_max: 196608\ntcpflags: 1\n\n"
    host += "[RULES]\n\nIN ACCEPT -i eth0 -p tcp -dport 22\n\n"
    assert render(parse(host, "host")) == host


def test_pve_firewall_fixtures_read_and_round_trip():
    files = sorted(PEER.glob("*/*.fw")) if PEER.is_dir() else []
    if not files:
        pytest.skip(f"pve-firewall's fixtures not found under {PEER}")
    for path in files:
        kind = {"cluster.fw": "cluster", "host.fw": "host"}.get(path.name, "ct")
        loaded = parse(path.read_text(), kind, strict=False)  # its error cases are skipped, as pve-firewall does
        assert render(parse(render(loaded), kind)) == render(loaded), path


@pytest.mark.parametrize(
    ("kind", "text", "key"),
    [
        ("host", "[ALIASES]\nx 10.0.0.1", "section"),
        ("ct", "[group web]", "section"),
        ("cluster", "[group 9web]", "group"),
        ("cluster", "[group a-name-much-too-long-for-it]", "group"),
        ("cluster", "[IPSET s]\n10.0.0.0/0", "ipset"),
        ("cluster", "[IPSET s]\n10.0.0.1\n10.0.0.1", "ipset"),
        ("cluster", "[ALIASES]\nx 10.0.0.300", "alias"),
        ("cluster", "[OPTIONS]\npolicy_in: MAYBE", "policy_in"),
        ("host", "[OPTIONS]\nnf_conntrack_max: lots", "nf_conntrack_max"),
        ("ct", "[RULES]\nIN ACCEPT -i eth0", "iface"),
        ("cluster", "[group gg]\nGROUP other", "type"),
        ("cluster", "[group gg]\nIN ACCEPT -i net0", "iface"),
        ("ct", "[RULES]\nIN ACCEPT -p tcp -dport 1;2", "dport"),
        ("ct", "[RULES]\nGROUP web -p tcp", "type"),
    ],
)
def test_bad_lines_are_refused_naming_the_field(kind, text, key):
    with pytest.raises(ValidationError) as refused:
        parse(text, kind)
    assert refused.value.key == key, str(refused.value)


def test_groups_aliases_ipsets_and_macros_are_resolved():
    compiled = compile_policy(parse(CT, "ct"), parse(CLUSTER, "cluster"), strict=True)
    policy = compiled.policy
    assert policy.enabled and policy.log_in == "info" and not compiled.warnings
    lines = [
        (r.direction, r.action, r.proto, r.dport, r.source, r.dest, r.iface, r.icmp_type, r.log) for r in policy.rules
    ]
    assert lines == [
        ("in", "ACCEPT", "tcp", "80", None, None, "net0", None, None),
        ("in", "ACCEPT", "tcp", "8080:8090", "10.214.0.0/16", None, "net0", None, None),
        ("in", "DROP", "tcp", "22", "10.214.9.10/32,10.214.9.9/32", None, None, None, "warning"),
        ("in", "ACCEPT", "tcp", "22", "10.214.0.0/16", None, None, None, None),
        ("out", "ACCEPT", "icmp", None, None, "10.214.1.5/32", None, "echo-request", None),
    ]
    off = parse(CLUSTER.replace("enable: 1", "enable: 0"), "cluster")
    assert not compile_policy(parse(CT, "ct"), off).policy.enabled


def test_without_the_datacenter_a_group_is_skipped_leniently_and_refused_strictly():
    lenient = compile_policy(parse(CT, "ct"), None)
    assert any("no security group 'web'" in w for w in lenient.warnings)
    with pytest.raises(ValidationError, match="no security group 'web'"):
        compile_policy(parse(CT, "ct"), None, strict=True)


needs_root = pytest.mark.skipif(
    os.geteuid() != 0 or not all(shutil.which(b) for b in ("ip", "nft", "busybox")), reason="needs root, ip, nft"
)


@needs_root
def test_a_security_group_with_an_ip_set_is_enforced_and_logged(lab):
    ctid = BASE_ID + 7
    cluster = parse(
        f"[OPTIONS]\n\nenable: 1\n\n[IPSET hosts]\n\n{lab.host_ip}\n\n"
        "[group web]\n\nIN ACCEPT -source +hosts -p tcp -dport 80\n",
        "cluster",
    )
    ct = parse("[OPTIONS]\n\nenable: 1\nlog_level_in: info\n\n[RULES]\n\nGROUP web\n", "ct")
    _, ns, mac = lab.container(7, "17")
    ip = f"{lab.subnet}.17"
    lab.listen(ns, 80, 81)
    try:
        firewall.apply(
            ctid, [Port(f"veth{ctid}i0", mac, [f"{ip}/24"])], compile_policy(ct, cluster, strict=True).policy
        )
        assert _connects(ip, 80) and not _connects(ip, 81)
        chain = firewall.ruleset_for(ctid)
        assert f'log prefix "caisson-fw veth{ctid}i0 in DROP: " level info' in chain
    finally:
        firewall.remove(ctid)


def _connects(ip: str, port: int) -> bool:
    try:
        with socket.create_connection((ip, port), timeout=TIMEOUT) as conn:
            return conn.recv(2) == b"ok"
    except OSError:
        return False


@needs_root
def test_the_node_level_filters_only_what_arrives_on_the_nodes_bridges(lab):
    import threading

    from engine.network import hostfw
    from engine.network.firewall import _nft
    from engine.network.fwcompile import compile_host

    servers = []
    for port in (7001, 7002):
        server = socket.create_server((lab.host_ip, port))
        servers.append(server)
        threading.Thread(target=_answer, args=(server,), daemon=True).start()
    _, ns, _ = lab.container(8, "18")
    table = f"caisson_host_test{os.getpid() % 100000}"
    cluster = parse(
        "[OPTIONS]\n\nenable: 1\npolicy_in: DROP\n\n[group admin]\n\nIN ACCEPT -p tcp -dport 7001\n", "cluster"
    )
    host = parse("[OPTIONS]\n\nenable: 1\n\n[RULES]\n\nGROUP admin -i eth0\n", "host")
    try:
        assert lab.client(ns, "tcp", lab.host_ip, 7001) and lab.client(ns, "tcp", lab.host_ip, 7002)
        policy = compile_host(host, cluster, strict=True).policy
        _nft(["-f", "-"], hostfw.ruleset(table, policy, [lab.bridge]), check=True)
        assert lab.client(ns, "tcp", lab.host_ip, 7001) and not lab.client(ns, "tcp", lab.host_ip, 7002)
        _nft(["-f", "-"], hostfw.ruleset(table, policy, ["someotherbr0"]), check=True)  # not a node bridge
        assert lab.client(ns, "tcp", lab.host_ip, 7002)
        off = compile_host(parse("[OPTIONS]\n\nenable: 0\n", "host"), cluster).policy
        _nft(["-f", "-"], hostfw.ruleset(table, off, [lab.bridge]), check=True)
        assert _nft(["list", "table", "inet", table]).returncode != 0
    finally:
        _nft(["-f", "-"], f"table inet {table} {{}}\ndelete table inet {table}\n")
        for server in servers:
            server.close()


def _answer(server: socket.socket) -> None:
    while True:
        try:
            conn, _ = server.accept()
        except OSError:
            return
        conn.sendall(b"ok")
        conn.close()
