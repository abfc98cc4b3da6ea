"""The seccomp program, loaded for real into a forked child that then makes the denied calls."""

from __future__ import annotations

import ctypes
import errno
import os
import socket
import struct

import pytest

from engine import seccomp, syscalls

libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long

NR = {
    "keyctl": 250,
    "init_module": 175,
    "finit_module": 313,
    "delete_module": 176,
    "kexec_load": 246,
    "open_by_handle_at": 304,
    "umount2": 166,
    "getpid": 39,
}


def in_filtered_child(rules, probe) -> int:
    """Run ``probe`` in a child under the filter; return the errno it reports (0 for success)."""
    read_fd, write_fd = os.pipe()
    pid = syscalls.fork_quietly()
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


@pytest.mark.parametrize(
    "name, expected",
    [
        ("init_module", errno.EPERM),
        ("finit_module", errno.EPERM),
        ("delete_module", errno.EPERM),
        ("kexec_load", errno.EPERM),
        ("open_by_handle_at", errno.EPERM),
        ("keyctl", errno.ENOSYS),
    ],
)
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


# ---- the calls the OCI runtimes refuse, nesting, and the 32-bit ABIs ---------------------------------

X86_64 = seccomp.SYSCALLS[seccomp.AUDIT_ARCH_X86_64]
I386 = seccomp.SYSCALLS[seccomp.AUDIT_ARCH_I386]


@pytest.mark.parametrize("name", [n for n in seccomp.EPERM_CALLS if n in X86_64])
def test_every_refused_call_gets_eperm(name):
    NR[name] = X86_64[name]
    assert in_filtered_child(seccomp.default_rules(), raw(name, 0, 0, 0, 0)) == errno.EPERM


def test_refused_calls_are_the_ones_that_matter():
    for name in (
        "io_uring_setup",
        "io_uring_enter",
        "io_uring_register",
        "userfaultfd",
        "bpf",
        "perf_event_open",
        "kexec_load",
        "init_module",
        "open_by_handle_at",
    ):
        assert name in seccomp.EPERM_CALLS and name in X86_64 and name in I386


def test_nested_user_namespaces_need_nesting():
    unshare_user = raw("unshare", seccomp.CLONE_NEWUSER)
    NR.update(unshare=X86_64["unshare"], clone=X86_64["clone"], clone3=X86_64["clone3"])
    assert in_filtered_child(seccomp.default_rules(), unshare_user) == errno.EPERM
    assert in_filtered_child(seccomp.default_rules(nesting=True), unshare_user) == 0
    # clone(CLONE_NEWUSER | SIGCHLD) is refused before any child exists.
    assert in_filtered_child(seccomp.default_rules(), raw("clone", seccomp.CLONE_NEWUSER | 17, 0, 0, 0)) == errno.EPERM
    # clone3's flags are in memory: without nesting it answers ENOSYS, so libc falls back to clone.
    assert in_filtered_child(seccomp.default_rules(), raw("clone3", 0, 0)) == errno.ENOSYS
    assert in_filtered_child(seccomp.default_rules(nesting=True), raw("clone3", 0, 0)) != errno.ENOSYS
    # Other namespaces stay possible: a system container makes its own (systemd's services do).
    assert in_filtered_child(seccomp.default_rules(), raw("unshare", os.CLONE_NEWNS)) == 0


def test_x32_abi_is_refused():
    NR["x32_getpid"] = seccomp.X32_SYSCALL_BIT | 39
    assert in_filtered_child(seccomp.default_rules(), raw("x32_getpid")) == errno.ENOSYS


# int 0x80 from a 64-bit process enters the i386 ABI (AUDIT_ARCH_I386, i386 numbers, 32-bit arguments):
# push rbx; mov eax,edi; mov ebx,esi; mov r8,rcx; mov ecx,edx; mov edx,r8d; int 0x80; pop rbx; ret
INT80 = bytes.fromhex("53 89f8 89f3 4989c8 89d1 4489c2 cd80 5b c3")
MAP_32BIT = 0x40


def i386_call(nr: int, *args: int):
    """A probe making i386 syscall ``nr``; an argument given as bytes is copied below 4 GiB first."""

    def probe():
        import mmap

        code = mmap.mmap(-1, mmap.PAGESIZE, prot=mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC)
        code.write(INT80)
        address = ctypes.addressof(ctypes.c_char.from_buffer(code))
        call = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_uint, ctypes.c_uint, ctypes.c_uint, ctypes.c_uint)(address)
        libc.mmap.restype = ctypes.c_void_p
        libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_long]
        low = libc.mmap(None, 4096, 3, 0x22 | MAP_32BIT, -1, 0)
        words = []
        for arg in args:
            if isinstance(arg, bytes):
                ctypes.memmove(low, arg, len(arg))
                words.append(low)
            else:
                words.append(arg & 0xFFFFFFFF)
        result = call(nr, *(words + [0, 0, 0])[:3])
        return -result if result < 0 else 0

    return probe


@pytest.fixture(scope="module")
def ia32():
    """Skip where the kernel has no IA32 emulation (int 0x80 then kills the process)."""
    pid = syscalls.fork_quietly()
    if pid == 0:
        try:
            i386_call(20)()  # getpid
        finally:
            os._exit(0)
    _, status = os.waitpid(pid, 0)
    if not os.WIFEXITED(status):
        pytest.skip("this kernel has no IA32 emulation: the i386 ABI cannot be entered")


@pytest.mark.parametrize("name", [n for n in seccomp.EPERM_CALLS if n in I386])
def test_i386_abi_gets_the_same_refusals(ia32, name):
    assert in_filtered_child(seccomp.default_rules(), i386_call(I386[name], 0, 0, 0)) == errno.EPERM


def test_i386_abi_rules_with_arguments(ia32):
    rules = seccomp.default_rules()
    assert in_filtered_child(rules, i386_call(I386["keyctl"], 0, 0, 0)) == errno.ENOSYS
    assert (
        in_filtered_child(rules, i386_call(I386["socket"], seccomp.AF_ALG, socket.SOCK_SEQPACKET, 0))
        == errno.EAFNOSUPPORT
    )
    assert in_filtered_child(rules, i386_call(I386["unshare"], seccomp.CLONE_NEWUSER)) == errno.EPERM
    assert in_filtered_child(rules, i386_call(I386["umount2"], 0, seccomp.MNT_FORCE)) == errno.EPERM
    assert in_filtered_child(rules, i386_call(20)) == 0  # getpid passes


def test_socketcall_cannot_make_an_af_alg_socket(ia32):
    """socketcall hides the family in memory: SYS_SOCKET is refused as a whole, other calls pass."""
    args = struct.pack("=3I", seccomp.AF_ALG, socket.SOCK_SEQPACKET, 0)
    socketcall = I386["socketcall"]
    assert in_filtered_child(seccomp.default_rules(), i386_call(socketcall, seccomp.SYS_SOCKET, args)) == errno.ENOSYS
    unfiltered = i386_call(socketcall, seccomp.SYS_SOCKET, args)
    assert in_filtered_child([], unfiltered) in (0, errno.EAFNOSUPPORT)  # what the rule stands between
    # SYS_SOCKETPAIR (8) on AF_UNIX is not refused.
    pair = struct.pack("=4I", socket.AF_UNIX, socket.SOCK_STREAM, 0, 0)
    assert in_filtered_child(seccomp.default_rules(), i386_call(socketcall, 8, pair)) != errno.ENOSYS
