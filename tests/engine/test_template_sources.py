"""Template sources: Proxmox's and TurnKey's indexes as published, the default sources, per-source failure.

The indexes in ``tests/engine/data/`` are of this project's making, in the shape Proxmox and TurnKey
publish theirs (a news record first, records of another type, continuation lines, Infopage, ManageUrl,
Certified, md5sum and sha512sum). They are served from a loopback HTTP server; no test reaches the
real servers the default sources name.
"""

from __future__ import annotations

import functools
import gzip
import http.server
import json
import shutil
import socket
import threading
from pathlib import Path

import pytest

from engine.errors import NotFound, ValidationError
from engine.templates import TemplateStore
from engine.templates.aplinfo import read_aplinfo
from engine.templates.cli import main
from engine.templates.sources import DEFAULT_SOURCES, Source

DATA = Path(__file__).parent / "data"
PVE_URL = "http://127.0.0.1:9/images/aplinfo-pve-9.dat"
TURNKEY_URL = "https://127.0.0.1:9/pve/aplinfo.dat"


def test_proxmox_index_as_published():
    """The news record first and a record of another type are skipped; the templates are all read."""
    catalog = read_aplinfo((DATA / "aplinfo-pve.dat").read_text(), PVE_URL, "pve")
    assert [e.package for e in catalog.entries] == [
        "almalinux-9-default",
        "debian-12-standard",
        "ubuntu-24.04-standard",
        "proxmox-mail-gateway-8.2-standard",
    ]
    assert len(catalog.skipped) == 1 and "type 'qemu' is not a container template" in catalog.skipped[0]
    (news,) = catalog.news
    assert news.headline == "News displayed on the admin interface"
    assert news.text.startswith("<b>Welcome</b> to the template index") and "\n" not in news.text
    alma, debian, _, mail = catalog.entries
    assert (alma.headline, alma.description) == ("LXC default image for almalinux 9 (20240911)", "")
    assert debian.headline == "Debian 12 Bookworm (standard)"
    assert debian.description == "A small Debian Bookworm system including all standard packages."
    assert debian.location == "http://127.0.0.1:9/images/system/debian-12-standard_12.12-1_amd64.tar.zst"
    assert debian.name == "debian-12-standard_12.12-1_amd64.tar.zst" and debian.checksum()[0] == "sha512"
    assert debian.md5 and debian.infopage.startswith("https://pve.proxmox.com/wiki/")
    assert (mail.section, mail.certified, debian.certified) == ("mail", True, False)


def test_turnkey_index_as_published():
    catalog = read_aplinfo((DATA / "aplinfo-turnkey.dat").read_text(), TURNKEY_URL, "turnkey")
    wordpress, nextcloud = catalog.entries
    assert wordpress.location == "https://127.0.0.1:9/pve/debian-12-turnkey-wordpress_18.0-1_amd64.tar.gz"
    assert (wordpress.section, wordpress.os, wordpress.certified) == ("turnkeylinux", "debian-12", True)
    assert wordpress.manageurl == "https://__IPADDRESS__/"
    assert (wordpress.headline, wordpress.description) == (
        "TurnKey WordPress",
        "Blog publishing platform and CMS. It is built on PHP and MySQL.",
    )
    assert nextcloud.description == "Share and access files from anywhere."
    assert catalog.news == [] and catalog.skipped == []


@pytest.mark.parametrize(
    "text, words",
    [
        ("Package: pve-web-news\nDescription: News\n only news\n", ["lists no template"]),
        ("Error: 502 Bad Gateway\n", ["lists no template", "1 other records"]),
        (
            "Package: x\nVersion: latest\nLocation: x_1_amd64.tar.gz\nsha512sum: " + "a" * 128 + "\n",
            ["paragraph 1", "Version"],
        ),
    ],
)
def test_index_without_a_usable_template_is_refused(text, words):
    """An error page read as an index, or a template record with a bad field, never empties the catalog."""
    with pytest.raises(ValidationError) as caught:
        read_aplinfo(text, PVE_URL, "pve")
    for word in words:
        assert word in str(caught.value)


def test_fresh_store_has_the_default_sources(tmp_path):
    store = TemplateStore(tmp_path)
    assert [(s.id, s.type, s.url, s.enabled) for s in store.sources()] == [
        ("pve", "aplinfo", "http://download.proxmox.com/images/aplinfo-pve-9.dat.gz", True),
        ("turnkey", "aplinfo", "https://releases.turnkeylinux.org/pve/aplinfo.dat.gz", True),
        ("lxc", "simplestreams", "https://images.linuxcontainers.org", True),
    ]
    assert [s["id"] for s in DEFAULT_SOURCES] == ["pve", "turnkey", "lxc"]
    assert not store.sources_file.exists()  # defaults until someone edits the list
    store.set_sources([])
    assert store.sources() == []


@pytest.mark.parametrize(
    "url, word",
    [
        ("ftp://127.0.0.1/aplinfo.dat", "http:// or https://"),
        ("http:///aplinfo.dat", "no valid host"),
        ("http://169.254.169.254/latest", "link-local"),
        ("http://[fe80::1]/x", "link-local"),
        ("http://0.0.0.0/x", "unspecified"),
    ],
)
def test_source_url_checked(url, word):
    with pytest.raises(ValidationError, match=word) as caught:
        Source.from_dict({"id": "a", "type": "aplinfo", "url": url}, "source a")
    assert caught.value.key == "url"


def _closed_port() -> int:
    """A loopback port nothing listens on: connections to it are refused at once."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def served(tmp_path):
    """Both fixture indexes, gzipped as Proxmox and TurnKey serve them, on a loopback server."""
    www = tmp_path / "www"
    (www / "images").mkdir(parents=True)
    (www / "pve").mkdir()
    (www / "images" / "aplinfo-pve-9.dat.gz").write_bytes(gzip.compress((DATA / "aplinfo-pve.dat").read_bytes()))
    shutil.copy(DATA / "aplinfo-turnkey.dat", www / "pve" / "aplinfo.dat")
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(www))
    handler.log_message = lambda *args: None
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}/"
    httpd.shutdown()
    httpd.server_close()


def test_one_unreachable_source_does_not_stop_the_others(tmp_path, served, capsys):
    store = TemplateStore(tmp_path)
    dead = f"http://127.0.0.1:{_closed_port()}/"
    store.set_sources(
        [
            {"id": "pve", "type": "aplinfo", "url": served + "images/aplinfo-pve-9.dat.gz"},
            {"id": "gone", "type": "simplestreams", "url": dead},
            {"id": "turnkey", "type": "aplinfo", "url": served + "pve/aplinfo.dat"},
            {"id": "off", "type": "aplinfo", "url": dead + "aplinfo.dat", "enabled": False},
        ]
    )
    assert main(["--root", str(tmp_path), "update"]) == 1
    out, err = capsys.readouterr()
    assert "pve: 4 templates" in out and "turnkey: 2 templates" in out
    assert "source gone:" in err and "Connection refused" in err and "source off" not in err
    status = store.status()
    assert status["gone"]["success"] is None and "Connection refused" in status["gone"]["error"]
    assert status["pve"]["error"] is None and status["pve"]["count"] == 4 and "off" not in status
    assert sorted(store.available()) == ["mail", "system", "turnkeylinux"]
    (news,) = store.news()
    assert news.source_id == "pve" and news.headline.startswith("News displayed")

    # The source breaks later: its last success is kept beside the new error.
    succeeded = status["pve"]["success"]
    sources = json.loads(store.sources_file.read_text())
    sources[0]["url"] = served + "images/missing.dat"
    store.set_sources(sources)
    with pytest.raises(Exception, match="HTTP 404"):
        store.update("pve")
    assert store.status()["pve"]["success"] == succeeded and "404" in store.status()["pve"]["error"]
    with pytest.raises(NotFound):
        store.update("nothere")
