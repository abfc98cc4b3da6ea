"""A container's ``/dev/console`` and ``/dev/tty1``…``/dev/ttyN`` as LXC provides them: devpts ptys.

``console: 1`` (the default) and ``tty: N`` (default 2, as Proxmox) give the
container terminals held from its start, so its getty on ``/dev/tty1`` or a
program writing to ``/dev/console`` finds a real terminal, and an attach
(``python -m engine console``, the web console) reaches that same terminal:

- at start, init (as the container's root, in its own devpts instance) opens
  one pty per terminal, unlocks it and binds its ``/dev/pts/K`` over
  ``/dev/console`` and ``/dev/ttyN`` (empty files made in the container's
  ``/dev`` tmpfs), then passes the masters to the engine over a socket made
  before the fork;
- the engine hands them to the node's tty holder (:mod:`engine.ttyholder`,
  one process per node, as one lxcfs per node: started on demand, gone when it
  holds no terminal), which keeps them open, drains ``/dev/console`` into the
  container's console log memfd (so the console log and ``log`` keep working
  and a writer never blocks), and gives a master to whoever attaches.

Init's own stdout and stderr stay the console log memfd (:mod:`engine.consolelog`):
what init prints is in the log either way.  Without a holder (it could not
be started) the masters are closed: a program opening the terminals gets an
error rather than blocking, the container still starts, and a warning says so.
"""

from __future__ import annotations

import array
import fcntl
import logging
import os
import socket
import struct
import subprocess
import sys
from pathlib import Path

from engine import syscalls as sc  # imported here: inside the container, after pivot_root, nothing can be
from engine.ttyholder import MAX_FDS, socket_path

log = logging.getLogger(__name__)

TIOCSPTLCK = 0x40045431
TIOCGPTN = 0x80045430


def wanted(config) -> list[str]:
    """The terminals a container gets: ``console`` (unless ``console: 0``), then ``tty1``…``ttyN``."""
    names = ["console"] if config.current.get("console") is not False else []
    count = config.current.get("tty")
    count = 2 if count is None else int(count)
    return names + [f"tty{i}" for i in range(1, count + 1)]


def inside_step(names: list[str], sock: socket.socket):
    """The start's step inside the container (as its root, devpts mounted): the ptys, bound and sent."""

    def ttys() -> None:
        masters = []
        try:
            for name in names:
                master = os.open("/dev/ptmx", os.O_RDWR | os.O_NOCTTY | os.O_CLOEXEC)
                masters.append(master)
                fcntl.ioctl(master, TIOCSPTLCK, struct.pack("i", 0))
                number = struct.unpack("I", fcntl.ioctl(master, TIOCGPTN, b"\0\0\0\0"))[0]
                target = f"/dev/{name}"
                if not os.path.lexists(target):
                    os.close(os.open(target, os.O_CREAT | os.O_EXCL | os.O_WRONLY | os.O_NOFOLLOW, 0o600))
                sc.mount(f"/dev/pts/{number}", target, None, sc.MS_BIND)
            sock.sendmsg(
                [" ".join(names).encode()], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", masters))]
            )
        finally:
            for master in masters:
                os.close(master)
            sock.close()

    return ttys


def receive(sock: socket.socket) -> dict[str, int]:
    """The masters init sent: name -> fd (none if init failed before sending)."""
    fds = array.array("i")
    sock.setblocking(False)
    try:
        msg, ancdata, _, _ = sock.recvmsg(4096, socket.CMSG_SPACE(MAX_FDS * fds.itemsize))
    except BlockingIOError:
        return {}
    for level, kind, data in ancdata:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            fds.frombytes(data[: len(data) - (len(data) % fds.itemsize)])
    names = msg.decode().split()
    return dict(zip(names, fds, strict=False))


def register(run: Path, ctid: int, pid: int, starttime: int, masters: dict[str, int]) -> bool:
    """Give the masters to the node's holder; without one, start one holding them (not waited for: a
    container's start does not pay for an interpreter's).  False (and a warning) when neither works."""
    try:
        if not masters:
            return False
        names = list(masters)
        fds = array.array("i", [masters[n] for n in names])
        header = f"register {ctid} {pid} {starttime} {' '.join(names)}"
        try:
            conn = _connect(run)
        except OSError:
            return _start_holder(run, header, list(fds), ctid)
        with conn:
            conn.sendmsg([header.encode() + b"\n"], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, fds)])
            return conn.recv(64).startswith(b"ok")
    finally:
        for fd in masters.values():
            os.close(fd)


_started: list[subprocess.Popen] = []


def _start_holder(run: Path, header: str, fds: list[int], ctid: int) -> bool:
    """A fresh interpreter (never a fork of a threaded agent) holding ``fds`` from the start; it detaches at
    once (its first process exits, reaped here later) or, if another holder won the race, registers there."""
    for done in [p for p in _started if p.poll() is not None]:
        _started.remove(done)
    os.makedirs(os.path.dirname(socket_path(run)), mode=0o700, exist_ok=True)
    try:
        _started.append(
            subprocess.Popen(
                [sys.executable, "-S", "-m", "engine.ttyholder", str(run), header, ",".join(map(str, fds))],
                pass_fds=fds,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                cwd="/",
                env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])},
            )
        )
        return True
    except OSError as exc:
        log.warning("CT %s: the tty holder could not be started (%s); its terminals are closed", ctid, exc)
        return False


def attach(run: Path, ctid: int, name: str) -> tuple[socket.socket, int] | None:
    """(connection, master) of a running container's terminal ``name`` (``console``, ``ttyN``), or None
    without a holder or such a terminal.  The terminal is the caller's until it closes the connection."""
    from engine.errors import InvalidState

    try:
        conn = _connect(run)
    except OSError:
        return None
    conn.sendall(f"attach {ctid} {name}\n".encode())
    fds = array.array("i")
    msg, ancdata, _, _ = conn.recvmsg(4096, socket.CMSG_SPACE(fds.itemsize))
    for level, kind, data in ancdata:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            fds.frombytes(data[: len(data) - (len(data) % fds.itemsize)])
    if fds:
        return conn, fds[0]
    conn.close()
    text = msg.decode(errors="replace").strip()
    if text.startswith("busy"):
        raise InvalidState(f"CT {ctid}: {name} is attached elsewhere ({text})")
    return None


def held(run: Path, ctid: int) -> list[str]:
    """The terminals the holder keeps for ``ctid`` (empty without a holder)."""
    try:
        conn = _connect(run)
    except OSError:
        return []
    with conn:
        conn.sendall(f"list {ctid}\n".encode())
        return conn.recv(4096).decode(errors="replace").split()


def _connect(run: Path) -> socket.socket:
    conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
    try:
        conn.connect(socket_path(run))
    except OSError:
        conn.close()
        raise
    return conn
