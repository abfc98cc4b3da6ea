"""A full disk during a backup, a snapshot, a restore and a download: a clear error, nothing partial left,
the container unharmed.  The full disk is the storage lab's 24 MiB ext4 (``tiny``), loop-mounted."""

from __future__ import annotations

import hashlib
import http.server
import os
import threading
from pathlib import Path

import pytest

from engine.errors import EngineError
from tests.faults.kit import assert_whole, image_dirs, temporary_files

DATA = "head -c 30000000 /dev/urandom > /root/data && sha256sum /root/data"  # more than tiny holds


def _files(path: Path) -> list[str]:
    return sorted(str(p.relative_to(path)) for p in path.rglob("*") if p.name != "lost+found")


def _free(path: Path) -> int:
    st = os.statvfs(path)
    return st.f_bavail * st.f_frsize


@pytest.mark.parametrize("mode", ["suspend", "stop"])
def test_backup_to_a_full_disk(lab, make, mode):
    from engine.backup.dump import backup

    ctid = make("dir")
    code, digest = lab.sh(ctid, DATA)
    assert code == 0
    dumpdir = lab.tiny / f"dump-{mode}"
    dumpdir.mkdir()
    with pytest.raises(EngineError, match="no space left on the device; the backup was not written"):
        backup(lab.engine, ctid, mode=mode, compress="none", dumpdir=dumpdir)
    assert _files(dumpdir) == []  # no copy, no partial archive, no log
    assert lab.sh(ctid, "sha256sum /root/data")[1] == digest
    assert_whole(lab, ctid, running=True)
    dumpdir.rmdir()


def test_snapshot_of_a_raw_image_on_a_full_disk(lab, make):
    ctid = make(None, {"rootfs": "tiny:0.016"})  # a raw image on the 24 MiB file system
    before = _files(lab.tiny / "images" / str(ctid))
    filler = lab.tiny / "filler"
    with open(filler, "wb") as out:  # leave less free than the image's copy needs
        out.truncate(0)
        os.posix_fallocate(out.fileno(), 0, max(_free(lab.tiny) - (256 << 10), 1))
    try:
        with pytest.raises(EngineError) as failure:
            lab.engine.snapshot(ctid, "nospace")
    finally:
        filler.unlink()
    assert "space" in str(failure.value), failure.value
    assert "nospace" not in lab.engine.config(ctid).snapshots
    assert _files(lab.tiny / "images" / str(ctid)) == before
    assert_whole(lab, ctid, running=True)


def test_restore_onto_a_full_disk(lab, make, tmp_path):
    from engine.backup.dump import backup
    from engine.backup.restore import restore

    source = make("dir")
    assert lab.sh(source, DATA)[0] == 0
    archive = backup(lab.engine, source, mode="suspend", compress="none", dumpdir=tmp_path).archive
    before = _files(lab.tiny)
    newid = source + 1000
    with pytest.raises(EngineError) as failure:
        restore(lab.engine, archive, newid, storage="tiny")
    assert "space" in str(failure.value), failure.value
    assert not lab.engine.exists(newid) and image_dirs(lab, newid) == []
    assert [f for f in _files(lab.tiny) if f != "images"] == [f for f in before if f != "images"]
    assert temporary_files(lab) == []
    assert_whole(lab, source, running=True)


class _Files(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


def test_download_onto_a_full_disk(lab, tmp_path):
    from engine.templates import download
    from engine.templates.entry import Entry

    www = tmp_path / "www"
    www.mkdir()
    blob = os.urandom(40 << 20)
    name = "big-1.0-1_amd64.tar.zst"
    (www / name).write_bytes(blob)
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), lambda *a, **k: _Files(*a, directory=str(www), **k))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        entry = Entry(
            name=name,
            package="big",
            version="1.0-1",
            os="busybox",
            section="system",
            type="lxc",
            arch="amd64",
            location=f"http://127.0.0.1:{server.server_address[1]}/{name}",
            source_id="test",
            sha512=hashlib.sha512(blob).hexdigest(),
        )
        dest = lab.tiny / "template" / "cache"
        with pytest.raises(EngineError) as failure:
            download(entry, dest, retries=0)
        assert "space" in str(failure.value), failure.value
        assert [p for p in _files(dest) if not p.endswith(".lock")] == []
    finally:
        server.shutdown()
        server.server_close()
