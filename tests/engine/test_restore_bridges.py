"""A backup from another node names that node's bridge: it restores with a warning, and start names it."""

from __future__ import annotations

from pathlib import Path

import pytest

from engine.backup.restore import restore
from engine.errors import EngineError, ValidationError
from tests.engine.backup_support import PROXMOX_CONF, proxmox_archive

MISSING = "vmbr9"
NET0 = f"net0: name=eth0,bridge={MISSING},hwaddr=BC:24:11:5E:00:01,ip=10.99.0.5/24,gw=10.99.0.1,type=veth\n"


@pytest.fixture
def archive(busybox_template, tmp_path) -> Path:
    if Path("/sys/class/net", MISSING).exists():
        pytest.skip(f"this host has an interface {MISSING}")
    path = tmp_path / "vzdump-lxc-104-2025_01_02-03_04_05.tar.zst"
    proxmox_archive(busybox_template, path, PROXMOX_CONF + NET0)
    return path


def test_restore_with_a_missing_bridge_warns_and_start_names_it(engine, archive, ctid_factory):
    ctid = ctid_factory()
    result = restore(engine, archive, ctid)
    (warning,) = [n for n in result.notes if n.startswith("warning:")]
    assert f"net0: bridge '{MISSING}' does not exist" in warning
    assert engine.config(ctid).current.values["net0"].startswith(f"name=eth0,bridge={MISSING},")
    with pytest.raises(EngineError, match=f"net0: bridge '{MISSING}' does not exist"):
        engine.start(ctid)
    assert engine.status(ctid, stats=False).status == "stopped"


def test_create_and_set_still_refuse_a_missing_bridge(engine, archive, ctid_factory):
    """Only a restore keeps such an interface: a new one must name a bridge that exists."""
    ctid = ctid_factory()
    restore(engine, archive, ctid)
    with pytest.raises(ValidationError, match="net0: bridge 'vmbr8' does not exist"):
        engine.set(ctid, {"net0": "name=eth0,bridge=vmbr8,ip=dhcp"})
