"""Thin, checked wrappers for the Linux system calls the standard library lacks.

Each wrapper raises OSError with the errno and the call's arguments, so a
failing start step can name exactly what the kernel refused.
"""

from __future__ import annotations

import errno
import fcntl
import gc
import os
import signal
import struct

_libc = None


def load():
    """Load libc now: call before forking a child that will leave the host's file system (pivot_root),
    where ctypes could no longer be imported nor libc found."""
    _load_libc()


def _load_libc():
    """libc with the prototypes used here, loaded on first use (ctypes costs every command start-up time)."""
    global _libc
    if _libc is None:
        import ctypes

        # The C library this interpreter is linked against, by its symbols already in the process:
        # ctypes.util.find_library would run ldconfig (milliseconds, and a subprocess) to name the same file.
        libc = ctypes.CDLL(None, use_errno=True)
        libc.mount.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulong, ctypes.c_char_p]
        libc.umount2.argtypes = [ctypes.c_char_p, ctypes.c_int]
        libc.syscall.restype = ctypes.c_long
        libc.prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong]
        _libc = libc
    return _libc


def __getattr__(name: str):
    if name == "libc":
        return _load_libc()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


# mount(2) flags
MS_RDONLY = 1
MS_NOSUID = 2
MS_NODEV = 4
MS_NOEXEC = 8
MS_REMOUNT = 32
MS_BIND = 4096
MS_REC = 16384
MS_PRIVATE = 1 << 18
MS_SLAVE = 1 << 19
MNT_DETACH = 2

# prctl(2)
PR_SET_DUMPABLE = 4
PR_CAPBSET_DROP = 24
PR_SET_SECCOMP = 22
SECCOMP_MODE_FILTER = 2

SYS_PIVOT_ROOT = 155  # x86_64

# Capability numbers (linux/capability.h)
CAPABILITIES = {
    "chown": 0,
    "dac_override": 1,
    "dac_read_search": 2,
    "fowner": 3,
    "fsetid": 4,
    "kill": 5,
    "setgid": 6,
    "setuid": 7,
    "setpcap": 8,
    "linux_immutable": 9,
    "net_bind_service": 10,
    "net_broadcast": 11,
    "net_admin": 12,
    "net_raw": 13,
    "ipc_lock": 14,
    "ipc_owner": 15,
    "sys_module": 16,
    "sys_rawio": 17,
    "sys_chroot": 18,
    "sys_ptrace": 19,
    "sys_pacct": 20,
    "sys_admin": 21,
    "sys_boot": 22,
    "sys_nice": 23,
    "sys_resource": 24,
    "sys_time": 25,
    "sys_tty_config": 26,
    "mknod": 27,
    "lease": 28,
    "audit_write": 29,
    "audit_control": 30,
    "setfcap": 31,
    "mac_override": 32,
    "mac_admin": 33,
    "syslog": 34,
    "wake_alarm": 35,
    "block_suspend": 36,
    "audit_read": 37,
    "perfmon": 38,
    "bpf": 39,
    "checkpoint_restore": 40,
}


def _check(result: int, what: str) -> int:
    if result < 0:
        import ctypes

        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")
    return result


def _b(value: str | bytes | None) -> bytes | None:
    return value.encode() if isinstance(value, str) else value


def mount(source: str | None, target: str, fstype: str | None, flags: int = 0, data: str | None = None) -> None:
    _check(
        _load_libc().mount(_b(source), _b(target), _b(fstype), flags, _b(data)), f"mount {source or fstype} on {target}"
    )


def umount(target: str, flags: int = 0) -> None:
    _check(_load_libc().umount2(_b(target), flags), f"umount {target}")


def pivot_root(new_root: str, put_old: str) -> None:
    _check(_load_libc().syscall(SYS_PIVOT_ROOT, _b(new_root), _b(put_old)), f"pivot_root {new_root}")


def prctl(option: int, arg2: int = 0, arg3: int = 0, arg4: int = 0, arg5: int = 0) -> int:
    return _check(_load_libc().prctl(option, arg2, arg3, arg4, arg5), f"prctl({option})")


def fork_quietly() -> int:
    """``os.fork()`` for a child that only makes system calls, then execs or exits: no garbage collection in it.

    The child of a process with threads holds copies of objects whose locks
    other threads may have held at the fork. A collection in the child runs
    finalizers (a database connection's, a thread pool's, a zstd compressor
    left in a reference cycle, which joins its worker threads when freed)
    that can wait on such a lock forever, hanging a container's start;
    reference counting alone never touches the parent's objects.
    """
    enabled = gc.isenabled()
    gc.disable()
    try:
        pid = os.fork()
    except BaseException:
        if enabled:
            gc.enable()
        raise
    if pid and enabled:
        gc.enable()
    return pid


def default_signals() -> None:
    """Give a program about to be executed in a container the signal state a fresh process has.

    Python ignores SIGPIPE and SIGXFSZ and may block signals in the calling
    thread; ignored dispositions and the mask survive exec, so without this a
    container's ``yes | head`` would spin forever once ``head`` exits. LXC
    and runc reset them the same way before exec.
    """
    for number in (signal.SIGPIPE, signal.SIGXFSZ):
        signal.signal(number, signal.SIG_DFL)
    signal.pthread_sigmask(signal.SIG_SETMASK, [])


def drop_bounding_caps(names: list[str]) -> None:
    """Remove capabilities from the bounding set: no process in the container can ever regain them."""
    for name in names:
        try:
            prctl(PR_CAPBSET_DROP, CAPABILITIES[name])
        except OSError as exc:
            if exc.errno != errno.EINVAL:  # EINVAL: the kernel does not know this capability
                raise


def cap_last() -> int:
    with open("/proc/sys/kernel/cap_last_cap") as handle:
        return int(handle.read())


def set_loopback_up() -> None:
    """Bring ``lo`` up in the current network namespace (SIOCSIFFLAGS), without pyroute2's import cost."""
    import socket  # already loaded by engine.start, which calls this after pivot_root

    SIOCGIFFLAGS, SIOCSIFFLAGS, IFF_UP = 0x8913, 0x8914, 0x1
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        ifreq = struct.pack("16sH14x", b"lo", 0)
        flags = struct.unpack("16sH14x", fcntl.ioctl(sock, SIOCGIFFLAGS, ifreq))[1]
        fcntl.ioctl(sock, SIOCSIFFLAGS, struct.pack("16sH14x", b"lo", flags | IFF_UP))
