"""A destroy removes the container's lock file while it holds it: no other process may then hold a flock on the
removed file while a third holds the new one (``container_lock`` checks, once it has the flock, that the name
still leads to the file it locked).

Two real processes wait for the lock as every engine operation does (``container_lock``): the first opened
the file before the destroy removed its name, the second opens the name after.  Before the fix the first got
the flock of the deleted inode as soon as the destroy let go, while the second held the new file's: two
holders of one container's lock at once.
"""

from __future__ import annotations

import os
import select
import subprocess
import sys
from pathlib import Path

import pytest

from engine.state import Layout, container_lock
from tests.faults.kit import ROOT

WAITER = """
import sys
from pathlib import Path
from engine.state import Layout, container_lock
layout = Layout(Path(sys.argv[1]), Path(sys.argv[2]))
with container_lock(layout, int(sys.argv[3]), timeout=120):
    print("held", flush=True)
    sys.stdin.readline()
"""

CTID = 4242


def _waiter(layout: Layout) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-c", WAITER, str(layout.root), str(layout.run), str(CTID)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )


def _lock_fd_target(process: subprocess.Popen, path: Path) -> str | None:
    """What the waiter's open lock file descriptor points at (``… (deleted)`` once its name is gone)."""
    fds = f"/proc/{process.pid}/fd"
    for fd in os.listdir(fds):
        try:
            target = os.readlink(f"{fds}/{fd}")
        except OSError:
            continue
        if target.startswith(str(path)):
            return target
    return None


def _wait(check, what: str, process: subprocess.Popen) -> None:
    """Poll ``check`` until it holds; fail if the waiter died first (no time limit but the suite's own)."""
    while not check():
        assert process.poll() is None, f"{what}: the waiter exited with {process.returncode}"
        select.select([], [], [], 0.02)


def _said_held(process: subprocess.Popen) -> bool:
    ready, _, _ = select.select([process.stdout], [], [], 0)
    return bool(ready) and process.stdout.readline() == b"held\n"


@pytest.fixture
def layout(tmp_path) -> Layout:
    layout = Layout(tmp_path / "state", tmp_path / "run")
    (layout.run / "lock").mkdir(parents=True)
    return layout


def test_a_destroy_never_leaves_two_holders_of_one_lock(layout):
    path = layout.run / "lock" / f"{CTID}.lock"
    first = second = None
    try:
        with container_lock(layout, CTID):  # as Engine.destroy holds it
            first = _waiter(layout)
            _wait(lambda: _lock_fd_target(first, path) == str(path), "the first waiter opens the file", first)
            inode = path.stat().st_ino
            path.unlink()  # what remove=True does as the destroy ends, the flock still held
            # a new operation in that instant creates and locks a new file under the name
            second = _waiter(layout)
            assert second.stdout.readline() == b"held\n"
            assert path.stat().st_ino != inode
        # the destroy lets go: the first waiter's descriptor names the deleted file
        # The first waiter gets the old inode's flock, sees the name leads elsewhere and waits on the new file.
        early = []

        def moved_or_held() -> bool:
            if _said_held(first):
                early.append("held")
                return True
            return _lock_fd_target(first, path) == str(path)

        _wait(moved_or_held, "the first waiter", first)
        assert not early, "two processes hold container 4242's lock at once"
        second.communicate(b"\n", timeout=60)  # the second lets go: now the first holds it, alone
        assert first.stdout.readline() == b"held\n"
        first.communicate(b"\n", timeout=60)
        assert first.returncode == 0 and second.returncode == 0
    finally:
        for process in (first, second):
            if process is not None and process.poll() is None:
                process.kill()
                process.wait()


def test_a_failed_destroy_keeps_the_lock_file(layout):
    path = layout.run / "lock" / f"{CTID}.lock"
    with pytest.raises(RuntimeError), container_lock(layout, CTID, remove=True):
        raise RuntimeError("protected")
    assert path.exists()


def test_destroy_removes_the_lock_file_and_the_id_locks_again(engine, busybox_template, ctid_factory):
    ctid = ctid_factory()
    engine.create(ctid, busybox_template, {"hostname": "lockgone"})
    path = engine.layout.run / "lock" / f"{ctid}.lock"
    assert path.exists()
    engine.destroy(ctid)
    assert not path.exists()
    with container_lock(engine.layout, ctid, timeout=0):
        assert path.exists()
