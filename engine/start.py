"""Container start: one linear sequence of named steps, in the order bubblewrap and LXC use.

Process layout (no process of ours stays behind):

    engine ──fork──> holder: unshare(user, uts, ipc, net, pid) ──fork, once mapped──> init (PID 1)
           │             └── exits at once; init is re-parented to the engine or the host's reaper
           ──fork──> setup child ──setns(holder's net, uts, ipc; init's pid), unshare(mnt)
                         └──fork──> builder (host root, PID 2): builds the tree, sends init a locked copy

The engine forks the holder first (its start overlaps the setup child's), moves
both into the container's cgroups (init inherits them, then makes its cgroup
namespace), runs the early prepare steps while the children make their
namespaces (the distribution's files of a plain-directory rootfs), writes the
holder's uid/gid maps, runs the host-side prepare steps (volumes), lets the
holder fork init and the setup child the builder, learns init's host pid, runs the
late prepare steps with it (the network's: they need the namespaces, not the mounts;
init waits for them, the setup child may be gone) while the builder builds the
container's tree, and then waits on a close-on-exec socket: end of file means the
container's init was executed, a message means a named step failed.
"""

from __future__ import annotations

import os
import socket
import struct
import subprocess
import warnings
from dataclasses import dataclass, field
from pathlib import Path

from engine import consolelog, faults, notify, procfs, seccomp
from engine import syscalls as sc
from engine.errors import InitExited, StartError
from engine.idmap import IdMap
from engine.start_children import (  # noqa: F401 - CONTAINER_ENV, DROPPED_CAPABILITIES, close_fds_except: used by others
    CONTAINER_ENV,
    DROPPED_CAPABILITIES,
    Phase,
    close_fds_except,
    namespace_holder,
    reap,
    send,
    setup_child,
    write_file,
)

# A privileged container (no id map) still gets a user namespace, mapping every id to itself: its root
# is uid 0 on disk but holds no capability over the host, and the mounts it inherits are locked.
IDENTITY_MAP = "0 0 4294967295\n"

# libc through ctypes, loaded here, in the process that forks the container's init: after pivot_root the
# child could no longer import ctypes nor find libc.
sc.load()

# The forked children below only make system calls (os, ctypes) before exec: no lock of
# another thread is ever taken, which is the hazard Python's fork warning is about.
warnings.filterwarnings(
    "ignore",
    message=r".*use of fork\(\) may lead to deadlocks",
    category=DeprecationWarning,
    module=r"engine\.(start|start_children|attach)",
)


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
    seccomp_rules: list = field(default_factory=seccomp.default_rules)  # seccomp.container_rules(config)
    extra_setup: list = field(default_factory=list)  # callables run inside, after pivot_root, as container root
    # Host-side steps run before init exists, with the pid of a process that is already in the
    # container's namespaces (network interfaces are moved into its namespace here); each is a
    # callable(pid) whose __name__ names the step in a StartError.
    prepare: list = field(default_factory=list)
    # Host-side steps that need no process of the container (the distribution's files of a plain-directory
    # rootfs): run while the children are being forked and make their namespaces, an otherwise idle
    # wait of the engine's; init is told to go on only after them. Same form, called with the setup pid.
    prepare_early: list = field(default_factory=list)
    # Host-side steps that need only the container's namespaces, not its mounts (the network's): run with
    # init's pid once it exists, while the builder makes the container's tree; init waits for them
    # (Phase.READY) before its ``extra_setup``.  Same form as ``prepare``.
    prepare_late: list = field(default_factory=list)
    # Binds made as host root after proc, sysfs and /dev, so locked like them: lxcfs's files, passed devices.
    extra_mounts: list = field(default_factory=list)
    # features: nesting=1 (engine.nesting): the /proc and /sys masks are made by container root (not locked),
    # so a nested runtime may mount a proc and sysfs of its own namespaces.
    nesting: bool = False
    inner_mounts: list = field(default_factory=list)  # with nesting: binds made by container root (lxcfs's)
    rw_sys: bool = False  # features: force_rw_sys=1
    # The prepare steps mounted the rootfs (an image or an overlay) over the directory the setup
    # child entered: it steps out and back in, through its parent, to stand on that mount.
    reenter_rootfs: bool = False
    # An application container (engine.oci.launch): PID 1 is its command, not ``init``.
    app: object = None
    # Fds init's steps use (the terminals' socket); init closes every other one of the engine's at once,
    # so that it never holds the container's lock (recovery leaves a locked container alone).
    keep_fds: set = field(default_factory=set)
    # features: mknod=1 / mount=: (notify.Policy, socket path) of the supervisor the listener goes to.
    notify: tuple | None = None


# Setup children whose init was executed, still exiting: reaped by reap_setup_children().
_exiting: list[int] = []


def spawn(spec: StartSpec, defer_reap: bool = False) -> int:
    """Start the container's init; return its host pid.  Raises StartError naming the failed step.

    With ``defer_reap`` a successful start returns as soon as init is executed, while the setup child is
    still exiting (tearing down its copy of this process takes a while): the caller then reaps it with
    :func:`reap_setup_children` once it has done its own next steps.
    """
    parent_sock, child_sock = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    parent_sock.set_inheritable(False)
    child_sock.set_inheritable(False)
    seccomp_filter = seccomp.compile_filter(spec.seccomp_rules)
    log_fd = consolelog.open_memfd(spec.console_size)
    try:
        # The holder is forked from here, before the setup child: its start overlaps the setup child's.
        ready_r, ready_w = os.pipe2(os.O_CLOEXEC)
        hold_r, hold_w = os.pipe2(os.O_CLOEXEC)
        tree_r, tree_w = (end.detach() for end in socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET))
        holder = sc.fork_quietly()
        if holder == 0:
            parent_sock.close()
            namespace_holder(spec, child_sock, log_fd, seccomp_filter, ready_w, hold_r, tree_r)  # never returns
        os.close(ready_w)
        os.close(hold_r)
        os.close(tree_r)
        try:
            setup_pid = sc.fork_quietly()
            if setup_pid == 0:
                parent_sock.close()
                setup_child(spec, child_sock, log_fd, holder, ready_r, hold_w, tree_w)  # never returns
        finally:
            os.close(ready_r)
            os.close(hold_w)  # the setup child tells the holder to go
            os.close(tree_w)
        child_sock.close()
        listener: list[int] = []
        try:
            _attach(spec, holder)
            _attach(spec, setup_pid)
            _prepare_or_stop(spec.prepare_early, setup_pid)
            init_pid = _drive(spec, parent_sock, setup_pid, listener)
            if spec.notify is not None:
                _supervise(spec, init_pid, listener)
        except BaseException:
            reap(setup_pid)
            reap(holder)
            raise
        finally:
            for fd in listener:
                os.close(fd)
        if defer_reap:
            _exiting.extend((setup_pid, holder))
        else:
            reap(setup_pid)
            reap(holder)
        return init_pid
    finally:
        consolelog.drain_quietly(log_fd, spec.console_log, spec.console_size)  # what init said as it started
        os.close(log_fd)
        parent_sock.close()
        child_sock.close()


def reap_setup_children() -> None:
    """Wait for the setup children that :func:`spawn` left exiting (``defer_reap``)."""
    while _exiting:
        try:
            pid = _exiting.pop()
        except IndexError:  # another thread took the last one
            return
        reap(pid)


def _attach(spec: StartSpec, setup_pid: int) -> None:
    """Move a child into the container's cgroups; init inherits them from the holder when it is forked.

    On cgroup v1 the first move after a quiet spell waits for an RCU grace period
    (milliseconds): doing it right after fork lets it overlap the child's unshare.
    """
    try:
        for procs in spec.cgroup_procs:
            write_file(procs, str(setup_pid))
    except OSError as exc:
        _kill_quietly(setup_pid)
        raise StartError("cgroup", str(exc)) from None


def _supervise(spec: StartSpec, init_pid: int, listener: list[int]) -> None:
    """Hand init's listener to a supervisor of its own (engine.notify); without one the start fails."""
    policy, path = spec.notify
    try:
        if not listener:
            raise OSError("init sent no seccomp listener")
        notify.launch(listener[0], path, policy)
    except (OSError, subprocess.SubprocessError) as exc:
        _kill_quietly(init_pid)
        raise StartError("seccomp-supervisor", f"{exc}; see {path}.log") from None


def _drive(spec: StartSpec, sock: socket.socket, setup_pid: int, listener: list[int]) -> int:
    """The engine's half of the handshake."""
    init_pid = None
    holder: int | None = None
    late_error: BaseException | None = None
    while True:
        message, fd = notify.receive_fd(sock)
        if fd is not None:
            listener.append(fd)
        if not message:
            if late_error is not None:  # init was told to exit; both children are gone now
                if init_pid is not None:
                    reap(init_pid)  # the engine's child if it is a child subreaper
                raise late_error
            if init_pid is None:
                raise StartError("fork", "the setup process exited without starting init")
            if spec.app is None and _exited(init_pid):
                raise InitExited(spec.console_log)
            # An application that ends at once after its exec (no step failed: none said so) has run: its
            # exit is the container stopping by itself (restart policies), not a failed start.
            return init_pid
        phase, payload = Phase(message[0]), message[1:]
        if phase is Phase.UNSHARED:
            holder = struct.unpack("=i", payload)[0]
            try:
                write_file(f"/proc/{holder}/uid_map", spec.idmap.uid_map_text() if spec.idmap else IDENTITY_MAP)
                write_file(f"/proc/{holder}/gid_map", spec.idmap.gid_map_text() if spec.idmap else IDENTITY_MAP)
            except OSError as exc:
                _kill_quietly(setup_pid)
                raise StartError("idmap", str(exc)) from None
            _prepare_or_stop(spec.prepare, setup_pid)
            send(sock, Phase.MAPPED)
        elif phase is Phase.LISTENER:
            pass  # its fd was kept above
        elif phase is Phase.INIT_PID:
            init_pid = struct.unpack("=i", payload)[0]
            if spec.prepare_late:
                # The builder makes the tree meanwhile. Run with init's pid: init is in the container's
                # namespaces and waits for this answer (the setup child may be gone before the steps end);
                # on a failure it is told to exit, and the error is raised once the children are gone.
                try:
                    _prepare(spec.prepare_late, init_pid)
                except BaseException as exc:  # noqa: BLE001 - raised once init is gone, whatever it is
                    late_error = exc
                    send(sock, Phase.FAILED)
                else:
                    send(sock, Phase.READY)
        elif phase is Phase.FAILED:
            step, _, text = payload.decode(errors="replace").partition("\0")
            if init_pid is not None:
                _kill_quietly(init_pid)
                if holder is not None:
                    reap(holder)  # then init is the engine's child if it is a child subreaper
                reap(init_pid)
            raise late_error or StartError(step, text)


def _prepare(steps: list, setup_pid: int) -> None:
    """Run host-side prepare steps with the pid of a process in the container's namespaces."""
    for step in steps:
        name = getattr(step, "__name__", "prepare")
        faults.point(f"start:{name}")
        try:
            step(setup_pid)
        except Exception as exc:  # noqa: BLE001 - reported as the named step
            raise StartError(name, str(exc)) from exc


def _prepare_or_stop(steps: list, setup_pid: int) -> None:
    """:func:`_prepare` before init exists: a failed step ends the setup child (the start fails there)."""
    try:
        _prepare(steps, setup_pid)
    except StartError:
        _kill_quietly(setup_pid)
        raise


def _exited(pid: int) -> bool:
    """Whether init has ended (a zombie too: its parent is the engine or the host's reaper), reaped if ours."""
    stat = procfs.proc_stat(pid)
    if stat is None:
        return True
    if stat.state == "Z":
        reap(pid)
        return True
    return False


def _kill_quietly(pid: int) -> None:
    try:
        os.kill(pid, 9)
    except ProcessLookupError:
        pass
