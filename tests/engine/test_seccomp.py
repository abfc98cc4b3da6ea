"""The seccomp program, loaded for real into a forked child that then makes the denied calls."""
from __future__ import annotations

import ctypes
import errno
import os
import socket

import pytest

from engine import seccomp

libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long

NR = {"keyctl": 250, "init_module": 175, "finit_module": 313, "delete_module": 176, "kexec_load": 246,
      "open_by_handle_at": 304, "umount2": 166, "getpid": 39}


def in_filtered_child(rules, probe) -> int:
    """Run ``probe`` in a child under the filter; return the errno it reports (0 for success)."""
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            os.close(read_fd)
            seccomp.install(rules)
            result = probe()
            os.write(write_fd, str(result).encode())
        finally:
            os._exit(0)
    os.close(write_fd)
    data = os.read(read_fd, 64)
    os.close(read_fd)
    os.waitpid(pid, 0)
    return int(data)


def raw(name, *args) -> int:
    def probe():
        ctypes.set_errno(0)
        result = libc.syscall(NR[name], *args)
        return 0 if result >= 0 else ctypes.get_errno()

    return probe


@pytest.mark.parametrize("name, expected", [
    ("init_module", errno.EPERM), ("finit_module", errno.EPERM), ("delete_module", errno.EPERM),
    ("kexec_load", errno.EPERM), ("open_by_handle_at", errno.EPERM), ("keyctl", errno.ENOSYS),
])
def test_denied_calls_get_their_errno(name, expected):
    assert in_filtered_child(seccomp.default_rules(), raw(name, 0, 0, 0, 0)) == expected


def test_keyctl_is_allowed_with_the_feature():
    # keyctl(KEYCTL_GET_KEYRING_ID=0, KEY_SPEC_PROCESS_KEYRING=-2, create=0): ENOKEY or success, never ENOSYS.
    assert in_filtered_child(seccomp.default_rules(keyctl=True), raw("keyctl", 0, -2, 0)) != errno.ENOSYS


def test_forced_umount_is_refused_but_plain_umount_passes_the_filter():
    target = ctypes.c_char_p(b"/nonexistent-mountpoint")
    assert in_filtered_child(seccomp.default_rules(), raw("umount2", target, 1)) == errno.EPERM
    assert in_filtered_child(seccomp.default_rules(), raw("umount2", target, 0)) == errno.ENOENT


def test_af_alg_sockets_are_refused_and_others_work():
    def alg():
        try:
            socket.socket(38, socket.SOCK_SEQPACKET).close()
            return 0
        except OSError as exc:
            return exc.errno

    def unix():
        socket.socket(socket.AF_UNIX, socket.SOCK_STREAM).close()
        return 0

    assert in_filtered_child(seccomp.default_rules(), alg) == errno.EAFNOSUPPORT
    assert in_filtered_child(seccomp.default_rules(), unix) == 0
    assert in_filtered_child(seccomp.default_rules(), raw("getpid")) == 0


def test_program_dispatches_on_architecture():
    program = seccomp.build_program(seccomp.default_rules())
    assert program[0] == (seccomp.LD_ABS, 0, 0, seccomp.OFF_ARCH)
    assert program[-1][3] == seccomp.RET_ERRNO | errno.EPERM  # unknown architectures are refused
    assert len(program) < 4096  # the kernel's BPF_MAXINSNS
