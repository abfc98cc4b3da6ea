"""Which stored templates have a newer version: the catalog's (re-download) or a local builder's (rebuild)."""

from __future__ import annotations

from engine.builders.busybox import BusyboxBuilder, busybox_version
from engine.builders.registry import Offer
from engine.templates.updates import Update, updates, version_key

CATALOG = [
    ("debian-12-standard_12.7-1_amd64.tar.zst", "12.7-1", False),
    ("debian-12-standard_12.10-1_amd64.tar.zst", "12.10-1", False),
    ("debian-12-standard_12.12-1_arm64.tar.zst", "12.12-1", False),
    ("alpine-3.22-default_20250617_amd64.tar.xz", "3.22-1", False),
]


def test_a_stored_template_with_a_newer_catalog_version_is_offered_a_download():
    stored = [
        "debian-12-standard_12.7-1_amd64.tar.zst",  # 12.10 is newer (numbers compare as numbers)
        "alpine-3.22-default_20250617_amd64.tar.xz",  # the newest: nothing
        "my-own.tar.zst",  # not a catalog name: nothing
    ]
    assert updates(stored, CATALOG) == {
        "debian-12-standard_12.7-1_amd64.tar.zst": Update(
            "debian-12-standard_12.7-1_amd64.tar.zst", "download", "debian-12-standard_12.10-1_amd64.tar.zst", "12.10-1"
        )
    }
    assert version_key("12.10-1") > version_key("12.9-3")
    # Once the newer archive is stored, the older one is offered nothing.
    assert updates([*stored, "debian-12-standard_12.10-1_amd64.tar.zst"], CATALOG) == {}


def test_a_busybox_template_older_than_the_hosts_busybox_is_offered_a_rebuild():
    builder = BusyboxBuilder()
    now = builder.current_version(Offer("busybox", "busybox", "busybox"))
    assert now == f"{busybox_version()}-1"
    old, current = "busybox-1.0.0-1_amd64.tar.zst", f"busybox-{now}_amd64.tar.zst"
    assert builder.built_version(Offer("busybox", "busybox", "busybox"), old) == "1.0.0-1"
    offers = updates([old], [("busybox", now, True), ("debian-bookworm", "local", True)])
    assert updates([old, current], [("busybox", now, True)]) == {}  # the current build is stored already
    assert offers == {old: Update(old, "rebuild", "busybox", now)}
    assert updates([old], [("busybox", now, True)]) == {old: Update(old, "rebuild", "busybox", now)}
