"""The start's child processes: the namespace holder, the setup child, the builder and the container's init.

:mod:`engine.start` forks them and drives them (its module text draws the layout); they only
make system calls and run the spec's steps, then exec or exit.  What they share with the engine's
half is here too: the handshake's phases and messages.
"""

from __future__ import annotations

import os
import select
import socket
import struct
from enum import IntEnum

from engine import notify, seccomp
from engine import rootfs as fs
from engine import syscalls as sc

# Made by the namespace holder: the user namespace and those it owns, the pid namespace among them (its
# root may reboot(2) it, as in LXC).  The setup child makes the mount namespace in the host's user
# namespace, the builder the container's own copy of it, init its cgroup namespace.
HOLDER_NAMESPACES = os.CLONE_NEWUSER | os.CLONE_NEWUTS | os.CLONE_NEWIPC | os.CLONE_NEWNET | os.CLONE_NEWPID

# LXC's default for system containers: the rest stays, since a system container
# needs setuid, chown and mknod inside its own user namespace.
DROPPED_CAPABILITIES = ["mac_admin", "mac_override", "sys_time", "sys_module", "sys_rawio"]

CONTAINER_ENV = {
    "container": "lxc",  # what systemd-detect-virt and distro scripts recognise
    "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    "TERM": "linux",
    "HOME": "/root",
}


class Phase(IntEnum):
    """Messages from the setup child and init to the engine."""

    UNSHARED = 1  # setup child: namespaces made; the holder's pid follows, whose maps it waits for
    MAPPED = 2  # engine: maps written, go on
    INIT_PID = 3  # setup child: init's host pid follows
    FAILED = 4  # either: a step failed; "step\0message" follows
    READY = 5  # engine: the late prepare steps are done, init may go on (anything else: init exits)
    LISTENER = 6  # init: its seccomp filter's listener fd comes with it (features mknod, mount)


def send(sock: socket.socket, phase: Phase, payload: bytes = b"") -> None:
    sock.send(bytes([phase]) + payload)


def _fail(sock: socket.socket, step: str, exc: BaseException) -> None:
    try:
        send(sock, Phase.FAILED, f"{step}\0{exc}".encode(errors="replace"))
    finally:
        os._exit(1)


def reap(pid: int) -> None:
    try:
        os.waitpid(pid, 0)
    except ChildProcessError:
        pass


def write_file(path: str, text: str) -> None:
    fd = os.open(path, os.O_WRONLY)
    try:
        os.write(fd, text.encode())
    finally:
        os.close(fd)


SSH_KEYGEN = "/usr/bin/ssh-keygen"


def _first_boot_ssh_keys(sock: socket.socket) -> None:
    """A container made from a template has no SSH host keys: make them before init starts sshd.

    Runs the container's own ``ssh-keygen -A`` as a child of init, already under the
    container's seccomp filter and capability set and holding none of the engine's fds.
    """
    if not os.path.exists("/etc/ssh/sshd_config") or not os.access(SSH_KEYGEN, os.X_OK):
        return
    if any(name.startswith("ssh_host_") and name.endswith("_key") for name in os.listdir("/etc/ssh")):
        return
    child = sc.fork_quietly()
    if child == 0:
        try:
            os.close(sock.fileno())
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


def namespace_holder(
    spec, sock: socket.socket, log_fd: int, seccomp_filter, ready_w: int, hold_r: int, tree_r: int
) -> None:
    """Makes the user namespace and, owned by it, the net, uts, ipc and pid namespaces; forks init into them.

    A pid namespace can be joined (``/proc/<pid>/ns/pid_for_children``) only once it has an init, and its
    first process is forked by one that made it (with the container's credentials): so this process
    forks init, once the maps are written, and the setup child joins init's pid namespace to fork the
    builder there.  It exits right after that fork, before init is executed (the setup child waits for
    that): nothing in the container ever meets it."""
    try:
        close_fds_except({ready_w, hold_r, tree_r, sock.fileno(), log_fd, *spec.keep_fds})
        os.unshare(HOLDER_NAMESPACES)
        os.write(ready_w, b"1")
        if os.read(hold_r, 1) != b"1":  # end of file: the setup child is gone, no init then
            os._exit(0)
        init_pid = sc.fork_quietly()
        if init_pid == 0:
            os.close(ready_w)
            os.close(hold_r)
            _init_child(spec, sock, log_fd, tree_r, seccomp_filter)  # never returns
        os.write(ready_w, struct.pack("=i", init_pid))
    finally:
        os._exit(0)


def _open_namespaces(holder: int) -> dict[str, int]:
    return {
        name: os.open(f"/proc/{holder}/ns/{name}", os.O_RDONLY | os.O_CLOEXEC) for name in ("user", "net", "uts", "ipc")
    }


def setup_child(spec, sock: socket.socket, log_fd: int, holder: int, ready_r: int, hold_w: int, tree_w: int) -> None:
    """Runs as host root; gets the container's namespaces made and the builder forked into them.

    The holder (forked by the engine just before this process) makes the container's user namespace
    and, owned by it, the net, uts, ipc and pid namespaces (container root configures its interfaces,
    hostname and IPC, and may reboot(2) its pid namespace: init then ends, by SIGHUP for a restart,
    SIGINT for a power-off, as in LXC); it forks init once the maps are written.  This process joins
    those namespaces (host root may), but makes the mount namespace itself, in the host's user namespace,
    where the builder, forked into init's pid namespace as host root, builds the container's tree.
    """
    step = "chdir"
    try:
        # Enter the rootfs as host root, before the user namespace: the path to it need
        # not be traversable by the container's root.
        os.chdir(spec.rootfs)
        step = "unshare"
        holder_fd = os.pidfd_open(holder)  # the engine's child: it cannot be reaped, nor its pid reused, yet
        if os.read(ready_r, 1) != b"1":
            raise OSError("the namespace holder could not make the container's namespaces")
        ns = _open_namespaces(holder)
        for name, kind in (("net", os.CLONE_NEWNET), ("uts", os.CLONE_NEWUTS), ("ipc", os.CLONE_NEWIPC)):
            os.setns(ns[name], kind)
        os.unshare(os.CLONE_NEWNS)
        # Owned by the host's user namespace, this one keeps shared propagation: nothing mounted
        # here (the prepare steps' volumes, the builder's tree) may reach the host's.
        sc.mount(None, "/", None, sc.MS_REC | sc.MS_PRIVATE)
        step = "idmap"
        send(sock, Phase.UNSHARED, struct.pack("=i", holder))
        reply = sock.recv(16)
        if not reply or reply[0] != Phase.MAPPED:
            os._exit(1)
        # The maps are written: the holder forks init and goes.  Told by a byte, not by end of file: a
        # start in another thread of the engine may have forked while this pipe was open.
        os.write(hold_w, b"1")
        os.close(hold_w)
        step = "fork"
        pid = os.read(ready_r, 4)
        if len(pid) != 4:
            raise OSError("the namespace holder could not fork init")
        init_pid = struct.unpack("=i", pid)[0]
        # Host root holds every capability over the container's user namespace, which owns this pid
        # namespace; the builder is forked into it, and is a process of it, whose proc it mounts.
        os.setns(os.open(f"/proc/{init_pid}/ns/pid", os.O_RDONLY | os.O_CLOEXEC), os.CLONE_NEWPID)
        if spec.reenter_rootfs:
            step = "enter-rootfs"
            os.chdir(f"../{spec.rootfs.name}")
        send(sock, Phase.INIT_PID, struct.pack("=i", init_pid))  # before any failure of the builder's
        step = "fork"
        builder = sc.fork_quietly()
        if builder == 0:
            _build_tree(spec, sock, tree_w, ns["user"])  # never returns
        # Init waits for end of file on its tree socket: once the holder has exited too, nothing in the
        # container meets either.
        select.select([holder_fd], [], [])
        os.close(tree_w)
        reap(builder)  # it has handed init the tree, or failed (and said so)
        sock.close()  # end of file for the engine now, not once this process's exit has torn its memory down
        os._exit(0)
    except BaseException as exc:  # noqa: BLE001 - everything is reported to the engine
        _fail(sock, step, exc)


def _build_tree(spec, sock: socket.socket, tree_w: int, userns_fd: int) -> None:
    """Build the container's tree as host root, in init's pid namespace, and hand init a locked copy of it.

    Everything built here, before the user namespace is entered (rootfs, proc, sysfs, /dev, the masks and
    read-only paths), is copied into a mount namespace owned by the container's user namespace, and the
    kernel locks such a copy: container root can neither unmount a mask (MNT_LOCKED) nor clear a
    read-only, nosuid, nodev or noexec flag (MNT_LOCK_*), and with a proc and a sysfs that are not
    fully visible it cannot mount a fresh one (mount_too_revealing).  That copy is sent to init, which
    enters it: init was forked with the container's credentials, as the first process of a pid
    namespace owned by its user namespace must be.
    """
    step = "close-fds"
    try:
        close_fds_except({sock.fileno(), tree_w, userns_fd})
        step = "bind-rootfs"
        sc.mount(".", ".", None, sc.MS_BIND | sc.MS_REC)
        # The bind sits on top of the directory we are in; step out and back in to stand on it.
        os.chdir(f"../{spec.rootfs.name}")
        # Device nodes in the rootfs (an archive's) open nowhere: /dev is a tmpfs of bound nodes.
        sc.mount(None, ".", None, sc.MS_BIND | sc.MS_REMOUNT | sc.MS_NODEV)
        root_uid, root_gid = (spec.idmap.host_uid(0), spec.idmap.host_gid(0)) if spec.idmap else (0, 0)
        for mount in fs.host_mounts(root_uid, root_gid, spec.rw_sys) + spec.extra_mounts:
            step = f"mount /{mount.target}"
            fs.apply_mount(mount)
        step = "pivot_root"
        sc.pivot_root(".", ".")
        sc.umount(".", sc.MNT_DETACH)
        os.chdir("/")
        if not spec.nesting:
            step = "mask-paths"
            fs.mask_paths()
        step = "lock-mounts"
        os.setns(userns_fd, os.CLONE_NEWUSER)
        os.unshare(os.CLONE_NEWNS)
        tree = os.open("/proc/self/ns/mnt", os.O_RDONLY | os.O_CLOEXEC)
        notify.send_fd(socket.socket(fileno=tree_w), tree, b"tree")
        os._exit(0)
    except BaseException as exc:  # noqa: BLE001
        _fail(sock, step, exc)


def _init_child(spec, sock: socket.socket, log_fd: int, tree_r: int, seccomp_filter) -> None:
    """PID 1 of the container: enter the tree the builder made, then exec init.

    Forked by the holder, it is already container root (the maps are written) in the container's user,
    net, uts, ipc and pid namespaces; the builder's mount namespace, owned by the user namespace and
    locked, comes over ``tree_r`` (end of file at once: the builder failed and said so).
    """
    step = "close-fds"
    try:
        close_fds_except({sock.fileno(), log_fd, tree_r, *spec.keep_fds})
        step = "setsid"
        os.setsid()
        step = "enter-user-namespace"
        os.setresgid(0, 0, 0)
        os.setgroups([])
        os.setresuid(0, 0, 0)
        step = "enter-tree"
        tree_sock = socket.socket(fileno=tree_r)
        _, tree = notify.receive_fd(tree_sock)
        if tree is None:
            os._exit(1)
        # End of file once the builder has exited and the setup child seen the holder exit (it keeps its end
        # till then): no process of the start but init is left in the container's namespaces.
        tree_sock.recv(1)
        tree_sock.close()
        os.setns(tree, os.CLONE_NEWNS)
        os.close(tree)
        step = "cgroup-namespace"
        # After the engine moved the holder into our cgroups: that one is the cgroup namespace's root.
        os.unshare(os.CLONE_NEWCGROUP)
        if spec.nesting:  # made by container root: not locked, so its proc and sysfs stay "fully visible"
            for mount in spec.inner_mounts:
                step = f"mount /{mount.target}"
                fs.apply_mount(mount)
            step = "mask-paths"
            fs.mask_paths(writable_net=True)
        for mount in fs.CONTAINER_MOUNTS + ([fs.CGROUP2_MOUNT] if spec.cgroup2 else []):
            step = f"mount /{mount.target}"
            fs.apply_mount(mount)
        step = "dev-symlinks"
        fs.make_dev_symlinks()
        step = "hostname"
        socket.sethostname(spec.hostname)
        step = "loopback"
        sc.set_loopback_up()
        if spec.prepare_late:
            step = "prepare"
            ready = sock.recv(16)  # the engine's late prepare steps (the network's) are done
            if ready[:1] != bytes([Phase.READY]):
                os._exit(1)  # the engine reports the step that failed
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
        close_fds_except({sock.fileno()})
        step = "signals"
        sc.default_signals()
        step = "seccomp"
        if seccomp_filter.notify:
            listener = seccomp.install_with_listener(seccomp_filter)
            notify.send_fd(sock, listener, bytes([Phase.LISTENER]))
            os.close(listener)
        else:
            seccomp.install(seccomp_filter)
        step = "ssh-host-keys"
        _first_boot_ssh_keys(sock)
        step = "exec"
        if spec.app is not None:
            spec.app.exec(CONTAINER_ENV)  # never returns
        os.execve(spec.init[0], spec.init, CONTAINER_ENV)
    except BaseException as exc:  # noqa: BLE001
        _fail(sock, step, exc)
