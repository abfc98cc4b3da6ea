"""Shift a tree from one id map to another in place: what a linked clone of an isolated container needs.

A linked clone shares its data with its source's snapshot (a btrfs snapshot, an overlay layer), so
its files carry the source's host ids; a clone with a range of its own has them re-owned where they
lie, as LXD shifts a copied instance.  Every entry goes from ``src``'s range to ``dst``'s; what
``chown`` takes away is put back: the setuid/setgid bits of a file and its file capabilities (whose
v3 root id is a host id too).  Symlinks are never followed; regular files are changed through
their own descriptor, other entries through their directory's.  An id outside ``src``'s range is
not one of the container's (the ``lost+found`` mkfs made on an image, as host root): it stays, and
the clone's container sees it as nobody, as the source's does.
"""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path

from engine.errors import ValidationError
from engine.idmap import IdMap, remap_file_caps

_CAPS = "security.capability"


def shift_tree(root: Path | str, src: IdMap, dst: IdMap) -> int:
    """Re-own every entry below ``root`` (itself included) from ``src`` to ``dst``; returns how many."""
    done: set[tuple[int, int]] = set()  # (dev, ino) of hard-linked files already shifted

    def ids(st: os.stat_result) -> tuple[int, int]:
        return _shifted(st.st_uid, src.uid_base, dst.uid_base, src.count), _shifted(
            st.st_gid, src.gid_base, dst.gid_base, src.count
        )

    count = 0
    for _top, dirs, files, dfd in os.fwalk(root, follow_symlinks=False):
        os.fchown(dfd, *ids(os.fstat(dfd)))
        count += 1
        for name in dirs + files:
            st = os.stat(name, dir_fd=dfd, follow_symlinks=False)
            if stat.S_ISDIR(st.st_mode):
                continue  # shifted as its own walk step
            if st.st_nlink > 1:
                if (st.st_dev, st.st_ino) in done:
                    continue
                done.add((st.st_dev, st.st_ino))
            if stat.S_ISREG(st.st_mode):
                _shift_file(name, dfd, st, ids(st), src, dst)
            else:
                os.chown(name, *ids(st), dir_fd=dfd, follow_symlinks=False)
            count += 1
    return count


def _shifted(host_id: int, src_base: int, dst_base: int, count: int) -> int:
    return host_id - src_base + dst_base if src_base <= host_id < src_base + count else host_id


def _shift_file(name: str, dfd: int, st: os.stat_result, owner: tuple[int, int], src: IdMap, dst: IdMap) -> None:
    fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, dir_fd=dfd)
    try:
        if os.fstat(fd).st_ino != st.st_ino:
            raise ValidationError(f"{name} changed while its ids were shifted")
        try:
            caps = os.getxattr(fd, _CAPS)
        except OSError as err:
            if err.errno not in (errno.ENODATA, errno.EOPNOTSUPP):
                raise
            caps = None
        os.fchown(fd, *owner)
        if caps is not None:  # v3 names its root as a host id; v2 (initial namespace only) stays as it was
            if caps[3:4] == b"\x03":
                caps = remap_file_caps(caps, lambda root: _shifted(root, src.uid_base, dst.uid_base, src.count))
            os.setxattr(fd, _CAPS, caps)
        if st.st_mode & (stat.S_ISUID | stat.S_ISGID):
            os.fchmod(fd, stat.S_IMODE(st.st_mode))
    finally:
        os.close(fd)
