"""The extractor's own tar reader against GNU tar: every format tar writes, sparse files, long names.

Each archive is made by GNU tar from one tree and unpacked both by ``extract_archive`` and by GNU
tar itself; the two trees must be the same, entry for entry (type, mode, owner, mtime, link count,
bytes, link target, xattrs), and sparse files must stay sparse.
"""

from __future__ import annotations

import hashlib
import io
import os
import shutil
import stat
import subprocess
import tarfile
from pathlib import Path

import pytest

from engine.errors import ValidationError
from engine.unpack import extract_archive

pytestmark = [
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root (chown, xattrs)"),
    pytest.mark.skipif(shutil.which("tar") is None, reason="GNU tar not installed"),
]

FORMATS = {
    "gnu": ["--format=gnu"],
    "ustar": ["--format=ustar"],
    "pax-sparse-0.0": ["--format=posix", "--sparse-version=0.0"],
    "pax-sparse-0.1": ["--format=posix", "--sparse-version=0.1"],
    "pax-sparse-1.0": ["--format=posix", "--sparse-version=1.0"],
}


def _tree(root: Path, ustar: bool) -> None:
    """ustar has no long names (a path of up to 255 in its prefix and name fields) and no sparse files."""
    deep = root / ("d" * (90 if ustar else 120)) / ("e" * (60 if ustar else 150))
    deep.mkdir(parents=True)
    (deep / ("f" * (90 if ustar else 200))).write_text("a long path\n")  # prefix + name, GNU long name, pax path
    with open(root / "sparse", "wb") as handle:
        handle.truncate(10 << 20)
        for offset in (3_000_000, 9_000_000):
            handle.seek(offset)
            handle.write(b"data")
    with open(root / "holes", "wb") as handle:
        handle.truncate(5 << 20)
    (root / "one").write_bytes(os.urandom(100_000))
    os.link(root / "one", root / "two")
    os.symlink("l" * (90 if ustar else 150), root / "longlink")
    os.mkfifo(root / "fifo")
    os.chown(root / "one", 1234, 4321)
    os.chmod(root / "one", 0o4750)
    os.setxattr(root / "one", "user.note", b"bytes \xff\x00 here")
    os.utime(root / "fifo", ns=(1_600_000_000_123_456_789, 1_600_000_000_123_456_789))


def _describe(root: Path) -> dict[str, tuple]:
    found = {}
    for dirpath, dirs, files in os.walk(root):
        for name in dirs + files:
            path = os.path.join(dirpath, name)
            st = os.lstat(path)
            item: tuple = (stat.S_IFMT(st.st_mode), stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid, st.st_nlink)
            item += (st.st_mtime_ns // 1000,)  # GNU tar's gnu and ustar formats keep whole seconds only
            if stat.S_ISREG(st.st_mode):
                item += (st.st_size, hashlib.sha256(Path(path).read_bytes()).hexdigest())
            if stat.S_ISLNK(st.st_mode):
                item += (os.readlink(path),)
            xattrs = os.listxattr(path, follow_symlinks=False)
            item += (sorted((x, os.getxattr(path, x, follow_symlinks=False)) for x in xattrs),)
            found[os.path.relpath(path, root)] = item
    return found


@pytest.mark.parametrize("fmt", FORMATS, ids=list(FORMATS))
def test_same_tree_as_gnu_tar(tmp_path: Path, fmt: str) -> None:
    src = tmp_path / "src"
    src.mkdir()
    _tree(src, ustar=fmt == "ustar")
    archive = tmp_path / "a.tar"
    options = FORMATS[fmt] + ([] if fmt == "ustar" else ["--sparse"])
    xattrs = ["--xattrs", "--xattrs-include=*"] if fmt.startswith("pax") else []
    subprocess.run(["tar", "-c", *options, *xattrs, "-f", archive, "-C", src, "."], check=True)
    by_tar = tmp_path / "by-tar"
    by_tar.mkdir()
    subprocess.run(["tar", "-x", "--numeric-owner", *xattrs, "-f", archive, "-C", by_tar], check=True)
    ours = tmp_path / "ours"
    extract_archive(archive, ours, None)
    assert _describe(ours) == _describe(by_tar)
    for name in ("sparse", "holes"):  # holes stay holes, even where the archive stores the zeros
        assert os.stat(ours / name).st_blocks * 512 < 4 << 20  # of 10 and 5 MiB


def test_bad_sparse_map_refused(tmp_path: Path) -> None:
    """A sparse map that claims more stored bytes than the member has would read into the next header."""
    info = tarfile.TarInfo("f")
    info.size = 512
    info.pax_headers = {"GNU.sparse.map": "0,4096", "GNU.sparse.size": "8192", "GNU.sparse.major": "0"}
    with tarfile.open(tmp_path / "bad.tar", "w", format=tarfile.PAX_FORMAT) as tar:
        tar.addfile(info, io.BytesIO(b"x" * 512))
    with pytest.raises(ValidationError, match="invalid GNU sparse map"):
        extract_archive(tmp_path / "bad.tar", tmp_path / "out", None)
    assert not (tmp_path / "out").exists()


def test_oversized_extended_header_refused(tmp_path: Path) -> None:
    """A pax header announcing gigabytes is refused before anything is read into memory."""
    head = bytearray(tarfile.TarInfo("x").tobuf(tarfile.USTAR_FORMAT))
    head[156:157] = b"x"
    head[124:136] = b"%011o\0" % (1 << 30)
    head[148:156] = b"        "
    head[148:156] = b"%06o\0 " % sum(head)
    (tmp_path / "big.tar").write_bytes(bytes(head) + bytes(1024))
    with pytest.raises(ValidationError, match="an extended header of"):
        extract_archive(tmp_path / "big.tar", tmp_path / "out", None)


@pytest.mark.parametrize(
    "field",
    [b"0000644\0", b"0000644 ", b" 644 \0 \0", b"\0\0\0\0\0\0\0\0", b"        ", b"0000644\x00123", b"12 34\0\0\0"]
    + [b"\x80" + (5).to_bytes(11, "big"), b"\xff" * 12, b"0000x44\0", b"00000000001\0"],
)
def test_octal_fast_path_reads_what_tarfile_reads(field: bytes) -> None:
    """The one-step octal read gives tarfile's value (cut at the first NUL, base-256 for big ones) or its error."""
    from engine.tarstream import _oct

    try:
        expected = tarfile.nti(field)
    except tarfile.InvalidHeaderError:
        with pytest.raises(tarfile.ReadError):
            _oct(field)
    else:
        assert _oct(field) == expected
