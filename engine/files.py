"""push and pull: files into and out of a running container, as ``pct push`` and ``pct pull``.

The host side never resolves a path of the container.  A forked helper enters
the container's user and mount namespaces (``setns`` on init's pidfd) and
becomes the container's root, so every path is resolved by the kernel inside
the container's own tree and mounts (its ``mpN`` volumes included), and every
permission check and owner is the container's, through its id map: a file
pushed as ``--user www-data`` is owned by that user inside, whatever host id
it maps to, and an id the map lacks is refused.  The helper is not dumpable
and holds no host fd but its socket to the engine, so no process of the
container can reach into it.

Paths are opened with ``openat2(RESOLVE_BENEATH | RESOLVE_NO_MAGICLINKS)``
from the container's root: a ``..`` or a symlink that would leave the root
(an absolute one, or one climbing out) is refused rather than followed, and
so are ``/proc/*/root``-style magic links.  The file itself must be a regular
file (never a symlink, device or FIFO, opened non-blocking so one swapped in
cannot hang the helper).  A push writes a temporary file beside the target
and renames it over, so a failed push leaves the old file as it was; an
existing file keeps its owner and mode unless ``user``/``group``/``perms``
say otherwise, a new one gets ``0644`` and root's ids, as ``pct push`` does
(umask 022).  Names given for ``user``/``group`` are looked up in the
container's ``/etc/passwd`` and ``/etc/group`` (read the same safe way, never
through the host's NSS, which would load the container's libraries).
"""

from __future__ import annotations

import errno
import json
import os
import socket
import stat
import struct
from dataclasses import asdict, dataclass

from engine import syscalls as sc
from engine.errors import EngineError, InvalidState, NotFound, ValidationError
from engine.suspend import refuse_if_paused

SYS_OPENAT2 = 437
RESOLVE_NO_MAGICLINKS = 0x02
RESOLVE_BENEATH = 0x08
CHUNK = 1 << 16
MAX_PATH = 4096


@dataclass
class FileInfo:
    """A file as the container sees it: its path, owner (container ids and names) and mode."""

    path: str
    size: int
    uid: int
    gid: int
    mode: str  # octal, e.g. "0644"
    user: str | None = None
    group: str | None = None

    def as_dict(self) -> dict:
        return asdict(self)


def parse_perms(perms: str | int | None) -> int | None:
    """``pct``'s ``--perms``: octal by default, ``0x`` for hexadecimal; the permission bits only."""
    if perms is None or perms == "":
        return None
    if isinstance(perms, int):
        value = perms
    else:
        text = perms.strip().lower()
        try:
            value = int(text[2:], 16) if text.startswith("0x") else int(text, 8)
        except ValueError:
            raise ValidationError(f"perms: invalid mode '{perms}' (octal, e.g. 0640)", key="perms") from None
    if not 0 <= value <= 0o7777:
        raise ValidationError(f"perms: mode '{perms}' is out of range (0 to 07777)", key="perms")
    return value


def check_container_path(path: str, key: str = "path") -> str:
    if not isinstance(path, str) or not path.startswith("/") or "\0" in path or len(path) > MAX_PATH:
        raise ValidationError(f"{key}: '{path}' must be an absolute path inside the container", key=key)
    if path.rstrip("/") == "":
        raise ValidationError(f"{key}: '/' is a directory, not a file", key=key)
    return path


def _check_owner(value: str | int | None, key: str) -> str | int | None:
    if value is None or value == "":
        return None
    if isinstance(value, int) or str(value).isdigit():
        number = int(value)
        if number > 0xFFFFFFFE:
            raise ValidationError(f"{key}: id {value} is out of range", key=key)
        return number
    text = str(value)
    if len(text) > 64 or not all(c.isalnum() or c in "._-$" for c in text) or text[0] == "-":
        raise ValidationError(f"{key}: '{value}' is not a valid {key} name or id", key=key)
    return text


class FileOps:
    """Mixed into :class:`engine.lifecycle.Engine`."""

    def push(
        self,
        ctid: int,
        source,
        dest: str,
        user: str | int | None = None,
        group: str | int | None = None,
        perms: str | int | None = None,
    ) -> FileInfo:
        """Copy ``source`` (a readable binary file object, or a host path) to ``dest`` inside the container."""
        request = {
            "op": "push",
            "path": check_container_path(dest, "destination"),
            "user": _check_owner(user, "user"),
            "group": _check_owner(group, "group"),
            "perms": parse_perms(perms),
        }
        if isinstance(source, str | os.PathLike):
            try:
                handle = open(source, "rb")  # noqa: SIM115 - closed below
            except OSError as exc:
                raise ValidationError(f"file: cannot read '{source}': {exc.strerror}", key="file") from None
            with handle:
                return self._file_helper(ctid, request, source=handle)
        return self._file_helper(ctid, request, source=source)

    def pull(self, ctid: int, path: str, sink) -> FileInfo:
        """Copy the container's file ``path`` into ``sink`` (a writable binary file object)."""
        request = {"op": "pull", "path": check_container_path(path, "path")}
        return self._file_helper(ctid, request, sink=sink)

    def stat_file(self, ctid: int, path: str) -> FileInfo:
        """Owner, mode and size of a file inside the container, read the same safe way."""
        return self._file_helper(ctid, {"op": "stat", "path": check_container_path(path, "path")})

    def _file_helper(self, ctid: int, request: dict, source=None, sink=None) -> FileInfo:
        self.config(ctid)
        record = self.node.running(ctid)
        if not record:
            raise InvalidState(f"container {ctid} is not running: files are copied through its running namespaces")
        refuse_if_paused(self.node, ctid, "copying files")
        pidfd = os.pidfd_open(record.pid)
        parent, child = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            pid = sc.fork_quietly()
            if pid == 0:
                parent.close()
                _helper(pidfd, child)  # never returns
            child.close()
            os.close(pidfd)
            pidfd = -1
            try:
                return _talk(parent, request, source, sink)
            finally:
                parent.close()
                os.waitpid(pid, 0)
        finally:
            if pidfd >= 0:
                os.close(pidfd)
            child.close()


# ---- the engine's side ----------------------------------------------------------------------------
def _read_line(sock: socket.socket, rest: bytearray) -> bytes:
    while b"\n" not in rest:
        data = sock.recv(CHUNK)
        if not data:
            raise EngineError("the file helper ended without an answer")
        rest += data
    line, _, tail = bytes(rest).partition(b"\n")
    rest[:] = tail
    return line


def _answer(line: bytes) -> dict:
    kind, _, body = line.partition(b" ")
    data = json.loads(body or b"{}")
    if kind == b"ok":
        return data
    error = {"NotFound": NotFound, "InvalidState": InvalidState}.get(data.get("kind"), ValidationError)
    if error is ValidationError:
        raise ValidationError(data["message"], key=data.get("key") or "path")
    raise error(data["message"])


def _talk(sock: socket.socket, request: dict, source, sink) -> FileInfo:
    rest = bytearray()
    sock.sendall(json.dumps(request).encode() + b"\n")
    ready = _answer(_read_line(sock, rest))
    if request["op"] == "push":
        try:
            while chunk := source.read(CHUNK):
                sock.sendall(chunk)
            sock.shutdown(socket.SHUT_WR)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the helper stopped (a full disk): its answer says why
        return FileInfo(**_answer(_read_line(sock, rest)))
    if request["op"] == "pull":
        size = ready["size"]
        received = len(rest)
        sink.write(bytes(rest))
        while data := sock.recv(CHUNK):
            received += len(data)
            sink.write(data)
        if received != size:
            raise EngineError(f"pull: {request['path']} changed while read ({received} of {size} bytes)")
    return FileInfo(**ready)


# ---- the helper, inside the container's namespaces -------------------------------------------------
def _helper(pidfd: int, sock: socket.socket) -> None:
    code = 0
    try:
        sc.prctl(sc.PR_SET_DUMPABLE, 0)
        from engine.start import close_fds_except

        close_fds_except({pidfd, sock.fileno()})
        rest = bytearray()
        request = json.loads(_read_line(sock, rest))
        try:
            os.setns(pidfd, os.CLONE_NEWNS | os.CLONE_NEWUSER)
            os.close(pidfd)
            os.setresgid(0, 0, 0)
            os.setgroups([])
            os.setresuid(0, 0, 0)
            os.umask(0o022)
            os.chdir("/")
            root = os.open("/", os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
            _serve(root, sock, request, rest)
        except EngineError as exc:
            _send(sock, "err", {"message": str(exc), "kind": type(exc).__name__, "key": getattr(exc, "key", None)})
        except OSError as exc:
            _send(sock, "err", {"message": _os_message(exc, request.get("path", "")), "kind": "ValidationError"})
    except BaseException:  # noqa: BLE001 - the engine sees the socket close without an answer
        code = 1
    os._exit(code)


def _send(sock: socket.socket, kind: str, data: dict) -> None:
    sock.sendall(f"{kind} ".encode() + json.dumps(data).encode() + b"\n")


def _os_message(exc: OSError, path: str) -> str:
    if exc.errno == errno.EXDEV:
        return f"'{path}' leaves the container's root (through '..' or a symlink): refused"
    if exc.errno == errno.ELOOP:
        return f"'{path}' is a symlink (or goes through a magic link): refused"
    if exc.errno == errno.ENOENT:
        return f"'{path}': no such file or directory in the container"
    return f"'{path}': {exc.strerror or exc}"


def openat2(dirfd: int, path: str, flags: int, mode: int = 0) -> int:
    """openat2(2) from ``dirfd``, never leaving it (struct open_how: flags, mode, resolve)."""
    import ctypes

    how = struct.pack("=QQQ", flags | os.O_CLOEXEC, mode, RESOLVE_BENEATH | RESOLVE_NO_MAGICLINKS)
    fd = sc.libc.syscall(SYS_OPENAT2, dirfd, path.encode(), how, len(how))
    if fd < 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err), path)
    return fd


def _split(path: str) -> tuple[str, str]:
    parent, _, name = path.rstrip("/").rpartition("/")
    if name in ("", ".", ".."):
        raise ValidationError(f"'{path}' does not name a file", key="path")
    return parent.lstrip("/") or ".", name


def _open_file(root: int, path: str, flags: int) -> tuple[int, int]:
    """(directory fd, file fd) of an existing regular file; never follows its last component."""
    parent, name = _split(path)
    directory = openat2(root, parent, os.O_PATH | os.O_DIRECTORY)
    try:
        fd = os.open(name, flags | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, dir_fd=directory)
    except BaseException:
        os.close(directory)
        raise
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode):
        os.close(fd)
        os.close(directory)
        raise ValidationError(f"'{path}' is not a regular file", key="path")
    return directory, fd


def _info(path: str, st: os.stat_result, root: int) -> dict:
    names = _names(root)
    return FileInfo(
        path,
        st.st_size,
        st.st_uid,
        st.st_gid,
        f"{stat.S_IMODE(st.st_mode):04o}",
        names["passwd"].get(st.st_uid),
        names["group"].get(st.st_gid),
    ).as_dict()


def _names(root: int) -> dict[str, dict]:
    """Ids to names and names to ids from the container's own /etc/passwd and /etc/group."""
    found: dict[str, dict] = {"passwd": {}, "group": {}}
    for table in found:
        try:
            fd = openat2(root, f"etc/{table}", os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
        except OSError:
            continue
        with os.fdopen(fd, "rb") as handle:
            if not stat.S_ISREG(os.fstat(handle.fileno()).st_mode):
                continue
            for line in handle.read(1 << 20).decode(errors="replace").splitlines():
                fields = line.split(":")
                if len(fields) >= 3 and fields[2].isdigit():
                    found[table].setdefault(int(fields[2]), fields[0])
                    found[table].setdefault(fields[0], int(fields[2]))
    return found


def _owner_id(value, table: str, root: int) -> int | None:
    if value is None or isinstance(value, int):
        return value
    number = _names(root)[table].get(value)
    if not isinstance(number, int):
        kind = "user" if table == "passwd" else "group"
        raise ValidationError(f"{kind}: no {kind} '{value}' in the container's /etc/{table}", key=kind)
    return number


def _serve(root: int, sock: socket.socket, request: dict, rest: bytearray) -> None:
    path = request["path"]
    if request["op"] in ("pull", "stat"):
        directory, fd = _open_file(root, path, os.O_RDONLY)
        os.close(directory)
        with os.fdopen(fd, "rb") as handle:
            info = _info(path, os.fstat(fd), root)
            _send(sock, "ok", info)
            if request["op"] == "pull":
                remaining = info["size"]
                while remaining > 0 and (chunk := handle.read(min(CHUNK, remaining))):
                    sock.sendall(chunk)
                    remaining -= len(chunk)
        return
    uid = _owner_id(request.get("user"), "passwd", root)
    gid = _owner_id(request.get("group"), "group", root)
    perms = request.get("perms")
    parent, name = _split(path)
    directory = openat2(root, parent, os.O_PATH | os.O_DIRECTORY)
    try:
        old = os.stat(name, dir_fd=directory, follow_symlinks=False)
    except FileNotFoundError:
        old = None
    if old is not None and not stat.S_ISREG(old.st_mode):
        raise ValidationError(f"'{path}' exists and is not a regular file (a symlink, directory or device)")
    temp = f".{name[:200]}.caisson-push-{os.getpid()}"
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600, dir_fd=directory)
    try:
        mode = perms if perms is not None else (stat.S_IMODE(old.st_mode) if old else 0o644)
        owner = (
            uid if uid is not None else (old.st_uid if old else 0),
            gid if gid is not None else (old.st_gid if old else 0),
        )
        try:
            os.fchown(fd, *owner)
        except OSError as exc:
            if exc.errno != errno.EINVAL:
                raise
            raise ValidationError(f"owner {owner[0]}:{owner[1]} is not mapped into the container", key="user") from None
        _send(sock, "ok", {})
        if rest:
            raise ValidationError("push: data arrived before the helper was ready")
        while data := sock.recv(CHUNK):
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]  # a full disk or quota raises (ENOSPC, EDQUOT)
        os.fchmod(fd, mode)  # after fchown, which clears set-id bits
        os.fsync(fd)
        st = os.fstat(fd)
        os.rename(temp, name, src_dir_fd=directory, dst_dir_fd=directory)
    except BaseException:
        os.unlink(temp, dir_fd=directory)
        raise
    finally:
        os.close(fd)
    _send(sock, "ok", _info(path, st, root))
