"""Isolated id maps: each container created with one gets a 65536-id range no other holds."""
from __future__ import annotations

import os

import pytest

from engine import idranges
from engine.errors import ValidationError
from engine.idmap import IdMap


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
