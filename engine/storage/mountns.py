"""Mounts that never show on the host: helpers run in a private mount namespace, loop devices that free themselves.

Every mount the storage layer makes lives in a mount namespace other than the
host's: a short-lived child's own (to fill or copy an image), or the
container's (made at start by a host-root helper that joins it).  The kernel
drops such a mount with the last process of its namespace, so neither a stop
nor a crash of any Caisson process can leave one behind on the host.  Loop
devices are attached with ``LO_FLAGS_AUTOCLEAR``: the kernel detaches them when
their last user (the mount, or the fd held until the mount exists) goes away.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import struct
from collections.abc import Callable, Iterator
from pathlib import Path

from engine import syscalls as sc
from engine.errors import EngineError, HostError

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (start-up time)
if TYPE_CHECKING:
    from typing import Any

LOOP_CTL_GET_FREE = 0x4C82
LOOP_CONFIGURE = 0x4C0A
LOOP_SET_CAPACITY = 0x4C07
LOOP_GET_STATUS64 = 0x4C05
LO_FLAGS_READ_ONLY = 1
LO_FLAGS_AUTOCLEAR = 4
FIFREEZE = 0xC0045877
FICLONE = 0x40049409
PR_SET_PDEATHSIG = 1
FITHAW = 0xC0045878
LOOP_INFO64 = struct.Struct("=QQQQQIIII64s64s32s2Q")  # struct loop_info64


def run(fn: Callable[..., Any], *args: Any, join_pid: int | None = None, host: bool = False) -> Any:
    """Call ``fn(*args)`` in a forked child inside a private mount namespace (or, with ``join_pid``, in the
    mount namespace of that process) and return its result; its exception is raised here.

    The child's mounts die with it (or with the joined namespace): nothing reaches the host's, except
    with ``host`` (``pct mount``'s repair mounts), where the child stays in this process's namespace.
    """
    import pickle  # noqa: F401 - imported before the fork; the child pickles its answer

    sc.load()  # before the fork: each child would load it again
    read_fd, write_fd = os.pipe2(os.O_CLOEXEC)
    pid = sc.fork_quietly()
    if pid == 0:  # pragma: no cover - child
        status = 0
        try:
            os.close(read_fd)
            if host:
                pass
            elif join_pid is None:
                os.unshare(os.CLONE_NEWNS)
            else:
                ns = os.open(f"/proc/{join_pid}/ns/mnt", os.O_RDONLY | os.O_CLOEXEC)
                os.setns(ns, os.CLONE_NEWNS)
                os.close(ns)
            if not host:
                sc.mount(None, "/", None, sc.MS_REC | sc.MS_PRIVATE)
            status, payload = _outcome(fn, args)
        except BaseException as exc:  # noqa: BLE001 - everything goes back to the parent
            status, payload = 1, _pickled_error(exc)
        try:
            _write_all(write_fd, payload)
        finally:
            os._exit(status)
    os.close(write_fd)
    try:
        return _answer(read_fd)
    finally:
        os.waitpid(pid, 0)


def _pickled_error(exc: BaseException) -> bytes:
    import pickle

    try:
        return pickle.dumps(("error", exc))
    except Exception:  # noqa: BLE001 - an exception that does not pickle
        return pickle.dumps(("error", EngineError(f"{type(exc).__name__}: {exc}")))


def _outcome(fn: Callable[..., Any], args: tuple) -> tuple[int, bytes]:
    """In a helper child: (exit status, pickled result or exception) of ``fn(*args)``."""
    import pickle

    try:
        return 0, pickle.dumps(("ok", fn(*args)))
    except BaseException as exc:  # noqa: BLE001 - everything goes back to the parent
        return 1, _pickled_error(exc)


def _write_all(fd: int, payload: bytes) -> None:
    view = memoryview(payload)
    while view:
        view = view[os.write(fd, view) :]


def _answer(fd: int) -> Any:
    """The helper's result read from ``fd`` (closed here); its exception is raised."""
    import pickle

    chunks = []
    try:
        while chunk := os.read(fd, 1 << 16):
            chunks.append(chunk)
    finally:
        os.close(fd)
    if not chunks:
        raise EngineError("a storage helper process died without an answer")
    try:
        kind, value = pickle.loads(b"".join(chunks))
    except Exception as exc:  # noqa: BLE001 - an exception whose class cannot be rebuilt
        raise EngineError(f"a storage helper failed: {exc}") from None
    if kind == "error":
        raise value
    return value


@contextlib.contextmanager
def holding(fn: Callable[..., Path], *args: Any) -> Iterator[Path]:
    """Call ``fn(*args)`` (which mounts something and returns where) in a child inside a private mount
    namespace that stays alive for the block; yield that path as this process reaches it.

    The path goes through ``/proc/<child>/root``, which resolves names in the child's mount namespace:
    this process reads the mount without it ever showing on the host.  The child exits when the block
    ends, or when this process dies (end of file on its pipe, and a parent-death signal), and the
    kernel drops its mounts and loop devices with it.
    """
    import pickle  # noqa: F401 - imported before the fork; the child pickles its answer

    sc.load()  # before the fork: each child would load it again
    answer_r, answer_w = os.pipe2(os.O_CLOEXEC)
    release_r, release_w = os.pipe2(os.O_CLOEXEC)
    pid = sc.fork_quietly()
    if pid == 0:  # pragma: no cover - child
        status = 0
        try:
            os.close(answer_r)
            os.close(release_w)
            sc.prctl(PR_SET_PDEATHSIG, 9)
            os.unshare(os.CLONE_NEWNS)
            sc.mount(None, "/", None, sc.MS_REC | sc.MS_PRIVATE)
            status, payload = _outcome(lambda: Path(fn(*args)), ())
        except BaseException as exc:  # noqa: BLE001 - everything goes back to the parent
            status, payload = 1, _pickled_error(exc)
        try:
            _write_all(answer_w, payload)
            os.close(answer_w)
            if status == 0:
                while True:  # hold the mounts until the parent closes its end (or dies)
                    try:
                        if not os.read(release_r, 64):
                            break
                    except InterruptedError:
                        continue
        finally:
            os._exit(status)
    os.close(answer_w)
    os.close(release_r)
    try:
        value = _answer(answer_r)
        yield Path(f"/proc/{pid}/root") / Path(value).relative_to("/")
    finally:
        os.close(release_w)
        os.waitpid(pid, 0)


def attach_loop(image: Path, readonly: bool = False) -> tuple[int, str]:
    """Attach an image to a free loop device with autoclear; returns (fd of the device, its path).

    The caller closes the fd once the device is mounted (or on failure): the kernel then frees
    the device with its last user.
    """
    backing = os.open(image, (os.O_RDONLY if readonly else os.O_RDWR) | os.O_CLOEXEC)
    try:
        control = os.open("/dev/loop-control", os.O_RDWR | os.O_CLOEXEC)
        try:
            for _ in range(64):
                number = fcntl.ioctl(control, LOOP_CTL_GET_FREE)
                path = f"/dev/loop{number}"
                try:
                    fd = os.open(path, (os.O_RDONLY if readonly else os.O_RDWR) | os.O_CLOEXEC)
                except FileNotFoundError:
                    os.mknod(path, 0o660 | 0o060000, os.makedev(7, number))
                    fd = os.open(path, (os.O_RDONLY if readonly else os.O_RDWR) | os.O_CLOEXEC)
                flags = LO_FLAGS_AUTOCLEAR | (LO_FLAGS_READ_ONLY if readonly else 0)
                info = LOOP_INFO64.pack(0, 0, 0, 0, 0, 0, 0, 0, flags, str(image).encode()[:63], b"", b"", 0, 0)
                config = struct.pack("=II", backing, 0) + info + bytes(64)
                try:
                    fcntl.ioctl(fd, LOOP_CONFIGURE, config)
                    return fd, path
                except OSError as exc:
                    os.close(fd)
                    if exc.errno != errno.EBUSY:  # taken by someone else between the two calls: retry
                        raise HostError(f"cannot attach {image} to {path}: {exc.strerror}") from None
            raise HostError(f"cannot attach {image}: no free loop device")
        finally:
            os.close(control)
    except OSError as exc:
        raise HostError(f"cannot attach {image} to a loop device: {exc.strerror}") from None
    finally:
        os.close(backing)


def loop_of(image: Path) -> str | None:
    """The loop device an image is attached to, if any (by inode, so a renamed path still matches)."""
    try:
        st = os.stat(image)
    except FileNotFoundError:
        return None
    for entry in os.listdir("/sys/block"):
        if not entry.startswith("loop"):
            continue
        try:
            fd = os.open(f"/dev/{entry}", os.O_RDONLY | os.O_CLOEXEC)
        except OSError:
            continue
        try:
            info = LOOP_INFO64.unpack(fcntl.ioctl(fd, LOOP_GET_STATUS64, bytes(LOOP_INFO64.size)))
        except OSError:
            continue
        finally:
            os.close(fd)
        if info[0] == st.st_dev and info[1] == st.st_ino:
            return f"/dev/{entry}"
    return None


def set_capacity(device: str) -> None:
    fd = os.open(device, os.O_RDONLY | os.O_CLOEXEC)
    try:
        fcntl.ioctl(fd, LOOP_SET_CAPACITY)
    finally:
        os.close(fd)


def freeze_fs(fd: int) -> None:
    """Flush a mounted file system and hold new writes (FIFREEZE), so an image copy is consistent."""
    try:
        fcntl.ioctl(fd, FIFREEZE, 0)
    except OSError as exc:
        if exc.errno not in (errno.EOPNOTSUPP, errno.ENOTTY, errno.EBUSY):
            raise
        syncfs(fd)


def thaw_fs(fd: int) -> bool:
    """FITHAW; False when the file system was not frozen (or cannot be)."""
    try:
        fcntl.ioctl(fd, FITHAW, 0)
    except OSError as exc:
        if exc.errno not in (errno.EOPNOTSUPP, errno.ENOTTY, errno.EINVAL):
            raise
        return False
    return True


def reflink(source: Path, target: Path) -> bool:
    """Make ``target`` a copy-on-write clone of ``source`` (FICLONE); False if the file system cannot.

    ``target`` must not exist; it is removed again when the clone fails.
    """
    src = os.open(source, os.O_RDONLY | os.O_CLOEXEC)
    try:
        dst = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        try:
            fcntl.ioctl(dst, FICLONE, src)
            return True
        except OSError as exc:
            os.unlink(target)
            if exc.errno in (errno.EOPNOTSUPP, errno.ENOTTY, errno.EXDEV, errno.EINVAL, errno.ENOSYS):
                return False
            raise HostError(f"cloning {source} to {target}: {exc.strerror}") from None
        except BaseException:
            os.unlink(target)
            raise
        finally:
            os.close(dst)
    finally:
        os.close(src)


def syncfs(fd: int) -> None:
    """Write out the file system ``fd`` is on (syncfs(2); the os module lacks it)."""
    if sc.libc.syncfs(fd) != 0:
        import ctypes

        err = ctypes.get_errno()
        raise OSError(err, f"syncfs: {os.strerror(err)}")


def set_fs_ids(uid: int, gid: int) -> None:
    """Act on files as ``uid``/``gid`` (setfsuid): paths inside a rootfs are made and checked as its root."""
    sc.libc.setfsgid(gid)
    sc.libc.setfsuid(uid)
