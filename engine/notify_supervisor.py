"""The per-container supervisor answering seccomp notifications: ``python -m engine.notify_supervisor``.

Started by the engine with the container's first listener (``engine.notify``);
it detaches (a session of its own, re-parented to the host's reaper), serves
a root-only socket where later listeners (``exec``/``enter``) arrive, and
exits when every listener reported POLLHUP (no task left under its filter).

For each call it opens the task's /proc directory and memory, then checks
with SECCOMP_IOCTL_NOTIF_ID_VALID that the task still waits on that call, so
what it opened is that task's and not a recycled pid's.  Then:

- mknod/mknodat of a character device: made only for Proxmox's safe list
  (null, zero, full, random, urandom, tty, console, ptmx, and overlayfs's
  0:0 whiteout) and only for a caller holding CAP_MKNOD in its namespace;
  anything else gets EPERM.  The node is made as host root in a child
  chrooted to the task's root, its parent directory resolved from the
  task's cwd (or the mknodat dirfd) with RESOLVE_NO_MAGICLINKS: ``..`` stops
  at the container's root and its symlinks resolve inside it.  It is owned
  by the caller's fsuid/fsgid and gets the caller's umask.
- mount of an allowed type (a new mount, no bind, move, remount or
  propagation change): made as host root in the task's mount namespace, on
  the target resolved the same way, forced nosuid and nodev, for a caller
  holding CAP_SYS_ADMIN.  Any other mount is let through
  (SECCOMP_USER_NOTIF_FLAG_CONTINUE): the kernel decides as without the
  feature (tmpfs works, nfs is refused) and the caller gains nothing.
"""

from __future__ import annotations

import argparse
import ctypes
import errno
import os
import select
import signal
import socket
import stat
import sys

from engine import notify, syscalls

# (major, minor) of the character devices Proxmox's pve-lxc-syscalld makes.
ALLOWED_DEVICES = frozenset({(1, 3), (1, 5), (1, 7), (1, 8), (1, 9), (5, 0), (5, 2), (0, 0)})
CAP_MKNOD, CAP_SYS_ADMIN = 27, 21
AT_FDCWD = -100
CALL_TIMEOUT = 120.0  # seconds one call's work may take (an NFS server that does not answer): then ETIMEDOUT

# nr -> (name, dirfd argument or None, path argument, mode argument, dev argument), per audit arch.
MKNOD_CALLS = {
    0xC000003E: {133: ("mknod", None, 0, 1, 2), 259: ("mknodat", 0, 1, 2, 3), 165: ("mount", None, 1, 0, 0)},
    0x40000003: {14: ("mknod", None, 0, 1, 2), 297: ("mknodat", 0, 1, 2, 3), 21: ("mount", None, 1, 0, 0)},
}
# mount(2) flags kept from the caller: RDONLY, NOSUID, NODEV, NOEXEC, SYNCHRONOUS, DIRSYNC, NOSYMFOLLOW,
# NOATIME, NODIRATIME, SILENT, RELATIME, STRICTATIME, LAZYTIME.
KEPT_MOUNT_FLAGS = 0x1 | 0x2 | 0x4 | 0x8 | 0x10 | 0x80 | 0x100 | 0x400 | 0x800 | 0x8000 | 1 << 21 | 1 << 24 | 1 << 25
# Not a new mount: REMOUNT, BIND, MOVE, UNBINDABLE, PRIVATE, SLAVE, SHARED (the kernel's own rules apply).
NOT_NEW_MOUNT = 0x20 | 0x1000 | 0x2000 | 1 << 17 | 1 << 18 | 1 << 19 | 1 << 20

SYS_OPENAT2, RESOLVE_NO_MAGICLINKS = 437, 0x02


class OpenHow(ctypes.Structure):
    _fields_ = [("flags", ctypes.c_uint64), ("mode", ctypes.c_uint64), ("resolve", ctypes.c_uint64)]


def openat2(dirfd: int, path: str, flags: int, resolve: int) -> int:
    how = OpenHow(flags | os.O_CLOEXEC, 0, resolve)
    fd = syscalls.libc.syscall(
        ctypes.c_long(SYS_OPENAT2), ctypes.c_int(dirfd), os.fsencode(path), ctypes.byref(how), ctypes.c_size_t(24)
    )
    if fd < 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err), path)
    return fd


class Refused(Exception):
    def __init__(self, err: int):
        self.err = err


def read_string(mem: int, address: int, limit: int = 4096) -> str:
    """A NUL-terminated string of the task's memory, read a page at a time (the next may be unmapped)."""
    if address == 0:
        raise Refused(errno.EFAULT)
    data = b""
    while len(data) < limit:
        chunk = 4096 - (address + len(data)) % 4096
        try:
            part = os.pread(mem, chunk, address + len(data))
        except OSError:
            raise Refused(errno.EFAULT) from None
        end = part.find(b"\0")
        if end >= 0:
            return os.fsdecode(data + part[:end])
        data += part
        if not part:
            break
    raise Refused(errno.ENAMETOOLONG)


def task_status(proc: int) -> dict[str, str]:
    fd = os.open("status", os.O_RDONLY | os.O_CLOEXEC, dir_fd=proc)
    try:
        text = os.read(fd, 65536).decode()
    finally:
        os.close(fd)
    return dict(line.split(":\t", 1) for line in text.splitlines() if ":\t" in line)


def has_cap(status: dict[str, str], cap: int) -> bool:
    return bool(int(status["CapEff"], 16) >> cap & 1)


def in_task(proc: int, base: str, action, mount_ns: bool = False) -> int:
    """Run ``action(base_fd)`` in a child chrooted to the task's root, standing in ``base`` (its ``cwd`` or
    ``fd/N``) and, for a mount, in its mount namespace; the child's errno (0: done)."""
    root = os.open("root", os.O_PATH | os.O_CLOEXEC, dir_fd=proc)
    here = os.open(base, os.O_PATH | os.O_CLOEXEC, dir_fd=proc)
    ns = os.open("ns/mnt", os.O_RDONLY | os.O_CLOEXEC, dir_fd=proc) if mount_ns else None
    try:
        pid = os.fork()
        if pid == 0:
            code = 0
            try:
                if ns is not None:
                    os.setns(ns, os.CLONE_NEWNS)
                os.fchdir(root)
                os.chroot(".")
                os.fchdir(here)
                action()
            except Refused as exc:
                code = exc.err
            except OSError as exc:
                code = exc.errno or errno.EIO
            except BaseException:  # noqa: BLE001 - the task gets EIO, never a hang
                code = errno.EIO
            os._exit(code)
        pidfd = os.pidfd_open(pid)
        try:
            done, _, _ = select.select([pidfd], [], [], CALL_TIMEOUT)
        finally:
            os.close(pidfd)
        if not done:  # a mount whose server does not answer: the container's other calls must not wait on it
            os.kill(pid, signal.SIGKILL)
        _, status = os.waitpid(pid, 0)
        if not done:
            return errno.ETIMEDOUT
        return os.waitstatus_to_exitcode(status) if os.WIFEXITED(status) else errno.EIO
    finally:
        for fd in (root, here, ns):
            if fd is not None:
                os.close(fd)


def _parent_of(path: str) -> tuple[int, str]:
    """The parent directory of ``path`` (from the cwd, or /), opened without magic links; and the last name."""
    if not path:
        raise Refused(errno.ENOENT)
    head, sep, name = path.rstrip("/").rpartition("/")
    if not name or name in (".", ".."):
        raise Refused(errno.EEXIST)
    head = head if head else ("/" if sep else ".")
    return openat2(AT_FDCWD, head, os.O_PATH | os.O_DIRECTORY, RESOLVE_NO_MAGICLINKS), name


def handle_mknod(notif, mem: int, proc: int, call: tuple, policy: notify.Policy) -> tuple[int, bool]:
    _, dirfd_arg, path_arg, mode_arg, dev_arg = call
    args = notif.data.args
    mode, dev = args[mode_arg] & 0xFFFFFFFF, args[dev_arg]
    if not policy.mknod or stat.S_IFMT(mode) != stat.S_IFCHR:
        return 0, True
    if (os.major(dev), os.minor(dev)) not in ALLOWED_DEVICES:
        raise Refused(errno.EPERM)
    status = task_status(proc)
    if not has_cap(status, CAP_MKNOD):
        raise Refused(errno.EPERM)
    path = read_string(mem, args[path_arg])
    dirfd = ctypes.c_int32(args[dirfd_arg] & 0xFFFFFFFF).value if dirfd_arg is not None else AT_FDCWD
    base = "cwd" if dirfd == AT_FDCWD or path.startswith("/") else f"fd/{dirfd}"
    fsuid, fsgid = int(status["Uid"].split()[3]), int(status["Gid"].split()[3])
    umask = int(status.get("Umask", "0022"), 8)

    def make() -> None:
        parent, name = _parent_of(path)
        os.mknod(name, stat.S_IFCHR | (mode & 0o7777 & ~umask), dev, dir_fd=parent)
        os.chown(name, fsuid, fsgid, dir_fd=parent, follow_symlinks=False)

    err = in_task(proc, base, make)
    if err:
        raise Refused(err)
    return 0, False


def handle_mount(notif, mem: int, proc: int, call: tuple, policy: notify.Policy) -> tuple[int, bool]:
    args = notif.data.args
    flags = args[3] & 0xFFFFFFFF
    if args[2] == 0 or flags & NOT_NEW_MOUNT:
        return 0, True
    fstype = read_string(mem, args[2], 64)
    if fstype not in policy.mount_types:
        return 0, True
    if not has_cap(task_status(proc), CAP_SYS_ADMIN):
        raise Refused(errno.EPERM)
    source = read_string(mem, args[0]) if args[0] else None
    target = read_string(mem, args[1])
    data = read_string(mem, args[4]) if args[4] else None

    def mount() -> None:
        parent, name = _parent_of(target)
        at = openat2(parent, name, os.O_PATH | os.O_DIRECTORY, RESOLVE_NO_MAGICLINKS)
        os.fchdir(at)
        syscalls.mount(source, ".", fstype, (flags & KEPT_MOUNT_FLAGS) | syscalls.MS_NOSUID | syscalls.MS_NODEV, data)

    err = in_task(proc, "cwd", mount, mount_ns=True)
    if err:
        raise Refused(err)
    return 0, False


def handle(listener: int, policy: notify.Policy) -> None:
    """Answer one call; every path answers it (or finds its task gone)."""
    try:
        notif = notify.receive(listener)
    except OSError:
        return  # the task died before we read its call
    call = MKNOD_CALLS.get(notif.data.arch, {}).get(notif.data.nr)
    proc = mem = None
    try:
        proc = os.open(f"/proc/{notif.pid}", os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
        mem = os.open("mem", os.O_RDONLY | os.O_CLOEXEC, dir_fd=proc)
        if not notify.still_valid(listener, notif.id):
            return
        if call is None:
            notify.answer(listener, notif.id, cont=True)
            return
        handler = handle_mount if call[0] == "mount" else handle_mknod
        val, cont = handler(notif, mem, proc, call, policy)
        notify.answer(listener, notif.id, val=val, cont=cont)
    except Refused as exc:
        notify.answer(listener, notif.id, error=exc.err)
    except OSError as exc:
        notify.answer(listener, notif.id, error=exc.errno or errno.EIO)
    except Exception as exc:  # noqa: BLE001 - a call is always answered; the supervisor stays
        print(f"notify: {notif.pid} {call}: {exc!r}", file=sys.stderr)
        notify.answer(listener, notif.id, error=errno.EIO)
    finally:
        for fd in (proc, mem):
            if fd is not None:
                os.close(fd)


def serve(listeners: list[int], server: socket.socket, policy: notify.Policy) -> None:
    poller = select.poll()
    poller.register(server.fileno(), select.POLLIN)
    for fd in listeners:
        poller.register(fd, select.POLLIN)
    live = set(listeners)
    while live:
        for fd, events in poller.poll():
            if fd == server.fileno():
                conn, _ = server.accept()
                with conn:
                    _, new = notify.receive_fd(conn)
                    if new is not None:
                        poller.register(new, select.POLLIN)
                        live.add(new)
                        conn.send(b"ok")
            elif events & select.POLLIN:
                handle(fd, policy)
            elif events & (select.POLLHUP | select.POLLERR | select.POLLNVAL):
                poller.unregister(fd)
                live.discard(fd)
                os.close(fd)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="engine.notify_supervisor")
    parser.add_argument("--fd", type=int, required=True)
    parser.add_argument("--socket", required=True)
    parser.add_argument("--mknod", action="store_true")
    parser.add_argument("--mount", default="")
    args = parser.parse_args(argv)
    policy = notify.Policy(args.mknod, tuple(name for name in args.mount.split(";") if name))
    syscalls.load()
    try:
        os.unlink(args.socket)
    except FileNotFoundError:
        pass
    server = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    old = os.umask(0o077)
    server.bind(args.socket)  # root-only: a listener handed in here is answered with host root's rights
    os.umask(old)
    bound = os.stat(args.socket).st_ino
    server.listen(8)
    if os.fork():
        os._exit(0)  # the engine waits for this exit: the socket is served from here on
    os.setsid()
    null = os.open(os.devnull, os.O_RDWR)
    os.dup2(null, 0)
    os.dup2(null, 1)
    try:
        serve([args.fd], server, policy)
    finally:
        try:
            if os.stat(args.socket).st_ino == bound:  # not a restarted container's new supervisor's
                os.unlink(args.socket)
        except OSError:
            pass
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
