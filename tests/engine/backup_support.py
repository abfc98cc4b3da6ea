"""What the backup and restore tests share: archives, trees of every kind of file, their facts."""

from __future__ import annotations

import hashlib
import io
import os
import stat
import tarfile
from pathlib import Path

import zstandard

REPO = Path(__file__).resolve().parents[2]


BASE = 100000  # the default id map


def members(path: Path) -> list[tarfile.TarInfo]:
    with (
        open(path, "rb") as raw,
        zstandard.ZstdDecompressor().stream_reader(raw) as stream,
        tarfile.open(fileobj=stream, mode="r|") as tar,
    ):
        return list(tar)


def rootfs(engine, ctid: int) -> Path:
    return engine._rootfs(engine.config(ctid))


def fill(root: Path, shift: int) -> None:
    """Files of every kind the archive must keep, made from the host with the container's ids shifted."""
    srv = root / "srv"
    srv.mkdir()
    (srv / "owned").write_text("owned by 1000\n")
    os.chown(srv / "owned", shift + 1000, shift + 1001)
    (srv / "setuid").write_bytes(b"#!/bin/sh\n")
    os.chown(srv / "setuid", shift, shift)
    os.chmod(srv / "setuid", 0o4755)
    (srv / "secret").write_text("s\n")
    os.chown(srv / "secret", shift + 5, shift + 5)
    os.chmod(srv / "secret", 0o600)
    os.setxattr(srv / "owned", "user.caisson", b"kept")
    os.link(srv / "owned", srv / "hardlink")
    with open(srv / "sparse", "wb") as handle:
        handle.write(b"head")
        handle.seek(16 << 20)
        handle.write(b"tail")
    os.chown(srv / "sparse", shift, shift)
    (srv / "cache").mkdir()
    (srv / "cache" / "big").write_bytes(b"x" * 1000)
    (srv / "app.log").write_text("log\n")
    for path in (srv, srv / "cache", srv / "cache" / "big", srv / "app.log"):
        os.chown(path, shift, shift)
    (root / "tmp" / "scratch").write_text("left out by default\n")


def facts(root: Path, shift: int) -> dict[str, tuple]:
    """What must survive a round trip, with owners as the container sees them."""
    out = {}
    for name in ("owned", "setuid", "secret", "sparse"):
        st = os.lstat(root / "srv" / name)
        out[name] = (
            stat.S_IMODE(st.st_mode),
            st.st_uid - shift,
            st.st_gid - shift,
            st.st_size,
            hashlib.sha256((root / "srv" / name).read_bytes()).hexdigest(),
        )
    out["xattr"] = os.getxattr(root / "srv" / "owned", "user.caisson")
    out["linked"] = os.lstat(root / "srv" / "owned").st_ino == os.lstat(root / "srv" / "hardlink").st_ino
    return out


def proxmox_archive(template: Path, path: Path, conf: str) -> None:
    """What vzdump writes: pct.conf first (no ./etc entry before it), then ./ and the tree, zstd."""
    with (
        open(template, "rb") as raw,
        zstandard.ZstdDecompressor().stream_reader(raw) as stream,
        tarfile.open(fileobj=stream, mode="r|") as src,
        open(path, "wb") as out,
        zstandard.ZstdCompressor().stream_writer(out) as writer,
        tarfile.open(fileobj=writer, mode="w|", format=tarfile.GNU_FORMAT) as tar,
    ):
        info = tarfile.TarInfo("./etc/vzdump/pct.conf")
        info.size = len(conf)
        tar.addfile(info, io.BytesIO(conf.encode()))
        for member in src:
            tar.addfile(member, src.extractfile(member) if member.isreg() else None)


PROXMOX_CONF = """#Restored from elsewhere
arch: amd64
cores: 1
hostname: frompve
memory: 128
ostype: unmanaged
rootfs: local-lvm:vm-104-disk-0,size=2G
swap: 0
unprivileged: 1
"""


def freezer_state(engine, cgroup_parent: str, ctid: int) -> str:
    if "freezer" in engine.cgroups.mounts.v1:
        path = Path(engine.cgroups.mounts.v1["freezer"]) / cgroup_parent / str(ctid) / "freezer.state"
        return path.read_text().strip()
    frozen = Path(engine.cgroups.mounts.unified) / cgroup_parent / str(ctid) / "cgroup.freeze"
    return "FROZEN" if frozen.read_text().strip() == "1" else "THAWED"


def archived(archive: Path) -> dict[str, tuple[tarfile.TarInfo, bytes]]:
    with (
        open(archive, "rb") as raw,
        zstandard.ZstdDecompressor().stream_reader(raw) as stream,
        tarfile.open(fileobj=stream, mode="r|") as tar,
    ):
        return {m.name: (m, tar.extractfile(m).read() if m.isreg() else b"") for m in tar}


def tar_of(path: Path, entries: list[tuple[str, bytes]]) -> Path:
    with tarfile.open(path, "w") as tar:
        for name, data in entries:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path
