"""Tests of the local template builders: the registry, and the busybox template.

The busybox template is checked member by member, for reproducibility, and
by booting it (busybox init as PID 1 of a new PID namespace, no tty). The
Debian builder's tests are test_builders_debian.py.
"""

from __future__ import annotations

import hashlib
import os
import posixpath
import re
import shutil
import signal
import subprocess
import tarfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import zstandard

from engine.builders import Cancelled, atomic_file, build, build_busybox, debian_arch
from engine.builders.busybox import DEFAULT_BUSYBOX, FIXED_MTIME
from engine.errors import HostError, ValidationError

IS_ROOT = os.geteuid() == 0
HAS_DEBOOTSTRAP = shutil.which("debootstrap", path="/usr/sbin:/usr/bin:/sbin:/bin") is not None


# --- helpers ------------------------------------------------------------------


@contextmanager
def open_template(path: Path) -> Iterator[tarfile.TarFile]:
    with (
        path.open("rb") as raw,
        zstandard.ZstdDecompressor().stream_reader(raw) as stream,
        tarfile.open(fileobj=stream, mode="r|") as tar,
    ):
        yield tar


def read_members(path: Path) -> list[tarfile.TarInfo]:
    with open_template(path) as tar:
        return list(tar)


def read_files(path: Path, names: set[str]) -> dict[str, bytes]:
    found = {}
    with open_template(path) as tar:
        for member in tar:
            if member.name in names and member.isreg():
                fileobj = tar.extractfile(member)
                assert fileobj is not None
                found[member.name] = fileobj.read()
    return found


def resolve(members: dict[str, tarfile.TarInfo], path: str, follow_last: bool = False) -> tarfile.TarInfo:
    """The member at an absolute ``path`` inside the archive, following symlinked directories."""
    for _ in range(40):
        parts = [part for part in path.split("/") if part]
        current = ""
        for i, part in enumerate(parts):
            current = posixpath.normpath(f"{current}/{part}")
            member = members.get("." + current)
            last = i == len(parts) - 1
            if member is not None and member.issym() and (follow_last or not last):
                target = member.linkname
                if not target.startswith("/"):
                    target = posixpath.join(posixpath.dirname(current), target)
                path = posixpath.normpath(target + "/" + "/".join(parts[i + 1 :]))
                break
        else:
            return members["." + current]
    raise AssertionError(f"symlink loop at {path}")


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# --- busybox ------------------------------------------------------------------


@pytest.fixture(scope="module")
def busybox_tarball(busybox_template: Path) -> Path:
    """The session's busybox template (built by tests/conftest.py with build_busybox)."""
    return busybox_template


def test_busybox_name_and_layout(busybox_tarball: Path) -> None:
    assert re.fullmatch(rf"busybox-\d+(\.\d+)+-1_{debian_arch()}\.tar\.zst", busybox_tarball.name)
    members = read_members(busybox_tarball)
    names = [m.name for m in members]
    assert names[0] == "."
    assert all(name.startswith("./") for name in names[1:])
    assert len(names) == len(set(names))
    # Depth-first, sorted: every parent before what it holds.
    seen: set[str] = set()
    for name in names[1:]:
        assert posixpath.dirname(name) in seen | {"."}, name
        seen.add(name)
    assert [n.split("/") for n in names] == sorted(n.split("/") for n in names)
    for member in members:
        assert (member.uid, member.gid, member.uname, member.gname) == (0, 0, "", "")
        assert member.mtime == FIXED_MTIME


def test_busybox_init_and_applets(busybox_tarball: Path) -> None:
    members = {m.name: m for m in read_members(busybox_tarball)}
    init = members["./sbin/init"]
    assert init.issym() and init.linkname == "/bin/busybox"
    binary = members["./bin/busybox"]
    assert binary.isreg() and binary.mode == 0o755 and binary.size == DEFAULT_BUSYBOX.stat().st_size
    applets = subprocess.run([DEFAULT_BUSYBOX, "--list-full"], capture_output=True, text=True, check=True)
    for applet in applets.stdout.split():
        if applet == "linuxrc":
            assert "./linuxrc" not in members
            continue
        if applet == "bin/busybox":  # the binary itself
            continue
        link = members[f"./{applet}"]
        assert link.issym() and link.linkname == "/bin/busybox", applet
    assert members["./tmp"].mode == 0o1777
    assert members["./root"].mode == 0o700
    for directory in ("dev", "proc", "sys", "run", "etc", "var/log", "usr/bin", "usr/sbin"):
        assert members[f"./{directory}"].isdir(), directory
    assert members["./etc/shadow"].mode == 0o600
    assert members["./etc/init.d/rcS"].mode == 0o755


def test_busybox_config_files(busybox_tarball: Path) -> None:
    wanted = {f"./etc/{n}" for n in ("inittab", "passwd", "group", "shadow", "hostname", "hosts", "init.d/rcS")}
    files = {k: v.decode() for k, v in read_files(busybox_tarball, wanted).items()}
    assert set(files) == wanted

    entries = [line for line in files["./etc/inittab"].splitlines() if line and not line.startswith("#")]
    assert "::sysinit:/etc/init.d/rcS" in entries
    assert "::ctrlaltdel:/sbin/reboot" in entries
    # Nothing that needs a tty, and no unmounting: mounts belong to the engine.
    assert not [e for e in entries if ":respawn:" in e or ":askfirst:" in e or "umount" in e]

    assert "root:x:0:0:root:/root:/bin/sh" in files["./etc/passwd"].splitlines()
    assert any(line.startswith("nobody:x:65534:65534:") for line in files["./etc/passwd"].splitlines())
    assert "root:x:0:" in files["./etc/group"].splitlines()
    assert files["./etc/shadow"].splitlines()[0].startswith("root:!:")
    assert files["./etc/hostname"].strip()
    assert "localhost" in files["./etc/hosts"]

    rcs = files["./etc/init.d/rcS"]
    assert rcs.startswith("#!/bin/sh\n")
    assert "ip link set lo up" in rcs and "/etc/hostname" in rcs and "/etc/rc.local" in rcs
    assert "mount " not in rcs


def test_busybox_is_reproducible(tmp_path: Path, busybox_tarball: Path) -> None:
    again = build_busybox(tmp_path / "a")
    third = build_busybox(tmp_path / "b", force=True)
    assert sha256(again) == sha256(third) == sha256(busybox_tarball)


def test_busybox_existing_tarball_is_reused_unless_forced(tmp_path: Path) -> None:
    first = build_busybox(tmp_path)
    inode = first.stat().st_ino
    assert build_busybox(tmp_path) == first
    assert first.stat().st_ino == inode
    assert build_busybox(tmp_path, force=True) == first
    assert first.stat().st_ino != inode
    assert [p.name for p in tmp_path.iterdir()] == [first.name]


def test_busybox_missing_binary_says_what_to_install(tmp_path: Path) -> None:
    with pytest.raises(HostError, match="apt-get install busybox-static"):
        build_busybox(tmp_path / "out", busybox=tmp_path / "no-busybox")
    assert not (tmp_path / "out").exists()


def test_busybox_dynamic_binary_is_refused(tmp_path: Path) -> None:
    with pytest.raises(HostError, match="dynamically linked"):
        build_busybox(tmp_path, busybox=Path("/bin/ls"))


def test_busybox_build_reports_progress_to_completion(tmp_path: Path) -> None:
    seen: list[tuple[float, int, str]] = []
    path = build("busybox", tmp_path, progress=lambda done, total, text: seen.append((done, total, text)))
    assert path.is_file() and [p.name for p in tmp_path.iterdir()] == [path.name]
    assert len(seen) >= 3
    assert all(total == 2 for _, total, _ in seen)
    assert [d for d, _, _ in seen] == sorted(d for d, _, _ in seen)  # never goes back
    assert seen[0][0] == 0 and seen[-1][0] == 2 and path.name in seen[-1][2]
    assert any(0 < d < 2 and "packing" in text for d, _, text in seen)
    again: list[tuple[float, int, str]] = []
    assert build("busybox", tmp_path, progress=lambda *a: again.append(a)) == path  # already there
    assert again[-1][:2] == (2, 2)


def test_busybox_cancel_leaves_nothing(tmp_path: Path) -> None:
    cancel = threading.Event()

    def progress(done: float, total: int, text: str) -> None:
        if done > 1:  # half-way through packing
            cancel.set()

    with pytest.raises(Cancelled):
        build("busybox", tmp_path, progress=progress, cancel=cancel)
    assert cancel.is_set() and list(tmp_path.iterdir()) == []


def test_build_refuses_unknown_builders_and_options(tmp_path: Path) -> None:
    with pytest.raises(ValidationError, match="not a local builder"):
        build("alpine", tmp_path)
    with pytest.raises(ValidationError, match="takes no option suite"):
        build("busybox", tmp_path, {"suite": "bookworm"})
    with pytest.raises(ValidationError, match="takes no option colour"):
        build("debian", tmp_path, {"colour": "blue"})
    with pytest.raises(ValidationError, match="not a valid Debian package name"):
        build("debian", tmp_path, {"packages": "curl,Bad Name"})
    assert list(tmp_path.iterdir()) == []


def test_the_registry_names_every_builder_with_its_options_and_offers() -> None:
    """Command line, jobs, API and catalog all read this registry: each builder declares its options
    (checked by name and value) and the templates the catalog offers for it."""
    from engine.builders import find_offer, get_builder, names, offers
    from engine.builders.__main__ import _parser

    assert names() == ["busybox", "debian"]
    assert [(o.builder, o.name, o.options) for o in offers()][:2] == [
        ("busybox", "busybox", {}),
        ("debian", "debian-bookworm", {"suite": "bookworm"}),
    ]
    offer = find_offer("debian-trixie")
    assert offer is not None and (offer.builder, offer.os, offer.options) == ("debian", "debian", {"suite": "trixie"})
    assert find_offer("alpine-3") is None
    with pytest.raises(ValidationError, match=r"'alpine' is not a local builder \(busybox, debian\)") as caught:
        get_builder("alpine")
    assert caught.value.key == "builder"
    debian = get_builder("debian")
    assert debian.takes("suite") and not get_builder("busybox").takes("suite")
    assert debian.check_options({"packages": "curl, nginx", "suite": "sid"}) == {
        "packages": ["curl", "nginx"],
        "suite": "sid",
    }
    with pytest.raises(ValidationError, match="packages: a list") as caught:
        debian.check_options({"packages": 3})
    assert caught.value.key == "packages"
    args = _parser().parse_args(["debian", "--suite", "trixie", "--packages", "curl"])
    assert (args.template, args.suite, args.packages, args.flavor) == ("debian", "trixie", "curl", None)
    assert _parser().parse_args(["busybox"]).template == "busybox"
    with pytest.raises(SystemExit):
        _parser().parse_args(["busybox", "--suite", "bookworm"])  # busybox takes no options


def test_atomic_file_leaves_nothing_on_failure(tmp_path: Path) -> None:
    target = tmp_path / "t.tar.zst"
    with pytest.raises(RuntimeError), atomic_file(target) as fileobj:
        fileobj.write(b"half")
        raise RuntimeError("boom")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.skipif(not IS_ROOT or not shutil.which("unshare"), reason="needs root and unshare")
def test_busybox_boots_without_a_tty(tmp_path: Path, busybox_tarball: Path) -> None:
    """busybox init runs rcS and rc.local, stays PID 1 with no tty, and powers off on SIGUSR2."""
    rootfs = tmp_path / "rootfs"
    rootfs.mkdir()
    with open_template(busybox_tarball) as tar:
        tar.extractall(rootfs, filter="fully_trusted")
    rc_local = rootfs / "etc/rc.local"
    rc_local.write_text(
        "#!/bin/sh\n{ hostname; ip -o link show lo; } > /tmp/booted.part\nmv /tmp/booted.part /tmp/booted\n"
    )
    rc_local.chmod(0o755)
    marker = rootfs / "tmp/booted"

    proc = subprocess.Popen(
        ["unshare", "--fork", "--pid", "--uts", "--net", "--kill-child", "chroot", str(rootfs), "/sbin/init"],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 15
        while not marker.exists() and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.05)
        hostname, link = marker.read_text().splitlines()
        assert hostname == "busybox"
        assert "UP" in link
        time.sleep(1.5)  # a few turns of init's main loop
        assert proc.poll() is None, "busybox init exited with nothing to respawn"
        children = Path(f"/proc/{proc.pid}/task/{proc.pid}/children").read_text().split()
        assert len(children) == 1
        os.kill(int(children[0]), signal.SIGUSR2)  # poweroff
        proc.wait(timeout=15)
        output = proc.stdout.read().decode() if proc.stdout else ""
        assert "Requesting system poweroff" in output
    finally:
        if proc.poll() is None:
            proc.kill()  # --kill-child takes init down with it
            proc.wait()
