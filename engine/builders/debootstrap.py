"""Running debootstrap for the Debian builder: found on the sbin path, killed with its process group
on cancel or timeout, its ``I:`` lines turned into progress steps."""

from __future__ import annotations

import os
import re
import selectors
import shutil
import signal
import subprocess
import threading
import time
from collections import deque
from pathlib import Path

from engine.builders.common import Progress, check_cancel
from engine.errors import EngineError, HostError

SBIN_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def find_debootstrap() -> str:
    path = shutil.which("debootstrap", path=SBIN_PATH)
    if not path:
        raise HostError("debootstrap not found: install it with 'apt-get install debootstrap'")
    return path


class Steps:
    """Turns debootstrap's ``I:`` lines into ``progress(step_done, STEPS, text)`` calls.

    Steps: 0 the package index, 1 downloading packages, 2 extracting, unpacking and
    configuring them, 3 tidying, 4 packing; ``STEPS`` when the template is written.
    Inside a step ``step_done`` grows with the packages counted: while downloading their
    number is not known yet (debootstrap resolves them silently), so it is estimated; from
    then on it is the number of packages validated.
    """

    STEPS = 5
    _EXPECTED = 130  # packages of minbase plus the base set, as an estimate while downloading

    def __init__(self, progress: Progress | None, extra: int) -> None:
        self.progress = progress
        self.expected = self._EXPECTED + 3 * extra
        self.validated: set[str] = set()
        self.installed = 0  # Extracting, Unpacking and Configuring lines
        self.extracted = 0
        self.last: tuple[float, str] = (0.0, "starting debootstrap")
        self.last_sent = 0.0

    def say(self, done: float, text: str) -> None:
        self.last = (done, text)
        self.last_sent = time.monotonic()
        if self.progress is not None:
            self.progress(done, self.STEPS, text)

    def tick(self) -> None:
        """Repeat the last report about once a second while debootstrap is silent (a job polls
        its cancel flag from its progress calls)."""
        if time.monotonic() - self.last_sent >= 1.0:
            self.say(*self.last)

    def line(self, line: str) -> None:
        match = re.match(
            r"I: (Retrieving|Validating|Extracting|Unpacking|Configuring) (\S+?)(?:\.\.\.)?(?: (\S+))?$", line
        )
        if match is None:
            if line.startswith("I: "):
                self.say(self.last[0], f"debootstrap: {line[3:]}")
            return
        verb, name, version = match.groups()
        if verb in ("Retrieving", "Validating") and version is None:  # InRelease, Packages: the index
            self.say(min(self.last[0], 0.9), f"debootstrap: {line[3:]}")
            return
        if verb not in ("Retrieving", "Validating") and version is not None:  # "Unpacking the base system..."
            self.say(self.last[0], f"debootstrap: {line[3:]}")
            return
        if verb == "Validating":
            self.validated.add(name)
        if verb in ("Retrieving", "Validating"):
            count = len(self.validated)
            self.say(
                1 + min(0.95, count / max(self.expected, count + 1)), f"downloading packages: {count} checked ({name})"
            )
            return
        total = max(len(self.validated), 1)
        self.installed += 1
        if verb == "Extracting":
            self.extracted += 1
        expected = 2 * total + max(self.extracted, total // 3)
        self.say(2 + min(0.99, self.installed / expected), f"{verb.lower()} {name} ({total} packages)")


def stop_group(proc: subprocess.Popen, grace: float = 10.0) -> None:
    """SIGTERM debootstrap's process group, SIGKILL it after ``grace``, and wait until it is empty
    (dpkg and maintainer scripts in the chroot are in the group too)."""

    def signal_group(sig: int) -> bool:
        try:
            os.killpg(proc.pid, sig)
            return True
        except ProcessLookupError:
            return False

    signal_group(signal.SIGTERM)
    try:
        proc.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        pass
    signal_group(signal.SIGKILL)
    proc.wait()
    deadline = time.monotonic() + grace
    while signal_group(0) and time.monotonic() < deadline:  # members that outlived the leader
        signal_group(signal.SIGKILL)
        time.sleep(0.05)


def run_debootstrap(cmd: list[str], rootfs: Path, steps: Steps, timeout: float, cancel: threading.Event | None) -> None:
    env = dict(os.environ, PATH=SBIN_PATH, LC_ALL="C", DEBIAN_FRONTEND="noninteractive")
    tail: deque[str] = deque(maxlen=25)
    proc = subprocess.Popen(
        cmd,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env=env,
        start_new_session=True,  # its own process group, so a kill reaches dpkg & co.
    )
    assert proc.stdout is not None
    fd = proc.stdout.fileno()
    deadline = time.monotonic() + timeout
    pending = b""
    try:
        with selectors.DefaultSelector() as selector:
            selector.register(fd, selectors.EVENT_READ)
            while True:
                check_cancel(cancel, "Debian build")
                if time.monotonic() > deadline:
                    raise EngineError(f"debootstrap did not finish within {timeout:.0f} s")
                if not selector.select(timeout=0.2):
                    steps.tick()
                    continue
                chunk = os.read(fd, 1 << 16)
                if not chunk:
                    break
                *lines, pending = (pending + chunk).split(b"\n")
                for raw in lines:
                    line = raw.decode("utf-8", "replace").rstrip()
                    if line:
                        tail.append(line)
                        steps.line(line)
        code = proc.wait()
    except BaseException:
        # Cancelled, timed out or interrupted: stop the whole group before the caller removes
        # the build directory (debootstrap's own exit trap may unmount; the caller makes sure).
        stop_group(proc)
        raise
    finally:
        proc.stdout.close()
    if code != 0:
        log = rootfs / "debootstrap" / "debootstrap.log"
        details = list(tail)
        if log.is_file():
            details += ["-- debootstrap.log --", *log.read_text(errors="replace").splitlines()[-15:]]
        raise EngineError(f"debootstrap failed (exit code {code}):\n" + "\n".join(details))
