"""Restores: bad archives refused, restoring over a container, id maps, volumes of their own."""

from __future__ import annotations

import os
import tarfile
from pathlib import Path

import pytest

from engine.backup.dump import backup
from engine.backup.restore import restore
from engine.errors import (
    AlreadyExists,
    InvalidState,
    NotFound,
    UnsafeArchive,
    ValidationError,
)
from tests.engine.backup_support import (
    BASE,
    members,
    rootfs,
    tar_of,
)


def test_bad_archives_and_targets_are_refused_and_change_nothing(
    engine, busybox_template, container, ctid_factory, tmp_path
):
    good = Path(backup(engine, container, dumpdir=tmp_path).archive)
    images = sorted(os.listdir(engine.layout.images))
    ids = engine.ids()
    target = ctid_factory()
    with pytest.raises(InvalidState, match="is running"):
        restore(engine, good, container, force=True)
    with pytest.raises(AlreadyExists, match="force"):
        restore(engine, good, container)
    (tmp_path / "notatar.tar").write_bytes(b"hello" * 200)
    with pytest.raises(ValidationError, match="unknown archive format"):
        restore(engine, tmp_path / "notatar.tar", target)
    conf = b"hostname: evil\nunprivileged: 1\n"
    with pytest.raises(UnsafeArchive, match=r"'\.\.' components"):
        restore(
            engine, tar_of(tmp_path / "dotdot.tar", [("./etc/vzdump/pct.conf", conf), ("./../escape", b"x")]), target
        )
    assert not (engine.layout.images / "escape").exists() and not (tmp_path / "escape").exists()
    with pytest.raises(ValidationError, match="no container config"):
        restore(engine, tar_of(tmp_path / "noconf.tar", [("./bin/x", b"x")]), target)
    with pytest.raises(ValidationError, match="memory"):
        restore(engine, tar_of(tmp_path / "badconf.tar", [("./etc/vzdump/pct.conf", b"memory: lots\n")]), target)
    with pytest.raises(ValidationError, match="storage 'tank'"):
        restore(engine, good, target, storage="tank")
    with pytest.raises(NotFound):
        restore(engine, tmp_path / "missing.tar.zst", target)
    assert sorted(os.listdir(engine.layout.images)) == images and engine.ids() == ids


def test_restore_over_a_stopped_container_keeps_the_old_one_until_the_new_one_is_complete(
    engine, busybox_template, ctid_factory, tmp_path
):
    ctid = ctid_factory()
    engine.create(ctid, busybox_template, {"hostname": "old"})
    (rootfs(engine, ctid) / "root" / "marker").write_text("old\n")
    archive = Path(backup(engine, ctid, dumpdir=tmp_path).archive)
    (rootfs(engine, ctid) / "root" / "marker").write_text("changed after the backup\n")
    before = engine.config(ctid).render()
    conf = b"hostname: new\nunprivileged: 1\n"
    bad = tar_of(tmp_path / "half.tar", [("./etc/vzdump/pct.conf", conf), ("./sbin/init", b"x"), ("../x", b"x")])
    with pytest.raises(UnsafeArchive):
        restore(engine, bad, ctid, force=True)
    assert engine.config(ctid).render() == before
    assert (rootfs(engine, ctid) / "root" / "marker").read_text() == "changed after the backup\n"
    assert engine.ids().count(ctid) == 1 and not [i for i in engine.ids() if i >= 999_900_000]

    result = restore(engine, archive, ctid, force=True, options={"hostname": "renewed"})
    assert result.replaced and engine.config(ctid).hostname == "renewed"
    assert (rootfs(engine, ctid) / "root" / "marker").read_text() == "old\n"
    assert os.listdir(engine.layout.image_dir(ctid)) == [rootfs(engine, ctid).name]  # the old disk is gone
    assert not [i for i in engine.ids() if i >= 999_900_000]
    engine.start(ctid)
    assert engine.exec_output(ctid, ["hostname"])[1] == b"renewed\n"


def test_restore_keeps_an_id_map_of_its_own_and_reports_progress(
    engine, busybox_template, ctid_factory, tmp_path, monkeypatch
):
    class NoNames:  # the archive writer must not look owners' names up, file by file
        def getpwuid(self, uid):
            raise AssertionError("a user name was looked up")

        getgrgid = getpwuid

    monkeypatch.setattr(tarfile, "pwd", NoNames())
    monkeypatch.setattr(tarfile, "grp", NoNames())
    lines = ["u 0 300000 65536", "g 0 300000 65536"]
    ctid = ctid_factory()
    engine.create(ctid, busybox_template, {"lxc.idmap": lines})
    assert os.stat(rootfs(engine, ctid) / "bin" / "busybox").st_uid == 300000
    archive = backup(engine, ctid, dumpdir=tmp_path).archive
    found = {m.name: m for m in members(Path(archive))}
    assert (found["./bin/busybox"].uid, found["./bin/busybox"].uname, found["./bin/busybox"].gname) == (0, "", "")

    engine.destroy(ctid)  # beside the original, the restore would get a free range (test_idranges)
    new, seen = ctid_factory(), []
    restore(engine, archive, new, progress=lambda done, total: seen.append((done, total)))
    assert engine.config(new).current.raw_values("lxc.idmap") == lines
    assert os.stat(rootfs(engine, new) / "bin" / "busybox").st_uid == 300000
    assert seen == sorted(seen) and seen[-1] == (os.path.getsize(archive),) * 2


def test_a_volume_mount_point_is_restored_as_a_volume_of_its_own(engine, busybox_template, ctid_factory, tmp_path):
    ctid = ctid_factory()
    engine.create(ctid, busybox_template, {"hostname": "vols", "mp0": "local:1,mp=/data,backup=1"})
    props = engine.config(ctid).get("mp0")
    _, driver, vol = engine.storages.resolve(str(props["volume"]), ctid, key="mp0")
    with driver.writable_tree(vol) as volume:  # a raw image on the directory storage, mounted privately
        (volume / "sub").mkdir()
        (volume / "sub" / "file").write_text("on the volume\n")
        os.chown(volume / "sub" / "file", BASE + 7, BASE + 7)
        os.link(volume / "sub" / "file", volume / "second")
    (rootfs(engine, ctid) / "root" / "on-root").write_text("root disk\n")
    archive = backup(engine, ctid, dumpdir=tmp_path).archive

    clone = ctid_factory()
    result = restore(engine, archive, clone)
    config = engine.config(clone)
    new = config.get("mp0")
    assert new["mp"] == "/data" and new["backup"] and new["size"] == 1 << 30
    assert str(new["volume"]) == f"local:{clone}/vm-{clone}-disk-1.raw"
    assert any(n.startswith("mp0: restored as a volume of its own") for n in result.notes)
    _, driver, vol = engine.storages.resolve(str(new["volume"]), clone, key="mp0")
    with driver.tree(vol) as copy:
        assert (copy / "sub" / "file").read_text() == "on the volume\n"
        assert os.stat(copy / "sub" / "file").st_uid == BASE + 7
        assert os.stat(copy / "second").st_ino == os.stat(copy / "sub" / "file").st_ino
        assert os.stat(copy).st_uid == BASE and not list(copy.glob(".restore-*"))
    new_root = rootfs(engine, clone)
    assert (new_root / "root" / "on-root").read_text() == "root disk\n"
    assert not list((new_root / "data").iterdir()) if (new_root / "data").exists() else True
    assert not list(tmp_path.glob(".restore-*"))
    engine.start(clone)
    assert engine.exec_output(clone, ["cat", "/data/sub/file"])[1] == b"on the volume\n"
