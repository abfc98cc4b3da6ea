"""pct.conf against pve-container's own snapshot test data (../shared/peer-fixtures/pve-container).

Every file round-trips byte for byte (parse -> render) with Proxmox's digest, and every case of
Proxmox's snapshot test goes from ``snapshot-input/<op>/lxc/N.conf`` to ``snapshot-expected/...``
through the engine's config steps (:mod:`engine.snapconfig`).  The storage stand-in decides by volume
name, as Proxmox's test mocks do: ``snapshotable-disk-N`` can be snapshotted and rolled back,
``unsnapshotable-disk-N`` cannot; only ``snapshotable-disk-1``'s snapshots can be deleted, and
``snapshotable-disk-4`` says a rollback is possible but then fails.  The case table (operation,
arguments, whether Proxmox refuses it, the volume operations it makes) is Proxmox's test plan.
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

import pytest

from engine import snapconfig
from engine.config import ContainerConfig
from engine.errors import EngineError

ROOT = Path(__file__).resolve().parents[2]
FIXTURES = ROOT.parent / "shared" / "peer-fixtures" / "pve-container"
FILES = sorted(FIXTURES.glob("snapshot-*/*/lxc/*.conf"))
SNAPTIME = 1234567890
D1, D2, D3 = "local:snapshotable-disk-1", "local:snapshotable-disk-2", "local:snapshotable-disk-3"

pytestmark = pytest.mark.skipif(not FILES, reason=f"peer fixtures not found under {FIXTURES}")


def _id(path: Path) -> str:
    return "/".join(path.relative_to(FIXTURES).parts).replace("/lxc/", "/")


@pytest.mark.parametrize("path", FILES, ids=_id)
def test_round_trip_byte_for_byte_with_proxmox_digest(path):
    text = path.read_text()
    config = ContainerConfig.parse(int(path.stem), text, origin=str(path))
    assert config.render() == text
    assert config.digest() == hashlib.sha1(text.encode()).hexdigest()


class StandIn:
    """Storage and container stand-in: records volume operations; fails where Proxmox's mocks fail."""

    def __init__(self, activate=True, feature=True, freeze=True, kill=True):
        self.ok_activate, self.feature, self.ok_freeze, self.kill = activate, feature, freeze, kill
        self.running = True
        self.made, self.deleted, self.rolled = {}, {}, {}

    @staticmethod
    def _disk(volid):
        match = re.fullmatch(r"local:(un)?snapshotable-disk-(\d+)", volid)
        return (not match.group(1), int(match.group(2))) if match else (False, 0)

    def _record(self, log, volid, name):
        log[volid] = f"{log[volid]},{name}" if volid in log else name

    def activate(self):
        if not self.ok_activate:
            raise EngineError("storage activation failed")

    def freeze(self):
        if not self.ok_freeze:
            raise EngineError("freeze disabled")

    def snapshot(self, volid, name):
        if not self._disk(volid)[0]:
            raise EngineError("volume snapshot disabled")
        self._record(self.made, volid, name)

    def delete_snapshot(self, volid, name):
        if self._disk(volid) != (True, 1):
            raise EngineError("volume snapshot delete disabled")
        self._record(self.deleted, volid, name)

    def rollback_possible(self, volid, name):
        if not self._disk(volid)[0]:
            raise EngineError("volume_rollback_is_possible failed")

    def rollback(self, volid, name):
        if self._disk(volid) not in ((True, 1), (True, 2), (True, 3)):
            raise EngineError("volume snapshot rollback disabled")
        self._record(self.rolled, volid, name)


class Runner:
    """Proxmox's sequence of steps around the engine's config edits; the config is written after each."""

    def __init__(self, path: Path, storage: StandIn):
        self.path, self.storage = path, storage

    def load(self) -> ContainerConfig:
        return ContainerConfig.parse(int(self.path.stem), self.path.read_text(), origin=str(self.path))

    def save(self, config: ContainerConfig) -> None:
        for section in config.snapshots.values():
            if section.values.get("snaptime"):
                section.values["snaptime"] = str(SNAPTIME)
        text = config.render()
        ContainerConfig.parse(config.ctid, text)  # what the engine writes, it can read
        self.path.write_text(text)

    def prepare(self, name, save_vmstate=False, comment=""):
        config = self.load()
        snapconfig.prepare(config, name, comment, SNAPTIME)
        if not self.storage.feature:
            raise EngineError("snapshot feature is not available")
        if save_vmstate:
            raise EngineError("containers have no RAM state to save")
        self.save(config)

    def commit(self, name):
        config = self.load()
        snapconfig.commit(config, name)
        self.save(config)

    def create(self, name, save_vmstate=False, comment=""):
        self.prepare(name, save_vmstate, comment)
        section = self.load().snapshots[name]
        done = []
        try:
            self.storage.activate()
            self.storage.freeze()
            for key, volid in snapconfig.storage_volumes(section):
                self.storage.snapshot(volid, name)
                done.append(key)
        except EngineError:
            self.delete(name, force=True, drives=done)
            raise
        self.commit(name)

    def delete(self, name, force=False, drives=None):
        config = self.load()
        section = snapconfig.snapshot_of(config, name)
        if drives is None:
            self.storage.activate()
        snapconfig.mark_delete(config, name, "snapshot-delete" if drives is None else "snapshot")
        self.save(config)
        gone = []
        for key, volid in snapconfig.storage_volumes(section):
            if drives is None or key in drives:
                try:
                    self.storage.delete_snapshot(volid, name)
                    gone.append(volid)
                except EngineError:
                    if not force:
                        raise
            if not force:
                config = self.load()
                snapconfig.remove_drive(config, name, key)
                self.save(config)
        config = self.load()
        snapconfig.finish_delete(config, name, gone)
        self.save(config)

    def rollback(self, name):
        config = self.load()
        section = snapconfig.snapshot_of(config, name)
        self.storage.activate()
        for _, volid in snapconfig.storage_volumes(section):
            self.storage.rollback_possible(volid, name)
        snapconfig.rollback_prepare(config, name)
        self.storage.running = self.storage.running and not self.storage.kill
        if self.storage.running:
            raise EngineError(f"unable to rollback vm {config.ctid}: vm is running")
        self.save(config)
        for _, volid in snapconfig.storage_volumes(section):
            self.storage.rollback(volid, name)
        config = self.load()
        snapconfig.rollback_apply(config, name)
        self.save(config)
        if section.values.get("vmstate"):
            raise EngineError("a container snapshot has no RAM state to resume")


# (op, vmid, call arguments, Proxmox refuses it, stand-in settings, volume operations made)
CASES = [
    ("prepare", 101, ("test", False, "test comment"), False, {}, {}),
    ("prepare", 102, ("test2", False, "test comment"), False, {}, {}),
    ("prepare", 200, ("test", False, "test comment"), True, {}, {}),  # CT is locked (snapshot)
    ("prepare", 201, ("test", False, "test comment"), True, {}, {}),  # name already used
    ("prepare", 202, ("test", True, "test comment"), True, {}, {}),  # save_vmstate
    ("prepare", 300, ("test", False, "test comment"), True, {"feature": False}, {}),
    ("commit", 101, ("test",), False, {}, {}),
    ("commit", 102, ("test2",), False, {}, {}),
    ("commit", 201, ("test",), True, {}, {}),  # missing snapshot lock
    ("commit", 202, ("test",), True, {}, {}),  # snapshot does not exist
    ("commit", 203, ("test",), True, {}, {}),  # wrong snapshot state
    ("create", 101, ("test", False, "test comment"), False, {}, {"made": {D1: "test"}}),
    ("create", 102, ("test2", False, "test comment"), False, {}, {"made": {D1: "test2"}}),
    ("create", 103, ("test", False, "test comment"), False, {}, {"made": {D1: "test", D2: "test", D3: "test"}}),
    ("create", 201, ("test", False, "test comment"), True, {}, {}),
    ("create", 202, ("test", False, "test comment"), True, {"freeze": False}, {}),
    ("create", 203, ("test", False, "test comment"), True, {}, {"made": {D1: "test"}, "deleted": {D1: "test"}}),
    ("create", 204, ("test", False, "test comment"), True, {"activate": False}, {}),
    ("delete", 101, ("test",), False, {}, {"deleted": {D1: "test"}}),
    ("delete", 102, ("test2",), False, {}, {"deleted": {D1: "test2"}}),
    ("delete", 103, ("test",), False, {}, {"deleted": {D1: "test"}}),
    ("delete", 104, ("test2",), False, {}, {"deleted": {D1: "test2"}}),
    ("delete", 105, ("test", True), False, {}, {}),
    ("delete", 106, ("test", True), False, {}, {"deleted": {D1: "test"}}),
    ("delete", 201, ("test",), True, {}, {}),
    ("delete", 203, ("test",), True, {}, {"deleted": {D1: "test"}}),
    ("delete", 202, ("test",), True, {}, {}),  # CT is locked (backup)
    ("delete", 204, ("test",), True, {"activate": False}, {}),
    ("rollback", 101, ("test",), False, {}, {"rolled": {D1: "test"}}),
    ("rollback", 102, ("test2",), False, {}, {"rolled": {D1: "test2"}}),
    ("rollback", 103, ("test",), False, {}, {"rolled": {D1: "test"}}),
    ("rollback", 104, ("test2",), False, {}, {"rolled": {D1: "test2"}}),
    ("rollback", 105, ("test",), False, {}, {"rolled": {D1: "test", D2: "test", D3: "test"}}),
    ("rollback", 201, ("test2",), True, {}, {}),  # no such snapshot
    ("rollback", 202, ("test",), True, {}, {}),
    ("rollback", 203, ("test",), True, {}, {}),  # incomplete snapshot
    ("rollback", 204, ("test",), True, {}, {}),  # CT is locked (backup)
    ("rollback", 205, ("test",), True, {}, {"rolled": {D1: "test"}}),  # saved RAM state
    ("rollback", 206, ("test",), True, {"kill": False}, {}),
    ("rollback", 207, ("test",), True, {}, {}),
    ("rollback", 208, ("test",), True, {}, {"rolled": {D1: "test", D2: "test"}}),  # stays locked (rollback)
    ("rollback", 209, ("test",), True, {"activate": False}, {}),
]


def test_every_operation_fixture_has_a_case():
    have = {(op, vmid) for op, vmid, *_ in CASES}
    files = {(p.parts[-3], int(p.stem)) for p in FILES if "snapshot-expected" in p.parts}
    assert have == files


@pytest.mark.parametrize("op, vmid, args, refused, settings, volume_ops", CASES, ids=[f"{c[0]}-{c[1]}" for c in CASES])
def test_operation_gives_proxmox_file(tmp_path, op, vmid, args, refused, settings, volume_ops):
    work = tmp_path / f"{vmid}.conf"
    work.write_bytes((FIXTURES / "snapshot-input" / op / "lxc" / f"{vmid}.conf").read_bytes())
    storage = StandIn(**settings)
    runner = Runner(work, storage)
    if refused:
        with pytest.raises(EngineError):
            getattr(runner, op)(*args)
    else:
        getattr(runner, op)(*args)
    assert work.read_text() == (FIXTURES / "snapshot-expected" / op / "lxc" / f"{vmid}.conf").read_text()
    assert {"made": storage.made, "deleted": storage.deleted, "rolled": storage.rolled} == {
        "made": {},
        "deleted": {},
        "rolled": {},
        **volume_ops,
    }
