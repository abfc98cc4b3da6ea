"""Seccomp user notification: the kernel interface, and how a listener reaches its supervisor.

``features: mknod=1`` and ``mount=fstype;...`` make the container's filter
answer those calls with SECCOMP_RET_USER_NOTIF (``engine.seccomp``): the
calling task waits while a supervisor on the host reads the call from the
filter's listener fd, decides, and answers (``engine.notify_supervisor``).

Each container has its own supervisor process, started with the container
and ending by itself when the last task under its filters is gone (the
listener then reports POLLHUP): a listener cannot be handed back once its
holder is gone, so a per-node daemon's restart would cut every container,
while this one lives exactly as long as its container, like LXC's monitor.
The container's init makes the listener and sends it to the engine over the
start socket; an ``exec``/``enter`` makes one more (a filter is per process
tree) and the engine passes it to the supervisor over a root-only socket in
the run directory.  If the supervisor is absent (killed, or the socket gone)
the kernel answers the notified calls ENOSYS at once: nothing hangs.
"""

from __future__ import annotations

import array
import ctypes
import os
import socket
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from engine import syscalls

# ioctls on the listener (linux/seccomp.h); the structures are 80 and 24 bytes on every architecture.
NOTIF_RECV = 0xC0502100
NOTIF_SEND = 0xC0182101
NOTIF_ID_VALID = 0x40082102
FLAG_CONTINUE = 1  # SECCOMP_USER_NOTIF_FLAG_CONTINUE: the kernel makes the call as if no filter had asked


class SeccompData(ctypes.Structure):
    _fields_ = [
        ("nr", ctypes.c_int32),
        ("arch", ctypes.c_uint32),
        ("ip", ctypes.c_uint64),
        ("args", ctypes.c_uint64 * 6),
    ]


class Notif(ctypes.Structure):
    _fields_ = [("id", ctypes.c_uint64), ("pid", ctypes.c_uint32), ("flags", ctypes.c_uint32), ("data", SeccompData)]


class NotifResp(ctypes.Structure):
    _fields_ = [("id", ctypes.c_uint64), ("val", ctypes.c_int64), ("error", ctypes.c_int32), ("flags", ctypes.c_uint32)]


def _ioctl(fd: int, request: int, arg) -> int:
    libc = syscalls.libc
    result = libc.ioctl(ctypes.c_int(fd), ctypes.c_ulong(request), arg)
    if result < 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))
    return result


def receive(listener: int) -> Notif:
    """The next call waiting; ENOENT when its task died between poll and here."""
    notif = Notif()
    _ioctl(listener, NOTIF_RECV, ctypes.byref(notif))
    return notif


def still_valid(listener: int, notif_id: int) -> bool:
    """The task is still waiting on this call: what was opened of /proc/<pid> since is that task's."""
    try:
        _ioctl(listener, NOTIF_ID_VALID, ctypes.byref(ctypes.c_uint64(notif_id)))
        return True
    except OSError:
        return False


def answer(listener: int, notif_id: int, error: int = 0, val: int = 0, cont: bool = False) -> None:
    """``error`` is a positive errno (0: success, ``val`` returned); ``cont`` lets the kernel make the call."""
    resp = NotifResp(notif_id, val, -error if error else 0, FLAG_CONTINUE if cont else 0)
    try:
        _ioctl(listener, NOTIF_SEND, ctypes.byref(resp))
    except OSError:
        pass  # the task was killed meanwhile: nobody waits for the answer


@dataclass(frozen=True)
class Policy:
    """What the supervisor makes for the container: allowed character nodes, allowed file system types."""

    mknod: bool
    mount_types: tuple[str, ...]

    def argv(self) -> list[str]:
        return (["--mknod"] if self.mknod else []) + (
            ["--mount", ";".join(self.mount_types)] if self.mount_types else []
        )


def policy_of(config) -> Policy | None:
    """The container's supervisor policy; None without the features or without the kernel's support."""
    from engine.seccomp import user_notif_available

    types = (config.get("features") or {}).get("mount") or ""
    policy = Policy(config.feature("mknod"), tuple(name for name in types.split(";") if name))
    wanted = policy.mknod or policy.mount_types
    return policy if wanted and user_notif_available() else None


def socket_path(run_dir: Path, ctid: int) -> Path:
    return Path(run_dir) / f"{ctid}.notify"


def launch(listener: int, path: Path, policy: Policy) -> None:
    """Start the container's supervisor with its first listener; returns once it serves ``path``."""
    log = Path(f"{path}.log")
    with open(log, "ab") as err:
        subprocess.run(
            [sys.executable, "-m", "engine.notify_supervisor", "--fd", str(listener), "--socket", str(path)]
            + policy.argv(),
            pass_fds=[listener],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=err,
            cwd=Path(__file__).resolve().parents[1],
            check=True,
            timeout=60,
        )


def send_fd(sock: socket.socket, fd: int, tag: bytes = b"listener") -> None:
    sock.sendmsg([tag], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", [fd]))])


def receive_fd(sock: socket.socket) -> tuple[bytes, int | None]:
    """One message and the fd it carries, if any (any further fds are closed)."""
    fds = array.array("i")
    msg, ancdata, _, _ = sock.recvmsg(4096, socket.CMSG_SPACE(4 * fds.itemsize))
    for level, kind, data in ancdata:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            fds.frombytes(data[: len(data) - (len(data) % fds.itemsize)])
    for extra in fds[1:]:
        os.close(extra)
    return msg, (fds[0] if fds else None)


def hand_over(listener: int, path: Path) -> bool:
    """Give an attached process's listener to the running container's supervisor; closes it either way.
    False when no supervisor answers (the calls then get ENOSYS)."""
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET) as sock:
            sock.connect(str(path))
            send_fd(sock, listener)
            return sock.recv(16) == b"ok"
    except OSError:
        return False
    finally:
        os.close(listener)
