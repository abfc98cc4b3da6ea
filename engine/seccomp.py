"""The container's default seccomp deny list, as a classic BPF program built here.

The rules follow LXC's common.seccomp, Proxmox's additions and the calls the
OCI runtimes' default profile (runc, crun, Docker) refuses that a system
container has no use for: module loading, kexec, open_by_handle_at, io_uring,
userfaultfd, bpf, perf_event_open and the obsolete or host-global calls get
EPERM; a forced umount is refused; keyctl answers ENOSYS unless the keyctl
feature is on (so systemd falls back cleanly); AF_ALG sockets are refused.
Without the nesting feature no user namespace can be made (clone/unshare with
CLONE_NEWUSER: EPERM) and clone3, whose flags sit in memory a filter cannot
read, answers ENOSYS as in Docker's profile, so libc falls back to clone.

Every rule holds for the i386 ABI too (int 0x80 from any process, with its own
numbers), including socketcall(SYS_SOCKET), which hides the address family in
memory: refused with ENOSYS, except in an ``arch: i386`` container whose 32-bit
libc needs it.  The x32 ABI is refused wholesale.  The program is a few dozen
instructions, so it is assembled by hand rather than through libseccomp,
which has no maintained binding for this Python.
"""

from __future__ import annotations

import ctypes
import errno
import os
from dataclasses import dataclass

from engine import syscalls

AUDIT_ARCH_X86_64 = 0xC000003E
AUDIT_ARCH_I386 = 0x40000003
X32_SYSCALL_BIT = 0x40000000

RET_ALLOW = 0x7FFF0000
RET_ERRNO = 0x00050000
RET_USER_NOTIF = 0x7FC00000  # the call waits for a supervisor's answer (engine.notify)

LD_ABS = 0x20  # BPF_LD | BPF_W | BPF_ABS
JEQ = 0x15  # BPF_JMP | BPF_JEQ | BPF_K
JGE = 0x35  # BPF_JMP | BPF_JGE | BPF_K
JSET = 0x45  # BPF_JMP | BPF_JSET | BPF_K
AND = 0x54  # BPF_ALU | BPF_AND | BPF_K
RET = 0x06  # BPF_RET | BPF_K

OFF_NR, OFF_ARCH = 0, 4


def _arg_offset(index: int) -> int:
    return 16 + 8 * index  # low 32 bits of args[index] on little-endian


MNT_FORCE = 1
AF_ALG = 38
CLONE_NEWUSER = 0x10000000
SYS_SOCKET = 1  # socketcall's first argument for socket(2)

# Numbers from asm/unistd_64.h and asm/unistd_32.h; a call missing from a table does not exist there.
SYSCALLS = {
    AUDIT_ARCH_X86_64: {
        "kexec_load": 246,
        "kexec_file_load": 320,
        "open_by_handle_at": 304,
        "init_module": 175,
        "finit_module": 313,
        "delete_module": 176,
        "create_module": 174,
        "get_kernel_syms": 177,
        "query_module": 178,
        "umount2": 166,
        "keyctl": 250,
        "add_key": 248,
        "request_key": 249,
        "socket": 41,
        "io_uring_setup": 425,
        "io_uring_enter": 426,
        "io_uring_register": 427,
        "userfaultfd": 323,
        "bpf": 321,
        "perf_event_open": 298,
        "lookup_dcookie": 212,
        "acct": 163,
        "swapon": 167,
        "swapoff": 168,
        "uselib": 134,
        "ustat": 136,
        "sysfs": 139,
        "_sysctl": 156,
        "nfsservctl": 180,
        "iopl": 172,
        "ioperm": 173,
        "clone": 56,
        "unshare": 272,
        "clone3": 435,
        "mknod": 133,
        "mknodat": 259,
        "mount": 165,
    },
    AUDIT_ARCH_I386: {
        "kexec_load": 283,
        "open_by_handle_at": 342,
        "init_module": 128,
        "finit_module": 350,
        "delete_module": 129,
        "create_module": 127,
        "get_kernel_syms": 130,
        "query_module": 167,
        "umount2": 52,
        "keyctl": 288,
        "add_key": 286,
        "request_key": 287,
        "socket": 359,
        "io_uring_setup": 425,
        "io_uring_enter": 426,
        "io_uring_register": 427,
        "userfaultfd": 374,
        "bpf": 357,
        "perf_event_open": 336,
        "lookup_dcookie": 253,
        "acct": 51,
        "swapon": 87,
        "swapoff": 115,
        "uselib": 86,
        "ustat": 62,
        "sysfs": 135,
        "_sysctl": 149,
        "nfsservctl": 169,
        "iopl": 110,
        "ioperm": 101,
        "vm86old": 113,
        "vm86": 166,
        "clone": 120,
        "unshare": 310,
        "clone3": 435,
        "socketcall": 102,
        "mknod": 14,
        "mknodat": 297,
        "mount": 21,
    },
}

# What runc, crun and Docker refuse by default (EPERM), beyond LXC's list, that a system container never needs.
EPERM_CALLS = (
    "kexec_load",
    "kexec_file_load",
    "open_by_handle_at",
    "init_module",
    "finit_module",
    "delete_module",
    "create_module",
    "get_kernel_syms",
    "query_module",
    "io_uring_setup",
    "io_uring_enter",
    "io_uring_register",
    "userfaultfd",
    "bpf",
    "perf_event_open",
    "lookup_dcookie",
    "acct",
    "swapon",
    "swapoff",
    "uselib",
    "ustat",
    "sysfs",
    "_sysctl",
    "nfsservctl",
    "iopl",
    "ioperm",
    "vm86old",
    "vm86",
)


@dataclass(frozen=True)
class Rule:
    syscall: str
    errno: int
    arg: int | None = None  # which argument to test, if any
    arg_equals: int | None = None
    arg_has_bits: int | None = None
    arg_mask: int | None = None  # with arg_equals: (argument & mask) == arg_equals
    ret: int | None = None  # the filter's answer when not RET_ERRNO | errno (RET_USER_NOTIF)

    @property
    def answer(self) -> int:
        return self.ret if self.ret is not None else RET_ERRNO | self.errno


S_IFMT, S_IFCHR = 0o170000, 0o020000
ACTIONS_AVAIL = "/proc/sys/kernel/seccomp/actions_avail"


def user_notif_available() -> bool:
    """SECCOMP_RET_USER_NOTIF exists (Linux 5.0)."""
    try:
        with open(ACTIONS_AVAIL) as handle:
            return "user_notif" in handle.read().split()
    except OSError:
        return False


def notify_rules(mknod: bool, mount: bool) -> list[Rule]:
    """``features: mknod=1``: character device nodes (mknod's mode argument is the second, mknodat's the
    third) go to the supervisor; other nodes (fifos, sockets, files) stay the kernel's.  ``mount=``: every
    mount(2) does, and the supervisor lets through (SECCOMP_USER_NOTIF_FLAG_CONTINUE) what it does not make."""
    rules = []
    if not user_notif_available():
        return rules  # the start warns (engine.nesting): the kernel's own answer stays
    if mknod:
        for name, arg in (("mknod", 1), ("mknodat", 2)):
            rules.append(Rule(name, 0, arg=arg, arg_equals=S_IFCHR, arg_mask=S_IFMT, ret=RET_USER_NOTIF))
    if mount:
        rules.append(Rule("mount", 0, ret=RET_USER_NOTIF))
    return rules


def default_rules(keyctl: bool = False, nesting: bool = False, i386: bool = False) -> list[Rule]:
    """The deny list; ``keyctl`` and ``nesting`` are the container's features, ``i386`` its ``arch``."""
    rules = [Rule(name, errno.EPERM) for name in EPERM_CALLS]
    rules.append(Rule("umount2", errno.EPERM, arg=1, arg_has_bits=MNT_FORCE))
    rules.append(Rule("socket", errno.EAFNOSUPPORT, arg=0, arg_equals=AF_ALG))
    if not i386:
        rules.append(Rule("socketcall", errno.ENOSYS, arg=0, arg_equals=SYS_SOCKET))
    if not keyctl:
        rules += [Rule(name, errno.ENOSYS) for name in ("keyctl", "add_key", "request_key")]
    if not nesting:
        rules += [
            Rule("clone", errno.EPERM, arg=0, arg_has_bits=CLONE_NEWUSER),
            Rule("unshare", errno.EPERM, arg=0, arg_has_bits=CLONE_NEWUSER),
            Rule("clone3", errno.ENOSYS),
        ]
    return rules


def container_rules(config) -> list[Rule]:
    """The rules for a container's config (its features and arch): the same at start and attach."""
    rules = default_rules(
        keyctl=config.feature("keyctl"), nesting=config.feature("nesting"), i386=config.get("arch") == "i386"
    )
    return rules + notify_rules(config.feature("mknod"), bool((config.get("features") or {}).get("mount")))


def _insn(code: int, jt: int, jf: int, k: int) -> tuple[int, int, int, int]:
    return (code, jt, jf, k & 0xFFFFFFFF)


def _arch_block(numbers: dict[str, int], rules: list[Rule]) -> list[tuple]:
    block = [_insn(LD_ABS, 0, 0, OFF_NR)]
    for rule in rules:
        nr = numbers.get(rule.syscall)
        if nr is None:
            continue
        ret = _insn(RET, 0, 0, rule.answer)
        if rule.arg is None:
            block += [_insn(JEQ, 0, 1, nr), ret]
        elif rule.arg_mask is not None:
            block += [
                _insn(JEQ, 0, 4, nr),
                _insn(LD_ABS, 0, 0, _arg_offset(rule.arg)),
                _insn(AND, 0, 0, rule.arg_mask),
                _insn(JEQ, 0, 1, rule.arg_equals),
                ret,
                _insn(LD_ABS, 0, 0, OFF_NR),
            ]
        else:
            test = (
                _insn(JEQ, 0, 1, rule.arg_equals)
                if rule.arg_equals is not None
                else _insn(JSET, 0, 1, rule.arg_has_bits)
            )
            block += [
                _insn(JEQ, 0, 3, nr),
                _insn(LD_ABS, 0, 0, _arg_offset(rule.arg)),
                test,
                ret,
                _insn(LD_ABS, 0, 0, OFF_NR),
            ]
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
    notify: bool = False  # some rule answers RET_USER_NOTIF: installed with a listener


_COMPILED: dict[tuple[Rule, ...], Filter] = {}


def compile_filter(rules: list[Rule]) -> Filter:
    key = tuple(rules)
    if key not in _COMPILED:
        program = build_program(rules)
        array = (_SockFilter * len(program))(*[_SockFilter(*insn) for insn in program])
        fprog = _SockFprog(len(program), ctypes.cast(array, ctypes.POINTER(_SockFilter)))
        _COMPILED[key] = Filter(array, fprog, any(rule.ret == RET_USER_NOTIF for rule in rules))
    return _COMPILED[key]


def install(program: Filter | list[Rule]) -> None:
    """Load the filter into the calling thread; it is inherited across fork and exec.

    Without no_new_privs the kernel requires CAP_SYS_ADMIN in the current user
    namespace, which container root has: setuid programs inside keep working.
    """
    compiled = program if isinstance(program, Filter) else compile_filter(program)
    syscalls.prctl(syscalls.PR_SET_SECCOMP, syscalls.SECCOMP_MODE_FILTER, ctypes.addressof(compiled.fprog))


SYS_SECCOMP = 317
SECCOMP_SET_MODE_FILTER = 1
FLAG_NEW_LISTENER = 1 << 3
# Once the supervisor has read a call, only a fatal signal ends the wait: an interrupted mount(2) would
# otherwise be restarted and made twice.  (Linux 5.19; older kernels get the plain wait.)
FLAG_WAIT_KILLABLE_RECV = 1 << 5


def install_with_listener(compiled: Filter) -> int:
    """Load a filter with RET_USER_NOTIF rules; return its listener fd (close-on-exec), for the supervisor.

    With no listener left (the supervisor gone) the kernel answers the notified calls ENOSYS at once.
    """
    libc = syscalls.libc
    err = errno.EINVAL
    for flags in (FLAG_NEW_LISTENER | FLAG_WAIT_KILLABLE_RECV, FLAG_NEW_LISTENER):
        fd = libc.syscall(
            ctypes.c_long(SYS_SECCOMP),
            ctypes.c_ulong(SECCOMP_SET_MODE_FILTER),
            ctypes.c_ulong(flags),
            ctypes.c_void_p(ctypes.addressof(compiled.fprog)),
        )
        if fd >= 0:
            return fd
        err = ctypes.get_errno()
        if err != errno.EINVAL:
            break
    raise OSError(err, f"seccomp listener: {os.strerror(err)}")
