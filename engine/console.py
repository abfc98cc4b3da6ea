"""console: the calling terminal attached to a running container as its ``cmode`` says (``pct console``).

- ``tty`` (Proxmox's default): the container's own login prompt on a new pty
  (its getty, else ``login``), as a getty on ``/dev/ttyN`` would offer;
- ``shell``: a root login shell;
- ``console``: what init writes to its standard output and error (the
  console log, :mod:`engine.consolelog`), from the last screenful, followed
  live and read-only until the container stops.

The escape key (``Ctrl-a``, ``--escape`` to change, as ``lxc-console`` and
``pct console``) followed by ``q`` detaches; escape twice sends it once.  A
``tty`` or ``shell`` terminal ends with the detach (its processes get the
hang-up): the engine keeps no process per container that could hold a
terminal open across attaches.
"""

from __future__ import annotations

import os
import select
import signal
import sys
import time

from engine.errors import InvalidState, ValidationError

FOLLOW_INTERVAL = 0.2
TAIL_BYTES = 4096
MODES = ("tty", "shell", "console")


def parse_escape(text: str) -> int:
    """``^a`` (or ``^A``) names Ctrl-a; a single character names itself."""
    if len(text) == 2 and text[0] == "^" and text[1].isalpha():
        return ord(text[1].lower()) - ord("a") + 1
    if len(text) == 1:
        return ord(text)
    raise ValidationError(f"escape: '{text}' is not a key (e.g. ^a, ^b)", key="escape")


class Escape:
    """The detach sequence on a byte stream: ``feed`` returns what to pass on, or None to detach."""

    def __init__(self, key: int):
        self.key, self.pending = key, False

    def feed(self, data: bytes) -> bytes | None:
        out = bytearray()
        for byte in data:
            if self.pending:
                self.pending = False
                if byte in (ord("q"), ord("Q")):
                    return None
                out.append(self.key)
                if byte != self.key:
                    out.append(byte)
            elif byte == self.key:
                self.pending = True
            else:
                out.append(byte)
        return bytes(out)


def mode_of(config) -> str:
    return str(config.current.get("cmode") or "tty")


def attach(engine, ctid: int, escape: int = 1, mode: str | None = None, stdin=None, stdout=None) -> int:
    """Attach until detach or the container side ends; 0 on detach, else the terminal's exit code."""
    config = engine.config(ctid)
    mode = mode or mode_of(config)
    if mode not in MODES:
        raise ValidationError(f"mode: '{mode}' is not one of {', '.join(MODES)}", key="mode")
    if not engine.node.running(ctid):
        raise InvalidState(f"container {ctid} is not running")
    stdin = sys.stdin.fileno() if stdin is None else stdin
    stdout = sys.stdout.fileno() if stdout is None else stdout
    key = f"Ctrl+{chr(escape + 96)}" if escape < 27 else chr(escape)
    note = f"Connected to CT {ctid} ({mode}). Type <{key} q> to detach.\r\n"
    os.write(stdout, note.encode())
    with _raw(stdin):
        if mode in ("console", "tty"):
            held = held_terminal(engine, ctid, mode)
            if held is not None:
                conn, master = held
                try:
                    return _attached(engine, ctid, mode, master, Escape(escape), stdin, stdout)
                finally:
                    os.close(master)
                    conn.close()
        if mode == "console":
            return _follow_log(engine, ctid, Escape(escape), stdin, stdout)
        from engine.attach import LOGIN_ARGV, SHELL_ARGV, TERMINAL_ENV, set_winsize

        pid, master = engine.open_terminal(ctid, LOGIN_ARGV if mode == "tty" else SHELL_ARGV, TERMINAL_ENV)
        try:
            size = _winsize(stdin)
            if size:
                set_winsize(master, *size)
            detached = _pump(master, Escape(escape), stdin, stdout)
        finally:
            os.close(master)
        if detached:
            os.kill(pid, signal.SIGHUP)
        _, status = os.waitpid(pid, 0)
        return 0 if detached else os.waitstatus_to_exitcode(status)


def held_terminal(engine, ctid: int, mode: str):
    """(connection, master) of the container's /dev/console, or of its first free /dev/ttyN; None if none."""
    from engine import ttys

    names = ["console"] if mode == "console" else [n for n in ttys.held(engine.layout.run, ctid) if n != "console"]
    for name in names:
        try:
            held = ttys.attach(engine.layout.run, ctid, name)
        except InvalidState:
            continue  # busy: the next one
        if held is None:
            continue
        if mode == "tty" and not _in_use(engine, ctid, held[1]):
            os.close(held[1])  # no getty there (an init without tty lines): the next one, or a fresh getty
            held[0].close()
            continue
        return held
    return None


def _in_use(engine, ctid: int, master: int) -> bool:
    """Whether a process of the container has the pty of ``master`` as its controlling terminal (a getty)."""
    import fcntl
    import struct

    from engine.ttys import TIOCGPTN

    number = struct.unpack("I", fcntl.ioctl(master, TIOCGPTN, b"\0\0\0\0"))[0]
    wanted = ((136 + number // 256) << 8) | (number % 256)  # devpts: majors 136-143, tty_nr's encoding
    for pid in engine.cgroups.procs(str(ctid)):
        try:
            with open(f"/proc/{pid}/stat", "rb") as handle:
                fields = handle.read().rpartition(b")")[2].split()
        except OSError:
            continue
        if len(fields) > 4 and int(fields[4]) == wanted:
            return True
    return False


def _attached(engine, ctid: int, mode: str, master: int, escape: Escape, stdin: int, stdout: int) -> int:
    """A terminal held from the container's start: its bytes both ways; on /dev/console also what init
    writes to its own output (the console log), as both are the container's console."""
    from engine.attach import set_winsize

    size = _winsize(stdin)
    if size:
        set_winsize(master, *size)
    follow = None
    if mode == "console":
        path = engine.layout.console_log(ctid)
        engine.drain_console(ctid)
        shown = [_tail(path)]
        os.write(stdout, shown[0])

        def follow() -> bytes:
            engine.drain_console(ctid)
            new = _after(path, shown[0])
            if new:
                shown[0] = (shown[0] + new)[-TAIL_BYTES:]
            return new

    else:
        os.write(master, b"\r")  # the getty waiting there shows its prompt again
    _pump(master, escape, stdin, stdout, follow)
    return 0


def _pump(master: int, escape: Escape, stdin: int, stdout: int, follow=None) -> bool:
    """Bytes both ways; True when the user detached, False when the container side hung up.
    ``follow``, called every FOLLOW_INTERVAL, returns more output to show (the console log)."""
    inputs = [master, stdin]
    while True:
        try:
            ready, _, _ = select.select(inputs, [], [], FOLLOW_INTERVAL if follow else None)
        except InterruptedError:
            continue
        if follow is not None:
            more = follow()
            if more:
                os.write(stdout, more)
        if master in ready:
            try:
                data = os.read(master, 65536)
            except OSError:
                data = b""
            if not data:
                return False
            os.write(stdout, data)
        if stdin in ready:
            data = os.read(stdin, 4096)
            if not data:
                inputs.remove(stdin)
                continue
            passed = escape.feed(data)
            if passed is None:
                return True
            if passed:
                os.write(master, passed)


def _follow_log(engine, ctid: int, escape: Escape, stdin: int, stdout: int) -> int:
    """The console log from its last TAIL_BYTES, then what init writes, until detach or stop."""
    path = engine.layout.console_log(ctid)
    engine.drain_console(ctid)
    shown = _tail(path)
    os.write(stdout, shown)
    inputs = [stdin]
    while True:
        ready, _, _ = select.select(inputs, [], [], FOLLOW_INTERVAL)
        if stdin in ready:
            data = os.read(stdin, 4096)
            if not data:
                inputs.remove(stdin)
            elif escape.feed(data) is None:
                return 0
        if not engine.node.running(ctid):
            os.write(stdout, f"\r\nCT {ctid} stopped.\r\n".encode())
            return 0
        engine.drain_console(ctid)
        new = _after(path, shown)
        if new:
            os.write(stdout, new)
            shown = (shown + new)[-TAIL_BYTES:]
        elif not inputs:
            time.sleep(FOLLOW_INTERVAL)


def _tail(path) -> bytes:
    try:
        with open(path, "rb") as handle:
            handle.seek(max(0, os.fstat(handle.fileno()).st_size - TAIL_BYTES))
            return handle.read()
    except FileNotFoundError:
        return b""


def _after(path, shown: bytes) -> bytes:
    """What the log holds after the bytes already shown (found again by their last bytes when rewritten)."""
    data = _tail(path) if not shown else _read(path)
    if not shown:
        return data
    mark = shown[-256:]
    at = data.rfind(mark)
    return data[at + len(mark) :] if at >= 0 else data[-TAIL_BYTES:]


def _read(path) -> bytes:
    try:
        with open(path, "rb") as handle:
            return handle.read()
    except FileNotFoundError:
        return b""


def _winsize(fd: int) -> tuple[int, int] | None:
    import fcntl
    import struct
    import termios

    try:
        rows, cols = struct.unpack("HHHH", fcntl.ioctl(fd, termios.TIOCGWINSZ, b"\0" * 8))[:2]
        return rows, cols
    except OSError:
        return None


class _raw:
    """The calling terminal in raw mode for the block (nothing when stdin is not a terminal)."""

    def __init__(self, fd: int):
        self.fd, self.saved = fd, None

    def __enter__(self):
        import termios
        import tty

        if os.isatty(self.fd):
            self.saved = termios.tcgetattr(self.fd)
            tty.setraw(self.fd, termios.TCSANOW)
        return self

    def __exit__(self, *exc):
        import termios

        if self.saved is not None:
            termios.tcsetattr(self.fd, termios.TCSADRAIN, self.saved)
        return False
