"""Templates from each kind of source, downloaded from a loopback server, boot as containers."""

from __future__ import annotations

import functools
import hashlib
import http.server
import json
import lzma
import threading

import pytest
import zstandard

from engine.templates.download import download
from engine.templates.store import TemplateStore


@pytest.fixture
def catalog_server(tmp_path, busybox_template):
    """An aplinfo index and a simplestreams index serving the busybox template (zst, and again as xz)."""
    www = tmp_path / "www"
    (www / "system").mkdir(parents=True)
    zst = busybox_template.read_bytes()
    name = "bootbox-1.0-1_amd64.tar.zst"
    (www / "system" / name).write_bytes(zst)
    (www / "aplinfo.dat").write_text(
        f"Package: bootbox\nVersion: 1.0-1\nType: lxc\nOS: busybox\nSection: system\nArchitecture: amd64\n"
        f"Location: system/{name}\nsha512sum: {hashlib.sha512(zst).hexdigest()}\nDescription: busybox\n"
    )
    xz = lzma.compress(zstandard.ZstdDecompressor().decompressobj().decompress(zst))
    (www / "images").mkdir()
    (www / "images" / "rootfs.tar.xz").write_bytes(xz)
    (www / "streams" / "v1").mkdir(parents=True)
    (www / "streams/v1/index.json").write_text(
        json.dumps({"index": {"images": {"datatype": "image-downloads", "path": "streams/v1/images.json"}}})
    )
    (www / "streams/v1/images.json").write_text(
        json.dumps(
            {
                "products": {
                    "busybox:1.35:amd64:default": {
                        "os": "Busybox",
                        "release": "1.35",
                        "arch": "amd64",
                        "variant": "default",
                        "versions": {
                            "20261123_00:00": {
                                "items": {
                                    "root.tar.xz": {
                                        "ftype": "root.tar.xz",
                                        "path": "images/rootfs.tar.xz",
                                        "sha256": hashlib.sha256(xz).hexdigest(),
                                        "size": len(xz),
                                    }
                                }
                            }
                        },
                    }
                }
            }
        )
    )
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(www))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    httpd.log_message = lambda *a: None
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}/"
    httpd.shutdown()
    httpd.server_close()


def test_a_template_from_each_source_kind_boots(engine, catalog_server, ctid_factory):
    store = TemplateStore(engine.layout.root)
    store.set_sources(
        [
            {"id": "pve", "type": "aplinfo", "url": catalog_server + "aplinfo.dat"},
            {"id": "images", "type": "simplestreams", "url": catalog_server},
        ]
    )
    store.update()
    entries = [e for group in store.available().values() for e in group if e.source_id in ("pve", "images")]
    assert {e.source_id for e in entries} == {"pve", "images"}
    for entry in entries:
        path = download(entry, store.cache)
        ctid = ctid_factory()
        engine.create(ctid, f"local:vztmpl/{path.name}")
        assert engine.start(ctid).init == "busybox"
        assert engine.exec(ctid, ["true"]) == 0
        engine.stop(ctid)
        store.remove(path.name)
