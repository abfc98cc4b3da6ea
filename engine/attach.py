"""Run a command inside a running container: enter all its namespaces and its cgroup.

Layout::

    engine ──fork──> joiner ──setns(all of init's namespaces)──fork──> command (in the pid namespace)

The joiner is not dumpable and holds no host fd but the ones passed on, so
nothing in the container can reach into it before the command is executed
(CVE-2019-5736); the command gets the container's seccomp filter and
capability bounding set.  The joiner exits with the command's status
(128+N for a signal), which the engine returns.
"""

from __future__ import annotations

import array
import fcntl
import os
import select
import signal
import socket
import struct
import sys
import termios
import tty
from dataclasses import dataclass, field

from engine import notify, seccomp
from engine import syscalls as sc
from engine.start import CONTAINER_ENV, DROPPED_CAPABILITIES, close_fds_except, write_file

ALL_NAMESPACES = (
    os.CLONE_NEWNS | os.CLONE_NEWUTS | os.CLONE_NEWIPC | os.CLONE_NEWNET | os.CLONE_NEWCGROUP | os.CLONE_NEWPID
)
TIOCSPTLCK = 0x40045431
TIOCGPTN = 0x80045430


# What a terminal runs inside the container: a root login shell (bash when the container has
# it), or the container's own login prompt on the new pty, as its getty would offer on a
# tty held from boot (util-linux agetty on Debian, busybox getty, else plain login). Fixed
# text: nothing a caller sends is ever part of it.
SHELL_ARGV = ["/bin/sh", "-c", "if [ -x /bin/bash ]; then exec /bin/bash -l; fi; exec /bin/sh -l"]


def shell_argv(shell: str | None) -> list[str]:
    """The argv of a root shell: ``shell`` (an absolute path in the container, checked by the caller) as a
    login shell, or bash if the container has it, else sh. The path is one argv word, never shell text."""
    return [shell, "-l"] if shell else SHELL_ARGV


LOGIN_ARGV = [
    "/bin/sh",
    "-c",
    'if [ -x /sbin/agetty ]; then exec /sbin/agetty -L --noclear - 38400 "${TERM:-linux}"; fi; '
    'if [ -x /sbin/getty ]; then exec /sbin/getty -L 0 - "${TERM:-linux}"; fi; '
    "exec /bin/login",
]
TERMINAL_ENV = {"TERM": "xterm-256color", "LANG": "C.UTF-8"}


@dataclass
class AttachSpec:
    init_pid: int
    argv: list[str]
    cgroup_procs: list[str]
    env: dict[str, str] = field(default_factory=dict)
    cwd: str = "/"
    tty: bool = False
    seccomp_rules: list = field(default_factory=seccomp.default_rules)  # as the container started with
    uid: int = 0
    gid: int = 0
    notify_socket: str | None = None  # features mknod/mount: the container's seccomp supervisor (engine.notify)


def _own_userns_differs(pid: int) -> bool:
    return os.stat(f"/proc/{pid}/ns/user").st_ino != os.stat("/proc/self/ns/user").st_ino


def _exit_code(status: int) -> int:
    return os.waitstatus_to_exitcode(status) if os.WIFEXITED(status) else 128 + os.WTERMSIG(status)


def spawn(spec: AttachSpec, stdio: tuple[int, int, int] | None = None) -> tuple[int, int | None]:
    """Fork the joiner; return its pid and, with a tty, the pty master fd."""
    pidfd = os.pidfd_open(spec.init_pid)
    userns = _own_userns_differs(spec.init_pid)
    rules = seccomp.compile_filter(spec.seccomp_rules)
    env = {**CONTAINER_ENV, **spec.env}
    parent_sock, child_sock = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    try:
        pid = sc.fork_quietly()
        if pid == 0:
            parent_sock.close()
            _joiner(spec, pidfd, userns, rules, env, child_sock, stdio)  # never returns
        child_sock.close()
        master = None
        if spec.tty:
            master = _receive_fd(parent_sock)
        if rules.notify:
            _, listener = notify.receive_fd(parent_sock)  # none if the command failed before its filter
            if listener is not None and spec.notify_socket:
                notify.hand_over(listener, spec.notify_socket)
            elif listener is not None:
                os.close(listener)
        return pid, master
    finally:
        os.close(pidfd)
        parent_sock.close()
        child_sock.close()


def run(spec: AttachSpec, stdio: tuple[int, int, int] | None = None) -> int:
    """Run without a tty, with the given (or inherited) stdin, stdout and stderr; return the exit code."""
    pid, _ = spawn(spec, stdio)
    _, status = os.waitpid(pid, 0)
    return _exit_code(status)


def _receive_fd(sock: socket.socket) -> int | None:
    fds = array.array("i")
    msg, ancdata, _, _ = sock.recvmsg(64, socket.CMSG_SPACE(fds.itemsize))
    for level, kind, data in ancdata:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            fds.frombytes(data[: len(data) - (len(data) % fds.itemsize)])
            return fds[0]
    raise OSError(f"could not open a terminal in the container: {msg.decode(errors='replace')}")


def _joiner(spec, pidfd, userns, rules, env, sock, stdio) -> None:
    code = 126
    try:
        sc.prctl(sc.PR_SET_DUMPABLE, 0)
        if stdio is not None:
            for target, fd in enumerate(stdio):
                os.dup2(fd, target)
        # Hold nothing of the engine's but what is needed: a kept pipe end would also keep
        # the command's stdin from ever seeing end of file.
        close_fds_except({pidfd, sock.fileno()})
        for procs in spec.cgroup_procs:
            write_file(procs, "0")
        os.setns(pidfd, ALL_NAMESPACES | (os.CLONE_NEWUSER if userns else 0))
        os.close(pidfd)
        os.setresgid(spec.gid, spec.gid, spec.gid)
        os.setgroups([])
        os.setresuid(spec.uid, spec.uid, spec.uid)
        forwarder = _SignalForwarder()  # before the fork: a signal at any moment after reaches the command
        if spec.tty or rules.notify:
            child = sc.fork_quietly()
            if child == 0:
                _command(spec, rules, env, sock)  # never returns
        else:
            child = _spawn_plain(spec, rules, env, sock)
        sock.close()
        forwarder.to(child)
        _, status = os.waitpid(child, 0)
        code = _exit_code(status)
    except BaseException as exc:  # noqa: BLE001
        try:
            os.write(2, f"caisson: cannot enter the container: {exc}\n".encode())
        except OSError:
            pass
    os._exit(code)


# What stops the caller stops the command too, as lxc-attach passes them on: the command runs in a
# session of its own inside the container, out of reach of the caller's terminal and process group.
FORWARDED_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT)


class _SignalForwarder:
    """Installed in the joiner before it forks the command; what arrives before the command's pid is known
    is held and delivered then. (The command resets its handlers before it executes.)"""

    def __init__(self) -> None:
        self.child: int | None = None
        self.pending: list[int] = []
        for signum in FORWARDED_SIGNALS:
            signal.signal(signum, self._forward)

    def _forward(self, signum, _frame) -> None:
        if self.child is None:
            self.pending.append(signum)
            return
        try:
            os.kill(self.child, signum)
        except ProcessLookupError:
            pass

    def to(self, child: int) -> None:
        self.child = child
        for signum in self.pending:
            self._forward(signum, None)


def _spawn_plain(spec, rules, env, sock) -> int:
    """The command without a terminal or a seccomp listener, made by ``posix_spawn`` (a vfork): this joiner
    takes the steps :func:`_command` makes before its exec (directory, capabilities, seccomp filter; the
    session and the signals are the spawn's attributes), so the engine's pages are not copied a second
    time. The joiner then only waits, under the same bounding set and filter. A command that cannot be
    executed ends the joiner as it ends :func:`_command`."""
    sock.close()
    try:
        os.chdir(spec.cwd)
        sc.drop_bounding_caps(DROPPED_CAPABILITIES)
        seccomp.install(rules)
        os.environ["PATH"] = env.get("PATH", CONTAINER_ENV["PATH"])  # posix_spawnp searches the caller's
        return os.posix_spawnp(
            spec.argv[0], spec.argv, env, setsid=True, setsigdef=SPAWN_DEFAULT_SIGNALS, setsigmask=()
        )
    except OSError as exc:
        _cannot_run(spec, exc)


# What Python and the signal forwarder changed in the joiner; the command gets each one's default.
SPAWN_DEFAULT_SIGNALS = (signal.SIGPIPE, signal.SIGXFSZ, *FORWARDED_SIGNALS)


def _cannot_run(spec, exc: BaseException) -> None:
    """Say why the command could not be run, as a shell would, and end with its code (127: not found)."""
    try:
        os.write(2, f"caisson: {spec.argv[0]}: {exc.strerror if isinstance(exc, OSError) else exc}\n".encode())
    except OSError:
        pass
    os._exit(127 if isinstance(exc, FileNotFoundError) else 126)


def _command(spec, rules, env, sock) -> None:
    try:
        os.setsid()
        os.chdir(spec.cwd)
        if spec.tty:
            master, slave_path = _open_pty()
            sock.sendmsg([b"pty"], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", [master]))])
            os.close(master)
            slave = os.open(slave_path, os.O_RDWR)
            fcntl.ioctl(slave, termios.TIOCSCTTY, 0)
            for target in range(3):
                os.dup2(slave, target)
            os.close(slave)
        if not rules.notify:
            sock.close()
        sc.drop_bounding_caps(DROPPED_CAPABILITIES)
        close_fds_except({sock.fileno()} if rules.notify else set())
        sc.default_signals()
        if rules.notify:  # the listener goes to the container's supervisor through the engine
            listener = seccomp.install_with_listener(rules)
            notify.send_fd(sock, listener)
            os.close(listener)
            sock.close()
        else:
            seccomp.install(rules)
        os.execvpe(spec.argv[0], spec.argv, env)
    except BaseException as exc:  # noqa: BLE001
        if spec.tty:
            try:
                sock.sendmsg([str(exc).encode()])
            except OSError:
                pass
        _cannot_run(spec, exc)


def _open_pty() -> tuple[int, str]:
    """Allocate a pty from the container's own devpts instance, so it shows as /dev/pts/N inside."""
    master = os.open("/dev/ptmx", os.O_RDWR | os.O_NOCTTY)
    fcntl.ioctl(master, TIOCSPTLCK, struct.pack("i", 0))
    number = struct.unpack("I", fcntl.ioctl(master, TIOCGPTN, b"\0" * 4))[0]
    return master, f"/dev/pts/{number}"


def set_winsize(fd: int, rows: int, cols: int) -> None:
    fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))


def interactive(spec: AttachSpec) -> int:
    """Attach the calling terminal to a new pty in the container (``pct enter``)."""
    pid, master = spawn(spec)
    assert master is not None
    stdin = sys.stdin.fileno()
    is_tty = os.isatty(stdin)
    saved = termios.tcgetattr(stdin) if is_tty else None

    def resize(*_):
        if is_tty:
            rows, cols = struct.unpack("HHHH", fcntl.ioctl(stdin, termios.TIOCGWINSZ, b"\0" * 8))[:2]
            set_winsize(master, rows, cols)

    previous = signal.signal(signal.SIGWINCH, resize)
    try:
        if is_tty:
            tty.setraw(stdin, termios.TCSANOW)  # keep what the user typed ahead
        resize()
        _pump(stdin, sys.stdout.fileno(), master)
    finally:
        signal.signal(signal.SIGWINCH, previous)
        if saved is not None:
            termios.tcsetattr(stdin, termios.TCSADRAIN, saved)
        os.close(master)
    _, status = os.waitpid(pid, 0)
    return _exit_code(status)


def _pump(stdin: int, stdout: int, master: int) -> None:
    """Copy bytes both ways until the container side hangs up."""
    inputs = [master, stdin]
    while True:
        try:
            ready, _, _ = select.select(inputs, [], [])
        except InterruptedError:
            continue
        if master in ready:
            try:
                data = os.read(master, 65536)
            except OSError:
                data = b""
            if not data:
                return
            os.write(stdout, data)
        if stdin in ready:
            data = os.read(stdin, 65536)
            if not data:
                inputs.remove(stdin)
            else:
                os.write(master, data)


def run_capture(spec: AttachSpec, data: bytes = b"") -> tuple[int, bytes, bytes]:
    """Run without a tty, feeding ``data`` to stdin; return (exit code, stdout, stderr)."""
    in_r, in_w = os.pipe2(os.O_CLOEXEC)
    out_r, out_w = os.pipe2(os.O_CLOEXEC)
    err_r, err_w = os.pipe2(os.O_CLOEXEC)
    try:
        pid, _ = spawn(spec, (in_r, out_w, err_w))
    finally:
        for fd in (in_r, out_w, err_w):
            os.close(fd)
    chunks: dict[int, list[bytes]] = {out_r: [], err_r: []}
    pending = memoryview(data)
    writers = [in_w] if pending else []
    if not pending:
        os.close(in_w)
    readers = [out_r, err_r]
    while readers or writers:
        ready_r, ready_w, _ = select.select(readers, writers, [])
        for fd in ready_r:
            chunk = os.read(fd, 65536)
            if chunk:
                chunks[fd].append(chunk)
            else:
                readers.remove(fd)
                os.close(fd)
        if ready_w:
            try:
                written = os.write(in_w, pending[:65536])
                pending = pending[written:]
            except BrokenPipeError:
                pending = pending[:0]
            if not pending:
                writers.clear()
                os.close(in_w)
    _, status = os.waitpid(pid, 0)
    return _exit_code(status), b"".join(chunks[out_r]), b"".join(chunks[err_r])
