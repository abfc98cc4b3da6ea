"""``python -m engine.ttyholder RUN``: the node's tty holder, keeping containers' terminals open.

One process per node (a flock on ``<run>/console/holder.lock``), started by
the engine when a container with terminals starts and none runs, as root,
listening on ``<run>/console/holder.sock`` (0600 in a 0700 directory: only
root reaches it).  It holds, per container, the pty masters its init made
(:mod:`engine.ttys`) and one slave of each (``TIOCGPTPEER``), so a terminal
whose getty exits and respawns is never hung up; it drains ``/dev/console``
into the container's console log memfd, taken from init with ``pidfd_getfd``
(:func:`engine.consolefd.take`), while no one is attached to it; it watches
each init's pidfd and forgets a container whose init is gone, and exits when
it holds nothing.  Requests, one line each: ``register CTID PID STARTTIME
NAMES`` (with the masters), ``attach CTID NAME`` (answered with a dup of the
master; the terminal is the caller's until it closes the connection: a second
attach is ``busy``), ``list CTID``.

It stays small: one process per node for as long as any container has a terminal, so it
imports only the system calls it makes (no ``pathlib``, ``typing``, ``logging`` or
``subprocess``; :mod:`engine.ttys`, the engine's side, imports its protocol from here) and runs
without ``site`` (its interpreter is started with ``-S``).
"""

from __future__ import annotations

import array
import errno
import fcntl
import os
import select
import socket
import sys

from engine import consolefd, procfs

IDLE_EXIT = 5.0  # seconds without any terminal before the holder exits
TIOCGPTPEER = 0x5441
MAX_FDS = 16  # descriptors one request may carry: a container's terminals


def socket_path(run: str | os.PathLike) -> str:
    return os.path.join(run, "console", "holder.sock")


class Container:
    def __init__(self, ctid: int, pid: int, starttime: int, masters: dict[str, int]):
        self.ctid, self.masters = ctid, masters
        self.pidfd = os.pidfd_open(pid)
        self.peers = {}
        for name, master in masters.items():
            try:
                self.peers[name] = fcntl.ioctl(master, TIOCGPTPEER, os.O_RDWR | os.O_NOCTTY | os.O_CLOEXEC)
            except OSError:
                pass
        self.log = consolefd.take(pid, starttime, 1 << 40) if "console" in masters else None
        self.attached: dict[str, socket.socket] = {}

    def close(self) -> None:
        for fd in [*self.masters.values(), *self.peers.values(), self.pidfd, self.log]:
            if fd is not None:
                try:
                    os.close(fd)
                except OSError:
                    pass
        for conn in self.attached.values():
            conn.close()


def main(run: str, header: str, fds: list[int]) -> int:
    """Hold the first container's terminals (``header``: its register line, ``fds``: its masters)."""
    directory = os.path.dirname(socket_path(run))
    os.makedirs(directory, mode=0o700, exist_ok=True)
    lock = os.open(os.path.join(directory, "holder.lock"), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        return _hand_over(run, header, fds)  # another holder runs (or is starting): give them to it
    if os.fork():
        return 0  # the starter reaps this parent; the holder goes on detached
    os.setsid()
    devnull = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(devnull, fd)
    path = socket_path(run)
    _unlink(path)
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
    old = os.umask(0o177)
    listener.bind(path)
    os.umask(old)
    listener.listen(64)
    containers: dict[int, Container] = {}
    _answer(None, header.split(), fds, containers)
    try:
        serve(listener, containers)
    finally:
        _unlink(path)
    return 0


def _unlink(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


def _hand_over(run: str, header: str, fds: list[int]) -> int:
    """Register with the holder that won the race, once its socket answers (at most 10 s)."""
    import time

    deadline = time.monotonic() + 10
    while True:
        conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
        try:
            conn.connect(socket_path(run))
            break
        except OSError:
            conn.close()
            if time.monotonic() > deadline:
                return 1
            time.sleep(0.02)
    with conn:
        conn.sendmsg([header.encode() + b"\n"], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", fds))])
        return 0 if conn.recv(64).startswith(b"ok") else 1


def serve(listener: socket.socket, containers: dict) -> None:
    clients: dict[socket.socket, bytearray] = {}
    idle = 0.0
    while True:
        readers: list = [listener, *clients]
        for container in containers.values():
            readers.append(container.pidfd)
            console = container.masters.get("console")
            if console is not None and "console" not in container.attached:
                readers.append(console)
            readers += list(container.attached.values())
        ready, _, _ = select.select(readers, [], [], 1.0)
        if not ready and not containers and not clients:
            idle += 1.0
            if idle >= IDLE_EXIT:
                return
            continue
        idle = 0.0
        for fd in ready:
            if fd is listener:
                conn, _ = listener.accept()
                clients[conn] = bytearray()
                continue
            if isinstance(fd, socket.socket) and fd in clients:
                _request(fd, clients, containers)
                continue
            for ctid, container in list(containers.items()):
                if fd == container.pidfd:
                    container.close()
                    del containers[ctid]
                elif fd == container.masters.get("console"):
                    _drain(container)
                else:
                    for name, conn in list(container.attached.items()):
                        if fd is conn:  # the attached side closed (or sent something): the terminal is free
                            try:
                                data = conn.recv(64)
                            except OSError:
                                data = b""
                            if not data:
                                conn.close()
                                del container.attached[name]


def _drain(container: Container) -> None:
    try:
        data = os.read(container.masters["console"], 65536)
    except OSError:
        return
    if container.log is not None and data:
        try:
            os.write(container.log, data)  # at the shared offset: the log's drains copy it out
        except OSError as exc:
            if exc.errno != errno.EPERM:  # full until the next drain: dropped, as init's own output
                raise


def _request(conn: socket.socket, clients: dict, containers: dict) -> None:
    fds = array.array("i")
    try:
        data, ancdata, _, _ = conn.recvmsg(4096, socket.CMSG_SPACE(MAX_FDS * fds.itemsize))
    except OSError:
        data, ancdata = b"", []
    for level, kind, payload in ancdata:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            fds.frombytes(payload[: len(payload) - (len(payload) % fds.itemsize)])
    if not data:
        del clients[conn]
        conn.close()
        return
    buffer = clients[conn]
    buffer += data
    if b"\n" not in buffer:
        return
    words = bytes(buffer).split(b"\n", 1)[0].decode(errors="replace").split()
    del clients[conn]
    keep = False
    try:
        keep = _answer(conn, words, list(fds), containers)
    finally:
        if not keep:
            conn.close()


def _answer(conn: socket.socket | None, words: list[str], fds: list[int], containers: dict) -> bool:
    """Answer one request; True when the connection now holds an attached terminal."""
    if words[:1] == ["register"] and len(words) >= 4:
        ctid, pid, starttime, names = int(words[1]), int(words[2]), int(words[3]), words[4:]
        if procfs.proc_starttime(pid) != starttime or len(names) != len(fds):
            for fd in fds:
                os.close(fd)
            if conn is not None:
                conn.sendall(b"err: stale or malformed\n")
            return False
        if ctid in containers:
            containers.pop(ctid).close()
        containers[ctid] = Container(ctid, pid, starttime, dict(zip(names, fds, strict=True)))
        if conn is not None:
            conn.sendall(b"ok\n")
        return False
    for fd in fds:
        os.close(fd)
    if words[:1] == ["list"] and len(words) == 2:
        container = containers.get(int(words[1])) if words[1].isdigit() else None
        conn.sendall((" ".join(container.masters) if container else "").encode() + b"\n")
        return False
    if words[:1] == ["attach"] and len(words) == 3 and words[1].isdigit():
        container = containers.get(int(words[1]))
        name = words[2]
        if container is None or name not in container.masters:
            conn.sendall(b"none\n")
            return False
        if name in container.attached:
            conn.sendall(b"busy: another session is attached\n")
            return False
        conn.sendmsg([b"ok\n"], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", [container.masters[name]]))])
        container.attached[name] = conn
        return True
    conn.sendall(b"err: unknown request\n")
    return False


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], sys.argv[2], [int(fd) for fd in sys.argv[3].split(",") if fd]))
