"""The container's default seccomp deny list, as a classic BPF program built here.

The rules follow LXC's common.seccomp and Proxmox's additions: module
loading, kexec and open_by_handle_at get EPERM, a forced umount is refused,
keyctl answers ENOSYS unless the keyctl feature is on (so systemd falls back
cleanly), and AF_ALG sockets are refused.  The program is a few dozen
instructions, so it is assembled by hand rather than through libseccomp,
which has no maintained binding for this Python.
"""
from __future__ import annotations

import ctypes
import errno
from dataclasses import dataclass

from engine import syscalls

AUDIT_ARCH_X86_64 = 0xC000003E
AUDIT_ARCH_I386 = 0x40000003
X32_SYSCALL_BIT = 0x40000000

RET_ALLOW = 0x7FFF0000
RET_ERRNO = 0x00050000

LD_ABS = 0x20  # BPF_LD | BPF_W | BPF_ABS
JEQ = 0x15  # BPF_JMP | BPF_JEQ | BPF_K
JGE = 0x35  # BPF_JMP | BPF_JGE | BPF_K
JSET = 0x45  # BPF_JMP | BPF_JSET | BPF_K
RET = 0x06  # BPF_RET | BPF_K

OFF_NR, OFF_ARCH = 0, 4


def _arg_offset(index: int) -> int:
    return 16 + 8 * index  # low 32 bits of args[index] on little-endian


MNT_FORCE = 1
AF_ALG = 38

SYSCALLS = {
    AUDIT_ARCH_X86_64: {"kexec_load": 246, "kexec_file_load": 320, "open_by_handle_at": 304, "init_module": 175,
                        "finit_module": 313, "delete_module": 176, "umount2": 166, "keyctl": 250, "add_key": 248,
                        "request_key": 249, "socket": 41},
    AUDIT_ARCH_I386: {"kexec_load": 283, "open_by_handle_at": 342, "init_module": 128, "finit_module": 350,
                      "delete_module": 129, "umount2": 52, "keyctl": 288, "add_key": 286, "request_key": 287,
                      "socket": 359},
}


@dataclass(frozen=True)
class Rule:
    syscall: str
    errno: int
    arg: int | None = None  # which argument to test, if any
    arg_equals: int | None = None
    arg_has_bits: int | None = None


def default_rules(keyctl: bool = False) -> list[Rule]:
    rules = [Rule(name, errno.EPERM) for name in
             ("kexec_load", "kexec_file_load", "open_by_handle_at", "init_module", "finit_module", "delete_module")]
    rules.append(Rule("umount2", errno.EPERM, arg=1, arg_has_bits=MNT_FORCE))
    rules.append(Rule("socket", errno.EAFNOSUPPORT, arg=0, arg_equals=AF_ALG))
    if not keyctl:
        rules += [Rule(name, errno.ENOSYS) for name in ("keyctl", "add_key", "request_key")]
    return rules


def _insn(code: int, jt: int, jf: int, k: int) -> tuple[int, int, int, int]:
    return (code, jt, jf, k & 0xFFFFFFFF)


def _arch_block(numbers: dict[str, int], rules: list[Rule]) -> list[tuple]:
    block = [_insn(LD_ABS, 0, 0, OFF_NR)]
    for rule in rules:
        nr = numbers.get(rule.syscall)
        if nr is None:
            continue
        ret = _insn(RET, 0, 0, RET_ERRNO | rule.errno)
        if rule.arg is None:
            block += [_insn(JEQ, 0, 1, nr), ret]
        else:
            test = (_insn(JEQ, 0, 1, rule.arg_equals) if rule.arg_equals is not None
                    else _insn(JSET, 0, 1, rule.arg_has_bits))
            block += [_insn(JEQ, 0, 3, nr), _insn(LD_ABS, 0, 0, _arg_offset(rule.arg)), test, ret,
                      _insn(LD_ABS, 0, 0, OFF_NR)]
    block.append(_insn(RET, 0, 0, RET_ALLOW))
    return block


def build_program(rules: list[Rule]) -> list[tuple[int, int, int, int]]:
    """Assemble the filter: dispatch on the architecture, then test each denied syscall."""
    x86 = _arch_block(SYSCALLS[AUDIT_ARCH_X86_64], rules)
    # x32 calls carry X32_SYSCALL_BIT; nobody runs x32 in a system container, so refuse it wholesale
    # rather than keep a third table.
    x86.insert(1, _insn(JGE, 0, 1, X32_SYSCALL_BIT))
    x86.insert(2, _insn(RET, 0, 0, RET_ERRNO | errno.ENOSYS))
    i386 = _arch_block(SYSCALLS[AUDIT_ARCH_I386], rules)
    program = [_insn(LD_ABS, 0, 0, OFF_ARCH), _insn(JEQ, 0, len(x86), AUDIT_ARCH_X86_64)]
    program += x86
    program += [_insn(JEQ, 0, len(i386), AUDIT_ARCH_I386)]
    program += i386
    program.append(_insn(RET, 0, 0, RET_ERRNO | errno.EPERM))  # any other architecture
    return program


class _SockFilter(ctypes.Structure):
    _fields_ = [("code", ctypes.c_uint16), ("jt", ctypes.c_uint8), ("jf", ctypes.c_uint8), ("k", ctypes.c_uint32)]


class _SockFprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_uint16), ("filter", ctypes.POINTER(_SockFilter))]


@dataclass(frozen=True)
class Filter:
    """An assembled program, ready for prctl; built before fork so the child only makes the call."""

    array: ctypes.Array
    fprog: _SockFprog


_COMPILED: dict[tuple[Rule, ...], Filter] = {}


def compile_filter(rules: list[Rule]) -> Filter:
    key = tuple(rules)
    if key not in _COMPILED:
        program = build_program(rules)
        array = (_SockFilter * len(program))(*[_SockFilter(*insn) for insn in program])
        _COMPILED[key] = Filter(array, _SockFprog(len(program), ctypes.cast(array, ctypes.POINTER(_SockFilter))))
    return _COMPILED[key]


def install(program: Filter | list[Rule]) -> None:
    """Load the filter into the calling thread; it is inherited across fork and exec.

    Without no_new_privs the kernel requires CAP_SYS_ADMIN in the current user
    namespace, which container root has: setuid programs inside keep working.
    """
    compiled = program if isinstance(program, Filter) else compile_filter(program)
    syscalls.prctl(syscalls.PR_SET_SECCOMP, syscalls.SECCOMP_MODE_FILTER, ctypes.addressof(compiled.fprog))
