"""Template catalog over a loopback HTTP server: update, available, download, resume, lock, signature."""
from __future__ import annotations

import hashlib
import http.server
import io
import json
import os
import shutil
import subprocess
import tarfile
import threading
from pathlib import Path

import pytest

from engine.errors import ValidationError
from engine.templates import Cancelled, DownloadError, TemplateStore, download
from engine.templates.__main__ import main

NAME = "busybox-1.35.0-1_amd64.tar.gz"
ROOTFS = "images/debian/bookworm/amd64/default/20240102_05:24/rootfs.tar.xz"


class RangeHandler(http.server.SimpleHTTPRequestHandler):
    """Serves the test directory with Range support; can break or stall a body half-way."""

    def log_message(self, *args):
        pass

    def do_GET(self):
        srv = self.server
        srv.log.append((self.path, self.headers.get("Range")))
        path = Path(self.translate_path(self.path))
        if not path.is_file():
            self.send_error(404)
            return
        data = path.read_bytes()
        start, status = 0, 200
        rng = self.headers.get("Range")
        if rng and srv.ranges and rng.startswith("bytes=") and rng.endswith("-"):
            start, status = int(rng[6:-1]), 206
        self.send_response(status)
        self.send_header("Content-Length", str(len(data) - start))
        if status == 206:
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        self.end_headers()
        body = data[start:]
        if self.path in srv.break_once:
            srv.break_once.discard(self.path)
            self.wfile.write(body[: len(body) // 2])
            self.wfile.flush()
            self.close_connection = True
            return
        if self.path in srv.stall:
            self.wfile.write(body[: len(body) // 2])
            self.wfile.flush()
            srv.release.wait(10)
            return
        self.wfile.write(body)


@pytest.fixture
def server(tmp_path):
    www = tmp_path / "www"
    (www / "system").mkdir(parents=True)
    payload = io.BytesIO()
    with tarfile.open(fileobj=payload, mode="w:gz") as tar:
        info = tarfile.TarInfo("./bin/busybox")
        blob = os.urandom(400_000)
        info.size = len(blob)
        tar.addfile(info, io.BytesIO(blob))
    template = payload.getvalue()
    (www / "system" / NAME).write_bytes(template)
    (www / "aplinfo.dat").write_text(
        f"Package: busybox\nVersion: 1.35.0-1\nType: lxc\nOS: busybox\nSection: system\n"
        f"Architecture: amd64\nLocation: system/{NAME}\nsha512sum: {hashlib.sha512(template).hexdigest()}\n"
        "Description: Busybox\n a tiny system\n\n"
        "Package: mail\nVersion: 1.0\nSection: mail\nLocation: mail/mail_1.0.tar.gz\n"
        f"md5sum: {'0' * 32}\n")
    rootfs = os.urandom(1000)
    (www / Path(ROOTFS).parent).mkdir(parents=True)
    (www / ROOTFS).write_bytes(rootfs)
    (www / "streams" / "v1").mkdir(parents=True)
    (www / "streams/v1/index.json").write_text(json.dumps(
        {"index": {"images": {"datatype": "image-downloads", "path": "streams/v1/images.json"}}}))
    (www / "streams/v1/images.json").write_text(json.dumps({"products": {"debian:bookworm:amd64:default": {
        "os": "Debian", "release": "bookworm", "arch": "amd64", "variant": "default",
        "versions": {"20240102_05:24": {"items": {"root.tar.xz": {
            "ftype": "root.tar.xz", "path": ROOTFS, "sha256": hashlib.sha256(rootfs).hexdigest(),
            "size": len(rootfs)}}}}}}}))

    def handler(*args, **kw):
        return RangeHandler(*args, directory=str(www), **kw)

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    httpd.daemon_threads = True
    httpd.log, httpd.ranges, httpd.break_once, httpd.stall = [], True, set(), set()
    httpd.release, httpd.www = threading.Event(), www
    httpd.base = f"http://127.0.0.1:{httpd.server_address[1]}/"
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield httpd
    httpd.release.set()
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture
def store(tmp_path, server):
    store = TemplateStore(tmp_path / "root")
    store.set_sources([{"id": "pve", "type": "aplinfo", "url": server.base + "aplinfo.dat"},
                       {"id": "lxc", "type": "simplestreams", "url": server.base}])
    assert store.update() == {"pve": 2, "lxc": 1}
    return store


def test_update_then_available(store, capsys):
    groups = store.available()
    assert sorted(groups) == ["mail", "system"]
    assert [e.name for e in groups["system"]] == [NAME, "debian-bookworm-default_20240102_05-24_amd64.tar.xz"]
    assert not store.trusted("pve")
    assert main(["--root", str(store.root), "--output", "json", "available", "--section", "mail"]) == 0
    assert [e["name"] for e in json.loads(capsys.readouterr().out)["mail"]] == ["mail_1.0.tar.gz"]


def test_download_verifies_and_places(store, server, capsys):
    seen = []
    path = download(store.find(NAME), store.cache, progress=lambda d, t: seen.append((d, t)))
    assert path == store.cache / NAME
    assert path.read_bytes() == (server.www / "system" / NAME).read_bytes()
    assert seen[-1][0] == seen[-1][1] == path.stat().st_size
    assert not (store.cache / f".{NAME}.part").exists()
    assert main(["--root", str(store.root), "download", "debian-bookworm-default_20240102_05-24_amd64.tar.xz"]) == 0
    assert main(["--root", str(store.root), "--output", "json", "list"]) == 0
    out = capsys.readouterr().out
    assert len(json.loads(out[out.index("["):])) == 2


def test_interrupted_download_resumes_with_range(store, server):
    server.break_once.add(f"/system/{NAME}")
    path = download(store.find(NAME), store.cache)
    assert path.read_bytes() == (server.www / "system" / NAME).read_bytes()
    requests = [r for p, r in server.log if p == f"/system/{NAME}"]
    assert requests[0] is None and requests[1].startswith("bytes=") and requests[1] != "bytes=0-"


def test_resume_across_calls_and_server_without_range(store, server):
    server.break_once.add(f"/system/{NAME}")
    with pytest.raises(DownloadError):
        download(store.find(NAME), store.cache, retries=0)
    assert (store.cache / f".{NAME}.part").stat().st_size > 0
    server.ranges = False  # answers 200: the download must restart from byte 0
    path = download(store.find(NAME), store.cache)
    assert path.read_bytes() == (server.www / "system" / NAME).read_bytes()


def test_checksum_mismatch_leaves_nothing(store, server):
    (server.www / "system" / NAME).write_bytes(b"tampered")
    with pytest.raises(ValidationError, match="checksum mismatch"):
        download(store.find(NAME), store.cache)
    assert [p.name for p in store.cache.iterdir() if not p.name.endswith(".lock")] == []


def test_cancel_leaves_no_template(store, server):
    cancel = threading.Event()
    with pytest.raises(Cancelled):
        download(store.find(NAME), store.cache, progress=lambda d, t: cancel.set(), cancel=cancel)
    assert store.local() == [] and (store.cache / f".{NAME}.part").exists()


def test_stalled_server_times_out(store, server):
    server.stall.add(f"/system/{NAME}")
    with pytest.raises(DownloadError):
        download(store.find(NAME), store.cache, retries=0, timeout=0.5)
    assert store.local() == []


def test_max_bytes(store):
    with pytest.raises(ValidationError, match="limit"):
        download(store.find(NAME), store.cache, max_bytes=1000)
    assert not (store.cache / f".{NAME}.part").exists()


def test_concurrent_downloads_make_one_file(store, server):
    entry, results, errors = store.find(NAME), [], []

    def run():
        try:
            results.append(download(entry, store.cache))
        except Exception as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=run) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(20)
    assert not errors and results == [store.cache / NAME] * 2
    assert [p for p, _ in server.log].count(f"/system/{NAME}") == 1
    assert [t["name"] for t in store.local()] == [NAME]


def test_bad_index_keeps_old_cache(store, server):
    (server.www / "aplinfo.dat").write_text("<html>oops</html>\n")
    with pytest.raises(ValidationError, match="paragraph 1"):
        store.update("pve")
    assert store.find(NAME).name == NAME
    assert main(["--root", str(store.root), "update", "pve"]) == 2


@pytest.mark.skipif(not (shutil.which("gpg") and shutil.which("gpgv")), reason="gpg and gpgv are not installed")
def test_signed_index(store, server, tmp_path):
    home = tmp_path / "gnupg"
    home.mkdir(mode=0o700)
    env = dict(os.environ, GNUPGHOME=str(home))
    gpg = ["gpg", "--batch", "--pinentry-mode", "loopback", "--passphrase", ""]
    try:
        subprocess.run(gpg + ["--quick-gen-key", "Caisson Test <test@example.invalid>", "ed25519", "sign", "never"],
                       env=env, check=True, capture_output=True, timeout=60)
        keyring = tmp_path / "keyring.gpg"
        keyring.write_bytes(subprocess.run(["gpg", "--batch", "--export"], env=env, check=True,
                                           capture_output=True, timeout=30).stdout)
        data = server.www / "aplinfo.dat"
        subprocess.run(gpg + ["--armor", "--detach-sign", "-o", str(data) + ".asc", str(data)],
                       env=env, check=True, capture_output=True, timeout=60)
    finally:
        subprocess.run(["gpgconf", "--kill", "gpg-agent"], env=env, capture_output=True, check=False)
    store.set_sources([{"id": "pve", "type": "aplinfo", "url": server.base + "aplinfo.dat",
                        "keyring": str(keyring)}])
    assert store.update("pve") == {"pve": 2} and store.trusted("pve")
    data.write_text(data.read_text().replace("Version: 1.0", "Version: 6.6"))
    with pytest.raises(ValidationError, match="bad signature"):
        store.update("pve")
    assert store.trusted("pve") and [e.version for e in store.available("mail")["mail"]] == ["1.0"]
