"""Isolated id maps: each container created with one gets a 65536-id range no other holds."""

from __future__ import annotations

import os

import pytest

from engine import idranges
from engine.errors import ValidationError
from engine.idmap import IdMap
from tests.engine.storage_lab import lab, make  # noqa: F401 - fixtures


def test_allocation_skips_the_default_map_other_users_and_taken_ranges(tmp_path):
    subuid = tmp_path / "subuid"
    subuid.write_text("root:100000:65536\nroot:1000000:262144\nalice:1065536:65536\n")
    taken = [(1000000, 65536)]
    fresh = idranges.allocate(taken, str(subuid), str(subuid))
    # 65536-aligned: 1048576 overlaps the taken range, 1114112 alice's.
    assert fresh == IdMap(1179648, 1179648, 65536)
    with pytest.raises(ValidationError, match="no free id range"):
        idranges.allocate(taken + [(1179648, 65536)], str(subuid), str(subuid))


def test_without_a_subordinate_range_lxds_convention_is_used(tmp_path):
    empty = tmp_path / "subuid"
    empty.write_text("")
    assert idranges.allocate([], str(empty), str(empty)).uid_base == 1048576  # 16 x 65536


def test_two_isolated_containers_do_not_overlap_and_own_their_files(engine, busybox_template, ctid_factory):
    first, second, plain = ctid_factory(), ctid_factory(), ctid_factory()
    for ctid in (first, second):
        engine.create(ctid, busybox_template, {"hostname": f"iso{ctid}"}, isolated_idmap=True)
    engine.create(plain, busybox_template, {"hostname": f"pl{plain}"})
    maps = [engine._idmap(engine.config(c)) for c in (first, second, plain)]
    assert maps[2] == engine.idmap
    bases = sorted(m.uid_base for m in maps)
    assert all(b - a >= 65536 for a, b in zip(bases, bases[1:], strict=False))
    for ctid, idmap in zip((first, second), maps[:2], strict=True):
        text = engine.layout.config_path(ctid).read_text()
        assert f"lxc.idmap: u 0 {idmap.uid_base} 65536" in text and f"lxc.idmap: g 0 {idmap.gid_base} 65536" in text
        rootfs = engine._rootfs(engine.config(ctid))
        assert os.stat(rootfs / "bin" / "busybox").st_uid == idmap.uid_base
    engine.start(first)
    code, _, _ = engine.exec_output(first, ["sh", "-c", "touch /root/mine && chown 1000:1000 /root/mine"])
    assert code == 0
    st = os.stat(engine._rootfs(engine.config(first)) / "root" / "mine")
    assert (st.st_uid, st.st_gid) == (maps[0].uid_base + 1000, maps[0].gid_base + 1000)
    with open(f"/proc/{engine.status(first).pid}/uid_map") as handle:
        assert handle.read().split() == ["0", str(maps[0].uid_base), "65536"]
    engine.stop(first)


def test_a_map_another_container_holds_is_replaced(engine, busybox_template, ctid_factory):
    """A restore beside the original (the archive's lxc.idmap given back) gets a range of its own."""
    first, copy = ctid_factory(), ctid_factory()
    engine.create(first, busybox_template, {}, isolated_idmap=True)
    lines = engine.config(first).current.raw_values("lxc.idmap")
    engine.create(copy, busybox_template, {"lxc.idmap": lines})
    assert engine._idmap(engine.config(copy)).uid_base != engine._idmap(engine.config(first)).uid_base


def _inside(lab_, ctid: int, path: str) -> os.stat_result:
    return os.stat(f"/proc/{lab_.engine.status(ctid).pid}/root{path}", follow_symlinks=False)


@pytest.mark.parametrize(
    "backend, snapshot",
    [("dir", None), ("loop", None), ("btrfs", "s"), ("overlay", "s")],
    ids=["dir-full", "loop-full", "btrfs-linked", "overlay-linked"],
)
def test_a_clone_of_an_isolated_container_gets_a_range_of_its_own(lab, make, backend, snapshot):  # noqa: F811
    """Full clones shift while copying; linked ones (a snapshot of the source's) are shifted in place."""
    e = lab.engine
    ctid = make(backend, isolated_idmap=True)
    code, out = lab.sh(
        ctid,
        "touch /root/f && chown 1000:1001 /root/f && cp /bin/busybox /root/su && "
        "chmod 4755 /root/su && ln -s f /root/l",
    )
    assert code == 0, out
    if snapshot:
        e.snapshot(ctid, snapshot)
    clone = e.clone(ctid, ctid + 700, snapshot=snapshot).ctid
    make.made.append(clone)
    source_map, clone_map = (e._idmap(e.config(c)) for c in (ctid, clone))
    assert source_map != e.idmap and clone_map != e.idmap
    assert abs(clone_map.uid_base - source_map.uid_base) >= 65536
    assert abs(clone_map.gid_base - source_map.gid_base) >= 65536
    assert e.config(clone).current.raw_values("lxc.idmap") == clone_map.lxc_lines()
    e.start(clone)
    with open(f"/proc/{e.status(clone).pid}/uid_map") as handle:
        assert handle.read().split() == ["0", str(clone_map.uid_base), "65536"]
    for c, idmap in ((ctid, source_map), (clone, clone_map)):
        st = _inside(lab, c, "/root/f")
        assert (st.st_uid, st.st_gid) == (idmap.uid_base + 1000, idmap.gid_base + 1001)
        su, link, busybox = (_inside(lab, c, p) for p in ("/root/su", "/root/l", "/bin/busybox"))
        assert (su.st_uid, su.st_mode & 0o7777) == (idmap.uid_base, 0o4755)
        assert (link.st_uid, busybox.st_uid) == (idmap.uid_base, idmap.uid_base)
    assert lab.sh(clone, "stat -c '%u %g %a' /root/f /root/su") == (0, "1000 1001 644\n0 0 4755\n")
    e.destroy(clone, force=True)


def test_an_in_place_shift_keeps_setuid_bits_file_capabilities_and_hard_links(tmp_path):
    import struct

    from engine.idshift import shift_tree

    src, dst = IdMap(1048576, 1048576, 65536), IdMap(1114112, 1114112, 65536)
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "su").write_text("x")
    os.link(tmp_path / "d" / "su", tmp_path / "hard")
    os.symlink("/nowhere", tmp_path / "l")
    for path in (tmp_path, tmp_path / "d", tmp_path / "d" / "su", tmp_path / "l"):
        os.chown(path, src.uid_base + 5, src.gid_base + 6, follow_symlinks=False)
    os.chmod(tmp_path / "d" / "su", 0o6755)
    caps = struct.pack("<IIIIII", 0x03000001, 1 << 13, 0, 0, 0, src.uid_base)  # v3: cap_net_raw, root of src
    os.setxattr(tmp_path / "d" / "su", "security.capability", caps)
    assert shift_tree(tmp_path, src, dst) == 4
    for path in (tmp_path, tmp_path / "d", tmp_path / "hard", tmp_path / "l"):
        st = os.stat(path, follow_symlinks=False)
        assert (st.st_uid, st.st_gid) == (dst.uid_base + 5, dst.gid_base + 6), path
    assert os.stat(tmp_path / "hard").st_mode & 0o7777 == 0o6755
    value = os.getxattr(tmp_path / "hard", "security.capability")
    assert value[:20] == caps[:20] and int.from_bytes(value[20:24], "little") == dst.uid_base
    os.lchown(tmp_path / "l", 0, 0)  # an id outside the source's range (mkfs's lost+found) is not the container's
    shift_tree(tmp_path, dst, src)
    assert os.stat(tmp_path / "hard").st_uid == src.uid_base + 5 and os.lstat(tmp_path / "l").st_uid == 0
