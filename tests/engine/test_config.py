"""The pct config format: parsing, validation messages, round trips, atomic writes."""

from __future__ import annotations

import os

import pytest

from engine import syscalls
from engine.config import ContainerConfig, parse_ctid, read_config, write_atomic, write_config
from engine.errors import NotFound, ValidationError

PROXMOX_CONFIG = """#Web server%3A nginx
#second line
arch: amd64
cores: 2
features: nesting=1,keyctl=1
hostname: web01
memory: 1024
net0: name=eth0,bridge=vmbr0,hwaddr=BC:24:11:AA:BB:CC,ip=dhcp,type=veth
onboot: 1
ostype: debian
rootfs: local:101/subvol-101-disk-0.subvol,size=8G
swap: 512
unprivileged: 1
lxc.idmap: u 0 100000 65536
lxc.idmap: g 0 100000 65536

[before-upgrade]
#snapshot note
arch: amd64
hostname: web01
memory: 512
rootfs: local:101/subvol-101-disk-0.subvol,size=8G
snaptime: 1700000000
"""


def test_parses_a_proxmox_config_with_description_raw_keys_and_snapshots():
    config = ContainerConfig.parse(101, PROXMOX_CONFIG)
    assert config.hostname == "web01"
    assert config.get("memory") == 1024
    assert config.get("cores") == 2
    assert config.feature("nesting") and config.feature("keyctl") and not config.feature("fuse")
    assert config.get("rootfs") == {"volume": "local:101/subvol-101-disk-0.subvol", "size": 8 << 30}
    assert config.get("net0")["hwaddr"] == "BC:24:11:AA:BB:CC"
    assert config.current.description == "Web server: nginx\nsecond line"
    assert config.current.raw_values("lxc.idmap") == ["u 0 100000 65536", "g 0 100000 65536"]
    assert list(config.snapshots) == ["before-upgrade"]
    assert config.snapshots["before-upgrade"].get("memory") == 512
    assert config.snapshots["before-upgrade"].description == "snapshot note"


def test_render_round_trips():
    config = ContainerConfig.parse(101, PROXMOX_CONFIG)
    again = ContainerConfig.parse(101, config.render())
    assert again.render() == config.render()
    assert again.digest() == config.digest()


def test_defaults_when_keys_are_absent():
    config = ContainerConfig.parse(100, "hostname: a\n")
    assert config.get("memory") == 512
    assert config.get("swap") == 512
    assert config.unprivileged is True
    assert config.get("cores") is None


@pytest.mark.parametrize(
    "line, key, words",
    [
        ("memory: abc", "memory", "not an integer"),
        ("memory: 8", "memory", "outside"),
        ("cores: -1", "cores", "outside"),
        ("cpulimit: nan", "cpulimit", "outside"),
        ("hostname: bad;name", "hostname", "not a valid host name"),
        ("hostname: " + "a" * 64, "hostname", "not a valid host name"),
        ("unprivileged: yes", "unprivileged", "0 or 1"),
        ("features: nesting=1,bogus=1", "features", "unknown property 'bogus'"),
        ("rootfs: local:../../etc", "rootfs", "must stay inside"),
        ("rootfs: /etc", "rootfs", "<storage>:<volume name>"),
        ("net0: bridge=vmbr0", "net0", "'name'"),
        ("net0: name=eth0,hwaddr=01:00:00:00:00:01", "net0", "multicast"),
        ("colour: blue", "colour", "unknown configuration key 'colour'"),
        ("lxc.apparmor.profile: unconfined", "lxc.apparmor.profile", "not supported"),
        ("net10: name=eth0", "net10", "unknown configuration key"),
    ],
)
def test_bad_values_name_the_key(line, key, words):
    with pytest.raises(ValidationError) as info:
        ContainerConfig.parse(100, f"ostype: debian\n{line}\n", origin="100.conf")
    assert info.value.key == key
    assert words in str(info.value)
    assert "100.conf line 2" in str(info.value)


def test_duplicate_keys_and_sections_are_refused():
    with pytest.raises(ValidationError, match="'memory' appears twice"):
        ContainerConfig.parse(100, "memory: 512\nmemory: 1024\n")
    with pytest.raises(ValidationError, match=r"\[s1\] appears twice"):
        ContainerConfig.parse(100, "memory: 512\n[s1]\nmemory: 64\n[s1]\n")
    with pytest.raises(ValidationError, match="snapshot name"):
        ContainerConfig.parse(100, "memory: 512\n[1bad]\n")


def test_snapshot_only_keys_are_refused_in_the_current_section():
    with pytest.raises(ValidationError, match="unknown configuration key 'snaptime'"):
        ContainerConfig.parse(100, "snaptime: 5\n")


@pytest.mark.parametrize(
    "hostname",
    [
        "",
        "-lead",
        "trail-",
        "semi;colon",
        "dollar$(x)",
        "new\nline",
        "caf\u00e9",
        "rtl\u200fmark",
        "a" * 64,
        ("a" * 63 + ".") * 4 + "a",
    ],
)
def test_set_refuses_bad_hostnames(hostname):
    config = ContainerConfig(100)
    with pytest.raises(ValidationError) as info:
        config.set("hostname", hostname)
    assert info.value.key == "hostname"


def test_description_with_newlines_and_percent_round_trips():
    config = ContainerConfig(100)
    config.set("description", "100% ready\nline two: ok")
    assert ContainerConfig.parse(100, config.render()).current.description == "100% ready\nline two: ok"


@pytest.mark.parametrize(
    "value, ok", [("100", True), ("999999999", True), ("99", False), ("abc", False), ("-5", False), ("1e3", False)]
)
def test_container_ids(value, ok):
    if ok:
        assert parse_ctid(value) == int(value)
    else:
        with pytest.raises(ValidationError):
            parse_ctid(value)


def test_write_is_atomic_and_leaves_no_temp_files(tmp_path):
    path = tmp_path / "100.conf"
    config = ContainerConfig.parse(100, "hostname: a\nmemory: 256\n")
    write_config(path, config)
    assert read_config(path, 100).get("memory") == 256
    config.set("memory", "1024")
    write_config(path, config)
    assert read_config(path, 100).get("memory") == 1024
    assert sorted(p.name for p in tmp_path.iterdir()) == ["100.conf"]


def test_power_loss_during_a_write_leaves_old_or_new(tmp_path):
    """Kill a writer mid-loop many times: the file is always one whole version."""
    path = tmp_path / "100.conf"
    versions = {f"hostname: v{i}\nmemory: {512 + i}\n" for i in range(50)}
    write_atomic(path, "hostname: v0\nmemory: 512\n")
    pid = syscalls.fork_quietly()
    if pid == 0:
        try:
            i = 0
            while True:
                write_atomic(path, f"hostname: v{i % 50}\nmemory: {512 + i % 50}\n")
                i += 1
        finally:
            os._exit(0)
    import time

    time.sleep(0.2)
    os.kill(pid, 9)
    os.waitpid(pid, 0)
    assert path.read_text() in versions
    for leftover in tmp_path.iterdir():
        if leftover.name != "100.conf":
            leftover.unlink()  # a temp file of the killed writer; never the config itself


def test_missing_config_is_not_found(tmp_path):
    with pytest.raises(NotFound, match="container 123 does not exist"):
        read_config(tmp_path / "123.conf", 123)


def test_proxmox_key_order_pending_section_and_late_comments():
    """Keys sort as strings (mp10 before mp2, as Perl's sort), [pve:pending] sits between the current config
    and the snapshots, and a comment after the first key joins the description at the top."""
    text = (
        "hostname: a\n#late note: 100%\nmp2: local:101/b.raw,mp=/b\nmp10: local:101/c.raw,mp=/c\n"
        "rootfs: local:101/a.raw\nunused0: local:101/old.raw\n\n[zz]\nrootfs: local:101/a.raw\nsnaptime: 1\n"
        "\n[pve:pending]\ndelete: mp2,!unused0\nmemory: 1024\n\n[aa]\nrootfs: local:101/a.raw\nsnaptime: 2\n"
        "vmstate: local:101/state.raw\n"
    )
    config = ContainerConfig.parse(101, text)
    assert config.current.description == "late note: 100%"
    assert config.pending.values == {"delete": "mp2,!unused0", "memory": "1024"}
    assert config.render() == (
        "#late note%3A 100%25\nhostname: a\nmp10: local:101/c.raw,mp=/c\nmp2: local:101/b.raw,mp=/b\n"
        "rootfs: local:101/a.raw\nunused0: local:101/old.raw\n\n[pve:pending]\ndelete: mp2,!unused0\n"
        "memory: 1024\n\n[aa]\nrootfs: local:101/a.raw\nsnaptime: 2\nvmstate: local:101/state.raw\n\n"
        "[zz]\nrootfs: local:101/a.raw\nsnaptime: 1\n"
    )


def test_unused_entry_of_a_mounted_volume_is_not_written():
    config = ContainerConfig.parse(101, "rootfs: local:101/a.raw\nunused0: local:101/a.raw\nunused1: local:x\n")
    assert config.render() == "rootfs: local:101/a.raw\nunused1: local:x\n"


@pytest.mark.parametrize(
    "text, key",
    [
        ("[pve:pending]\ndelete: nosuchkey\n", "delete"),
        ("delete: memory\n", "delete"),
        ("unused0: no-volume\n", "unused0"),
        ("unused256: local:x\n", "unused256"),
        ("vmstate: local:x\n", "vmstate"),
        ("ostype: Red Hat\n", "ostype"),
    ],
)
def test_invalid_proxmox_keys_are_refused_by_name(text, key):
    with pytest.raises(ValidationError) as caught:
        ContainerConfig.parse(101, text)
    assert key in str(caught.value)


def test_ostype_outside_the_list_is_kept_on_read_but_refused_on_set():
    config = ContainerConfig.parse(101, "ostype: redhat\n")
    assert config.render() == "ostype: redhat\n"
    with pytest.raises(ValidationError, match="ostype"):
        config.set("ostype", "redhat")
