"""Device access control on cgroup2: a BPF_PROG_TYPE_CGROUP_DEVICE program.

cgroup2 has no devices.allow/devices.deny files. The kernel instead runs a BPF
program attached to the cgroup on every device open and mknod; it returns 1 to
allow, 0 to deny (EPERM). We assemble that program from the same DeviceRule
list the v1 driver writes to devices.allow, load it and attach it with the raw
bpf() syscall through ctypes (no libbpf, no compiler needed).

The program is attached with BPF_F_ALLOW_MULTI, so a systemd inside the
container can still attach its own (stricter) programs to sub-cgroups; every
program on the path must allow an access for it to succeed.
"""

from __future__ import annotations

import ctypes
import errno
import os
import platform
import struct
from collections.abc import Iterable

from engine.cgroups.base import DeviceRule
from engine.errors import HostError, NotSupported

_SYS_BPF = {
    "x86_64": 321,
    "aarch64": 280,
    "i686": 357,
    "armv7l": 386,
    "ppc64le": 361,
    "s390x": 351,
    "riscv64": 280,
    "loongarch64": 280,
}
BPF_PROG_LOAD, BPF_PROG_ATTACH, BPF_PROG_DETACH, BPF_PROG_GET_FD_BY_ID, BPF_PROG_QUERY = 5, 8, 9, 13, 16
BPF_PROG_TYPE_CGROUP_DEVICE = 15
BPF_CGROUP_DEVICE = 6
BPF_F_ALLOW_MULTI = 2
# struct bpf_cgroup_dev_ctx { u32 access_type; u32 major; u32 minor; }
# access_type = (BPF_DEVCG_ACC_* << 16) | BPF_DEVCG_DEV_*
_ACC = {"m": 1, "r": 2, "w": 4}
_DEV = {"b": 1, "c": 2}

# Opcodes (class | op | source), see include/uapi/linux/bpf.h.
_LDX_W = 0x61  # BPF_LDX | BPF_MEM | BPF_W
_AND_K = 0x57  # BPF_ALU64 | BPF_AND | BPF_K
_RSH_K = 0x77  # BPF_ALU64 | BPF_RSH | BPF_K
_MOV_K = 0xB7  # BPF_ALU64 | BPF_MOV | BPF_K
_MOV_X = 0xBF  # BPF_ALU64 | BPF_MOV | BPF_X
_JNE_K = 0x55  # BPF_JMP | BPF_JNE | BPF_K
_JNE_X = 0x5D  # BPF_JMP | BPF_JNE | BPF_X
_EXIT = 0x95  # BPF_JMP | BPF_EXIT
_JUMP_TO_NEXT = object()


def _insn(code: int, dst: int = 0, src: int = 0, off: int = 0, imm: int = 0) -> bytes:
    return struct.pack("<BBhi", code, (src << 4) | dst, off, imm)


def assemble(rules: Iterable[DeviceRule]) -> bytes:
    """The program: one block per rule that returns 1 on a match, then ``return 0`` (deny)."""
    code = [
        _insn(_LDX_W, dst=2, src=1, off=0),
        _insn(_AND_K, dst=2, imm=0xFFFF),  # r2 = device type
        _insn(_LDX_W, dst=3, src=1, off=0),
        _insn(_RSH_K, dst=3, imm=16),  # r3 = requested access
        _insn(_LDX_W, dst=4, src=1, off=4),  # r4 = major
        _insn(_LDX_W, dst=5, src=1, off=8),  # r5 = minor
    ]
    for rule in rules:
        block: list = [(_JNE_K, 2, 0, _DEV[rule.kind])]
        acc = sum(_ACC[a] for a in set(rule.access))
        if acc != 7:  # requested access must be a subset of the allowed one
            block += [_insn(_MOV_X, dst=1, src=3), _insn(_AND_K, dst=1, imm=acc), (_JNE_X, 1, 3, 0)]
        if rule.major is not None:
            block.append((_JNE_K, 4, 0, rule.major))
        if rule.minor is not None:
            block.append((_JNE_K, 5, 0, rule.minor))
        block += [_insn(_MOV_K, dst=0, imm=1), _insn(_EXIT)]
        for i, item in enumerate(block):  # a failed check skips to the next rule's block
            if isinstance(item, tuple):
                op, dst, src, imm = item
                block[i] = _insn(op, dst=dst, src=src, off=len(block) - i - 1, imm=imm)
        code += block
    code += [_insn(_MOV_K, dst=0, imm=0), _insn(_EXIT)]
    return b"".join(code)


def _bpf(cmd: int, attr: ctypes.Array) -> int:
    nr = _SYS_BPF.get(platform.machine())
    if nr is None:
        raise NotSupported(f"bpf() syscall number unknown for {platform.machine()}; cannot filter devices on cgroup2")
    libc = ctypes.CDLL(None, use_errno=True)
    libc.syscall.restype = ctypes.c_long
    ret = libc.syscall(ctypes.c_long(nr), ctypes.c_int(cmd), attr, ctypes.c_uint(len(attr)))
    if ret < 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))
    return ret


def load(rules: Iterable[DeviceRule]) -> int:
    """Load the device program; returns its fd. The verifier log is included in errors."""
    insns = assemble(rules)
    prog = ctypes.create_string_buffer(insns, len(insns))
    license = ctypes.create_string_buffer(b"GPL")
    log = ctypes.create_string_buffer(1 << 16)
    for level in (0, 1):  # retry with the verifier log only to explain a failure
        attr = ctypes.create_string_buffer(128)
        struct.pack_into(
            "<IIQQIIQII16sII",
            attr,
            0,
            BPF_PROG_TYPE_CGROUP_DEVICE,
            len(insns) // 8,
            ctypes.addressof(prog),
            ctypes.addressof(license),
            level,
            len(log) if level else 0,
            ctypes.addressof(log) if level else 0,
            0,
            0,
            b"caisson_dev",
            0,
            BPF_CGROUP_DEVICE,
        )
        try:
            return _bpf(BPF_PROG_LOAD, attr)
        except OSError as exc:
            error = exc
    if error.errno == errno.EPERM:
        raise HostError("bpf(BPF_PROG_LOAD) denied: loading a cgroup device program needs CAP_SYS_ADMIN") from error
    if error.errno in (errno.ENOSYS, errno.EINVAL) and not log.value:
        raise NotSupported("the kernel cannot load cgroup device BPF programs (CONFIG_CGROUP_BPF)") from error
    raise HostError(
        f"bpf(BPF_PROG_LOAD) of the device program failed: {error.strerror}; "
        f"verifier: {log.value.decode(errors='replace').strip()[-500:]}"
    ) from error


def attach(cgroup_dir: str, rules: Iterable[DeviceRule]) -> None:
    """Attach an allow-list program to a cgroup2 directory; it stays until the cgroup is removed."""
    prog_fd = load(rules)
    try:
        cg_fd = os.open(cgroup_dir, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError as exc:
        os.close(prog_fd)
        raise HostError(f"cannot open cgroup {cgroup_dir}: {exc.strerror}") from exc
    try:
        attr = ctypes.create_string_buffer(64)
        struct.pack_into("<IIII", attr, 0, cg_fd, prog_fd, BPF_CGROUP_DEVICE, BPF_F_ALLOW_MULTI)
        _bpf(BPF_PROG_ATTACH, attr)
    except OSError as exc:
        raise HostError(f"cannot attach the device program to {cgroup_dir}: {exc.strerror}") from exc
    finally:
        os.close(cg_fd)
        os.close(prog_fd)


def attached(cgroup_dir: str) -> list[int]:
    """IDs of the device programs attached directly to ``cgroup_dir`` (BPF_PROG_QUERY)."""
    ids = (ctypes.c_uint32 * 64)()
    cg_fd = os.open(cgroup_dir, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        attr = ctypes.create_string_buffer(64)
        struct.pack_into("<IIIIQI", attr, 0, cg_fd, BPF_CGROUP_DEVICE, 0, 0, ctypes.addressof(ids), len(ids))
        _bpf(BPF_PROG_QUERY, attr)
    except OSError as exc:
        raise HostError(f"cannot query device programs of {cgroup_dir}: {exc.strerror}") from exc
    finally:
        os.close(cg_fd)
    count = struct.unpack_from("<I", attr, 24)[0]
    return list(ids[:count])


def replace(cgroup_dir: str, rules: Iterable[DeviceRule]) -> None:
    """Swap the cgroup's own device programs for one allowing ``rules`` (a device passed to a running container).

    Every attached program must allow an access, so the new one is attached first and the old ones
    detached after: in between the old list still holds, never more than either list.
    """
    old = attached(cgroup_dir)
    attach(cgroup_dir, rules)
    cg_fd = os.open(cgroup_dir, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        for prog_id in old:
            attr = ctypes.create_string_buffer(64)
            struct.pack_into("<I", attr, 0, prog_id)
            try:
                prog_fd = _bpf(BPF_PROG_GET_FD_BY_ID, attr)
            except OSError as exc:
                raise HostError(f"cannot reach device program {prog_id} of {cgroup_dir}: {exc.strerror}") from exc
            try:
                attr = ctypes.create_string_buffer(64)
                struct.pack_into("<IIII", attr, 0, cg_fd, prog_fd, BPF_CGROUP_DEVICE, 0)
                _bpf(BPF_PROG_DETACH, attr)
            except OSError as exc:
                raise HostError(f"cannot detach device program {prog_id} of {cgroup_dir}: {exc.strerror}") from exc
            finally:
                os.close(prog_fd)
    finally:
        os.close(cg_fd)
