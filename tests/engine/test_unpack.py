"""Rootfs extraction and copying: real archives, real filesystem, run as root."""

from __future__ import annotations

import bz2
import gzip
import io
import lzma
import os
import stat
import subprocess
import tarfile
from pathlib import Path

import pytest

from engine.errors import AlreadyExists, EngineError, UnsafeArchive, ValidationError
from engine.idmap import IdMap
from engine.unpack import copy_tree, extract_archive

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root (chown, mknod, xattrs)")

MTIME = 1_600_000_000
MAP = IdMap()


def member(
    name: str,
    kind: bytes = tarfile.REGTYPE,
    data: bytes = b"",
    *,
    mode: int = 0o644,
    uid: int = 0,
    gid: int = 0,
    link: str = "",
    xattrs: dict[str, str] | None = None,
    dev: tuple[int, int] = (0, 0),
) -> tuple[tarfile.TarInfo, bytes]:
    ti = tarfile.TarInfo(name)
    ti.type, ti.mode, ti.uid, ti.gid, ti.mtime, ti.linkname = kind, mode, uid, gid, MTIME, link
    ti.size = len(data) if kind == tarfile.REGTYPE else 0
    ti.devmajor, ti.devminor = dev
    if xattrs:
        ti.pax_headers = {f"SCHILY.xattr.{k}": v for k, v in xattrs.items()}
    return ti, data


def d(name: str, **kw) -> tuple[tarfile.TarInfo, bytes]:
    return member(name, tarfile.DIRTYPE, mode=kw.pop("mode", 0o755), **kw)


def sym(name: str, target: str) -> tuple[tarfile.TarInfo, bytes]:
    return member(name, tarfile.SYMTYPE, link=target, mode=0o777)


def hard(name: str, target: str) -> tuple[tarfile.TarInfo, bytes]:
    return member(name, tarfile.LNKTYPE, link=target)


def tar_bytes(members: list[tuple[tarfile.TarInfo, bytes]], comp: str = "") -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for ti, data in members:
            tar.addfile(ti, io.BytesIO(data) if ti.isreg() else None)
    raw = buf.getvalue()
    if comp == "zst":
        import zstandard

        return zstandard.ZstdCompressor().compress(raw)
    return {"": lambda b: b, "gz": gzip.compress, "xz": lzma.compress, "bz2": bz2.compress}[comp](raw)


@pytest.fixture
def work(tmp_path: Path) -> Path:
    """The parent of every target; a failed extraction must leave it empty."""
    (tmp_path / "work").mkdir()
    return tmp_path / "work"


def write(tmp_path: Path, members, comp: str = "", name: str = "rootfs.tar") -> Path:
    path = tmp_path / name
    path.write_bytes(tar_bytes(members, comp))
    return path


CAP_V2 = (0x02000001).to_bytes(4, "little") + (1 << 13).to_bytes(4, "little") + bytes(12)
CAP_V2_TEXT = CAP_V2.decode("utf-8", "surrogateescape")

NORMAL = [
    d("etc"),
    member("etc/hostname", data=b"ct\n"),
    member("etc/shadow", data=b"root:*:1::::::\n", mode=0o640, gid=42),
    member("etc/xattr", data=b"x", xattrs={"user.caisson": "hello"}),
    sym("etc/alternatives/editor", "/usr/bin/vim.basic"),  # parent dir implicit
    d("usr/bin"),
    member("usr/bin/passwd", data=b"ELF" * 100, mode=0o4755),
    hard("usr/bin/passwd-link", "./usr/bin/passwd"),
    member("usr/bin/ping", data=b"ping", mode=0o755, xattrs={"security.capability": CAP_V2_TEXT}),
    sym("bin", "usr/bin"),
    d("home/user", uid=1000, gid=1000, mode=0o700),
    member("home/user/notes", data=b"n", uid=1000, gid=1000, mode=0o600),
    d("ro", mode=0o555),
    member("ro/inside", data=b"written before ro applied"),
    member("var/zeros", data=bytes(3 << 20)),
    d("tmp", mode=0o1777),
    d("dev"),
    member("dev/initctl", tarfile.FIFOTYPE, mode=0o600),
    member("dev/null", tarfile.CHRTYPE, mode=0o666, dev=(1, 3)),
]


def owner(p: Path) -> tuple[int, int]:
    st = p.lstat()
    return st.st_uid, st.st_gid


def test_normal_tree_shifted(tmp_path: Path, work: Path) -> None:
    calls: list[tuple[int, int]] = []
    target = work / "root"
    stats = extract_archive(write(tmp_path, NORMAL, "gz"), target, MAP, progress=lambda a, b: calls.append((a, b)))
    assert os.listdir(work) == ["root"]
    assert owner(target) == (100000, 100000) and stat.S_IMODE(target.stat().st_mode) == 0o755
    assert owner(target / "etc/hostname") == (100000, 100000)
    assert owner(target / "etc/shadow") == (100000, 100042)
    assert owner(target / "home") == (100000, 100000)  # implicit parent: mapped root, 0755
    assert stat.S_IMODE((target / "home").stat().st_mode) == 0o755
    assert owner(target / "home/user") == (101000, 101000)
    assert owner(target / "home/user/notes") == (101000, 101000)
    assert owner(target / "bin") == (100000, 100000)  # the link itself, not what it points to
    passwd = (target / "usr/bin/passwd").stat()
    assert stat.S_IMODE(passwd.st_mode) == 0o4755
    assert (target / "usr/bin/passwd-link").stat().st_ino == passwd.st_ino and passwd.st_nlink == 2
    assert os.readlink(target / "etc/alternatives/editor") == "/usr/bin/vim.basic"
    assert os.readlink(target / "bin") == "usr/bin"
    assert os.getxattr(target / "etc/xattr", "user.caisson") == b"hello"
    caps = os.getxattr(target / "usr/bin/ping", "security.capability")  # v2 became v3, root 100000
    assert caps[3] == 3 and caps[4:20] == CAP_V2[4:20] and int.from_bytes(caps[20:], "little") == 100000
    assert stat.S_IMODE((target / "ro").stat().st_mode) == 0o555
    assert (target / "ro/inside").read_bytes() == b"written before ro applied"
    assert stat.S_IMODE((target / "tmp").stat().st_mode) == 0o1777
    zeros = target / "var/zeros"
    assert zeros.stat().st_size == 3 << 20 and zeros.stat().st_blocks * 512 < 3 << 20  # sparse
    assert (target / "etc/hostname").stat().st_mtime == MTIME and (target / "etc").stat().st_mtime == MTIME
    assert os.listdir(target / "dev") == []
    assert stats.devices_skipped == 2 and stats.hardlinks == 1 and stats.symlinks == 2
    assert stats.members == len(NORMAL) and stats.bytes == sum(len(x) for _, x in NORMAL)
    assert calls[-1] == (calls[-1][1], calls[-1][1]) and all(0 < a <= b for a, b in calls)


def test_root_entry_sets_root_attributes(tmp_path: Path, work: Path) -> None:
    archive = write(tmp_path, [d("./", mode=0o700, uid=5), member("./f", data=b"1")])
    extract_archive(archive, work / "root", MAP)
    assert owner(work / "root") == (100005, 100000)
    assert stat.S_IMODE((work / "root").stat().st_mode) == 0o700


def test_privileged_keeps_ids_and_makes_devices(tmp_path: Path, work: Path) -> None:
    archive = write(
        tmp_path,
        [
            member("f", data=b"1", uid=7, gid=8),
            member("etc/chr", tarfile.CHRTYPE, dev=(1, 3), mode=0o620),
            member("run/fifo", tarfile.FIFOTYPE, mode=0o600),
            member("bin/ping", data=b"p", xattrs={"security.capability": CAP_V2_TEXT}),
        ],
    )
    stats = extract_archive(archive, work / "root", None)
    assert owner(work / "root/f") == (7, 8) and owner(work / "root") == (0, 0)
    chr_st = (work / "root/etc/chr").lstat()
    assert stat.S_ISCHR(chr_st.st_mode) and chr_st.st_rdev == os.makedev(1, 3)
    assert stat.S_IMODE(chr_st.st_mode) == 0o620
    assert stat.S_ISFIFO((work / "root/run/fifo").lstat().st_mode) and stats.devices == 2
    assert os.getxattr(work / "root/bin/ping", "security.capability") == CAP_V2


@pytest.mark.parametrize("comp", ["", "gz", "xz", "zst", "bz2"])
def test_compressions(tmp_path: Path, work: Path, comp: str) -> None:
    archive = write(tmp_path, [d("etc"), member("etc/os-release", data=b"ID=debian\n")], comp)
    extract_archive(archive, work / "root", MAP)
    assert (work / "root/etc/os-release").read_bytes() == b"ID=debian\n"


def test_suffix_is_ignored(tmp_path: Path, work: Path) -> None:
    archive = write(tmp_path, [member("f", data=b"xz inside")], "xz", name="rootfs.tar.gz")
    extract_archive(archive, work / "root", MAP)
    assert (work / "root/f").read_bytes() == b"xz inside"


MALICIOUS = {
    "dotdot": ([member("../x", data=b"evil")], "../x", "x"),
    "absolute": (
        [member("/etc/caisson-unpack-evil", data=b"evil")],
        "/etc/caisson-unpack-evil",
        "/etc/caisson-unpack-evil",
    ),
    "dotdot-inside": ([d("a"), member("./a/../../x", data=b"evil")], "./a/../../x", "x"),
    "through-symlink": (
        [d("etc"), sym("etc/evil", "{outside}"), member("etc/evil/passwd", data=b"evil")],
        "etc/evil/passwd",
        "outside/passwd",
    ),
    "through-relative-symlink": ([sym("up", "."), member("up/x", data=b"evil")], "up/x", "x"),
    "hardlink-outside": ([hard("h", "../../outside/secret")], "'h'", "h"),
    "hardlink-absolute": ([hard("h", "/etc/passwd")], "'h'", "h"),
    "hardlink-to-symlink": ([sym("s", "/etc/passwd"), hard("h", "s")], "'h'", "h"),
    "hardlink-missing": ([hard("h", "nope")], "'h'", "h"),
    "escaping-symlink": ([d("a/b"), sym("a/b/c", "../../../x")], "a/b/c", "x"),
    "replace-dir-with-symlink": ([d("etc"), sym("etc", "{outside}"), member("etc/x", data=b"e")], "'etc'", "outside/x"),
    "device-in-etc": ([d("etc"), member("etc/sda", tarfile.BLKTYPE, dev=(8, 0))], "etc/sda", "sda"),
    "uid-outside-map": ([member("etc/f", data=b"x", uid=70000)], "'etc/f': uid 70000", "f"),
}


def open_below(path: Path) -> list[str]:
    """This process's open files under ``path``: what an extraction left open (other tests' threads may
    open unrelated descriptors meanwhile, so a bare count would not say whose they are)."""
    found = []
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue
        if target.startswith(str(path)):
            found.append(target)
    return found


@pytest.mark.parametrize("case", MALICIOUS, ids=list(MALICIOUS))
def test_malicious_member_refused(tmp_path: Path, work: Path, case: str) -> None:
    members, needle, escape = MALICIOUS[case]
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret").write_text("secret")
    fixed = [(ti.replace(linkname=ti.linkname.format(outside=outside)), data) for ti, data in members]
    with pytest.raises(UnsafeArchive) as exc:
        extract_archive(write(tmp_path, fixed), work / "root", MAP)
    assert needle in str(exc.value) and open_below(tmp_path) == []
    assert os.listdir(work) == []
    assert sorted(os.listdir(tmp_path)) == ["outside", "rootfs.tar", "work"]
    assert os.listdir(outside) == ["secret"]
    assert not Path(escape).is_absolute() or not Path(escape).exists()


def test_truncated_and_garbage(tmp_path: Path, work: Path) -> None:
    members = [member(f"f{i}", data=os.urandom(20000)) for i in range(5)]
    for comp in ("gz", "xz", "zst", ""):
        data = tar_bytes(members, comp)
        (tmp_path / "cut.tar").write_bytes(data[: len(data) // 2])
        with pytest.raises(ValidationError, match="corrupt or truncated"):
            extract_archive(tmp_path / "cut.tar", work / "root", MAP)
        assert os.listdir(work) == []
    plain = tar_bytes(members)
    (tmp_path / "cut.tar").write_bytes(plain[: 512 + 20480])  # whole first member, no end blocks
    with pytest.raises(ValidationError, match="no end-of-archive marker"):
        extract_archive(tmp_path / "cut.tar", work / "root", MAP)
    (tmp_path / "junk.tar.gz").write_bytes(os.urandom(4096))
    with pytest.raises(ValidationError, match="unknown archive format"):
        extract_archive(tmp_path / "junk.tar.gz", work / "root", MAP)
    (tmp_path / "bad.tar.gz").write_bytes(b"\x1f\x8b\x08\x00" + os.urandom(4096))
    with pytest.raises(ValidationError, match="corrupt or truncated"):
        extract_archive(tmp_path / "bad.tar.gz", work / "root", MAP)
    assert os.listdir(work) == []


def test_gzip_checksum_is_verified(tmp_path: Path, work: Path) -> None:
    data = bytearray(tar_bytes([member("f", data=b"x" * 1000)], "gz"))
    data[-8] ^= 0xFF  # the CRC32 in the gzip trailer
    (tmp_path / "bad.tar.gz").write_bytes(data)
    with pytest.raises(ValidationError, match="corrupt or truncated archive: CRC check failed"):
        extract_archive(tmp_path / "bad.tar.gz", work / "root", MAP)
    assert os.listdir(work) == []


def test_later_member_replaces_earlier(tmp_path: Path, work: Path) -> None:
    archive = write(
        tmp_path, [member("f", data=b"old"), sym("l", "f"), member("f", data=b"new"), member("l", data=b"file now")]
    )
    extract_archive(archive, work / "root", MAP)
    assert (work / "root/f").read_bytes() == b"new" and not (work / "root/l").is_symlink()


def test_disk_full(tmp_path: Path, work: Path) -> None:
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "caisson-test", str(work)], check=False).returncode:
        pytest.skip("cannot mount a small tmpfs here")
    try:
        archive = write(tmp_path, [member("small", data=b"x"), member("big", data=os.urandom(2 << 20))], "gz")
        with pytest.raises(EngineError, match="member 'big': No space left on device"):
            extract_archive(archive, work / "root", MAP)
        assert os.listdir(work) == []
    finally:
        subprocess.run(["umount", str(work)], check=True)


def test_limits(tmp_path: Path, work: Path) -> None:
    archive = write(tmp_path, [member(f"f{i}", data=b"x" * 1000) for i in range(10)])
    with pytest.raises(UnsafeArchive, match="more than 5 members"):
        extract_archive(archive, work / "root", MAP, max_members=5)
    with pytest.raises(UnsafeArchive, match="expands beyond 4000 bytes"):
        extract_archive(archive, work / "root", MAP, max_bytes=4000)
    assert os.listdir(work) == []
    assert extract_archive(archive, work / "root", MAP, max_members=10, max_bytes=10000).bytes == 10000


def test_existing_target_untouched(tmp_path: Path, work: Path) -> None:
    (work / "root").mkdir()
    (work / "root/keep").write_text("mine")
    with pytest.raises(AlreadyExists):
        extract_archive(write(tmp_path, [member("keep", data=b"theirs")]), work / "root", MAP)
    assert os.listdir(work) == ["root"] and (work / "root/keep").read_text() == "mine"


def test_copy_tree_shifts_and_keeps_hardlinks(tmp_path: Path, work: Path) -> None:
    extract_archive(write(tmp_path, NORMAL), tmp_path / "template", None)
    os.mknod(tmp_path / "template/dev/null", stat.S_IFCHR | 0o666, os.makedev(1, 3))
    stats = copy_tree(tmp_path / "template", work / "ct", MAP)
    ct = work / "ct"
    assert owner(ct) == (100000, 100000) and owner(ct / "home/user/notes") == (101000, 101000)
    assert owner(ct / "etc/shadow") == (100000, 100042) and owner(ct / "bin") == (100000, 100000)
    passwd = (ct / "usr/bin/passwd").stat()
    assert stat.S_IMODE(passwd.st_mode) == 0o4755 and passwd.st_nlink == 2
    assert (ct / "usr/bin/passwd-link").stat().st_ino == passwd.st_ino
    assert os.readlink(ct / "etc/alternatives/editor") == "/usr/bin/vim.basic"
    assert os.getxattr(ct / "etc/xattr", "user.caisson") == b"hello"
    assert stat.S_IMODE((ct / "ro").stat().st_mode) == 0o555 and (ct / "etc").stat().st_mtime == MTIME
    assert os.listdir(ct / "dev") == [] and stats.devices_skipped == 1 and stats.hardlinks == 1
    caps = os.getxattr(ct / "usr/bin/ping", "security.capability")
    assert int.from_bytes(caps[20:], "little") == 100000

    other = IdMap(200000, 300000, 65536)
    copy_tree(ct, work / "ct2", other, src_idmap=MAP)
    assert owner(work / "ct2/home/user/notes") == (201000, 301000) and owner(work / "ct2") == (200000, 300000)
    caps = os.getxattr(work / "ct2/usr/bin/ping", "security.capability")
    assert int.from_bytes(caps[20:], "little") == 200000
    assert sorted(os.listdir(work)) == ["ct", "ct2"]


def test_copy_tree_refusals(tmp_path: Path, work: Path) -> None:
    tpl = tmp_path / "template"
    (tpl / "etc").mkdir(parents=True)
    os.mknod(tpl / "etc/sda", stat.S_IFBLK | 0o600, os.makedev(8, 0))
    with pytest.raises(UnsafeArchive, match="etc/sda"):
        copy_tree(tpl, work / "ct", MAP)
    os.unlink(tpl / "etc/sda")
    (tpl / "etc/f").write_text("x")
    os.chown(tpl / "etc/f", 70000, 0)
    with pytest.raises(UnsafeArchive, match="etc/f.*uid 70000"):
        copy_tree(tpl, work / "ct", MAP)
    with pytest.raises(UnsafeArchive, match="host uid 0 is outside"):
        copy_tree(tpl, work / "ct", MAP, src_idmap=MAP)
    assert os.listdir(work) == []
    with pytest.raises(ValidationError, match="into itself"):
        copy_tree(tpl, tpl / "etc/ct", MAP)


def test_idmap() -> None:
    assert MAP.host_uid(0) == 100000 and MAP.host_gid(65535) == 165535
    assert MAP.uid_map_text() == "0 100000 65536\n" and MAP.container_uid(100005) == 5
    with pytest.raises(ValidationError, match="uid 65536"):
        MAP.host_uid(65536)
    with pytest.raises(ValidationError, match="below 65536"):
        IdMap(uid_base=1000)
    assert IdMap.from_lxc_lines(["u 0 200000 65536", "lxc.idmap: g 0 300000 65536"]) == IdMap(200000, 300000)
    assert IdMap.from_lxc_lines(MAP.lxc_lines()) == MAP
    for lines, needle in (
        (["u 0 100000 65536"], "no 'g'"),
        (["u 0 100000 1000", "u 1000 1000 1", "g 0 100000 65536"], "single contiguous"),
        (["u 1 100000 65536", "g 0 100000 65536"], "start at container id 0"),
        (["u 0 100000 65536", "g 0 100000 1000"], "same count"),
        (["x 0 1 2"], "expected"),
        (["u 0 a 1", "g 0 1 1"], "integers"),
        (["u 0 0 65536", "g 0 0 65536"], "below 65536"),
    ):
        with pytest.raises(ValidationError, match=needle):
            IdMap.from_lxc_lines(lines)


@pytest.mark.skipif(not Path("/bin/busybox").exists(), reason="/bin/busybox (busybox-static) not installed")
def test_busybox_rootfs_runs(tmp_path: Path, work: Path) -> None:
    busybox = Path("/bin/busybox").read_bytes()
    members = [
        d("bin"),
        member("bin/busybox", data=busybox, mode=0o755),
        sym("bin/sh", "busybox"),
        sym("bin/ls", "/bin/busybox"),
        hard("bin/cat", "bin/busybox"),
        d("etc"),
        member("etc/passwd", data=b"root:x:0:0:root:/root:/bin/sh\n"),
        d("tmp", mode=0o1777),
    ]
    extract_archive(write(tmp_path, members, "xz", name="busybox.tar.zst"), work / "root", MAP)
    assert owner(work / "root/bin/busybox") == (100000, 100000)
    out = subprocess.run(
        ["chroot", str(work / "root"), "/bin/sh", "-c", "cat /etc/passwd; ls -ld /tmp"],
        capture_output=True,
        text=True,
        timeout=10,
        check=True,
    ).stdout
    assert out.startswith("root:x:0:0") and "drwxrwxrwt" in out
