"""Container start: one linear sequence of named steps, in the order bubblewrap and LXC use.

Process layout (no process of ours stays behind):

    engine ──fork──> setup child ──unshare(user, mnt, pid, uts, ipc, net)──fork──> init (PID 1)
                         └── exits once init has exec'd; init is re-parented to the host's reaper

The engine moves the setup child into the container's cgroups (init inherits
them, then makes its cgroup namespace), writes its uid/gid maps, runs the
host-side prepare steps on its namespaces, learns init's host pid from it,
and then waits on a close-on-exec socket: end of file means the container's
init was executed, a message means a named step failed.
"""
from __future__ import annotations

import os
import socket
import struct
import warnings
from dataclasses import dataclass, field
from enum import IntEnum
from pathlib import Path

from engine import consolelog, seccomp
from engine import rootfs as fs
from engine import syscalls as sc
from engine.errors import StartError
from engine.idmap import IdMap

# libc through ctypes, loaded here, in the process that forks the container's init: after pivot_root the
# child could no longer import ctypes nor find libc.
sc.load()

# The cgroup namespace comes later, from init itself: it must be made after the move into the cgroups.
NAMESPACES = os.CLONE_NEWNS | os.CLONE_NEWUTS | os.CLONE_NEWIPC | os.CLONE_NEWNET | os.CLONE_NEWPID

# LXC's default for system containers: the rest stays, since a system container
# needs setuid, chown and mknod inside its own user namespace.
DROPPED_CAPABILITIES = ["mac_admin", "mac_override", "sys_time", "sys_module", "sys_rawio"]

CONTAINER_ENV = {
    "container": "lxc",  # what systemd-detect-virt and distro scripts recognise
    "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    "TERM": "linux",
    "HOME": "/root",
}


# The forked children below only make system calls (os, ctypes) before exec: no lock of
# another thread is ever taken, which is the hazard Python's fork warning is about.
warnings.filterwarnings("ignore", message=r".*use of fork\(\) may lead to deadlocks", category=DeprecationWarning,
                        module=r"engine\.(start|attach)")


class Phase(IntEnum):
    """Messages from the setup child and init to the engine."""

    UNSHARED = 1  # setup child: namespaces made, waiting for its id maps
    MAPPED = 2  # engine: maps written, go on
    INIT_PID = 3  # setup child: init's host pid follows
    FAILED = 4  # either: a step failed; "step\0message" follows


@dataclass
class StartSpec:
    """Everything the children need, computed before fork so they only make system calls."""

    ctid: int
    rootfs: Path
    hostname: str
    idmap: IdMap | None
    cgroup_procs: list[str]
    cgroup2: bool
    console_log: Path
    console_size: int = consolelog.DEFAULT_SIZE  # init's stdout/stderr: a sealed memfd this long (consolelog)
    init: list[str] = field(default_factory=lambda: ["/sbin/init"])
    keyctl: bool = False
    extra_setup: list = field(default_factory=list)  # callables run inside, after pivot_root, as container root
    # Host-side steps run before init exists, with the pid of a process that is already in the
    # container's namespaces (network interfaces are moved into its namespace here); each is a
    # callable(pid) whose __name__ names the step in a StartError.
    prepare: list = field(default_factory=list)
    # The prepare steps mounted the rootfs (an image or an overlay) over the directory the setup
    # child entered: it steps out and back in, through its parent, to stand on that mount.
    reenter_rootfs: bool = False


def _send(sock: socket.socket, phase: Phase, payload: bytes = b"") -> None:
    sock.send(bytes([phase]) + payload)


def _fail(sock: socket.socket, step: str, exc: BaseException) -> None:
    try:
        _send(sock, Phase.FAILED, f"{step}\0{exc}".encode(errors="replace"))
    finally:
        os._exit(1)


def spawn(spec: StartSpec) -> int:
    """Start the container's init; return its host pid.  Raises StartError naming the failed step."""
    parent_sock, child_sock = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    parent_sock.set_inheritable(False)
    child_sock.set_inheritable(False)
    seccomp_filter = seccomp.compile_filter(seccomp.default_rules(keyctl=spec.keyctl))
    log_fd = consolelog.open_memfd(spec.console_size)
    try:
        setup_pid = os.fork()
        if setup_pid == 0:
            parent_sock.close()
            _setup_child(spec, child_sock, log_fd, seccomp_filter)  # never returns
        child_sock.close()
        try:
            _attach(spec, setup_pid)
            return _drive(spec, parent_sock, setup_pid)
        finally:
            _reap(setup_pid)
    finally:
        consolelog.drain_quietly(log_fd, spec.console_log, spec.console_size)  # what init said as it started
        os.close(log_fd)
        parent_sock.close()
        child_sock.close()


def _reap(pid: int) -> None:
    try:
        os.waitpid(pid, 0)
    except ChildProcessError:
        pass


def _attach(spec: StartSpec, setup_pid: int) -> None:
    """Move the setup child into the container's cgroups; init inherits them when it is forked.

    On cgroup v1 the first move after a quiet spell waits for an RCU grace period
    (milliseconds): doing it right after fork lets it overlap the child's unshare.
    """
    try:
        for procs in spec.cgroup_procs:
            write_file(procs, str(setup_pid))
    except OSError as exc:
        _kill_quietly(setup_pid)
        raise StartError("cgroup", str(exc)) from None


def _drive(spec: StartSpec, sock: socket.socket, setup_pid: int) -> int:
    """The engine's half of the handshake."""
    init_pid = None
    while True:
        message = sock.recv(4096)
        if not message:
            if init_pid is None:
                raise StartError("fork", "the setup process exited without starting init")
            if not os.path.exists(f"/proc/{init_pid}"):
                raise StartError("exec", f"init died as it started; see {spec.console_log}")
            return init_pid
        phase, payload = Phase(message[0]), message[1:]
        if phase is Phase.UNSHARED:
            try:
                if spec.idmap is not None:
                    write_file(f"/proc/{setup_pid}/uid_map", spec.idmap.uid_map_text())
                    write_file(f"/proc/{setup_pid}/gid_map", spec.idmap.gid_map_text())
            except OSError as exc:
                _kill_quietly(setup_pid)
                raise StartError("idmap", str(exc)) from None
            for step in spec.prepare:
                try:
                    step(setup_pid)
                except Exception as exc:  # noqa: BLE001 - reported as the named step
                    _kill_quietly(setup_pid)
                    raise StartError(getattr(step, "__name__", "prepare"), str(exc)) from exc
            _send(sock, Phase.MAPPED)
        elif phase is Phase.INIT_PID:
            init_pid = struct.unpack("=i", payload)[0]
        elif phase is Phase.FAILED:
            step, _, text = payload.decode(errors="replace").partition("\0")
            if init_pid is not None:
                _kill_quietly(init_pid)
            raise StartError(step, text)


def _kill_quietly(pid: int) -> None:
    try:
        os.kill(pid, 9)
    except ProcessLookupError:
        pass


def write_file(path: str, text: str) -> None:
    fd = os.open(path, os.O_WRONLY)
    try:
        os.write(fd, text.encode())
    finally:
        os.close(fd)


SSH_KEYGEN = "/usr/bin/ssh-keygen"


def _first_boot_ssh_keys(sock: socket.socket, exec_w: int) -> None:
    """A container made from a template has no SSH host keys: make them before init starts sshd.

    Runs the container's own ``ssh-keygen -A`` as a child of init, already under the
    container's seccomp filter and capability set and holding none of the engine's fds.
    """
    if not os.path.exists("/etc/ssh/sshd_config") or not os.access(SSH_KEYGEN, os.X_OK):
        return
    if any(name.startswith("ssh_host_") and name.endswith("_key") for name in os.listdir("/etc/ssh")):
        return
    child = os.fork()
    if child == 0:
        try:
            os.close(sock.fileno())
            os.close(exec_w)
            os.execve(SSH_KEYGEN, ["ssh-keygen", "-A"], CONTAINER_ENV)
        finally:
            os._exit(127)
    os.waitpid(child, 0)


def close_fds_except(keep: set[int]) -> None:
    """No host fd may leak into the container (CVE-2024-21626); the kept ones are close-on-exec."""
    low = 3
    for fd in sorted(keep):
        os.closerange(low, fd)
        low = fd + 1
    os.closerange(low, 65536)


def _setup_child(spec: StartSpec, sock: socket.socket, log_fd: int, seccomp_filter) -> None:
    """Runs as host root in the engine's namespaces; makes the new ones and forks init."""
    step = "chdir"
    try:
        # Enter the rootfs as host root, before the user namespace: the path to it need
        # not be traversable by the container's root.
        os.chdir(spec.rootfs)
        step = "unshare"
        os.unshare(NAMESPACES | (os.CLONE_NEWUSER if spec.idmap is not None else 0))
        step = "idmap"
        _send(sock, Phase.UNSHARED)
        reply = sock.recv(16)
        if not reply or reply[0] != Phase.MAPPED:
            os._exit(1)
        if spec.idmap is not None:
            os.setresgid(0, 0, 0)
            os.setgroups([])
            os.setresuid(0, 0, 0)
        if spec.reenter_rootfs:
            step = "enter-rootfs"
            os.chdir(f"../{spec.rootfs.name}")
        step = "fork"
        exec_r, exec_w = os.pipe2(os.O_CLOEXEC)
        init_pid = os.fork()
        if init_pid == 0:
            os.close(exec_r)
            _init_child(spec, sock, log_fd, exec_w, seccomp_filter)  # never returns
        os.close(exec_w)
        _send(sock, Phase.INIT_PID, struct.pack("=i", init_pid))
        # Stay until init has exec'd or died (the pipe closes either way), so that a
        # failed init is reaped here instead of lingering as a zombie.
        os.read(exec_r, 1)
        os.waitpid(init_pid, os.WNOHANG)
        os._exit(0)
    except BaseException as exc:  # noqa: BLE001 - everything is reported to the engine
        _fail(sock, step, exc)


def _init_child(spec: StartSpec, sock: socket.socket, log_fd: int, exec_w: int, seccomp_filter) -> None:
    """PID 1 of the new namespaces, root of the user namespace: build the root and exec init."""
    step = "setsid"
    try:
        os.setsid()
        step = "mount-private"
        sc.mount(None, "/", None, sc.MS_REC | sc.MS_PRIVATE)
        step = "bind-rootfs"
        sc.mount(".", ".", None, sc.MS_BIND | sc.MS_REC)
        # The bind sits on top of the directory we are in; step out and back in to stand on it.
        os.chdir(f"../{spec.rootfs.name}")
        for mount in fs.base_mounts():
            step = f"mount /{mount.target}"
            fs.apply_mount(mount)
        step = "cgroup-namespace"
        os.unshare(os.CLONE_NEWCGROUP)  # after the engine moved us into our cgroups: that one is the root
        if spec.cgroup2:
            step = "mount /sys/fs/cgroup"
            fs.apply_mount(fs.CGROUP2_MOUNT)
        step = "dev-symlinks"
        fs.make_dev_symlinks()
        step = "hostname"
        socket.sethostname(spec.hostname)
        step = "pivot_root"
        sc.pivot_root(".", ".")
        sc.umount(".", sc.MNT_DETACH)
        os.chdir("/")
        step = "mask-paths"
        fs.mask_paths()
        step = "loopback"
        sc.set_loopback_up()
        for setup in spec.extra_setup:
            step = getattr(setup, "__name__", "setup")
            setup()
        step = "capabilities"
        sc.drop_bounding_caps(DROPPED_CAPABILITIES)
        step = "stdio"
        null_fd = os.open("/dev/null", os.O_RDWR)
        os.dup2(null_fd, 0)
        os.dup2(log_fd, 1)
        os.dup2(log_fd, 2)
        step = "close-fds"
        close_fds_except({sock.fileno(), exec_w})
        step = "seccomp"
        seccomp.install(seccomp_filter)
        step = "ssh-host-keys"
        _first_boot_ssh_keys(sock, exec_w)
        step = "exec"
        os.execve(spec.init[0], spec.init, CONTAINER_ENV)
    except BaseException as exc:  # noqa: BLE001
        _fail(sock, step, exc)
