"""Archive names as Proxmox's storage layer reads them (pve-storage's archive_info rules)."""

from __future__ import annotations

import time

import pytest

from engine.backup.names import archive_name, list_backups, parse_archive, stem

STAMP = "2020_03_30-21_12_40"


@pytest.mark.parametrize(
    "suffix, compression",
    [
        ("tar", "none"),
        ("tar.gz", "gzip"),
        ("tar.zst", "zstd"),
        ("tar.lzo", "lzo"),
        ("tar.bz2", "bz2"),
        ("tgz", "gzip"),
    ],
)
def test_proxmox_archive_names_are_listed(tmp_path, suffix, compression):
    path = tmp_path / f"vzdump-lxc-16110-{STAMP}.{suffix}"
    path.write_bytes(b"")
    backup = parse_archive(path)
    assert (backup.ctid, backup.compression) == (16110, compression)
    assert backup.time == time.mktime((2020, 3, 30, 21, 12, 40, 0, 0, -1))
    assert stem(path.name) == f"vzdump-lxc-16110-{STAMP}"


@pytest.mark.parametrize(
    "name",
    [
        f"vzdump-lxc-16110-{STAMP}.zip",
        f"vzdump-lxc-16110-{STAMP}.tgz.lzo",
        f"vzdump-lxc-16110-{STAMP}.zip.gz",
        f"vzdump-lxc-16110-{STAMP}.",
        f"vzdump-lxc-16110-{STAMP}.tar.xz",
        f"vzdump-qemu-16110-{STAMP}.vma.zst",
        f"vzdump-lxc-99-{STAMP}.tar",
        f"vzdump-lxc-0100-{STAMP}.tar",
        f"vzdump-lxc-1234567890-{STAMP}.tar",
        "vzdump-lxc-16110-2020_03_30-21_12.tar",
    ],
)
def test_other_names_are_not_backups(tmp_path, name):
    (tmp_path / name).write_bytes(b"")
    assert parse_archive(tmp_path / name) is None
    assert list_backups(tmp_path) == []


def test_a_new_archive_has_proxmox_form():
    name = archive_name(101, time.mktime((2026, 1, 2, 3, 4, 5, 0, 0, -1)), "zstd")
    assert name == "vzdump-lxc-101-2026_01_02-03_04_05.tar.zst"
    assert archive_name(101, 0, "gzip").endswith(".tar.gz") and archive_name(101, 0, "none").endswith(".tar")
