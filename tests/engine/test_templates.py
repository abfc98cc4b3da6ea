"""Template catalog: index parsing and input checks (no network)."""

from __future__ import annotations

import hashlib
import json

import pytest

from engine.errors import NotFound, ValidationError
from engine.templates import TemplateStore, check_template_name, check_url, parse_aplinfo, parse_images
from engine.templates.cli import main
from engine.templates.simplestreams import products_path

INDEX = "http://127.0.0.1:8000/images/aplinfo.dat"
SHA512 = hashlib.sha512(b"x").hexdigest()


def paragraph(**over) -> str:
    fields = {
        "Package": "busybox",
        "Version": "1.35.0-1",
        "Type": "lxc",
        "OS": "busybox",
        "Section": "system",
        "Architecture": "amd64",
        "Location": "system/busybox-1.35.0-1_amd64.tar.zst",
        "sha512sum": SHA512,
        "Description": "Busybox\n a tiny system\n .\n second paragraph",
    }
    fields.update(over)
    return "".join(f"{k}: {v}\n" for k, v in fields.items() if v is not None)


def test_parse_aplinfo_fields_and_continuation():
    text = (
        paragraph()
        + "\n\n"
        + paragraph(
            Package="debian-12-standard",
            Version="12.15-1",
            Section="turnkey",
            Location="system/debian-12-standard_12.15-1_amd64.tar.zst",
        )
    )
    first, second = parse_aplinfo(text, INDEX, "pve")
    assert first.name == "busybox-1.35.0-1_amd64.tar.zst"
    assert first.location == "http://127.0.0.1:8000/images/system/busybox-1.35.0-1_amd64.tar.zst"
    assert (first.headline, first.description) == ("Busybox", "a tiny system\n\nsecond paragraph")
    assert first.checksum() == ("sha512", SHA512)
    assert (second.section, second.arch, second.source_id) == ("turnkey", "amd64", "pve")


def test_md5_only_entry():
    (entry,) = parse_aplinfo(paragraph(sha512sum=None, md5sum="a" * 32), INDEX, "pve")
    assert entry.checksum() == ("md5", "a" * 32)


@pytest.mark.parametrize(
    "text, words",
    [
        ("<html><body>Not here</body></html>\n", ["paragraph 1", "not an aplinfo field"]),
        ('{"index": {}}', ["paragraph 1"]),
        ("\n\n", ["no aplinfo paragraph"]),
        (paragraph() + "\n" + paragraph(Version=None), ["paragraph 2", "Version"]),
        (paragraph(Package=None), ["paragraph 1", "Package"]),
        (paragraph(Location=None), ["Location"]),
        (paragraph(sha512sum=None), ["sha512sum"]),
        (paragraph(sha512sum="abc"), ["paragraph 1", "sha512sum", "128"]),
        (paragraph(sha512sum="z" * 128), ["sha512"]),
        (paragraph(Location="../../etc/passwd"), ["Location", "escapes"]),
        (paragraph(Location="system/%2e%2e/%2e%2e/etc/x.tar.gz"), ["escapes"]),
        (paragraph(Location="http://evil.example/busybox.tar.zst"), ["another server"]),
        (paragraph(Location="//evil.example/busybox.tar.zst"), ["another server"]),
        (paragraph(Location="file:///etc/passwd"), ["another server"]),
        (paragraph(Location="system/passwd"), ["invalid template name"]),
    ],
)
def test_bad_aplinfo(text, words):
    with pytest.raises(ValidationError) as info:
        parse_aplinfo(text, INDEX, "pve")
    for word in words:
        assert word in str(info.value)


def test_absolute_location_same_server_is_allowed():
    url = "http://127.0.0.1:8000/other/busybox-1.35.0-1_amd64.tar.zst"
    (entry,) = parse_aplinfo(paragraph(Location=url), INDEX, "pve")
    assert entry.location == url


def images(path="images/debian/bookworm/amd64/default/20240102_05:24/rootfs.tar.xz", sha="b" * 64) -> dict:
    item = {"ftype": "root.tar.xz", "path": path, "sha256": sha, "size": 10}
    return {
        "format": "products:1.0",
        "products": {
            "debian:bookworm:amd64:default": {
                "os": "Debian",
                "release": "bookworm",
                "arch": "amd64",
                "variant": "default",
                "versions": {
                    "20240101_05:24": {"items": {"root.tar.xz": dict(item, sha256="c" * 64)}},
                    "20240102_05:24": {
                        "items": {"root.tar.xz": item, "lxd.tar.xz": {"ftype": "lxd.tar.xz", "path": "x"}}
                    },
                },
            }
        },
    }


def test_simplestreams_latest_version():
    (entry,) = parse_images(json.dumps(images()), "http://127.0.0.1:1/", "lxc")
    assert entry.name == "debian-bookworm-default_20240102_05-24_amd64.tar.xz"
    assert entry.version == "20240102_05:24" and entry.sha256 == "b" * 64 and entry.section == "system"
    assert entry.os == "debian-bookworm" and entry.size == 10
    assert entry.location.startswith("http://127.0.0.1:1/images/debian/")


@pytest.mark.parametrize(
    "text, word",
    [
        ("aplinfo", "not simplestreams JSON"),
        ("[]", "not a simplestreams document"),
        ("{}", "products"),
        (json.dumps(images(path="../../etc/passwd")), "escapes"),
        (json.dumps(images(path="http://evil.example/r.tar.xz")), "another server"),
        (json.dumps(images(sha="short")), "sha256"),
    ],
)
def test_bad_simplestreams(text, word):
    with pytest.raises(ValidationError, match=word):
        parse_images(text, "http://127.0.0.1:1/", "lxc")


def test_simplestreams_index():
    index = {"index": {"images": {"datatype": "image-downloads", "path": "streams/v1/images.json"}}}
    assert products_path(json.dumps(index), "lxc") == "streams/v1/images.json"
    with pytest.raises(ValidationError, match="image-downloads"):
        products_path('{"index": {}}', "lxc")


@pytest.mark.parametrize(
    "name", ["a/b.tar.gz", "x\0.tar.gz", ".hidden.tar.gz", "../x.tar.gz", "x.tar.bz2", "", "-x.tar.gz"]
)
def test_bad_template_names(name):
    with pytest.raises(ValidationError):
        check_template_name(name)


@pytest.mark.parametrize(
    "url",
    ["file:///etc/passwd", "ftp://127.0.0.1/x", "http://169.254.169.254/latest", "http://[fe80::1]/x", "gopher://x"],
)
def test_refused_urls(url):
    with pytest.raises(ValidationError, match="refusing"):
        check_url(url)


def test_store_local_and_remove(tmp_path):
    store = TemplateStore(tmp_path)
    store.cache.mkdir(parents=True)
    (store.cache / "busybox-1.35.0-1_amd64.tar.zst").write_bytes(b"123")
    (store.cache / ".busybox-1.35.0-1_amd64.tar.zst.part").write_bytes(b"1")
    assert [(t["name"], t["size"]) for t in store.local()] == [("busybox-1.35.0-1_amd64.tar.zst", 3)]
    with pytest.raises(ValidationError):
        store.remove("../template/sources.json")
    with pytest.raises(NotFound):
        store.remove("nothere.tar.gz")
    assert main(["--root", str(tmp_path), "remove", "busybox-1.35.0-1_amd64.tar.zst"]) == 0
    assert store.local() == []
    assert main(["--root", str(tmp_path), "remove", "a/b.tar.gz"]) == 2
    assert main(["--root", str(tmp_path), "remove", "gone.tar.gz"]) == 3


def test_sources_validation(tmp_path):
    store = TemplateStore(tmp_path)
    with pytest.raises(ValidationError, match="url"):
        store.set_sources([{"id": "a", "type": "aplinfo", "url": "file:///etc/x"}])
    with pytest.raises(ValidationError, match="type"):
        store.set_sources([{"id": "a", "type": "rpm", "url": "http://x/"}])
    with pytest.raises(ValidationError, match="id"):
        store.set_sources([{"id": "../a", "type": "aplinfo", "url": "http://x/"}])
    with pytest.raises(NotFound):
        store.update("missing")


def test_each_source_type_has_its_own_kind(tmp_path):
    """sources.json's type picks the Source class that fetches and reads that index; the file keeps its form."""
    from engine.templates import AplinfoSource, SimplestreamsSource, Source

    store = TemplateStore(tmp_path)
    store.set_sources(
        [
            {"id": "pve", "type": "aplinfo", "url": "http://x/aplinfo.dat", "keyring": "/k.gpg"},
            {"id": "lxc", "type": "simplestreams", "url": "https://images.example"},
        ]
    )
    pve, lxc = store.sources()
    assert (type(pve), type(lxc)) == (AplinfoSource, SimplestreamsSource)
    assert (pve.type, lxc.type, lxc.base) == ("aplinfo", "simplestreams", "https://images.example/")
    assert json.loads(store.sources_file.read_text())[0] == {
        "id": "pve",
        "type": "aplinfo",
        "enabled": True,
        "url": "http://x/aplinfo.dat",
        "keyring": "/k.gpg",
    }
    assert Source.from_dict(pve.to_dict(), "again") == pve
    with pytest.raises(ValidationError, match="type must be one of aplinfo, simplestreams") as caught:
        Source.from_dict({"id": "a", "type": ["aplinfo"], "url": "http://x/"}, "source 0")
    assert caught.value.key == "type"


def test_local_builders_are_offered_and_build_into_the_store(tmp_path, capsys):
    from engine.templates.cli import main

    assert main(["--root", str(tmp_path), "available", "--section", "local-build"]) == 0
    offered = capsys.readouterr().out.split()
    assert "busybox" in offered and "debian-bookworm" in offered
    assert main(["--root", str(tmp_path), "build", "busybox"]) == 0
    built = list((tmp_path / "template" / "cache").glob("busybox-*_*.tar.zst"))
    assert len(built) == 1
    assert main(["--root", str(tmp_path), "build"]) == 2
