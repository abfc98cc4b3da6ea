"""A size given to a volume is enforced on every backend, or the backend refuses it by name.

Raw images (a ``dir`` storage given a size) and btrfs subvolumes (qgroup limits) hold a
volume to its size: writing past it fails inside the container.  Directories and overlay
upper layers cannot be held to a size: a size there is refused at create, when a mount
point is added, at clone and restore onto such a storage, and at resize, and nothing is left.
"""

from __future__ import annotations

import os

import pytest

from engine.errors import ValidationError
from engine.storage import Storages
from tests.engine.storage_lab import host_mounts, lab, make  # noqa: F401 - fixtures

ENFORCING = {"loop": "local", "btrfs": "local-btrfs", "loop-on-btrfs": "btrfs-dir"}


def test_each_storage_says_whether_it_enforces_a_size(lab):  # noqa: F811
    storages = Storages(lab.engine.layout.root)
    said = {sid: storages.get(sid).enforces_size for sid in ("local", "local-btrfs", "btrfs-dir", "local-overlay")}
    assert said == {"local": True, "local-btrfs": True, "btrfs-dir": True, "local-overlay": False}


@pytest.mark.parametrize("backend", sorted(ENFORCING))
def test_a_sized_mount_point_is_full_at_its_size_inside(lab, make, backend):  # noqa: F811
    """The mount point of each enforcing backend, 32 MiB, written past from inside the container."""
    ctid = make("dir", {"mp0": f"{ENFORCING[backend]}:0.03125,mp=/data"})
    code, out = lab.sh(ctid, "dd if=/dev/zero of=/data/big bs=1M count=64 conv=fsync 2>&1")
    assert code != 0 and ("No space left" in out or "Disk quota exceeded" in out), out
    written = int(lab.sh(ctid, "du -k /data/big | cut -f1")[1] or 0) << 10
    assert written <= 32 << 20, written
    assert lab.sh(ctid, "echo still-running")[1].strip() == "still-running"


def _leftovers(lab, ctid: int) -> list[str]:  # noqa: F811
    roots = [lab.engine.layout.images, lab.btrfs / "store" / "images", lab.base / "overlay" / "images"]
    return [str(root / str(ctid)) for root in roots if os.path.lexists(root / str(ctid))]


def test_overlay_refuses_a_size_naming_the_storage(lab, make, busybox_template):  # noqa: F811
    e = lab.engine
    mounts = host_mounts(lab.base)
    ctid = 900 + os.getpid() % 50
    while e.exists(ctid):
        ctid += 1
    with pytest.raises(ValidationError, match=r"rootfs: storage 'local-overlay' \(overlay.*cannot enforce a size"):
        e.create(ctid, busybox_template, {"rootfs": "local-overlay:1"})
    assert not e.exists(ctid) and _leftovers(lab, ctid) == [] and host_mounts(lab.base) == mounts

    # Without a size it is made, and a sized mount point or a resize on it is refused.
    ctid = make("overlay", start=False)
    before = e.layout.config_path(ctid).read_text()
    with pytest.raises(ValidationError, match="mp0: storage 'local-overlay'.*cannot enforce a size"):
        e.set(ctid, {"mp0": "local-overlay:1,mp=/data"})
    with pytest.raises(ValidationError, match=r"resize: rootfs is a volume of storage 'local-overlay' \(overlay\)"):
        e.resize(ctid, "rootfs", "+1G")
    # A full clone of a sized volume onto the overlay storage: refused, no clone left.
    sized = make("btrfs", start=False)
    with pytest.raises(ValidationError, match="storage 'local-overlay'.*cannot enforce a size"):
        e.clone(sized, sized + 700, full=True, storage="local-overlay")
    assert not e.exists(sized + 700) and _leftovers(lab, sized + 700) == []
    assert e.layout.config_path(ctid).read_text() == before
    assert sorted(p.name for p in (lab.base / "overlay" / "images" / str(ctid)).iterdir()) == [
        f"subvol-{ctid}-disk-0.overlay"
    ]


def test_a_directory_volume_refuses_a_resize(lab, make):  # noqa: F811
    e = lab.engine
    ctid = make("dir", start=False)
    before = e.layout.config_path(ctid).read_text()
    with pytest.raises(ValidationError, match=r"rootfs is a volume of storage 'local' \(dir\), which cannot"):
        e.resize(ctid, "rootfs", "+1G")
    assert e.layout.config_path(ctid).read_text() == before
