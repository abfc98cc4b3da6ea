"""Facts about processes read from /proc, without ctypes: cheap enough for every status call."""

from __future__ import annotations

from collections import namedtuple

# state: one letter (R, S, D, Z...); starttime: clock ticks since boot, which with the pid identifies a
# process across pid reuse.  collections' namedtuple, not typing's: the node's tty holder reads this and
# stays small without the typing module.
ProcStat = namedtuple("ProcStat", ("state", "starttime"))


def proc_stat(pid: int) -> ProcStat | None:
    """State and start time from one read of /proc/<pid>/stat; None if the process is gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as handle:
            data = handle.read()
    except (FileNotFoundError, ProcessLookupError):
        return None
    fields = data[data.rindex(b")") + 2 :].split()
    return ProcStat(fields[0].decode(), int(fields[19]))


def proc_starttime(pid: int) -> int | None:
    stat = proc_stat(pid)
    return stat.starttime if stat else None
