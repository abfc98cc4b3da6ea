"""Custom templates from stopped containers: unshifted owners, identity cleared, usable like any template."""

from __future__ import annotations

import os
import tarfile

import pytest
import zstandard

from engine.errors import AlreadyExists, InvalidState, ValidationError


def members(path) -> dict[str, tarfile.TarInfo]:
    with (
        open(path, "rb") as raw,
        zstandard.ZstdDecompressor().stream_reader(raw) as stream,
        tarfile.open(fileobj=stream, mode="r|") as tar,
    ):
        return {m.name: m for m in tar}


def test_a_container_becomes_a_template_and_a_new_container_boots_from_it(engine, busybox_template, ctid_factory):
    ctid = ctid_factory()
    engine.create(ctid, busybox_template, {"hostname": "original"})
    engine.start(ctid)
    # A stand-in for OpenSSH: a config, host keys, and an ssh-keygen that makes a key for -A.
    keygen = '#!/bin/sh\n[ "$1" = -A ] && echo new > /etc/ssh/ssh_host_ed25519_key\n'
    script = (
        "mkdir -p /etc/ssh /srv /usr/bin && echo key > /etc/ssh/ssh_host_ed25519_key "
        "&& echo c > /etc/ssh/sshd_config "
        f"&& printf '{keygen}' > /usr/bin/ssh-keygen && chmod 755 /usr/bin/ssh-keygen "
        "&& echo 0123456789abcdef > /etc/machine-id && echo app > /srv/app && chown 1000:1000 /srv/app"
    )
    assert engine.exec_output(ctid, ["sh", "-c", script])[0] == 0
    with pytest.raises(InvalidState, match="is running"):
        engine.make_template(ctid, "mine-1.0-1_amd64.tar.zst")
    engine.stop(ctid)
    name = f"mine{ctid}-1.0-1_amd64.tar.zst"
    path = engine.make_template(ctid, name)
    assert path == engine.layout.templates / name
    found = members(path)
    assert "./etc/ssh/ssh_host_ed25519_key" not in found and "./etc/ssh/sshd_config" in found
    assert found["./etc/machine-id"].size == 0
    assert (found["./srv/app"].uid, found["./srv/app"].gid) == (1000, 1000)  # back to the container's ids
    assert found["./bin/busybox"].uid == 0
    # No temporary file of the packing stays (download locks of other tests may share the store).
    assert not any(p.name.startswith(f".{name}") for p in engine.layout.templates.iterdir())

    clone = ctid_factory()
    engine.create(clone, f"local:vztmpl/{name}", {"hostname": "fromtemplate"})
    engine.start(clone)
    code, out, _ = engine.exec_output(
        clone, ["sh", "-c", "cat /srv/app; hostname; stat -c %u /srv/app; cat /etc/ssh/ssh_host_ed25519_key"]
    )
    assert out.decode().split() == ["app", "fromtemplate", "1000", "new"]  # host keys made at first start
    assert os.stat(engine._rootfs(engine.config(clone)) / "srv" / "app").st_uid == 101000
    engine.stop(clone)
    with pytest.raises(AlreadyExists):
        engine.make_template(ctid, name)


@pytest.mark.parametrize("name", ["../x.tar.zst", "a/b.tar.zst", ".hidden.tar.zst", "plain.tar.gz", "noext"])
def test_bad_template_names_are_refused(engine, busybox_template, ctid_factory, name):
    ctid = ctid_factory()
    engine.create(ctid, busybox_template)
    with pytest.raises(ValidationError):
        engine.make_template(ctid, name)


@pytest.fixture(scope="module")
def overlay_engine(tmp_path_factory, cgroup_parent):
    """An engine whose node has an overlay storage beside ``local``."""
    from engine.lifecycle import Engine
    from engine.storage import cfg
    from engine.storage.base import StorageDef

    base = tmp_path_factory.mktemp("overlay-node")
    os.chmod(base, 0o711)
    root = base / "state"
    node = Engine(root=root, run_dir=base / "run", cgroup_parent=cgroup_parent, reaper=True)
    cfg.save(
        root,
        {
            "local": StorageDef("local", "dir", root, frozenset({"rootdir", "vztmpl"})),
            "local-overlay": StorageDef("local-overlay", "overlay", base / "overlay", frozenset({"rootdir"})),
        },
    )
    yield node
    for ctid in node.ids():
        node.destroy(ctid, force=True)


@pytest.mark.parametrize("backend", ["raw image", "overlay"])
def test_make_template_reads_image_and_overlay_volumes_through_the_driver(request, busybox_template, backend):
    """A raw image or an overlay is only an empty mount point on the host: the packer must see
    the volume's own tree (mounted privately), not that directory."""
    if backend == "raw image":
        node, options = request.getfixturevalue("engine"), {"rootfs": "local:1"}
    else:
        node, options = request.getfixturevalue("overlay_engine"), {"storage": "local-overlay"}
    ctid = 900 + os.getpid() % 50
    while node.exists(ctid):
        ctid += 1
    made = [ctid]
    try:
        node.create(ctid, busybox_template, options)
        _, driver, vol = node._rootfs_volume(node.config(ctid))
        assert driver.info.mounted_at_start
        with driver.writable_tree(vol) as tree:  # something of its own, owned by a container user
            (tree / "srv").mkdir()
            os.chown(tree / "srv", 100000, 100000)
            (tree / "srv" / "app").write_text("app\n")
            os.chown(tree / "srv" / "app", 101000, 101000)
        host_dir = node._rootfs(node.config(ctid))
        assert not (host_dir / "bin").exists()  # what the old code packed: an empty directory
        name = f"fromvol{ctid}-1.0-1_amd64.tar.zst"
        path = node.make_template(ctid, name)
        found = members(path)
        assert found["./bin/busybox"].isreg() and found["./bin/busybox"].uid == 0
        assert found["./sbin/init"].issym()
        assert "./lost+found" not in found  # the ext4 image's own, owned by the host's root
        assert (found["./srv/app"].uid, found["./srv/app"].gid) == (1000, 1000)
        assert found["./etc/hostname"].size == len(b"localhost\n")
        assert not any(p.startswith("/proc/") for p in _mount_points())  # the private mount went with its helper

        clone = ctid + 1
        while node.exists(clone):
            clone += 1
        made.append(clone)
        node.create(clone, f"local:vztmpl/{name}")
        rootfs = node._rootfs(node.config(clone))
        assert (rootfs / "srv" / "app").read_text() == "app\n"
        assert os.stat(rootfs / "srv" / "app").st_uid == 101000
        path.unlink()
    finally:
        for each in made:
            if node.exists(each):
                node.destroy(each, force=True)


def _mount_points() -> list[str]:
    with open("/proc/self/mountinfo") as handle:
        return [line.split()[4] for line in handle]
