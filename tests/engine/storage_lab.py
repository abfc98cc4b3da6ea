"""A node with every storage backend: btrfs and a small ext4 on loop-mounted image files under a temp dir.

The fixture writes ``storage.cfg`` for a private engine root::

    local          dir      <root>                (directories; raw images when a size is given)
    local-btrfs    btrfs    <tmp>/btrfs/store     (a 600 MiB btrfs image, loop-mounted)
    local-overlay  overlay  <tmp>/overlay
    btrfs-dir      dir      <tmp>/btrfs/dir       (raw images on btrfs: they clone with FICLONE)
    tiny           dir      <tmp>/tiny            (a 24 MiB ext4, to fill the disk on purpose)
    tmplonly       dir      <tmp>/tmplonly        (content vztmpl only)

and unmounts and removes everything afterwards.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.engine.mounts import host_mounts  # noqa: F401 - the storage tests import it from here

NEEDED = ("mkfs.btrfs", "mkfs.ext4", "btrfs")


@dataclass
class Lab:
    engine: object
    base: Path
    btrfs: Path
    tiny: Path

    def sh(self, ctid: int, script: str) -> tuple[int, str]:
        code, out, err = self.engine.exec_output(ctid, ["/bin/sh", "-c", script])
        return code, (out + err).decode(errors="replace")


def _mount_image(image: Path, size: str, mkfs: list[str], target: Path) -> None:
    with open(image, "wb") as handle:
        handle.truncate(_bytes(size))
    subprocess.run([*mkfs, str(image)], check=True, capture_output=True)
    target.mkdir()
    subprocess.run(["mount", "-o", "loop", str(image), str(target)], check=True, capture_output=True)


def _bytes(size: str) -> int:
    return int(size[:-1]) << {"M": 20, "G": 30}[size[-1]]


@pytest.fixture(scope="module")
def lab(tmp_path_factory, cgroup_parent):
    missing = [tool for tool in NEEDED if shutil.which(tool) is None]
    if missing:
        pytest.fail(f"missing tools (scripts/setup.sh installs them): {', '.join(missing)}")
    from engine.lifecycle import Engine
    from engine.storage import cfg
    from engine.storage.base import StorageDef

    base = tmp_path_factory.mktemp("storage")
    os.chmod(base, 0o711)
    mounted: list[Path] = []
    try:
        _mount_image(base / "btrfs.img", "600M", ["mkfs.btrfs", "-q"], base / "btrfs")
        mounted.append(base / "btrfs")
        _mount_image(base / "tiny.img", "24M", ["mkfs.ext4", "-q", "-m", "0"], base / "tiny")
        mounted.append(base / "tiny")
        root = base / "state"
        engine = Engine(root=root, run_dir=base / "run", cgroup_parent=cgroup_parent, reaper=True)
        storages = {
            "local": StorageDef("local", "dir", root, frozenset({"rootdir", "vztmpl", "backup"})),
            "local-btrfs": StorageDef("local-btrfs", "btrfs", base / "btrfs" / "store", frozenset({"rootdir"})),
            "local-overlay": StorageDef("local-overlay", "overlay", base / "overlay", frozenset({"rootdir"})),
            "btrfs-dir": StorageDef("btrfs-dir", "dir", base / "btrfs" / "dir", frozenset({"rootdir"})),
            "tiny": StorageDef("tiny", "dir", base / "tiny", frozenset({"rootdir"})),
            "tmplonly": StorageDef("tmplonly", "dir", base / "tmplonly", frozenset({"vztmpl"})),
        }
        cfg.save(root, storages)
        yield Lab(engine, base, base / "btrfs", base / "tiny")
        for ctid in reversed(engine.ids()):
            try:
                engine.destroy(ctid, force=True)
            except Exception:  # noqa: BLE001 - a linked clone first, then its source
                pass
        for ctid in engine.ids():
            engine.destroy(ctid, force=True)
    finally:
        for target in reversed(mounted):
            subprocess.run(["umount", str(target)], capture_output=True)
        shutil.rmtree(base, ignore_errors=True)


BACKENDS = {
    # backend: create options giving a rootfs on it
    "dir": {"rootfs": "local:0"},
    "loop": {"rootfs": "local:0.25"},
    "btrfs": {"rootfs": "local-btrfs:0.25"},
    "overlay": {"storage": "local-overlay"},
}


@pytest.fixture
def make(lab, busybox_template):
    """Creates busybox containers on the lab's engine and destroys them after the test."""
    made: list[int] = []
    counter = [500 + (os.getpid() % 50) * 1000]

    def create(backend: str | None = None, options: dict | None = None, start: bool = True, **kwargs) -> int:
        while True:
            counter[0] += 1
            if not lab.engine.exists(counter[0]):
                break
        ctid = counter[0]
        made.append(ctid)
        lab.engine.create(
            ctid,
            busybox_template,
            {"memory": "128", "swap": "0", **(BACKENDS[backend] if backend else {}), **(options or {})},
            **kwargs,
        )
        if start:
            lab.engine.start(ctid)
        return ctid

    create.made = made
    yield create
    for ctid in reversed(made):
        if lab.engine.exists(ctid):
            try:
                lab.engine.destroy(ctid, force=True)
            except Exception:  # noqa: BLE001 - clones first
                pass
    for ctid in made:
        if lab.engine.exists(ctid):
            lab.engine.unlock(ctid)
            lab.engine.destroy(ctid, force=True)
