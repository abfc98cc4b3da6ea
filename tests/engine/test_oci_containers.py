"""Containers made from OCI archives: the image config mapped as Proxmox maps it, the entrypoint as PID 1,
its output in the console log, a clean shutdown with the image's stop signal; a system image boots."""

from __future__ import annotations

import shlex
import time

import pytest

from engine.config import read_config
from engine.errors import ValidationError
from tests.engine.oci_images import APP_SCRIPT, ImageBuilder, app_image, busybox_base
from tests.engine.test_network_container import BRIDGE, GW, ip, node  # noqa: F401 - node: the bridge fixture


def _log_until(engine, ctid, text: str, timeout: float = 30.0) -> str:
    """The console log once ``text`` is in it (the container's own pace, not a timing assert)."""
    deadline = time.monotonic() + timeout
    log = ""
    while time.monotonic() < deadline:
        log = engine.console_log(ctid).decode(errors="replace")
        if text in log:
            return log
        time.sleep(0.1)
    raise AssertionError(f"{text!r} never appeared in the console log: {log!r}")


@pytest.fixture(scope="module")
def app_archive(tmp_path_factory):
    return app_image().write_archive(tmp_path_factory.mktemp("oci") / "app_1.0.tar")


def test_the_image_config_maps_to_proxmoxs_keys(engine, ctid_factory, app_archive):
    ctid = ctid_factory()
    engine.create(ctid, app_archive, {"hostname": f"app{ctid}"})
    config = read_config(engine.layout.config_path(ctid), ctid)
    text = engine.layout.config_path(ctid).read_text()
    assert shlex.split(config.current.values["entrypoint"]) == ["/bin/sh", "-c", APP_SCRIPT]
    assert config.current.values["cmode"] == "console"
    assert (
        "lxc.environment.runtime: PATH=/bin\nlxc.environment.runtime: GREETING=hello-oci\nlxc.init.uid: 1000\n" in text
    )
    assert config.current.get("env") == "PATH=/bin\0GREETING=hello-oci"
    assert config.current.raw_values("lxc.init.uid") == ["1000"]
    assert config.current.raw_values("lxc.init.gid") == ["1000"]
    assert config.current.raw_values("lxc.init.groups") == ["1001"]
    assert config.current.raw_values("lxc.init.cwd") == ["/data"]
    assert config.current.raw_values("lxc.signal.halt") == ["SIGUSR1"]
    rootfs = engine._rootfs(config)
    assert (rootfs / "srv/vol").is_dir()  # a volume: a directory, owned by the container's root
    assert (rootfs / "srv/vol").stat().st_uid == engine.node.idmap_of(config).host_uid(0)


def test_an_application_image_makes_its_nics_host_managed(tmp_path):
    from engine.config import ContainerConfig
    from engine.oci.imageconfig import ImageConfig, apply

    config = ContainerConfig(100)
    config.set("net0", "name=eth0,bridge=vmbr0,ip=dhcp")
    config.set("net1", "name=eth1,bridge=vmbr0,host-managed=0")
    apply(ImageConfig.of({"config": {"Cmd": ["/app"]}}), config, tmp_path, (0, 0))
    assert config.current.values["net0"] == "name=eth0,bridge=vmbr0,ip=dhcp,host-managed=1"
    assert config.current.values["net1"] == "name=eth1,bridge=vmbr0,host-managed=0"
    assert config.current.raw_values("lxc.signal.halt") == ["SIGTERM"]


def test_the_entrypoint_runs_as_pid_1_and_stops_on_the_images_signal(engine, ctid_factory, app_archive):
    ctid = ctid_factory()
    engine.create(ctid, app_archive, {"hostname": f"app{ctid}", "memory": "128", "swap": "0"})
    status = engine.start(ctid)
    assert status.init == "app"
    log = _log_until(engine, ctid, "greeting=")
    assert "greeting=hello-oci cwd=/data uid=1000 gid=1000" in log
    code, out, _ = engine.exec_output(ctid, ["/bin/cat", "/proc/1/cmdline"])
    assert code == 0 and out.split(b"\0")[:2] == [b"/bin/sh", b"-c"]  # PID 1 is the entrypoint, no init
    engine.shutdown(ctid, timeout=30, force_stop=False)  # fails unless SIGUSR1 made it exit
    assert "stopping on USR1" in engine.console_log(ctid).decode()
    assert engine.status(ctid).status == "stopped"


def test_a_system_image_boots_its_init(engine, ctid_factory, tmp_path):
    image = ImageBuilder()
    image.add_layer(
        [
            *busybox_base(),
            ("sbin", "d", None, 0o755, 0, 0),
            ("sbin/init", "l", "/bin/busybox", 0o777, 0, 0),
            ("etc/inittab", "f", "::sysinit:/bin/echo system-image-up\n::respawn:/bin/sleep 3600\n", 0o644, 0, 0),
        ]
    )
    image.config = {"Cmd": ["/sbin/init"], "Env": ["PATH=/bin"]}
    archive = image.write_archive(tmp_path / "system_1.tar")
    ctid = ctid_factory()
    engine.create(ctid, archive, {"hostname": f"sys{ctid}", "memory": "128", "swap": "0"})
    config = engine.config(ctid)
    assert "entrypoint" not in config.current.values and "cmode" not in config.current.values
    assert engine.start(ctid).init == "busybox"
    _log_until(engine, ctid, "system-image-up")
    engine.shutdown(ctid, timeout=30, force_stop=False)  # busybox init's own SIGUSR2


def test_an_image_with_neither_init_nor_entrypoint_is_refused(engine, ctid_factory, tmp_path):
    image = ImageBuilder()
    image.add_layer(busybox_base())
    archive = image.write_archive(tmp_path / "bare_1.tar")
    ctid = ctid_factory()
    with pytest.raises(ValidationError, match="no /sbin/init"):
        engine.create(ctid, archive, {"hostname": f"bare{ctid}"})
    assert not engine.exists(ctid)


def test_control_characters_in_the_image_config_are_refused(engine, ctid_factory, tmp_path):
    image = app_image()
    image.config = {**image.config, "WorkingDir": "/data\nlxc.idmap: u 0 0 1"}
    archive = image.write_archive(tmp_path / "evil_1.tar")
    ctid = ctid_factory()
    with pytest.raises(ValidationError, match="WorkingDir.*control characters"):
        engine.create(ctid, archive, {"hostname": f"evil{ctid}"})
    assert not engine.exists(ctid)


@pytest.mark.usefixtures("node")  # the bridge
def test_an_applications_nic_is_configured_by_the_host(engine, ctid_factory, tmp_path):
    """host-managed=1: the host sets the addresses even for a family whose own networking would (Debian)."""
    image = app_image()
    image.add_layer(
        [
            ("etc/os-release", "f", 'ID=debian\nVERSION_ID="12"\n', 0o644, 0, 0),
            ("etc/debian_version", "f", "12.8\n", 0o644, 0, 0),
        ]
    )
    archive = image.write_archive(tmp_path / "netapp_1.tar")
    ctid = ctid_factory()
    engine.create(ctid, archive, {"hostname": f"net{ctid}", "net0": f"name=eth0,bridge={BRIDGE},ip={ip(7)}/24,gw={GW}"})
    config = engine.config(ctid)
    assert config.current.values["ostype"] == "debian"
    assert config.get("net0")["host-managed"] is True
    engine.start(ctid)
    try:
        code, out, _ = engine.exec_output(ctid, ["/bin/ip", "-4", "addr", "show", "eth0"])
        assert code == 0 and f"{ip(7)}/24" in out.decode()
        assert engine.exec_output(ctid, ["/bin/ping", "-c1", "-W2", GW])[0] == 0
    finally:
        engine.stop(ctid)


def test_the_oci_raw_keys_are_not_root_equivalent_but_other_raw_keys_stay():
    from engine.root_settings import root_equivalent, section_of

    raw = [(k, "1") for k in ("lxc.init.uid", "lxc.init.gid", "lxc.init.cwd", "lxc.signal.halt")]
    section = section_of({"entrypoint": "/app", "env": "A=1\0B=2", "restart": "always"}, raw)
    assert root_equivalent(section) == {}
    section.raw.append(("lxc.idmap", "u 0 0 65536"))
    assert list(root_equivalent(section)) == ["lxc.idmap"]


PROXMOX_OCI_CONFIG = """\
arch: amd64
cmode: console
entrypoint: /docker-entrypoint.sh nginx -g 'daemon off;'
hostname: nginx
memory: 512
net0: name=eth0,bridge=vmbr0,host-managed=1,hwaddr=BC:24:11:00:00:01,ip=dhcp,type=veth
ostype: debian
rootfs: local-lvm:vm-101-disk-0,size=8G
swap: 512
unprivileged: 1
lxc.environment.runtime: PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
lxc.environment.runtime: NGINX_VERSION=1.29.1
lxc.init.cwd: /
lxc.signal.halt: SIGQUIT
"""


def test_a_proxmox_oci_container_config_reads_and_writes_back_byte_for_byte():
    from engine.config import ContainerConfig
    from engine.oci import launch

    config = ContainerConfig.parse(101, PROXMOX_OCI_CONFIG)
    assert config.render() == PROXMOX_OCI_CONFIG
    assert (
        config.get("env") == "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin\0NGINX_VERSION=1.29.1"
    )
    app = launch.of(config)
    assert app.argv == ("/docker-entrypoint.sh", "nginx", "-g", "daemon off;") and app.cwd == "/"
    assert launch.halt_signal(config, 0) == 3  # SIGQUIT
    config.set("env", "A=1")  # as Proxmox: the env lines replaced, still written first
    assert config.render().endswith("lxc.environment.runtime: A=1\nlxc.init.cwd: /\nlxc.signal.halt: SIGQUIT\n")
