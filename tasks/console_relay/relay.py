"""One console session on the node: its terminal (or the console log it follows), its output stream, its socket.

Per session the relay holds the pty master, the joiner's pid (a child of
the relay: ``Engine.open_terminal`` forks it, so a terminal costs no
interpreter start and its bytes take one pty hop) and a bounded scrollback.
Reading and sending are decoupled: the pty is drained whenever it is
readable (the kernel's pty buffer holds only about 4 KiB, so a program
writing fast blocks after each 4 KiB until it is read), into the
scrollback, while one sender per session sends whatever has gathered since
its last message, in messages of at most ``CHUNK`` bytes, each with its
offset in the session's output. A keystroke's echo thus goes out at once,
alone, and bulk output goes out in few large messages instead of one per
pty read. At most ``WINDOW`` bytes are unacknowledged by the consumer.
When the window is full, the consumer's channel is full (``ChannelFull``:
the sender waits, the window fills) or no socket is attached, the relay
stops reading the pty, so the program inside blocks as on a real terminal:
no byte is dropped or reordered. A socket that drops leaves the session detached for the grace
period (``CAISSON_CONSOLE_GRACE``, 30 s); a socket that re-attaches within it
gets the output from the offset it had reached. After the grace period every
process of the terminal's session is killed.

A session reaches the channel layer and the node's other sessions only
through its relay (``tasks.console_relay.daemon.Relay``: ``send``, ``spawn``,
``engine``, ``grace``, ``sessions``).
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import os
import signal
import time

from tasks.console_protocol import CHUNK, TRACE_STAGES, WINDOW, error, trace_stamp
from tasks.console_relay.logfollow import CONSOLE_TAIL, LogFollower, children, session_members

log = logging.getLogger("caisson.console")

READ = 64 * 1024  # largest single read of the pty
# Output kept for a re-attaching socket; more than WINDOW + READ, so nothing in flight is lost.
SCROLLBACK = 2 * WINDOW
INPUT_BACKLOG = 256 * 1024  # input the terminal has not read yet; beyond it input is refused
# Bulk output (a message went out less than this long ago and more came since) waits up to this
# long for a full CHUNK: a stream then crosses the channel layer in few large messages instead of
# one per pty read (4 KiB, the kernel's pty buffer). A lone echo finds nothing sent lately and goes at
# once; so does output after input that came since the last message (the echo of fast typing).
# A stream runs at most about 25 MB/s (the pty), so a message carries up to ~200 KiB: a stream's
# cost per byte in the relay, Redis, the web server and the browser falls with fewer messages.
GATHER = 0.008
# Only after a message at least this big (a full read of the kernel's pty buffer: a stream) does the next
# one gather: a command's output after the echo of its Enter is no stream, and goes at once.
STREAM = 4096


class Session(LogFollower):
    """One terminal: its process (or the console log it follows), its output stream and its socket."""

    def __init__(self, relay, sid: str, ctid: int, mode: str, user: int, shell: str | None = None):
        self.relay, self.sid, self.ctid, self.mode, self.user = relay, sid, ctid, mode, user
        self.shell = shell  # shell mode: the shell to run (None: bash if there, else sh)
        self.reply: str | None = None
        self.produced = 0  # output bytes so far
        self.delivered = 0  # output bytes sent to the current reply channel
        self.acked = 0
        self.scroll = bytearray()
        self.scroll_start = 0  # offset of scroll[0]
        self.window = asyncio.Event()  # set: attached and room in the window, so the pty is read
        self.more = asyncio.Event()  # set: output recorded that the sender has not sent yet
        self.hurry = asyncio.Event()  # set: a gathering message should go now (see _gather)
        self.reading = False  # the pty is watched for readability (add_reader)
        self.eof = False  # the pty or log has no more output
        self.send_lock = asyncio.Lock()
        self.pending_input = bytearray()
        self.writing = False
        self.pid: int | None = None  # the joiner (our child)
        self.pidfd: int | None = None
        self.leader: int | None = None  # the command in the container: its session's id
        self.fd: int | None = None  # pty master, or the console log
        self.exit_code: int | None = None
        self.grace: asyncio.TimerHandle | None = None
        self.last_seen = time.monotonic()
        self.last_sent = 0.0  # when the last output message went out (monotonic)
        self.last_size = 0  # bytes in the last output message
        self.last_input = 0.0  # when input last reached the pty (monotonic)
        self.pump: asyncio.Task | None = None
        self.ended = False
        self.told_readonly = False
        self.log_seen = b""  # console mode: the last bytes shown, to find our place in a trimmed log
        self.held_conn = None  # tty mode on a terminal held since the start: the tty holder's connection
        self.trace: list | None = None  # CAISSON_CONSOLE_TRACE: the last input's stamps, sent with the next output

    # ---- starting -------------------------------------------------------------------------------
    def start_terminal(self, cols: int, rows: int) -> None:
        from engine import attach

        if self.mode == "tty" and self._start_held(cols, rows):
            return
        argv = attach.LOGIN_ARGV if self.mode == "tty" else attach.shell_argv(self.shell)
        self.pid, self.fd = self.relay.engine.open_terminal(self.ctid, argv, env=dict(attach.TERMINAL_ENV))
        os.set_blocking(self.fd, False)
        attach.set_winsize(self.fd, rows, cols)
        kids = children(self.pid)
        self.leader = kids[0] if kids else None
        self.pidfd = os.pidfd_open(self.pid)
        asyncio.get_running_loop().add_reader(self.pidfd, self._reap)

    def _start_held(self, cols: int, rows: int) -> bool:
        """The container's own /dev/ttyN with its getty, held since its start (engine.ttys), when one has a
        getty and is free: the session reaches it as lxc-console does, and leaves it running at the end."""
        from engine import attach
        from engine.console import held_terminal

        held = held_terminal(self.relay.engine, self.ctid, "tty")
        if held is None:
            return False
        self.held_conn, self.fd = held
        os.set_blocking(self.fd, False)
        attach.set_winsize(self.fd, rows, cols)
        os.write(self.fd, b"\r")  # the getty shows its prompt again
        return True

    @property
    def follows_log(self) -> bool:
        """Console mode without the held /dev/console (a stopped container, ``console: 0``, or it is attached
        elsewhere): the console log, followed read-only."""
        return self.mode == "console" and self.held_conn is None

    def start_console(self, cols: int, rows: int) -> None:
        """The container's /dev/console held since its start (engine.ttys), read-write as ``python -m engine
        console`` attaches it, after the tail of what init printed; else the console log, read-only."""
        from engine import attach
        from engine.console import held_terminal

        held = held_terminal(self.relay.engine, self.ctid, "console")
        if held is not None:
            self.held_conn, self.fd = held
            self._record(self._log_tail())
            self._record(b"\x1b[7m Console of CT %d: its /dev/console \x1b[0m\r\n" % self.ctid)
            os.set_blocking(self.fd, False)
            attach.set_winsize(self.fd, rows, cols)
            return
        path = self.relay.engine.layout.console_log(self.ctid)
        self.fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK)
        size = os.fstat(self.fd).st_size
        os.lseek(self.fd, max(0, size - CONSOLE_TAIL), os.SEEK_SET)
        banner = b"\x1b[7m Console of CT %d: what its init writes to its output, read-only \x1b[0m\r\n" % self.ctid
        self._record(banner)

    def _reap(self) -> None:
        try:
            pid, status = os.waitpid(self.pid, os.WNOHANG)
        except ChildProcessError:
            pid, status = self.pid, 0
        if pid:
            self.exit_code = os.waitstatus_to_exitcode(status) if os.WIFEXITED(status) else 128 + os.WTERMSIG(status)
            loop = asyncio.get_running_loop()
            loop.remove_reader(self.pidfd)
            os.close(self.pidfd)
            self.pidfd = None
            # The shell is gone; what it left holding the pty (a background job) must not keep the
            # session alive. A moment first, so its last output is read.
            loop.call_later(1.0, lambda: self.ended or self.relay.spawn(self.end("exited")))

    # ---- output ---------------------------------------------------------------------------------
    def _drain_pty(self) -> None:
        """The pty is readable: read all there is now (a few 4 KiB pieces), record it, wake the sender."""
        got = False
        while self.window.is_set():
            try:
                data = os.read(self.fd, READ)
            except BlockingIOError:
                break
            except OSError as exc:
                if exc.errno != errno.EIO:  # EIO: every holder of the pty's other side is gone
                    log.warning("console session %s: reading the pty failed: %s", self.sid, exc)
                data = b""
            if not data:
                self.eof = True
                self._watch(False)
                break
            self._record(data)
            got = True
        if got and self.trace is not None and self.trace[-1][0] != "pty_read":
            trace_stamp(self.trace, "pty_read")
        if got or self.eof:
            self.more.set()
            if self.eof or self.last_input > self.last_sent or self.produced - self.delivered >= CHUNK:
                self.hurry.set()

    def _watch(self, wanted: bool) -> None:
        """Watch the pty for readability while the window is open (and it has not ended)."""
        wanted = wanted and not self.eof and not self.ended and self.fd is not None and not self.follows_log
        if wanted == self.reading:
            return
        loop = asyncio.get_running_loop()
        if wanted:
            loop.add_reader(self.fd, self._drain_pty)
        else:
            loop.remove_reader(self.fd)
        self.reading = wanted

    def _record(self, data: bytes) -> int:
        offset = self.produced
        self.scroll += data
        self.produced += len(data)
        if len(self.scroll) > SCROLLBACK:
            cut = len(self.scroll) - SCROLLBACK
            del self.scroll[:cut]
            self.scroll_start += cut
        self._update_window()
        return offset

    def _update_window(self) -> None:
        if self.reply is not None and self.produced - self.acked < WINDOW:
            self.window.set()
        else:
            self.window.clear()
        if not self.follows_log and self.pump is not None:
            self._watch(self.window.is_set())

    async def run_pump(self) -> None:
        """Send what was recorded (the pty is read by ``_drain_pty``); the console log is polled here."""
        reason = "ended"
        try:
            if self.follows_log:
                while True:
                    await self.window.wait()
                    data = await self._read_log()
                    if not data:
                        reason = "destroyed"
                        break
                    self._record(data)
                    await self._deliver()
            else:
                self._watch(self.window.is_set())
                while True:
                    await self.more.wait()
                    self.more.clear()
                    await self._gather()
                    await self._deliver()
                    if self.delivered >= self.produced:  # what woke it went out in that send loop already
                        self.more.clear()
                    if self.eof and (self.delivered >= self.produced or self.reply is None):
                        break
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - the session ends, the relay goes on
            log.exception("console session %s failed", self.sid)
            reason = f"failed: {exc}"
        await self.end(reason)

    async def _gather(self) -> None:
        """In bulk output (the last message was a stream's), let a message fill up for at most GATHER (the pty
        is read meanwhile), cut short (``hurry``) by a full CHUNK or by output that follows input typed since
        the last message: an echo."""
        now = time.monotonic()
        waited = now - self.last_sent
        if self.last_input > self.last_sent:  # input came since the last message: this is (also) its echo
            return
        if self.last_size < STREAM:  # the last message was no stream's: this starts one, or is a reply
            return
        if waited < GATHER and not self.eof and self.produced - self.delivered < CHUNK:
            self.hurry.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.hurry.wait(), GATHER - waited)

    async def _deliver(self) -> None:
        """Send everything recorded and not yet delivered to the attached socket, in order."""
        async with self.send_lock:
            await self._send_from(self.delivered)

    async def _send_from(self, start: int) -> None:
        reply = self.reply
        while reply is not None and reply == self.reply and start < self.produced:
            if start < self.scroll_start:  # cannot happen with SCROLLBACK > WINDOW; never skip silently
                raise RuntimeError("output fell out of the scrollback before it was delivered")
            begin = start - self.scroll_start
            data = bytes(self.scroll[begin : begin + CHUNK])
            message = {"type": "console.output", "session": self.sid, "offset": start, "data": data}
            if self.trace is not None and self.trace[-1][0] == "pty_read":
                trace_stamp(self.trace, "relay_out")
                message["trace"], self.trace = self.trace, None
            # When it went, not when Redis answered: input may already have come back in between (the echo
            # reached the browser first), and ``_gather`` must see that input as newer than this message.
            self.last_sent, self.last_size = time.monotonic(), len(data)
            if not await self.relay.send(reply, message, lambda: reply == self.reply):
                return
            start += len(data)
            self.delivered = start

    # ---- from the consumer ----------------------------------------------------------------------
    async def attach(self, reply: str, since: int | None, cols: int, rows: int, resumed: bool) -> None:
        previous = self.reply
        if self.grace is not None:
            self.grace.cancel()
            self.grace = None
        if previous and previous != reply:
            await self.relay.send(
                previous,
                {
                    "type": "console.detached",
                    "session": self.sid,
                    "message": "this console was opened in another window",
                },
            )
        async with self.send_lock:
            self.reply = reply
            self.last_seen = time.monotonic()
            reset = since is None or since < self.scroll_start or since > self.produced
            start = self.scroll_start if reset else since
            self.acked = start
            self.delivered = start
            await self.relay.send(
                reply,
                {
                    "type": "console.opened",
                    "session": self.sid,
                    "mode": self.mode,
                    "readonly": self.follows_log,
                    "resumed": resumed,
                    "reset": reset,
                    "offset": start,
                },
            )
            self.resize(cols, rows)
            await self._send_from(start)
            self._update_window()

    def detach(self, reply: str | None = None) -> None:
        if reply is not None and reply != self.reply:
            return
        self.reply = None
        self._update_window()
        if self.grace is None and not self.ended:
            loop = asyncio.get_running_loop()
            self.grace = loop.call_later(self.relay.grace, lambda: self.relay.spawn(self.end("grace period over")))

    def ack(self, offset: int) -> None:
        if isinstance(offset, int) and self.acked < offset <= self.produced:
            self.acked = offset
            self._update_window()

    def resize(self, cols: int, rows: int) -> None:
        if not self.follows_log and self.fd is not None and not self.ended:
            from engine.attach import set_winsize

            set_winsize(self.fd, rows, cols)

    async def input(self, data: bytes, trace=None) -> None:
        """Write input to the terminal; ``trace`` (``tasks.console_protocol``: a list of stamps when on) rides along
        with the next output."""
        if self.follows_log:
            if not self.told_readonly and self.reply:
                self.told_readonly = True
                await self.relay.send(
                    self.reply, error(self.sid, "the console view is read-only; open a shell or tty", fatal=False)
                )
            return
        if len(self.pending_input) + len(data) > INPUT_BACKLOG:
            if self.reply:
                await self.relay.send(
                    self.reply, error(self.sid, "input dropped: the terminal is not reading it", fatal=False)
                )
            return
        self.pending_input += data
        self.last_input = time.monotonic()
        if isinstance(trace, list) and len(trace) < len(TRACE_STAGES):
            trace_stamp(trace, "relay_in")
            self._flush_input()
            trace_stamp(trace, "pty_written")
            self.trace = trace
            return
        self._flush_input()

    def _flush_input(self) -> None:
        loop = asyncio.get_running_loop()
        while self.pending_input and not self.ended:
            try:
                written = os.write(self.fd, self.pending_input)
            except BlockingIOError:
                written = 0
            except OSError:
                self.pending_input.clear()
                break
            del self.pending_input[:written]
            if written == 0:
                if not self.writing:
                    self.writing = True
                    loop.add_writer(self.fd, self._writable)
                return
        if self.writing:
            self.writing = False
            loop.remove_writer(self.fd)

    def _writable(self) -> None:
        self.writing = True
        self._flush_input()

    # ---- ending ---------------------------------------------------------------------------------
    async def end(self, reason: str) -> None:
        if self.ended:
            return
        self.ended = True
        self.window.clear()
        if self.grace is not None:
            self.grace.cancel()
        if self.pump is not None and self.pump is not asyncio.current_task():
            self.pump.cancel()
        self.relay.sessions.pop(self.sid, None)
        loop = asyncio.get_running_loop()
        if self.fd is not None:
            with contextlib.suppress(Exception):
                loop.remove_reader(self.fd)
            self.reading = False
            if self.writing:
                loop.remove_writer(self.fd)
            os.close(self.fd)  # the pty hangs up: the session's leader gets SIGHUP (not a held tty's getty)
            self.fd = None
        if self.held_conn is not None:
            self.held_conn.close()  # the held tty is free again
            self.held_conn = None
        self.kill()
        if self.pid is not None:
            for _ in range(50):
                if self.pidfd is None:
                    break
                await asyncio.sleep(0.02)
            if self.pidfd is not None:  # the joiner outlived its command: it cannot, but never leave it
                with contextlib.suppress(ProcessLookupError):
                    os.kill(self.pid, signal.SIGKILL)
                await asyncio.sleep(0.05)
                self._reap()
        log.info("console session %s (CT %s, %s) ended: %s", self.sid, self.ctid, self.mode, reason)
        if self.reply:
            await self.relay.send(
                self.reply, {"type": "console.exit", "session": self.sid, "code": self.exit_code, "reason": reason}
            )

    def kill(self) -> None:
        """Kill every process of the terminal's session (background jobs included)."""
        if self.leader is None:
            return
        for pid in session_members(self.leader):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
