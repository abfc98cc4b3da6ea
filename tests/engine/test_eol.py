"""Distribution end of life: the shipped data, a node's newer copy, templates by name, containers by os-release."""

from __future__ import annotations

import json
import os
from datetime import date

from engine.templates.eol import load, of_template, read_os_release, release


def test_releases_match_by_major_or_major_minor_and_a_nodes_copy_wins(tmp_path):
    data = load()
    bullseye = release(data, "debian", "11.9")
    assert bullseye.eol == date(2024, 8, 14) and bullseye.lts == date(2026, 8, 31) and bullseye.name == "Bullseye"
    assert bullseye.ended(date(2025, 1, 1)) and not release(data, "debian", "13").ended(date(2025, 1, 1))
    assert release(data, "ubuntu", "22.04").eol == date(2027, 6, 1)
    assert release(data, "alpine", "3.18.4").version == "3.18"
    assert release(data, "rockylinux", "9.3").distro == "rocky"
    assert release(data, "arch", "") is None and release(data, "debian", "99") is None

    (tmp_path / "template").mkdir()
    (tmp_path / "template" / "eol.json").write_text(json.dumps({"debian": {"13": {"eol": "2001-01-01"}}}))
    assert release(load(tmp_path), "debian", "13").eol == date(2001, 1, 1)
    assert release(load(tmp_path), "debian", "12").eol == date(2026, 7, 11)  # the rest stays


def test_templates_by_their_names():
    data = load()
    assert of_template(data, "debian-10-standard_10.7-1_amd64.tar.gz").version == "10"
    assert of_template(data, "ubuntu-20.04-standard_20.04-1_amd64.tar.zst").version == "20.04"
    assert of_template(data, "alpine-3.17-default_20221129_amd64.tar.xz").distro == "alpine"
    assert of_template(data, "busybox-1.36.1-1_amd64.tar.zst") is None


def test_os_release_is_read_inside_without_following_symlinks(tmp_path):
    root = tmp_path / "root"
    (root / "etc").mkdir(parents=True)
    (root / "usr" / "lib").mkdir(parents=True)
    (root / "usr" / "lib" / "os-release").write_text('ID=debian\nVERSION_ID="12"\nPRETTY_NAME="Debian 12"\n')
    outside = tmp_path / "host-os-release"
    outside.write_text("ID=ubuntu\nVERSION_ID=24.04\n")
    (root / "etc" / "os-release").symlink_to(outside)  # a link out of the container is never followed
    fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY)
    try:
        assert read_os_release(fd) == {"ID": "debian", "VERSION_ID": "12", "PRETTY_NAME": "Debian 12"}
        (root / "usr" / "lib" / "os-release").unlink()
        assert read_os_release(fd) == {}
    finally:
        os.close(fd)
