"""The container's own network files: which family a rootfs gets, what is written, what survives, and that
writes never follow a symlink out of the container's root.  No kernel, no container: a temp dir as the root."""
from __future__ import annotations

import os

import pytest

from engine.network import distro, rtnl
from engine.network.nics import parse_nic

DEBIAN = 'PRETTY_NAME="Debian GNU/Linux 12 (bookworm)"\nID=debian\nVERSION_ID="12"\n'


@pytest.fixture
def root(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the step runs with cwd = the container's root
    return tmp_path


def nics(*values: str):
    return [parse_nic(i, v) for i, v in enumerate(values)]


@pytest.mark.parametrize("text, present, family", [
    (DEBIAN, {"sbin/ifup"}, "ifupdown"),
    (DEBIAN, {"lib/systemd/systemd-networkd"}, "networkd"),
    ("ID=ubuntu\nVERSION_ID=24.04\n", {"usr/lib/systemd/systemd-networkd", "sbin/ifup"}, "networkd"),
    ("ID=linuxmint\nID_LIKE=\"ubuntu debian\"\n", {"sbin/ifup"}, "ifupdown"),
    ("ID=alpine\n", set(), "ifupdown"),
    ("ID=busybox\n", set(), "busybox"),
    ("ID=fedora\n", {"usr/lib/systemd/systemd-networkd"}, "generic"),
    (None, set(), "generic"),
])
def test_the_family_comes_from_os_release_and_what_is_installed(text, present, family):
    assert distro.choose(text, lambda path: path in present).name == family


def test_ifupdown_block_replaces_only_itself_and_adopts_a_template_file(root):
    (root / "etc/network").mkdir(parents=True)
    path = root / "etc/network/interfaces"
    path.write_text("auto lo\niface lo inet loopback\n\nauto eth0\niface eth0 inet dhcp\n\thostname x\n\n"
                    "auto eth9\niface eth9 inet manual\n")
    first = nics("name=eth0,bridge=b,ip=10.0.0.2/24,gw=10.0.0.1,ip6=auto", "name=eth1,bridge=b,ip=dhcp,ip6=dhcp",
                 "name=eth2,bridge=b,ip6=fd00::2/64,gw6=fd00::1,link_down=1")
    distro.Ifupdown().write(first, distro.Dns())
    text = path.read_text()
    assert "iface eth0 inet dhcp" not in text and "hostname x" not in text  # the template's eth0 is adopted
    assert "auto eth9\niface eth9 inet manual" in text  # another interface's stanza stays
    assert text.count("iface lo inet loopback") == 1
    assert ("# --- BEGIN PVE ---\nauto eth0\niface eth0 inet static\n\taddress 10.0.0.2/24\n\tgateway 10.0.0.1\n"
            "iface eth0 inet6 auto\n\nauto eth1\niface eth1 inet dhcp\niface eth1 inet6 dhcp\n\n"
            "iface eth2 inet6 static\n\taddress fd00::2/64\n\tgateway fd00::1\n# --- END PVE ---\n") in text
    path.write_text(text.replace("auto eth9", "# a user's note\nauto eth9") + "post-up true\n")
    distro.Ifupdown().write(nics("name=eth0,bridge=b,ip=10.0.0.3/24"), distro.Dns())
    again = path.read_text()
    assert "# a user's note" in again and again.endswith("post-up true\n")
    assert "10.0.0.3/24" in again and "10.0.0.2" not in again and "eth1" not in again
    distro.Ifupdown().write([], distro.Dns())
    assert "BEGIN PVE" not in path.read_text() and "# a user's note" in path.read_text()


def test_networkd_files_are_ours_only_when_marked(root):
    net_dir = root / "etc/systemd/network"
    net_dir.mkdir(parents=True)
    (net_dir / "eth1.network").write_text("[Match]\nName=eth1\n")  # the user's: kept as is
    distro.Networkd().write(nics("name=eth0,bridge=b,ip=10.0.0.2/24,gw=10.0.0.1,ip6=auto", "name=eth1,ip=dhcp"),
                            distro.Dns(("192.0.2.53",), ("example.test",)))
    text = (net_dir / "eth0.network").read_text()
    for line in ("Name = eth0", "Address = 10.0.0.2/24", "Gateway = 10.0.0.1", "DHCP = no", "IPv6AcceptRA = true",
                 "DNS = 192.0.2.53", "Domains = example.test"):
        assert line + "\n" in text
    assert (net_dir / "eth1.network").read_text() == "[Match]\nName=eth1\n"
    distro.Networkd().write(nics("name=eth1,ip=dhcp"), distro.Dns())
    assert not (net_dir / "eth0.network").exists()


def test_busybox_runs_udhcpc_from_a_marked_inittab_block(root):
    (root / "etc").mkdir()
    (root / "etc/inittab").write_text("::sysinit:/etc/init.d/rcS\n")
    distro.Busybox().write(nics("name=eth0,bridge=b,ip=dhcp", "name=eth1,bridge=b,ip=10.0.0.2/24"), distro.Dns())
    assert (root / "etc/inittab").read_text() == ("::sysinit:/etc/init.d/rcS\n\n# --- BEGIN PVE ---\n"
                                                  "::respawn:/etc/caisson/udhcpc.script run eth0\n# --- END PVE ---\n")
    assert os.access(root / distro.UDHCPC_SCRIPT, os.X_OK)
    distro.Busybox().write(nics("name=eth0,bridge=b,ip=10.0.0.2/24"), distro.Dns())
    assert "udhcpc" not in (root / "etc/inittab").read_text()


def test_resolv_conf_from_the_config_or_the_host_without_loopback(root):
    host = "nameserver 127.0.0.53\nnameserver 10.1.1.1\nnameserver ::1\nsearch a.test b.test\n"
    assert distro.dns_settings(None, None, host) == distro.Dns(("10.1.1.1",), ("a.test", "b.test"))
    assert distro.dns_settings("192.0.2.1,192.0.2.2", "x.test", host) == distro.Dns(("192.0.2.1", "192.0.2.2"),
                                                                                   ("x.test",))
    with pytest.raises(ValueError, match="'resolver' is not an IP address"):
        distro.dns_settings("resolver", None, host)
    assert distro.dns_settings(None, None, "nameserver 127.0.0.1\n") == distro.Dns()
    (root / "etc").mkdir()
    (root / "etc/resolv.conf").write_text("nameserver 9.9.9.9\n")
    distro.write_resolv_conf(distro.Dns(("192.0.2.1",), ("x.test",)))
    assert (root / "etc/resolv.conf").read_text() == \
        "# --- BEGIN PVE ---\nsearch x.test\nnameserver 192.0.2.1\n# --- END PVE ---\n"


def test_writes_never_follow_a_symlink_out_of_the_root(root, tmp_path_factory):
    outside = tmp_path_factory.mktemp("host")
    (outside / "interfaces").write_text("host file\n")
    (root / "etc").mkdir()
    os.symlink(outside, root / "etc/network")  # a directory on the path
    distro.Ifupdown().write(nics("name=eth0,ip=dhcp"), distro.Dns())
    assert (outside / "interfaces").read_text() == "host file\n"
    os.symlink(outside / "resolv", root / "etc/resolv.conf")  # the file itself (systemd-resolved's layout)
    distro.write_resolv_conf(distro.Dns(("192.0.2.1",)))
    assert not (outside / "resolv").exists() and os.path.islink(root / "etc/resolv.conf")
    with pytest.raises(OSError, match="symlink"):
        distro.write_file("etc/network/interfaces", "x")


def test_rtnl_messages_are_encoded_as_the_kernel_expects():
    veth = rtnl.new_veth("veth1i0", "FE:00:00:00:00:01", "eth0", "BC:24:11:00:00:0A", 1400, 7, 12, host_up=True)
    assert veth.type == rtnl.RTM_NEWLINK and veth.flags == rtnl.NLM_F_CREATE | rtnl.NLM_F_EXCL
    assert b"veth1i0\0" in veth.body and b"eth0\0" in veth.body and bytes.fromhex("BC241100000A") in veth.body
    assert rtnl.attr(rtnl.IFLA_MASTER, (12).to_bytes(4, "little")) in veth.body
    assert rtnl.attr(rtnl.IFLA_NET_NS_FD, (7).to_bytes(4, "little")) in veth.body
    address = rtnl.new_address(3, "10.0.0.2/24")
    assert address.body[:8] == bytes([2, 24, 0, 0]) + (3).to_bytes(4, "little")
    route = rtnl.default_route(3, "fd00::1")
    assert route.body[0] == 10 and bytes.fromhex("fd00" + "0" * 26 + "01") in route.body
