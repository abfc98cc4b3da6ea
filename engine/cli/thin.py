"""The command line's thin client: hand a command line to the node's CLI service when one runs.

``python -m engine`` (and ``engine.backup``, ``engine.templates``) spend most of a short command's time
importing the engine. When the node agent runs, it keeps a warm process with everything imported
(:mod:`engine.cli.service`) listening on a Unix socket; this module sends it the command line, the
working directory, the environment and the client's own stdin, stdout and stderr (``SCM_RIGHTS``), so
the command runs there exactly as it would here, writes straight to this terminal or pipe, and its exit
code comes back as ours. Signals that would stop us (Ctrl-C, ``kill``) are passed on to the command.

Only the standard library's smallest modules are imported here: this is the path every CLI call takes.
When there is no service (no agent, a stale socket, another node layout) or the command needs this
process's controlling terminal (``enter``, ``console``, ``exec`` on a terminal), :func:`forward` returns
None and the caller runs the command in-process: the answers and exit codes are the same either way.
"""

from __future__ import annotations

# The C modules under signal, socket and struct: their Python wrappers import enum, selectors and
# collections, which cost more than the rest of a forwarded command (about 8 ms of ~20).
import _signal as signal
import _socket as socket
import _struct as struct
import os

SOCKET_NAME = "cli.sock"
# The programs the service runs, by the name the client gives: the module whose main(argv) it is.
PROGRAMS = {
    "engine": "engine.cli.main",
    "engine.backup": "engine.backup.cli",
    "engine.templates": "engine.templates.cli",
}
# Read when the engine is imported, so a service only serves clients whose values are its own.
LAYOUT_KEYS = ("CAISSON_ROOT", "CAISSON_RUN", "CAISSON_CGROUP_PARENT")
# Verbs that use the caller's controlling terminal: they run in the caller's own process.
TERMINAL_VERBS = frozenset({"enter", "console"})
# Options of every program that take a value, so the verb is found without parsing.
VALUE_OPTIONS = frozenset({"--root", "--run-dir", "--output", "-o"})
HEADER = struct.Struct("!I")
STDIO_FDS = struct.pack("3i", 0, 1, 2)  # SCM_RIGHTS payload: our stdin, stdout and stderr
FORWARDED_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT)
# The service's answers: the command's exit code; KILLED + a signal number when a signal ended it (the
# client then ends by the same signal, as the command in-process would have); or a refusal (another
# node layout: the client runs the command itself).
KILLED = 0x10000
REFUSED = 0xFFFFFFFF


def node_socket() -> str:
    """Where the node's CLI service listens: ``$CAISSON_RUN/cli.sock``."""
    return os.path.join(os.environ.get("CAISSON_RUN", "/run/caisson"), SOCKET_NAME)


def socket_path() -> str | None:
    """Where the client looks: ``CAISSON_CLI_SOCKET`` (empty: never forward), else the node's socket."""
    explicit = os.environ.get("CAISSON_CLI_SOCKET")
    if explicit is not None:
        return explicit or None
    return node_socket()


def _verb(argv: list[str]) -> str | None:
    skip = False
    for arg in argv:
        if skip:
            skip = False
        elif arg in VALUE_OPTIONS:
            skip = True
        elif not arg.startswith("-"):
            return arg
    return None


def wants_own_terminal(argv: list[str]) -> bool:
    """Whether the command needs this process's controlling terminal rather than just its descriptors."""
    verb = _verb(argv)
    return verb in TERMINAL_VERBS or (verb == "exec" and os.isatty(0))


def encode_request(program: str, argv: list[str]) -> bytes:
    """One request: NUL-separated fields (program, cwd, argument count, arguments, environment), which
    ``engine.cli.service.decode_request`` reads."""
    fields = [program, os.getcwd(), str(len(argv)), *argv, *(f"{k}={v}" for k, v in os.environ.items())]
    body = "\0".join(fields).encode("utf-8", "surrogateescape")
    return HEADER.pack(len(body)) + body


def forward(program: str, argv: list[str]) -> int | None:
    """Run ``program argv`` in the node's CLI service and return its exit code, or None to run it here."""
    path = socket_path()
    if not path or os.geteuid() != 0 or wants_own_terminal(argv):
        return None
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.connect(path)
        sock.sendmsg([encode_request(program, argv)], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, STDIO_FDS)])
    except OSError:
        sock.close()
        return None  # no service (or it went away): nothing ran

    def pass_on(signum, _frame):
        try:
            sock.send(bytes((signum,)))
        except OSError:
            pass

    previous = {sig: signal.signal(sig, pass_on) for sig in FORWARDED_SIGNALS}
    try:
        answer = b""
        while len(answer) < HEADER.size:
            chunk = sock.recv(HEADER.size - len(answer))
            if not chunk:
                # The service died under the command; what it did is unknown, so say so rather than rerun it.
                os.write(2, b"error: the node's CLI service stopped while the command ran; check its result\n")
                return 1
            answer += chunk
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        sock.close()
    (code,) = HEADER.unpack(answer)
    if code == REFUSED:
        return None
    if code >= KILLED:
        signum = code - KILLED
        signal.signal(signum, signal.SIG_DFL)
        os.kill(os.getpid(), signum)
        return 128 + signum  # a signal that does not end a process (none of those forwarded)
    return code


def run(program: str) -> int:
    """The ``__main__`` of each program: forward the command line (and end with the command's exit code),
    or run it in this process and return its code."""
    import sys

    code = forward(program, sys.argv[1:])
    if code is None:  # no service, or a command that needs this process's terminal
        import importlib

        return importlib.import_module(PROGRAMS[program]).main()
    # The command ran elsewhere and wrote to our descriptors itself: nothing of ours needs the
    # interpreter's shutdown (a few ms of a short command), so end here with its code.
    flush_stdio()
    os._exit(code & 0xFF)


def flush_stdio() -> None:
    """Write out what Python holds for stdout and stderr before an ``os._exit`` (a closed pipe is no error)."""
    import sys

    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
