"""Template catalog over a loopback HTTP server: update, available, download, resume, lock, signature."""

from __future__ import annotations

import gzip
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
from engine.templates.cli import main

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
        f"md5sum: {'0' * 32}\n"
    )
    rootfs = os.urandom(1000)
    (www / Path(ROOTFS).parent).mkdir(parents=True)
    (www / ROOTFS).write_bytes(rootfs)
    (www / "streams" / "v1").mkdir(parents=True)
    (www / "streams/v1/index.json").write_text(
        json.dumps({"index": {"images": {"datatype": "image-downloads", "path": "streams/v1/images.json"}}})
    )
    (www / "streams/v1/images.json").write_text(
        json.dumps(
            {
                "products": {
                    "debian:bookworm:amd64:default": {
                        "os": "Debian",
                        "release": "bookworm",
                        "arch": "amd64",
                        "variant": "default",
                        "versions": {
                            "20240102_05:24": {
                                "items": {
                                    "root.tar.xz": {
                                        "ftype": "root.tar.xz",
                                        "path": ROOTFS,
                                        "sha256": hashlib.sha256(rootfs).hexdigest(),
                                        "size": len(rootfs),
                                    }
                                }
                            }
                        },
                    }
                }
            }
        )
    )

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
    store.set_sources(
        [
            {"id": "pve", "type": "aplinfo", "url": server.base + "aplinfo.dat"},
            {"id": "lxc", "type": "simplestreams", "url": server.base},
        ]
    )
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
    assert len(json.loads(out[out.index("[") :])) == 2


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


HAS_GPG = bool(shutil.which("gpg") and shutil.which("gpgv"))


@pytest.fixture(scope="module")
def signer(tmp_path_factory):
    """A throw-away signing key: yields (keyring path, sign(file, output))."""
    if not HAS_GPG:
        pytest.skip("gpg and gpgv are not installed")
    base = tmp_path_factory.mktemp("gpg")
    home = base / "gnupg"
    home.mkdir(mode=0o700)
    env = dict(os.environ, GNUPGHOME=str(home))
    gpg = ["gpg", "--batch", "--pinentry-mode", "loopback", "--passphrase", ""]
    try:
        subprocess.run(
            gpg + ["--quick-gen-key", "Caisson Test <test@example.invalid>", "ed25519", "sign", "never"],
            env=env,
            check=True,
            capture_output=True,
            timeout=60,
        )
        keyring = base / "keyring.gpg"
        keyring.write_bytes(
            subprocess.run(["gpg", "--batch", "--export"], env=env, check=True, capture_output=True, timeout=30).stdout
        )

        def sign(path: Path, output: Path) -> None:
            output.unlink(missing_ok=True)
            subprocess.run(
                gpg + ["--armor", "--detach-sign", "-o", str(output), str(path)],
                env=env,
                check=True,
                capture_output=True,
                timeout=60,
            )

        yield keyring, sign
    finally:
        subprocess.run(["gpgconf", "--kill", "gpg-agent"], env=env, capture_output=True, check=False)


def test_signed_index(store, server, signer):
    keyring, sign = signer
    data = server.www / "aplinfo.dat"
    sign(data, server.www / "aplinfo.dat.asc")
    store.set_sources([{"id": "pve", "type": "aplinfo", "url": server.base + "aplinfo.dat", "keyring": str(keyring)}])
    assert store.update("pve") == {"pve": 2} and store.trusted("pve")
    data.write_text(data.read_text().replace("Version: 1.0", "Version: 6.6"))
    with pytest.raises(ValidationError, match="bad signature"):
        store.update("pve")
    assert store.trusted("pve") and [e.version for e in store.available("mail")["mail"]] == ["1.0"]


def gzip_index(server, keep_plain: bool = False) -> bytes:
    """Publish aplinfo.dat.gz (and drop aplinfo.dat unless ``keep_plain``); returns the plain bytes."""
    plain = (server.www / "aplinfo.dat").read_bytes()
    (server.www / "aplinfo.dat.gz").write_bytes(gzip.compress(plain))
    if not keep_plain:
        (server.www / "aplinfo.dat").unlink()
    return plain


def test_gzip_index_named_by_the_source(store, server):
    plain = gzip_index(server)
    store.set_sources([{"id": "pve", "type": "aplinfo", "url": server.base + "aplinfo.dat.gz"}])
    assert store.update("pve") == {"pve": 2}
    assert (store.index_dir / "pve" / "aplinfo.dat").read_bytes() == plain  # kept uncompressed
    assert store.find(NAME).location == server.base + f"system/{NAME}"
    assert [p for p, _ in server.log][-1] == "/aplinfo.dat.gz"


def test_gzip_index_preferred_when_named_and_fallbacks(store, server):
    gzip_index(server, keep_plain=True)
    store.set_sources([{"id": "pve", "type": "aplinfo", "url": server.base + "aplinfo.dat.gz"}])
    server.log.clear()
    assert store.update("pve") == {"pve": 2}
    assert [p for p, _ in server.log] == ["/aplinfo.dat.gz"]
    # A plain URL whose server has only the compressed index falls back to it ...
    (server.www / "aplinfo.dat").unlink()
    store.set_sources([{"id": "pve", "type": "aplinfo", "url": server.base + "aplinfo.dat"}])
    server.log.clear()
    assert store.update("pve") == {"pve": 2}
    assert [p for p, _ in server.log] == ["/aplinfo.dat", "/aplinfo.dat.gz"]
    # ... and a .gz URL whose server has only the plain one falls back the other way.
    (server.www / "aplinfo.dat").write_bytes(gzip.decompress((server.www / "aplinfo.dat.gz").read_bytes()))
    (server.www / "aplinfo.dat.gz").unlink()
    store.set_sources([{"id": "pve", "type": "aplinfo", "url": server.base + "aplinfo.dat.gz"}])
    assert store.update("pve") == {"pve": 2}


@pytest.mark.parametrize(
    "body, words",
    [
        (gzip.compress(b"")[:10] + b"\xff" * 20, "not valid gzip"),  # a reserved deflate block type
        (gzip.compress(b"Package: x\n" * 50)[:-12], "cut short"),
    ],
)
def test_bad_gzip_index_keeps_old_cache(store, server, body, words):
    gzip_index(server, keep_plain=True)
    store.set_sources([{"id": "pve", "type": "aplinfo", "url": server.base + "aplinfo.dat.gz"}])
    assert store.update("pve") == {"pve": 2}
    (server.www / "aplinfo.dat.gz").write_bytes(body)
    with pytest.raises(ValidationError, match=words):
        store.update("pve")
    assert store.find(NAME).name == NAME  # the index of the last good update stays in use


def test_gzip_bomb_index_is_refused(store, server, monkeypatch):
    from engine.templates import store as store_module

    plain = gzip_index(server)
    monkeypatch.setattr(store_module, "MAX_INDEX", len(plain) - 1)
    store.set_sources([{"id": "pve", "type": "aplinfo", "url": server.base + "aplinfo.dat.gz"}])
    with pytest.raises(ValidationError, match=f"expands beyond {len(plain) - 1} bytes"):
        store.update("pve")


def test_signed_gzip_index_as_proxmox_publishes_it(store, server, signer):
    """aplinfo.dat.gz with aplinfo.dat.asc beside it, signing the uncompressed index (pveam
    gunzips and then runs gpgv on the result)."""
    keyring, sign = signer
    sign(server.www / "aplinfo.dat", server.www / "aplinfo.dat.asc")
    gzip_index(server)
    store.set_sources(
        [{"id": "pve", "type": "aplinfo", "url": server.base + "aplinfo.dat.gz", "keyring": str(keyring)}]
    )
    assert store.update("pve") == {"pve": 2} and store.trusted("pve")
    assert "/aplinfo.dat.asc" in [p for p, _ in server.log]
    tampered = gzip.decompress((server.www / "aplinfo.dat.gz").read_bytes()).replace(b"Version: 1.0", b"Version: 6.6")
    (server.www / "aplinfo.dat.gz").write_bytes(gzip.compress(tampered))
    with pytest.raises(ValidationError, match="bad signature"):
        store.update("pve")
    (server.www / "aplinfo.dat.asc").unlink()
    with pytest.raises(ValidationError, match="no signature"):
        store.update("pve")
    assert store.trusted("pve") and [e.version for e in store.available("mail")["mail"]] == ["1.0"]


def test_signature_over_the_compressed_file_is_accepted(store, server, signer):
    keyring, sign = signer
    gzip_index(server)
    sign(server.www / "aplinfo.dat.gz", server.www / "aplinfo.dat.gz.asc")
    store.set_sources(
        [{"id": "pve", "type": "aplinfo", "url": server.base + "aplinfo.dat.gz", "keyring": str(keyring)}]
    )
    assert store.update("pve") == {"pve": 2} and store.trusted("pve")


@pytest.mark.parametrize("offset", [0, 4096, 7])
def test_direct_writes_then_the_odd_tail_through_the_page_cache(tmp_path, offset):
    """O_DIRECT takes whole aligned buffers; a short last buffer (or a resume at an odd offset) goes
    through the page cache instead, and the file holds every byte in order either way."""
    from engine.templates.download import BUFFER, _open_part, _Sink

    part = tmp_path / "t.part"
    head = os.urandom(offset)
    part.write_bytes(head)
    fd, direct = _open_part(part, os.O_WRONLY | os.O_APPEND | os.O_CLOEXEC)
    if not direct:  # ext4, xfs, btrfs and tmpfs (Linux 6.6+) take it
        os.close(fd)
        pytest.skip(f"{tmp_path} is on a filesystem without O_DIRECT")
    body, digest = os.urandom(2 * BUFFER + 5), hashlib.sha512(head)
    try:
        sink = _Sink(fd, digest, offset, direct)
        with sink:
            for start in range(0, len(body), BUFFER):
                view = sink.buffer()
                piece = body[start : start + BUFFER]
                view[: len(piece)] = piece
                sink.put(view[: len(piece)])
            sink.finish()
        assert sink.direct is False  # the 5-byte tail (or the odd start) ended O_DIRECT
    finally:
        os.close(fd)
    assert part.read_bytes() == head + body
    assert digest.hexdigest() == hashlib.sha512(head + body).hexdigest()
