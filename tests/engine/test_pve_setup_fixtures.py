"""Proxmox's own per-distribution setup cases (pve-container src/test/test-*), run as its runner runs them.

Each case is copied into a temp dir as a container's root; the setup runs twice
(it must be idempotent) with Proxmox's test-mode defaults (nameserver
``8.8.8.8 8.8.8.9``, search domain ``proxmox.com`` when the config has none),
root's password hash ``$5$SALT$PASS``, the key ``ssh-rsa ABCDEFG ABC@DEF``, the
random minutes of root's crontab from Perl's ``srand(0)`` (drand48) and
connection UUIDs of zeros, as its runner mocks them.  Then every ``<file>.exp``
is compared byte for byte with ``<file>`` (``@DAYS@`` in shadow.exp: days since
1970).  No kernel, no container.

``python -m tests.engine.test_pve_setup_fixtures`` prints identical /
expected-different / refused.
"""

from __future__ import annotations

import os
import shutil
import sys
import time
from pathlib import Path

import pytest

from engine import distro
from engine.config import ContainerConfig

FIXTURES = Path(__file__).resolve().parents[2] / ".." / "shared" / "peer-fixtures" / "pve-container"
CASES = sorted(p.name for p in FIXTURES.glob("test-*") if p.is_dir()) if FIXTURES.is_dir() else []
SYMLINKS = {"test-debian-013": {"etc/hosts": "../../bad-path.txt"}}  # stored as text files in the fixture copy
PASSWORD, KEYS = "$5$SALT$PASS", "ssh-rsa ABCDEFG ABC@DEF"

# case -> why Caisson's result differs from the .exp file (each one strict: it must fail)
EXPECTED_DIFFERENT: dict[str, str] = {}


def drand48(seed: int):
    """Perl's rand() after srand(seed): the 48-bit linear congruential generator."""
    state = (seed << 16) | 0x330E

    def rand() -> float:
        nonlocal state
        state = (0x5DEECE66D * state + 0xB) % (1 << 48)
        return state / (1 << 48)

    return rand


def prepare(case: str, where: Path) -> Path:
    """The case's files as a container root under ``where`` (with Proxmox's bad-path.txt beside it)."""
    root = where / "root"
    shutil.copytree(FIXTURES / case, root, symlinks=True)
    for dirpath, dirnames, _ in os.walk(root):
        os.chmod(dirpath, 0o755)
        for name in os.listdir(dirpath):
            if not os.path.islink(os.path.join(dirpath, name)):
                os.chmod(os.path.join(dirpath, name), 0o755 if name in dirnames else 0o644)
    for relpath, target in SYMLINKS.get(case, {}).items():
        (root / relpath).unlink()
        (root / relpath).symlink_to(target)
    shutil.copy(FIXTURES / "bad-path.txt", where / "bad-path.txt")
    return root


def run_case(root: Path) -> None:
    """Proxmox's runner: parse the config, set up twice in test mode."""
    config = ContainerConfig.parse(100, (root / "config").read_text())
    values = config.current.values
    settings = distro.settings(
        config,
        None,
        nameserver=values.get("nameserver", "8.8.8.8 8.8.8.9"),
        searchdomain=values.get("searchdomain", "proxmox.com"),
        unprivileged=bool(values.get("unprivileged", False)),  # Proxmox's default
        new_uuid=lambda: "00000000-0000-0000-0000-000000000000",
    )
    for _ in range(2):
        with distro.Root(root) as fs:
            distro.detect(fs, settings).post_create(PASSWORD, KEYS, rand=drand48(0))
            fs.commit()


def differences(case: str, root: Path) -> list[str]:
    days = str(int(time.time() // 86400))
    wrong = []
    for expected in sorted((FIXTURES / case).rglob("*.exp")):
        relpath = expected.relative_to(FIXTURES / case).as_posix()[: -len(".exp")]
        want = expected.read_bytes()
        if relpath.endswith("shadow"):
            want = want.replace(b"@DAYS@", days.encode())
        target = root / relpath
        if target.is_symlink() or not target.is_file() or target.read_bytes() != want:
            wrong.append(relpath)
    return wrong


def outcome(case: str, tmp: Path) -> tuple[str, list[str]]:
    root = prepare(case, tmp)
    try:
        run_case(root)
    except distro.Unsupported as exc:
        return "refused", [str(exc)]
    return ("identical", []) if not (wrong := differences(case, root)) else ("different", wrong)


@pytest.mark.skipif(not CASES, reason="the peer fixtures are not next to the project")
@pytest.mark.parametrize(
    "case",
    [
        pytest.param(c, marks=pytest.mark.xfail(strict=True, reason=EXPECTED_DIFFERENT[c]))
        if c in EXPECTED_DIFFERENT
        else c
        for c in CASES
    ],
)
def test_proxmox_case_gives_proxmox_files(case, tmp_path):
    result, details = outcome(case, tmp_path)
    assert (result, details) == ("identical", [])
    assert (tmp_path / "bad-path.txt").read_bytes() == (FIXTURES / "bad-path.txt").read_bytes()


def test_a_write_never_goes_through_a_symlink_out_of_the_root(tmp_path):
    root = prepare("test-debian-013", tmp_path)
    run_case(root)
    assert not (root / "etc/hosts").is_symlink()
    assert (tmp_path / "bad-path.txt").read_bytes() == (FIXTURES / "bad-path.txt").read_bytes()
    assert not (tmp_path.parent / "bad-path.txt").exists()


if __name__ == "__main__":
    import tempfile

    counts = {"identical": 0, "different": 0, "refused": 0}
    for name in CASES:
        with tempfile.TemporaryDirectory() as tmp:
            result, details = outcome(name, Path(tmp))
        counts[result] += 1
        if result != "identical":
            print(f"{name}: {result}: {', '.join(details)}")
    print(
        f"{len(CASES)} cases: {counts['identical']} identical, {counts['different']} expected-different "
        f"({len(EXPECTED_DIFFERENT)} declared), {counts['refused']} refused"
    )
    sys.exit(0 if counts["different"] == len(EXPECTED_DIFFERENT) and not counts["refused"] else 1)
