"""The node's cgroup tuning: ``favordynmods`` on the cgroup2 mount, every other option kept."""

from __future__ import annotations

import os

import pytest

from engine.cgroups import tuning

MOUNTINFO = (
    "30 23 0:26 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime shared:4 - cgroup2 cgroup2 "
    "rw,nsdelegate,memory_recursiveprot\n"
    "31 30 0:26 /sub /srv/bound rw,relatime - cgroup2 cgroup2 rw\n"
    "32 23 0:27 / /sys/fs/cgroup/pids rw,relatime - cgroup cgroup rw,pids\n"
)


def test_the_cgroup2_root_mount_and_its_super_options_are_read(tmp_path):
    info = tmp_path / "mountinfo"
    info.write_text(MOUNTINFO)
    assert tuning.cgroup2_mount(str(info)) == ("/sys/fs/cgroup", ["rw", "nsdelegate", "memory_recursiveprot"])
    info.write_text(MOUNTINFO.splitlines()[2] + "\n")
    assert tuning.cgroup2_mount(str(info)) is None
    with pytest.raises(OSError, match="no cgroup2 mount"):
        tuning.favor_dynamic_moves(str(info))


def test_an_option_already_set_is_not_set_again(tmp_path):
    info = tmp_path / "mountinfo"
    info.write_text(MOUNTINFO.replace("memory_recursiveprot", "memory_recursiveprot,favordynmods"))
    assert tuning.favor_dynamic_moves(str(info)) is None


@pytest.mark.skipif(os.geteuid() != 0, reason="remounting cgroup2 needs root")
def test_the_host_mount_gains_the_option_and_keeps_its_others():
    found = tuning.cgroup2_mount()
    if found is None:
        pytest.skip("this host has no cgroup2 mount")
    point, before = found
    try:
        tuning.favor_dynamic_moves()
    except OSError as exc:
        if "Invalid argument" in str(exc):
            pytest.skip(f"kernel without {tuning.OPTION} (Linux 6.0+): {exc}")
        raise
    after = tuning.cgroup2_mount()
    assert after is not None and after[0] == point
    assert tuning.OPTION in after[1]
    assert set(before) <= set(after[1])  # nsdelegate, memory_recursiveprot ... kept
    assert tuning.favor_dynamic_moves() is None  # on now: nothing to do
