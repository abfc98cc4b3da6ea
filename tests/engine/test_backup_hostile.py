"""Suspend mode reads a running container's tree as its root wrote it, and that root may be hostile.

The first pass copies the tree while the container runs; its root can plant symbolic links to
host paths and FIFOs, and swap a file or directory for a link or a FIFO between the copy's
look at an entry and its open. The swaps are made here at exactly that point (on the first
pass, through the module's own ``lstat``), as the container's root could by winning a race.
The backup must finish, archive every link as a link, and hold no byte of a host file.
"""

from __future__ import annotations

import os
import signal
import stat
import tarfile
from pathlib import Path

import pytest
import zstandard

from engine.backup import sync
from engine.backup.dump import backup

SECRET = b"host-secret-" + os.urandom(8).hex().encode()


@pytest.fixture
def host_secrets(tmp_path_factory) -> Path:
    """A host directory with a secret file: what a link planted in the container points to."""
    where = tmp_path_factory.mktemp("host-only")
    (where / "secret").write_bytes(SECRET + b"\n")
    (where / "dir").mkdir()
    (where / "dir" / "secret").write_bytes(SECRET + b" in a dir\n")
    return where


@pytest.fixture
def alarm():
    """A hang (a FIFO opened for reading) fails the test instead of stalling the suite."""

    def expired(*_):
        raise TimeoutError("the backup hung")

    old = signal.signal(signal.SIGALRM, expired)
    signal.alarm(120)
    yield
    signal.alarm(0)
    signal.signal(signal.SIGALRM, old)


def test_suspend_backup_archives_links_as_links_and_never_opens_fifos(
    engine, container, tmp_path, host_secrets, monkeypatch, alarm
):
    root = engine._rootfs(engine.config(container)) / "root"
    plant = (
        f"ln -s /etc/shadow /root/shadow && ln -s ../../../../../../.. /root/up && "
        f"ln -s {host_secrets}/secret /root/hostsecret && mkfifo /root/fifo && "
        "echo plain > /root/file-to-fifo && echo plain > /root/file-to-link && mkdir /root/dir-to-link && "
        "echo inside > /root/dir-to-link/f"
    )
    code, out, err = engine.exec_output(container, ["sh", "-c", plant])
    assert code == 0, (out, err)
    owner = os.lstat(root).st_uid

    def swap(name: str) -> None:
        """What the container's root does between the copy's lstat and its open."""
        path = root / name
        if path.is_dir() and not path.is_symlink():
            (path / "f").unlink()
            path.rmdir()
        else:
            path.unlink()
        if name == "file-to-fifo":
            os.mkfifo(path)
        elif name == "file-to-link":
            os.symlink(host_secrets / "secret", path)
        else:
            os.symlink(host_secrets / "dir", path)
        os.chown(path, owner, owner, follow_symlinks=False)

    pending = {"file-to-fifo", "file-to-link", "dir-to-link"}
    real_lstat = sync._lstat

    def lstat(path: str):
        st = real_lstat(path)
        name = os.path.basename(path)
        if name in pending and os.path.realpath(os.path.dirname(path)) == str(root):
            pending.discard(name)
            swap(name)
        return st

    monkeypatch.setattr(sync, "_lstat", lstat)
    result = backup(engine, container, dumpdir=tmp_path, mode="suspend")
    assert not pending  # every swap happened on the first pass
    assert engine.exec_output(container, ["true"])[0] == 0

    with (
        open(result.archive, "rb") as raw,
        zstandard.ZstdDecompressor().stream_reader(raw) as stream,
        tarfile.open(fileobj=stream, mode="r|") as tar,
    ):
        found = {m.name: (m, tar.extractfile(m).read() if m.isreg() else b"") for m in tar}
    links = {
        name[len("./root/") :]: m.linkname for name, (m, _) in found.items() if m.issym() and name.startswith("./root/")
    }
    assert links == {
        "shadow": "/etc/shadow",
        "up": "../../../../../../..",
        "hostsecret": f"{host_secrets}/secret",
        "file-to-link": f"{host_secrets}/secret",
        "dir-to-link": f"{host_secrets}/dir",
    }
    assert found["./root/fifo"][0].isfifo() and found["./root/file-to-fifo"][0].isfifo()
    assert not any(name.startswith("./root/dir-to-link/") or name.startswith("./root/up/") for name in found)
    shadow = Path("/etc/shadow").read_bytes()
    for name, (_member, data) in found.items():
        assert SECRET not in data, name
        assert not (shadow and data == shadow), name
    assert stat.S_ISFIFO(os.lstat(root / "file-to-fifo").st_mode)  # the container's tree is as it made it
