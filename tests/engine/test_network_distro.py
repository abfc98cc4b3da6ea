"""The container's own files per distribution family: which family a rootfs gets, what is written, what
survives, and that writes never leave the container's root.  No kernel, no container: a temp dir as the root.
Proxmox's own cases are in test_pve_setup_fixtures.py; these are Caisson's additions and migrations."""

from __future__ import annotations

import os

import pytest

from engine import distro
from engine.distro.busybox import UDHCPC_SCRIPT
from engine.errors import ValidationError
from engine.network import rtnl
from engine.network.nics import parse_nic

DEBIAN = 'PRETTY_NAME="Debian GNU/Linux 12 (bookworm)"\nID=debian\nVERSION_ID="12"\n'


def nics(*values: str):
    return tuple(parse_nic(i, v) for i, v in enumerate(values))


def setup(root, *values: str, **settings):
    """One start's setup of the root for these interfaces; the files are written."""
    with distro.Root(root) as fs:
        distro.detect(fs, distro.Settings(nics=nics(*values), **settings)).pre_start()
        fs.commit()


def put(root, relpath: str, text: str):
    (root / relpath).parent.mkdir(parents=True, exist_ok=True)
    (root / relpath).write_text(text)


@pytest.mark.parametrize(
    "files, family",
    [
        ({"etc/os-release": DEBIAN}, "debian"),
        ({"etc/os-release": "ID=ubuntu\nVERSION_ID=24.04\n"}, "ubuntu"),
        ({"etc/os-release": 'ID=linuxmint\nID_LIKE="ubuntu debian"\n'}, "ubuntu"),
        ({"etc/os-release": "ID=neon\n", "etc/debian_version": "12.1\n"}, "debian"),  # Proxmox's release files
        ({"etc/os-release": "ID=alpine\n"}, "alpine"),
        ({"etc/os-release": "ID=busybox\n"}, "busybox"),
        ({"etc/os-release": "ID=rocky\n"}, "centos"),
        ({"etc/os-release": "ID=fedora\n"}, "fedora"),
        ({"etc/os-release": "ID=opensuse-tumbleweed\n"}, "opensuse"),
        ({"etc/os-release": "ID=arch\n"}, "archlinux"),
        ({"etc/os-release": "ID=gentoo\n"}, "generic"),
        ({}, "generic"),
    ],
)
def test_the_family_comes_from_os_release_and_the_release_files(tmp_path, files, family):
    for relpath, text in files.items():
        put(tmp_path, relpath, text)
    with distro.Root(tmp_path) as fs:
        assert distro.family_of(fs, distro.os_release(fs)).name == family


def test_ostype_unmanaged_leaves_the_files_alone_except_caisson_s_own_busybox(tmp_path):
    put(tmp_path, "etc/os-release", DEBIAN)
    with distro.Root(tmp_path) as fs:
        assert distro.family_of(fs, distro.os_release(fs), "unmanaged").name == "unmanaged"
    put(tmp_path, "etc/os-release", "ID=busybox\n")
    with distro.Root(tmp_path) as fs:
        assert distro.family_of(fs, distro.os_release(fs), "unmanaged").name == "busybox"


def test_a_release_caisson_cannot_honour_is_refused_by_name_and_nothing_written(tmp_path):
    put(tmp_path, "etc/os-release", "ID=centos\n")
    put(tmp_path, "etc/redhat-release", "CentOS release 4.8 (Final)\n")
    with pytest.raises(ValidationError, match="etc/redhat-release: release 4.8 is not supported"):
        setup(tmp_path, "name=eth0,ip=10.0.0.2/24", hostname="ct1")
    assert sorted(p.name for p in (tmp_path / "etc").iterdir()) == ["os-release", "redhat-release"]


def test_a_file_caisson_wrote_before_becomes_proxmox_s_stanzas(tmp_path):
    """Caisson used to wrap whole stanzas in one marked block; Proxmox marks only route lines inside a stanza.
    Either kind of file ends with one stanza per interface, the user's lines kept."""
    put(tmp_path, "etc/debian_version", "12.5\n")
    put(
        tmp_path,
        "etc/network/interfaces",
        "source /etc/network/interfaces.d/*\n\n# --- BEGIN PVE ---\nauto lo\niface lo inet loopback\n\n"
        "auto eth0\niface eth0 inet static\n\taddress 10.0.0.2/24\n\tgateway 10.0.0.1\n# --- END PVE ---\n"
        "\n# a user's note\nauto eth9\niface eth9 inet manual\n",
    )
    for _ in range(2):
        setup(tmp_path, "name=eth0,ip=10.0.0.100/32,gw=11.0.0.1")
        text = (tmp_path / "etc/network/interfaces").read_text()
        assert text == (
            "source /etc/network/interfaces.d/*\n\nauto lo\niface lo inet loopback\n\nauto eth0\n"
            "iface eth0 inet static\n\taddress 10.0.0.100/32\n# --- BEGIN PVE ---\n"
            "\tpost-up ip route add 11.0.0.1 dev eth0\n"
            "\tpost-up ip route add default via 11.0.0.1 dev eth0\n"
            "\tpre-down ip route del default via 11.0.0.1 dev eth0\n"
            "\tpre-down ip route del 11.0.0.1 dev eth0\n"
            "# --- END PVE ---\n\n# a user's note\nauto eth9\niface eth9 inet manual\n"
        )


def test_a_template_stanza_is_rewritten_in_place_keeping_its_other_options(tmp_path):
    put(tmp_path, "etc/debian_version", "12.5\n")
    put(
        tmp_path,
        "etc/network/interfaces",
        "auto lo\niface lo inet loopback\n\nauto eth0\niface eth0 inet dhcp\n\thostname x\n",
    )
    setup(tmp_path, "name=eth0,ip=10.0.0.2/24,gw=10.0.0.1,ip6=auto", "name=eth1,ip=dhcp,ip6=dhcp")
    assert (tmp_path / "etc/network/interfaces").read_text() == (
        "auto lo\niface lo inet loopback\n\nauto eth0\niface eth0 inet static\n\taddress 10.0.0.2/24\n"
        "\tgateway 10.0.0.1\n\thostname x\n\niface eth0 inet6 auto\n\nauto eth1\niface eth1 inet dhcp\n\n"
        "iface eth1 inet6 dhcp\n\n"
    )


def test_networkd_files_for_ubuntu(tmp_path):
    put(tmp_path, "etc/os-release", "ID=ubuntu\n")
    put(tmp_path, "etc/lsb-release", "DISTRIB_ID=Ubuntu\nDISTRIB_RELEASE=24.04\n")
    setup(tmp_path, "name=eth0,ip=10.0.0.2/32,gw=10.9.0.1,ip6=auto", "name=eth1,ip=dhcp")
    assert (tmp_path / "etc/systemd/network/eth0.network").read_text() == (
        "[Match]\nName = eth0\n\n[Network]\nDescription = Interface eth0 autoconfigured by PVE\n"
        "Address = 10.0.0.2/32\nGateway = 10.9.0.1\nDHCP = no\nIPv6AcceptRA = true\n\n[Route]\n"
        "Destination = 10.9.0.1/32\nScope = link\n"
    )
    assert "DHCP = ipv4\n" in (tmp_path / "etc/systemd/network/eth1.network").read_text()


def test_busybox_runs_udhcpc_from_a_marked_inittab_block(tmp_path):
    put(tmp_path, "etc/os-release", "ID=busybox\n")
    put(tmp_path, "etc/inittab", "::sysinit:/etc/init.d/rcS\n")
    setup(tmp_path, "name=eth0,bridge=b,ip=dhcp", "name=eth1,bridge=b,ip=10.0.0.2/24")
    assert (tmp_path / "etc/inittab").read_text() == (
        "::sysinit:/etc/init.d/rcS\n# --- BEGIN PVE ---\n"
        "::respawn:/etc/caisson/udhcpc.script run eth0\n"
        "# --- END PVE ---\n"
    )
    assert os.access(tmp_path / UDHCPC_SCRIPT, os.X_OK)
    setup(tmp_path, "name=eth0,bridge=b,ip=10.0.0.2/24")
    assert "udhcpc" not in (tmp_path / "etc/inittab").read_text()
    with distro.Root(tmp_path) as fs:
        assert not distro.detect(fs, distro.Settings()).configures_addresses  # the engine sets them


def test_resolv_conf_from_the_config_or_the_host_without_loopback(tmp_path):
    host = "nameserver 127.0.0.53\nnameserver 10.1.1.1\nnameserver ::1\nsearch a.test b.test\n"
    assert distro.host_resolver(host) == (("10.1.1.1",), "a.test b.test")
    put(tmp_path, "etc/resolv.conf", "nameserver 9.9.9.9\n")
    setup(tmp_path, nameserver="192.0.2.1,192.0.2.2", searchdomain="x.test")
    assert (
        (tmp_path / "etc/resolv.conf").read_text()
        == "# --- BEGIN PVE ---\nsearch x.test\nnameserver 192.0.2.1\nnameserver 192.0.2.2\n# --- END PVE ---\n"
    )
    setup(tmp_path, host_nameservers=("10.1.1.1",), host_search="a.test")
    assert "search a.test\nnameserver 10.1.1.1\n" in (tmp_path / "etc/resolv.conf").read_text()


def test_writes_never_follow_a_symlink_out_of_the_root(tmp_path):
    root, outside = tmp_path / "root", tmp_path / "host"
    outside.mkdir()
    (outside / "interfaces").write_text("host file\n")
    put(root, "etc/debian_version", "12.5\n")
    os.symlink(outside, root / "etc/network")  # a directory on the path: resolved inside the root
    os.symlink(outside / "resolv", root / "etc/resolv.conf")  # systemd-resolved's layout: left alone
    os.symlink("../../../host/hosts", root / "etc/hosts")  # up and out: stays inside, replaced by a file
    setup(root, "name=eth0,ip=dhcp", nameserver="192.0.2.1", hostname="ct1")
    assert (outside / "interfaces").read_text() == "host file\n" and sorted(os.listdir(outside)) == ["interfaces"]
    assert "iface eth0 inet dhcp" in (root / str(outside).lstrip("/") / "interfaces").read_text()
    assert os.path.islink(root / "etc/resolv.conf") and not (outside / "resolv").exists()
    assert not os.path.islink(root / "etc/hosts") and "127.0.1.1 ct1" in (root / "etc/hosts").read_text()


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
