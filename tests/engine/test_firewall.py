"""engine.network.firewall against real nftables, a bridge and network namespaces this test creates.

Traffic stays between the host and the namespaces on the test's own bridge (a private /24 no
route on the host uses).  ``NetLab`` is shared with test_dhcp.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys

import pytest

from engine.errors import ValidationError
from engine.network import firewall
from engine.network.firewall import FirewallPolicy, FirewallRule, Port
from engine.network.fwcompile import parse_rules
from tests.engine.netlab import BASE_ID, CLIENT, RUN, TIMEOUT, NetLab, sh

NEEDED = ("ip", "nft", "busybox")
pytestmark = [
    pytest.mark.skipif(os.geteuid() != 0, reason="network tests need root"),
    pytest.mark.skipif(not all(shutil.which(b) for b in NEEDED), reason=f"needs {', '.join(NEEDED)}"),
]


@pytest.fixture
def ids():
    """Container IDs whose firewall the test may apply; removed afterwards."""
    made = [BASE_ID + n for n in (1, 2)]
    yield made
    for ctid in made:
        firewall.remove(ctid)


def connects(ip: str, port: int) -> bool:
    try:
        with socket.create_connection((ip, port), timeout=TIMEOUT) as conn:
            return conn.recv(2) == b"ok"
    except OSError:
        return False


def udp_arrives(lab: NetLab, ns: str, src: str) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind((lab.host_ip, 0))
        sock.settimeout(TIMEOUT)
        assert lab.client(ns, "udp", lab.host_ip, sock.getsockname()[1], src=src)
        try:
            return sock.recv(16) == b"hello"
        except TimeoutError:
            return False


def port(lab: NetLab, ctid: int, mac: str, last: int) -> Port:
    return Port(f"veth{ctid}i0", mac, [f"{lab.subnet}.{last}/24"], [])


def ssh_only(*extra: FirewallRule) -> FirewallPolicy:
    return FirewallPolicy(True, "DROP", "ACCEPT", [FirewallRule("in", "ACCEPT", "tcp", "22", None, "ssh"), *extra])


# ---- live traffic ---------------------------------------------------------------------------
def test_in_policy_drop_lets_only_the_allowed_port_through_and_changes_are_live(lab, ids):
    ctid, ns, mac = lab.container(1, "11")
    ip = f"{lab.subnet}.11"
    lab.listen(ns, 22, 23)
    assert connects(ip, 22) and connects(ip, 23)
    firewall.apply(ctid, [port(lab, ctid, mac, 11)], ssh_only())
    assert connects(ip, 22)
    assert not connects(ip, 23)
    firewall.apply(ctid, [port(lab, ctid, mac, 11)], ssh_only(FirewallRule("in", "ACCEPT", "tcp", "23")))
    assert connects(ip, 23)  # same listener, new rules: no restart needed
    firewall.apply(ctid, [port(lab, ctid, mac, 11)], FirewallPolicy(True, "DROP"))
    assert not connects(ip, 22)
    firewall.apply(ctid, [port(lab, ctid, mac, 11)], FirewallPolicy(False))
    assert connects(ip, 22) and connects(ip, 23)


def test_rules_hold_between_two_containers_on_one_bridge(lab, ids):
    (ct1, ns1, mac1), (_, ns2, _) = lab.container(1, "11"), lab.container(2, "12")
    lab.listen(ns1, 22, 23)
    not_ct2 = FirewallRule("in", "DROP", "tcp", "22", f"{lab.subnet}.12/32")
    firewall.apply(ct1, [port(lab, ct1, mac1, 11)], FirewallPolicy(True, rules=[not_ct2, *ssh_only().rules]))
    assert connects(f"{lab.subnet}.11", 22)  # the host: allowed
    assert not lab.client(ns2, "tcp", f"{lab.subnet}.11", 22)  # ct2: the first rule drops it
    assert not lab.client(ns2, "tcp", f"{lab.subnet}.11", 23)  # the policy


def test_out_drop_rule_blocks_what_it_names(lab, ids):
    ctid, ns, mac = lab.container(1, "11")
    out_drop = FirewallRule("out", "DROP", "udp", "5000:6000")
    firewall.apply(ctid, [port(lab, ctid, mac, 11)], FirewallPolicy(True, "ACCEPT", "ACCEPT", [out_drop]))
    with (
        socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as blocked,
        socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as free,
    ):
        blocked.bind((lab.host_ip, 5000 + RUN % 1000))
        free.bind((lab.host_ip, 6001 + RUN % 1000))
        for sock in (blocked, free):
            sock.settimeout(TIMEOUT)
            lab.client(ns, "udp", lab.host_ip, sock.getsockname()[1])
        assert free.recv(16) == b"hello"
        with pytest.raises(TimeoutError):
            blocked.recv(16)


def test_a_forged_source_address_or_mac_is_dropped(lab, ids):
    ctid, ns, mac = lab.container(1, "11")
    lab.run(ns, "ip", "addr", "add", f"{lab.subnet}.99/24", "dev", "eth0")
    real, forged = f"{lab.subnet}.11", f"{lab.subnet}.99"
    assert udp_arrives(lab, ns, forged)  # without the firewall the forged datagram arrives: the check is real
    firewall.apply(ctid, [port(lab, ctid, mac, 11)], FirewallPolicy(True, "ACCEPT", "ACCEPT"))
    assert udp_arrives(lab, ns, real)
    assert not udp_arrives(lab, ns, forged)
    lab.run(ns, "ip", "link", "set", "eth0", "address", "02:00:00:00:ee:ee")
    assert not udp_arrives(lab, ns, real)
    firewall.remove(ctid)
    assert udp_arrives(lab, ns, real)  # the forged MAC is what was dropped
    lab.run(ns, "ip", "link", "set", "eth0", "address", mac)
    firewall.apply(ctid, [port(lab, ctid, mac, 11)], FirewallPolicy(True, "ACCEPT", "ACCEPT"))
    assert udp_arrives(lab, ns, real)


def test_icmp_rule_and_replies_to_the_containers_own_connections(lab, ids):
    ctid, ns, mac = lab.container(1, "11")
    ip = f"{lab.subnet}.11"
    firewall.apply(ctid, [port(lab, ctid, mac, 11)], FirewallPolicy(True, "DROP"))

    def ping() -> bool:
        return sh("busybox", "ping", "-c", "1", "-W", "1", ip, check=False).returncode == 0

    assert not ping()
    firewall.apply(
        ctid, [port(lab, ctid, mac, 11)], FirewallPolicy(True, "DROP", rules=[FirewallRule("in", "ACCEPT", "icmp")])
    )
    assert ping()
    with socket.socket() as server:  # policy_in DROP still lets the answers to the container's own connection in
        server.bind((lab.host_ip, 0))
        server.listen(1)
        client = subprocess.Popen(
            [
                "ip",
                "netns",
                "exec",
                ns,
                sys.executable,
                "-c",
                CLIENT,
                "tcp",
                "-",
                lab.host_ip,
                str(server.getsockname()[1]),
                "3",
            ]
        )
        server.settimeout(3)
        conn, _ = server.accept()
        conn.sendall(b"ok")
        conn.close()
        assert client.wait(timeout=5) == 0


def test_remove_leaves_no_trace_and_is_idempotent(lab, ids):
    (ct1, _, mac1), (ct2, _, mac2) = lab.container(1, "11"), lab.container(2, "12")
    firewall.apply(ct1, [port(lab, ct1, mac1, 11)], ssh_only())
    firewall.apply(ct2, [port(lab, ct2, mac2, 12)], ssh_only())
    assert f"veth{ct1}i0" in firewall.ruleset_for(ct1) and f"ct{ct1}i0-in" in firewall.ruleset_for(ct1)
    firewall.remove(ct1)
    firewall.remove(ct1)
    ruleset = sh("nft", "list", "ruleset").stdout
    assert str(ct1) not in ruleset and f"ct{ct2}i0-out" in ruleset
    assert firewall.ruleset_for(ct1) == ""
    firewall.apply(ct2, [port(lab, ct2, mac2, 12)._replace(firewall=False)], ssh_only())
    assert str(ct2) not in sh("nft", "list", "ruleset").stdout
    firewall.remove(ct2)


def test_generated_chains(ids):
    ctid = ids[0]
    ports = [
        Port(f"veth{ctid}i0", "02:AA:00:00:00:01", ["10.214.250.5/24"], ["fd00::5/64"]),
        Port(f"veth{ctid}i1", "02:aa:00:00:00:02", [], []),
    ]
    rules = [
        FirewallRule("out", "REJECT", "tcp", "25", comment='spam "quoted"'),
        FirewallRule("in", "REJECT", None, None, "10.0.0.0/8,fd00::/8", iface="net1"),
    ]
    firewall.apply(ctid, ports, FirewallPolicy(True, "REJECT", "DROP", rules))
    text = firewall.ruleset_for(ctid)
    assert "ether saddr != 02:aa:00:00:00:01 drop" in text
    assert "ip saddr != 10.214.250.5 drop" in text and "fe80::/10" in text and "fd00::5" in text
    assert 'comment "spam quoted"' in text
    out0 = sh("nft", "list", "chain", "bridge", "caisson", f"ct{ctid}i0-out").stdout
    in1 = sh("nft", "list", "chain", "bridge", "caisson", f"ct{ctid}i1-in").stdout
    assert ("reject with tcp reset" in out0) == firewall.features().reject
    assert "reject" not in in1 and "ip saddr 10.0.0.0/8 drop" in in1 and "ip6 saddr fd00::/8 drop" in in1
    assert "10.0.0.0/8" not in sh("nft", "list", "chain", "bridge", "caisson", f"ct{ctid}i0-in").stdout
    firewall.apply(ctid, ports, parse_rules(GOOD))
    text = firewall.ruleset_for(ctid)
    assert "tcp dport { 80, 443, 8000-8080 } accept" in text and "ip6 saddr fd00::/8 udp dport 53 accept" in text
    assert "ip6 saddr fd00::/8 meta l4proto ipv6-icmp accept" in text
    firewall.apply(ctid, ports[1:], FirewallPolicy(True))  # net0 gone: its chains and map entry go too
    assert f"ct{ctid}i0" not in firewall.ruleset_for(ctid) and f"veth{ctid}i0" not in firewall.ruleset_for(ctid)


# ---- input validation -----------------------------------------------------------------------
GOOD = """
# managed by Caisson
[OPTIONS]
enable: 1
policy_in: DROP
policy_out: ACCEPT
macfilter: 1

[RULES]
IN ACCEPT -p tcp -dport 22 -source 10.0.0.0/24 # admin ssh
IN ACCEPT -p tcp -dport 80,443,8000:8080
|IN ACCEPT -p udp -dport 53
OUT DROP -p udp -dport 25
IN DNS(ACCEPT) -source fd00::/8 -i net1
IN REJECT -p icmp -log nolog
OUT ACCEPT -p ipv6-icmp -source fd00::/8
"""


def test_parse_rules_reads_the_proxmox_format():
    policy = parse_rules(GOOD)
    assert policy.enabled and policy.policy_in == "DROP" and policy.policy_out == "ACCEPT"
    assert policy.rules[0] == FirewallRule("in", "ACCEPT", "tcp", "22", "10.0.0.0/24", "admin ssh")
    assert policy.rules[1].dport == "80,443,8000:8080"
    assert [r.proto for r in policy.rules[3:5]] == ["udp", "tcp"] and policy.rules[4].iface == "net1"
    assert len(policy.rules) == 7  # the disabled rule is skipped, the macro is two rules
    assert policy.rules[6].proto == "icmpv6"
    assert parse_rules("") == FirewallPolicy(False)


@pytest.mark.parametrize(
    ("line", "field"),
    [
        ("[RULES]\nIN FOO(ACCEPT)", "macro"),
        ("[OPTIONS]\nfrobnicate: 1", "frobnicate"),
        ("[OPTIONS]\npolicy_in: ALLOW", "policy_in"),
        ("[OPTIONS]\nenable: yes", "enable"),
        ("[RULES]\nIN ACCEPT -p tcp -dport 70000", "dport"),
        ("[RULES]\nIN ACCEPT -p tcp -dport 2000:1000", "dport"),
        ("[RULES]\nIN ACCEPT -p tcp -dport nosuchservice", "dport"),
        ("[RULES]\nIN ACCEPT -dport 22", "dport"),
        ("[RULES]\nIN ACCEPT -source 10.0.0.0/33", "source"),
        ("[RULES]\nIN ACCEPT -source 10.0.0.1;flush", "source"),
        ("[RULES]\nIN ACCEPT -p icmp -source fd00::1", "source"),
        ("[RULES]\nIN ALLOW -p tcp", "action"),
        ("[RULES]\nSIDEWAYS ACCEPT", "type"),
        ("[RULES]\nIN ACCEPT -p gre", "proto"),
        ("[RULES]\nIN ACCEPT -sport 22", "sport"),
        ("[RULES]\nIN ACCEPT -p", "proto"),
        ("[RULES]\nIN ACCEPT -p tcp -log loud", "log"),
        ("[IPSET mgmt]\n[RULES]\nIN ACCEPT -source +mgmt", "source"),
        ("[RULES]\nIN ACCEPT -source nosuchalias", "source"),
        ("[RULES]\nGROUP nosuch", "group"),
        ("[group web]", "section"),
        ("enable: 1", "section"),
    ],
)
def test_parse_rules_names_the_line_and_field(line, field):
    text = "# header\n" + line  # the bad line is the last one
    with pytest.raises(ValidationError) as info:
        parse_rules(text)
    where = f"line {len(text.splitlines())}:" if "line" in str(info.value).split(":")[0] else "rule 1 ("
    assert where in str(info.value) and field in str(info.value) and info.value.key == field


def test_apply_refuses_bad_ports_before_touching_nftables(ids):
    ctid = ids[0]
    good = Port(f"veth{ctid}i0", "02:00:00:00:00:01", ["10.214.250.5/24"])
    for bad in (
        good._replace(host_ifname="eth0"),
        good._replace(host_ifname=f"veth{ctid + 1}i0"),
        good._replace(mac="02:00:00:00:00:01 drop"),
        good._replace(ipv4=["10.214.250.5 }"]),
    ):
        with pytest.raises(ValidationError):
            firewall.apply(ctid, [bad], FirewallPolicy(True))
    with pytest.raises(ValidationError):
        firewall.apply(ctid, [good], FirewallPolicy(True, rules=[FirewallRule("in", "ACCEPT", "tcp", "1-2")]))
    with pytest.raises(ValidationError):
        firewall.apply(ctid, [good], FirewallPolicy(True, policy_in="accept; flush ruleset"))
    assert firewall.ruleset_for(ctid) == ""
