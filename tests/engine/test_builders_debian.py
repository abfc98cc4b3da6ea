"""Tests of the Debian template builder: bad suites and packages refused, the mirror found from apt's sources,
failures and a cancel leaving nothing, and the template itself (built once into ``~/.cache/caisson/templates``
and reused: debootstrap takes about a minute)."""

from __future__ import annotations

import os
import socket
import threading
import time
from pathlib import Path

import pytest

from engine.builders import Cancelled, build, build_debian, debian_arch, mounts_under
from engine.builders.debian import _check_args, find_mirror
from engine.errors import EngineError, HostError, ValidationError
from tests.engine.test_builders import HAS_DEBOOTSTRAP, IS_ROOT, read_files, read_members, resolve


def test_debian_bad_suite_is_refused_and_leaves_nothing(tmp_path: Path) -> None:
    with pytest.raises(ValidationError, match="unknown Debian suite 'no-such-suite'"):
        build_debian(tmp_path / "out", suite="no-such-suite")
    assert not (tmp_path / "out").exists()


def test_debian_bad_package_name_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValidationError, match="not a valid Debian package name"):
        build_debian(tmp_path, extra_packages=["nginx; rm -rf /"])


def test_debian_flavor_names() -> None:
    assert _check_args("bookworm", [], None) == "standard"
    custom = _check_args("bookworm", ["nginx", "curl"], None)
    assert custom.startswith("custom-") and custom == _check_args("bookworm", ["curl", "nginx"], None)
    assert _check_args("bookworm", ["nginx"], "nginx") == "nginx"
    with pytest.raises(ValidationError):
        _check_args("bookworm", [], "Bad_Flavor")


def test_debian_existing_template_is_reused(tmp_path: Path) -> None:
    old = tmp_path / f"debian-12-standard_12.9-1_{debian_arch()}.tar.zst"
    new = tmp_path / f"debian-12-standard_12.10-1_{debian_arch()}.tar.zst"
    old.write_bytes(b"x")
    new.write_bytes(b"x")
    assert build_debian(tmp_path) == new


def test_find_mirror_prefers_the_main_debian_entry(tmp_path: Path) -> None:
    sources = tmp_path / "sources.list.d"
    sources.mkdir()
    (sources / "debian.sources").write_text(
        "Types: deb\nURIs: http://security.example/debian-security\nSuites: bookworm-security\n"
        "Components: main\n\n"
        "# a comment\nTypes: deb deb-src\nURIs: http://mirror.example/debian\n"
        "Suites: bookworm bookworm-updates\nComponents: main contrib\n"
    )
    assert find_mirror(sources, tmp_path / "none") == "http://mirror.example/debian"


def test_find_mirror_reads_sources_list(tmp_path: Path) -> None:
    sources_list = tmp_path / "sources.list"
    sources_list.write_text(
        "deb-src http://src.example/debian bookworm main\n"
        "deb [arch=amd64 signed-by=/k.gpg] http://mirror.example/debian bookworm main contrib\n"
    )
    assert find_mirror(tmp_path / "absent", sources_list) == "http://mirror.example/debian"


def test_find_mirror_fails_clearly_without_a_debian_entry(tmp_path: Path) -> None:
    sources_list = tmp_path / "sources.list"
    sources_list.write_text("deb http://archive.ubuntu.com/ubuntu jammy main\n")
    with pytest.raises(HostError, match="no Debian mirror found"):
        find_mirror(tmp_path / "absent", sources_list)


@pytest.mark.skipif(not (IS_ROOT and HAS_DEBOOTSTRAP), reason="needs root and debootstrap")
def test_debian_failed_debootstrap_leaves_nothing(tmp_path: Path) -> None:
    dest = tmp_path / "out"
    # Port 9 (discard) on loopback: nothing answers, debootstrap fails at once.
    with pytest.raises(EngineError, match="debootstrap failed"):
        build_debian(dest, mirror="http://127.0.0.1:9/debian", timeout=120)
    assert not dest.exists()
    assert mounts_under(tmp_path) == []


def _processes_mentioning(text: str) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if text.encode() in (entry / "cmdline").read_bytes():
                    found.append(int(entry.name))
            except OSError:
                continue
    return found


@pytest.mark.skipif(not (IS_ROOT and HAS_DEBOOTSTRAP), reason="needs root and debootstrap")
def test_debian_cancel_kills_debootstrap_and_leaves_nothing(tmp_path: Path) -> None:
    """Cancelled while debootstrap waits on its mirror (a loopback socket that never answers): the
    whole process group goes, and neither the build directory nor a template stays."""
    dest = tmp_path / "out"
    cancel = threading.Event()
    seen: list[tuple[float, int, str]] = []
    running: list[list[int]] = []

    def progress(done: float, total: int, text: str) -> None:
        seen.append((done, total, text))
        if text.startswith("debootstrap:") and not cancel.is_set():
            running.append(_processes_mentioning(str(dest)))  # debootstrap and its wget, still there
            cancel.set()

    with socket.socket() as mirror:
        mirror.bind(("127.0.0.1", 0))
        mirror.listen(16)  # connections complete in the backlog and are never answered
        port = mirror.getsockname()[1]
        started = time.monotonic()
        with pytest.raises(Cancelled):
            build(
                "debian",
                dest,
                {"mirror": f"http://127.0.0.1:{port}/debian", "timeout": 120},
                progress=progress,
                cancel=cancel,
            )
    assert time.monotonic() - started < 60
    assert seen[0][:2] == (0, 5) and cancel.is_set()
    assert running and running[0], "debootstrap was not running when the build was cancelled"
    assert _processes_mentioning(str(dest)) == []
    assert not dest.exists()  # made by the build, so removed with it
    assert mounts_under(tmp_path) == []


def _cache_dir() -> Path:
    # The same cache tests/conftest.py uses, so the template is built once per machine.
    return Path(os.environ.get("CAISSON_TEST_CACHE", Path.home() / ".cache" / "caisson" / "templates"))


@pytest.mark.slow
@pytest.mark.skipif(not (IS_ROOT and HAS_DEBOOTSTRAP), reason="needs root and debootstrap")
def test_debian_template() -> None:
    """Build (or reuse) the bookworm template and check what containers will boot."""
    tarball = build_debian(_cache_dir())
    assert tarball.name.startswith("debian-12-standard_12.") and tarball.name.endswith(".tar.zst")
    members = {m.name: m for m in read_members(tarball)}
    assert all(name == "." or name.startswith("./") for name in members)

    systemd = resolve(members, "/lib/systemd/systemd", follow_last=True)
    assert systemd.isreg()
    init = resolve(members, "/sbin/init")
    assert init.issym() and init.linkname.endswith("/systemd/systemd")
    assert resolve(members, init.linkname, follow_last=True) is systemd

    assert members["./etc/machine-id"].size == 0
    assert members["./etc/hostname"].size == 0
    assert [n for n in members if n.startswith("./dev/")] == []
    assert [n for n in members if n.startswith("./var/cache/apt/archives/") and n.endswith(".deb")] == []
    assert [n for n in members if n.startswith("./var/lib/apt/lists/") and "partial" not in n] == []
    assert [n for n in members if n.startswith("./etc/ssh/ssh_host_")] == []
    assert all(m.uname == "" and m.gname == "" for m in members.values())
    # File capabilities survive (ping needs cap_net_raw).
    ping = resolve(members, "/bin/ping", follow_last=True)
    assert "SCHILY.xattr.security.capability" in ping.pax_headers

    shadow = read_files(tarball, {"./etc/shadow"})["./etc/shadow"].decode()
    assert shadow.splitlines()[0].startswith("root:!:")
