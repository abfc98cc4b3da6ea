"""Facts about processes read from /proc, without ctypes: cheap enough for every status call."""
from __future__ import annotations


def proc_starttime(pid: int) -> int | None:
    """The process start time in clock ticks: with the pid, it identifies a process across pid reuse."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as handle:
            data = handle.read()
    except (FileNotFoundError, ProcessLookupError):
        return None
    fields = data[data.rindex(b")") + 2:].split()
    return int(fields[19])


def proc_state(pid: int) -> str | None:
    try:
        with open(f"/proc/{pid}/stat", "rb") as handle:
            data = handle.read()
    except (FileNotFoundError, ProcessLookupError):
        return None
    return chr(data[data.rindex(b")") + 2])
