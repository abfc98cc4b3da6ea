"""Why a container did not start, and what to do about it: a guided diagnosis from the error and the console.

A failed start names its step (``StartError.step``) or the check that refused it; together with the last
lines the container's init wrote to its console and the space left on its root disk's storage, that is
usually enough to say the likely cause and the fix a Proxmox admin would apply. The rules are plain text
matches on the engine's own messages (this module and the engine are one codebase: the messages are
stable), most specific first; whatever none of them matches is shown as it is, with the console.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field

CONSOLE_LINES = 20
LOW_SPACE = 64 << 20  # bytes: below this on the root disk's storage, a full disk is the likely cause


@dataclass
class Diagnosis:
    step: str  # the failed step ("network", "exec", "rootfs", ...)
    error: str  # the engine's message, as the job recorded it
    cause: str  # the likely cause, one sentence
    fix: str  # what to do, one or two sentences
    console: list[str] = field(default_factory=list)  # the console's last lines, oldest first

    def as_dict(self) -> dict:
        return asdict(self)


def console_tail(raw: bytes, lines: int = CONSOLE_LINES) -> list[str]:
    """The last ``lines`` non-empty lines of a console log, terminal escapes removed."""
    text = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]|\x1b\][^\x07]*\x07|\r", "", raw.decode("utf-8", "replace"))
    return [line for line in text.split("\n") if line.strip()][-lines:]


def _rules(error: str, step: str, console: list[str], free: int | None) -> tuple[str, str, str] | None:
    """(step, cause, fix) for the first rule that matches, or None."""
    low = error.lower()
    bridge = re.search(r"bridge '([^']+)' does not exist", error)
    if bridge:
        nic = re.search(r"\b(net\d+)\b", error)
        return (
            "network",
            f"the bridge '{bridge.group(1)}' that {nic.group(1) if nic else 'a network interface'} is plugged into "
            "does not exist on this node (removed, renamed, or never created here)",
            f"create bridge '{bridge.group(1)}' under Node → Network, or edit the interface in the Network tab to "
            "use a bridge the node has; then start again",
        )
    if "no space left" in low or "enospc" in low or (free is not None and free < LOW_SPACE):
        return (
            step or "rootfs",
            "the storage of the container's disks is full" + (f" ({free >> 20} MiB left)" if free is not None else ""),
            "free space on that storage (old backups, unused templates and volumes), or grow the root disk in "
            "Resources → Disks; then start again",
        )
    if step == "rootfs" or "is missing or not a directory" in low:
        return (
            "rootfs",
            "the root disk's volume is not there: its storage is not mounted, or the volume was removed",
            "check that the storage is online and mounted on this node; restore from a backup if the volume is gone",
        )
    if step == "init" or "has no /sbin/init" in low:
        return (
            "init",
            "the root file system has no init program (/sbin/init): the template or the disk is not a bootable system",
            "recreate the container from a complete template, or restore its disk from a backup",
        )
    if step in ("exec", "fork") or "init died" in low or "exited" in low:
        last = console[-1] if console else ""
        return (
            "exec",
            "the container's init started and exited at once"
            + (f"; its console's last words: \u201c{last}\u201d" if last else " without writing to its console"),
            "read the console lines below: a broken /sbin/init, a missing library or a wrong architecture show "
            "there; fix the file system (Console of a rescue container, or a backup) and start again",
        )
    if step == "cgroup" or "cgroup" in low:
        return (
            "cgroup",
            "the node refused the container's resource limits (its control groups)",
            "lower or clear the limits in Resources (memory, CPU, pids) and check the node's cgroup setup "
            "(the node page shows it); then start again",
        )
    if step == "idmap" or "uid_map" in low:
        return (
            "idmap",
            "the user namespace's ID map could not be written: the node's subordinate ID ranges do not cover it",
            "check /etc/subuid and /etc/subgid for root on the node, or make the container privileged if it "
            "must be (a superuser's decision)",
        )
    return None


def diagnose(error: str, step: str | None = None, console: bytes = b"", free: int | None = None) -> Diagnosis:
    """The diagnosis of one failed start: ``error`` the message, ``step`` the ``StartError``'s step if any,
    ``console`` the raw console log, ``free`` the bytes left on the root disk's storage (None: unknown)."""
    tail = console_tail(console)
    found = _rules(error, step or "", tail, free)
    if found is None:
        return Diagnosis(
            step or "start",
            error,
            "no known cause matches this error",
            "read the error and the console lines below; the task's log has the whole start",
            tail,
        )
    found_step, cause, fix = found
    return Diagnosis(found_step, error, cause, fix, tail)
