"""``python -m engine.cli.service``: the node's CLI service, which runs command lines for the thin client.

The node agent starts it (and it dies with the agent). It imports the engine and the command lines once,
then waits on a Unix socket that only root may use (mode 0600, and the peer's credentials checked on
every connection). Each request is run in a child forked from this single-threaded, fully imported
process: the child takes the client's stdin, stdout and stderr, working directory and environment, runs
the same ``main()`` the command runs in-process, and its exit status is sent back. A fork of a warm
process costs a millisecond or two where a new interpreter importing the engine costs a hundred or more,
and even that is paid ahead: one child (the spare) is forked while the service waits and takes the next
request; the child answers the client as soon as the command is done and its descriptors are closed,
before this large process is torn down.

Requests are answered in the order their commands end; a signal byte from the client (its Ctrl-C) is
delivered to its command's process group, as a terminal delivers Ctrl-C to the foreground group. A
client that goes away does not stop its command: what was started is finished, as it would be had the
client been a job.
"""

from __future__ import annotations

import argparse
import array
import ctypes
import gc
import importlib
import io
import os
import selectors
import signal
import socket
import struct
import sys
import time
from typing import NamedTuple

from engine.cli import thin

PR_SET_PDEATHSIG = 1
MAX_REQUEST = 1 << 20
MAX_FD = os.sysconf("SC_OPEN_MAX")


class Request(NamedTuple):
    """A command line as the client sent it (``thin.encode_request``)."""

    program: str
    cwd: str
    argv: list[str]
    env: dict[str, str]


def decode_request(body: bytes) -> Request:
    """The request ``thin.encode_request`` wrote (without its header); ValueError if it is not one."""
    fields = body.decode("utf-8", "surrogateescape").split("\0")
    if len(fields) < 3 or not fields[2].isdigit() or len(fields) < 3 + int(fields[2]):
        raise ValueError("malformed request")
    count = int(fields[2])
    env = dict(item.split("=", 1) for item in fields[3 + count :] if "=" in item)
    return Request(fields[0], fields[1], fields[3 : 3 + count], env)


def _peer_uid(conn: socket.socket) -> int:
    _pid, uid, _gid = struct.unpack("3i", conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, 12))
    return uid


def _receive(conn: socket.socket, count: int = 3) -> tuple[bytes, Request, list[int]]:
    """Read one request (its bytes as sent, and decoded) and the ``count`` descriptors sent with it."""
    fds = array.array("i")
    data = b""
    size = None
    while size is None or len(data) < thin.HEADER.size + size:
        chunk, ancillary, _flags, _addr = conn.recvmsg(65536, socket.CMSG_SPACE(count * fds.itemsize))
        for level, kind, payload in ancillary:
            if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
                fds.frombytes(payload[: len(payload) - len(payload) % fds.itemsize])
        if not chunk:
            break
        data += chunk
        if size is None and len(data) >= thin.HEADER.size:
            (size,) = thin.HEADER.unpack_from(data)
            if size > MAX_REQUEST:
                break
    try:
        if size is None or len(data) != thin.HEADER.size + size or len(fds) != count:
            raise ValueError("malformed request")
        return data, decode_request(data[thin.HEADER.size :]), list(fds)
    except ValueError:
        for fd in fds:
            os.close(fd)
        raise


def _run_child(request: Request, fds: list[int], inherited: list[int], client: int) -> None:
    """In the forked child: become the client's command and exit with its code. Never returns.

    ``inherited`` are the service's own descriptors (its socket, the other clients, their commands'
    pidfds, the selector), closed first so that no command holds another's connection open. The child
    answers ``client`` itself once the command is done and every descriptor it had is closed (its locks
    released, the client's pipes at their end): the client need not wait for this large process to be
    torn down. The service answers again when it reaps the child, which matters only when the child
    died without answering (a signal); a client reads one answer and goes."""
    code = 1
    try:
        for fd in inherited:
            os.close(fd)
        os.setpgid(0, 0)  # a process group of its own, which the client's signals reach as a terminal's would
        for signum in thin.FORWARDED_SIGNALS:
            signal.signal(signum, signal.default_int_handler if signum == signal.SIGINT else signal.SIG_DFL)
        for target, fd in enumerate(fds):
            os.dup2(fd, target)
            os.close(fd)
        os.environ.clear()
        os.environ.update(request.env)
        os.chdir(request.cwd)
        sys.stdin = io.TextIOWrapper(io.FileIO(0, "r", closefd=False))
        sys.stdout = io.TextIOWrapper(io.FileIO(1, "w", closefd=False), line_buffering=os.isatty(1))
        sys.stderr = io.TextIOWrapper(io.FileIO(2, "w", closefd=False), line_buffering=True)
        sys.argv = [request.program, *request.argv]
        code = importlib.import_module(thin.PROGRAMS[request.program]).main(request.argv)
    except SystemExit as exc:  # argparse's --help and usage errors
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 2)
    except KeyboardInterrupt:
        code = 130
    except BaseException as exc:  # noqa: BLE001 - the child must always exit, never return to the loop
        print(f"error: {exc}", file=sys.stderr)
    finally:
        thin.flush_stdio()
        code = code if isinstance(code, int) and 0 <= code < 256 else 1
        os.closerange(0, client)
        os.closerange(client + 1, MAX_FD)
        try:
            os.write(client, thin.HEADER.pack(code))
        except OSError:
            pass
        os._exit(code)


def _wait_as_spare(sock: socket.socket, inherited: list[int]) -> None:
    """In a child forked ahead of the next request: wait for it, then run it as :func:`_run_child`.

    The service hands it the request's bytes, the client's connection and the client's three
    descriptors; the fork (a millisecond or two of copying this large process) was paid while the
    node was idle. A service that ends closes its end, and the spare ends too. Never returns."""
    try:
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, signal.SIG_DFL)
        _raw, request, fds = _receive(sock, 4)
    except BaseException:  # noqa: BLE001 - the service went away (or sent part of a request): nothing ran
        os._exit(1)
    _run_child(request, fds[1:], [*inherited, sock.fileno()], fds[0])


def _own_group(pid: int) -> None:
    """Put a command's process in a group of its own from here too (it does so itself, later): a Ctrl-C
    that arrives before the child got that far still reaches it."""
    try:
        os.setpgid(pid, pid)
    except OSError:  # it has done so already and moved on
        pass


class Spare(NamedTuple):
    """A child waiting for the next request (:func:`_wait_as_spare`) and the service's end of its socket."""

    pid: int
    pidfd: int
    sock: socket.socket


class Service:
    """The accept loop: one selector over the listening socket, the clients and their commands' pidfds."""

    def __init__(self, path: str, log=sys.stderr) -> None:
        self.path = path
        self.log = log
        self.selector = selectors.DefaultSelector()
        self.children: dict[int, tuple[int, socket.socket]] = {}  # pidfd -> (pid, client)
        self.clients: dict[socket.socket, int] = {}  # client -> pid of its command
        self.layout = {key: os.environ.get(key) for key in thin.LAYOUT_KEYS}
        self.spare: Spare | None = None

    def listen(self) -> socket.socket:
        """Bind the socket, readable and writable by root alone, replacing a dead service's."""
        try:
            os.unlink(self.path)  # a previous service's socket: no one listens on it any more
        except FileNotFoundError:
            pass
        os.makedirs(os.path.dirname(self.path) or ".", mode=0o700, exist_ok=True)
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        old = os.umask(0o177)
        try:
            listener.bind(self.path)
        finally:
            os.umask(old)
        self.inode = os.stat(self.path).st_ino
        listener.listen(64)
        return listener

    def say(self, text: str) -> None:
        print(f"{time.strftime('%Y-%m-%dT%H:%M:%S')} cli-service: {text}", file=self.log, flush=True)

    def serve(self, listener: socket.socket) -> None:
        self.selector.register(listener, selectors.EVENT_READ, "accept")
        self._fork_spare(listener)
        while True:
            for key, _events in self.selector.select():
                try:
                    if key.data == "accept":
                        self._accept(listener)
                    elif key.data == "client":
                        self._signal_from(key.fileobj)
                    else:
                        self._reap(key.fd)
                except OSError as exc:  # one client's trouble must not end the service for the others
                    self.say(f"{key.data}: {exc}")

    def _accept(self, listener: socket.socket) -> None:
        conn, _ = listener.accept()
        try:
            uid = _peer_uid(conn)
            if uid != 0:
                self.say(f"refused a client running as uid {uid}: the CLI service serves root only")
                conn.close()
                return
            raw, request, fds = _receive(conn)
        except (OSError, ValueError) as exc:
            self.say(f"dropped a request: {exc}")
            conn.close()
            return
        if request.program not in thin.PROGRAMS or any(
            request.env.get(key) != value for key, value in self.layout.items()
        ):
            for fd in fds:
                os.close(fd)
            conn.sendall(thin.HEADER.pack(thin.REFUSED))  # another node layout: the client runs it itself
            conn.close()
            return
        self.say(f"{request.program} {' '.join(request.argv)}")
        pid, pidfd = self._hand_to_spare(raw, conn, fds)
        if pid is None:  # no spare (it died): fork one for this request
            pid = os.fork()
            if pid == 0:
                _run_child(request, fds, self._own_fds(listener), conn.fileno())
            _own_group(pid)
            pidfd = os.pidfd_open(pid)
        for fd in fds:
            os.close(fd)
        self.children[pidfd] = (pid, conn)
        self.clients[conn] = pid
        self.selector.register(pidfd, selectors.EVENT_READ, "child")
        self.selector.register(conn, selectors.EVENT_READ, "client")
        self._fork_spare(listener)  # for the next request, while this one runs

    def _own_fds(self, listener: socket.socket) -> list[int]:
        """The service's descriptors a command's process must not keep (see :func:`_run_child`)."""
        return [listener.fileno(), self.selector.fileno(), *self.children, *(c.fileno() for c in self.clients)]

    def _fork_spare(self, listener: socket.socket) -> None:
        if self.spare is not None:
            return
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        pid = os.fork()
        if pid == 0:
            ours.close()
            _wait_as_spare(theirs, self._own_fds(listener))  # never returns
        theirs.close()
        _own_group(pid)
        self.spare = Spare(pid, os.pidfd_open(pid), ours)

    def _hand_to_spare(self, raw: bytes, conn: socket.socket, fds: list[int]) -> tuple[int | None, int | None]:
        """Give a request to the spare child: (its pid, its pidfd), or (None, None) if there is none."""
        spare, self.spare = self.spare, None
        if spare is None:
            return None, None
        try:
            passed = array.array("i", [conn.fileno(), *fds])
            sent = spare.sock.sendmsg([raw], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, passed)])
        except OSError:  # it is gone: it has none of the request
            spare.sock.close()
            os.close(spare.pidfd)
            os.waitpid(spare.pid, 0)
            return None, None
        try:
            if sent < len(raw):  # a long environment may not go in one piece
                spare.sock.sendall(raw[sent:])
        except OSError:
            pass  # it has part of it: it runs nothing and ends with 1, which the client is told
        finally:
            spare.sock.close()
        return spare.pid, spare.pidfd

    def _signal_from(self, conn: socket.socket) -> None:
        pid = self.clients.get(conn)
        if pid is None:  # reaped (and closed) earlier in the same batch of events: the client read its answer
            return
        data = conn.recv(16)
        if not data:  # the client went away: its command goes on to its end
            self.selector.unregister(conn)
            return
        for signum in data:
            if signum in thin.FORWARDED_SIGNALS:
                try:
                    os.killpg(pid, signum)  # the command and what it runs (an exec's process), as Ctrl-C does
                except ProcessLookupError:
                    pass

    def _reap(self, pidfd: int) -> None:
        pid, conn = self.children.pop(pidfd)
        self.selector.unregister(pidfd)
        os.close(pidfd)
        _, status = os.waitpid(pid, 0)
        code = os.waitstatus_to_exitcode(status)
        try:
            conn.sendall(thin.HEADER.pack(code if code >= 0 else thin.KILLED - code))
        except OSError:
            pass
        self.clients.pop(conn, None)
        try:
            self.selector.unregister(conn)
        except KeyError:
            pass
        conn.close()


def preload() -> None:
    """Import the whole engine and build each verb's parser, so each forked child finds in memory what its
    command would import or build.

    The engine defers many imports to the call that needs them (a start's mounts, an exec's attach, the
    network's netlink), which keeps a one-off command's start-up short; here they are paid once."""
    import pkgutil

    import engine

    for module in thin.PROGRAMS.values():
        importlib.import_module(module)
    for info in pkgutil.walk_packages(engine.__path__, "engine."):
        if not info.name.endswith("__main__"):
            importlib.import_module(info.name)
    from engine.cli.parser import CORE_VERBS, parser_for

    for verb in (*CORE_VERBS, ""):  # "": the one every other verb shares
        parser_for(verb)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m engine.cli.service",
        description="Serve `python -m engine` command lines from a warm process (the node agent starts it).",
    )
    parser.add_argument(
        "--socket", default=thin.node_socket(), help="the Unix socket to listen on (default: %(default)s)"
    )
    parser.add_argument("--with-parent", action="store_true", help="exit when the process that started this one exits")
    args = parser.parse_args(argv)
    if os.geteuid() != 0:
        print("error: the CLI service runs as root (it runs the engine's commands)", file=sys.stderr)
        return 8
    if args.with_parent:
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
        if os.getppid() == 1:  # the parent died before the request took effect
            return 0
    preload()
    gc.freeze()  # what preload made stays out of the collector's sight: a child's collections do not copy it
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))  # before the socket exists: it is always removed
    service = Service(args.socket)
    listener = service.listen()
    service.say(f"listening on {args.socket}")
    try:
        service.serve(listener)
    except (KeyboardInterrupt, SystemExit):
        pass
    finally:
        try:
            if os.stat(args.socket).st_ino == service.inode:  # not a newer service's socket
                os.unlink(args.socket)
        except OSError:
            pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
