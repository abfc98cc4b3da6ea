#!/usr/bin/env python3
"""The browser console's path: keystroke-to-echo round trip and output throughput, against lxc-attach on a pty.

Caisson's side is the whole production path: a websocket client (a minimal
one here, as a browser would speak) → uvicorn and the console consumer →
Redis channel layer → ``python -m tasks.console_relay`` → pty → shell in a
busybox container. The web tier's database is a private SQLite file; the
node name is unique to the run, so its relay channel is its own.

LXC's side: ``lxc-attach -n NAME -- /bin/sh`` on a pty made here, read and
written directly (no network at all), the floor a local terminal gives.

Rows: echo of one keystroke (p50 and p99) with 1 console; the headline, ``--consoles`` (50)
consoles each typing at a person's rate (``--rate``, 10 keys a second, each console starting
at a random phase); the saturation figure beside it, the same consoles each typing as fast as
its echoes come back; throughput of ``cat`` of a ``--mb`` MB file of numbered lines.
"""

from __future__ import annotations

import asyncio
import base64
import os
import pty
import random
import select
import signal
import socket
import statistics
import struct
import subprocess
import sys
import time
from pathlib import Path

from common import REPO, CaissonSide, LxcSide, Report, Session, entry, parser, run

ECHO_GOAL_P99_MS = 10.0
THROUGHPUT_GOAL = 20.0  # MB/s to one browser


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q / 100 * (len(ordered) - 1))))]


# ---- a minimal websocket client (RFC 6455: masked frames out, unmasked in) ----------------------------


class Ws:
    def __init__(self, reader, writer):
        self.reader, self.writer = reader, writer
        self.closed = False

    @classmethod
    async def connect(cls, port: int, path: str, cookie: str) -> Ws:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.get_extra_info("socket").setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        key = base64.b64encode(os.urandom(16)).decode()
        writer.write(
            (
                f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
                f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n"
                f"Origin: http://127.0.0.1:{port}\r\nCookie: {cookie}\r\n\r\n"
            ).encode()
        )
        head = await reader.readuntil(b"\r\n\r\n")
        if b" 101 " not in head.split(b"\r\n", 1)[0]:
            raise RuntimeError(f"websocket refused: {head[:200]!r}")
        return cls(reader, writer)

    def send(self, data: bytes, text: bool = False) -> None:
        opcode = 0x1 if text else 0x2
        mask = os.urandom(4)
        n = len(data)
        if n < 126:
            header = struct.pack("!BB", 0x80 | opcode, 0x80 | n)
        elif n < 65536:
            header = struct.pack("!BBH", 0x80 | opcode, 0x80 | 126, n)
        else:
            header = struct.pack("!BBQ", 0x80 | opcode, 0x80 | 127, n)
        masked = bytes(b ^ mask[i % 4] for i, b in enumerate(data)) if n < 256 else _mask(data, mask)
        self.writer.write(header + mask + masked)

    async def recv(self) -> tuple[int, bytes]:
        b1, b2 = await self.reader.readexactly(2)
        n = b2 & 0x7F
        if n == 126:
            n = struct.unpack("!H", await self.reader.readexactly(2))[0]
        elif n == 127:
            n = struct.unpack("!Q", await self.reader.readexactly(8))[0]
        payload = await self.reader.readexactly(n) if n else b""
        opcode = b1 & 0x0F
        if opcode == 0x8:
            self.closed = True
        return opcode, payload


def _mask(data: bytes, mask: bytes) -> bytes:
    key = int.from_bytes((mask * (len(data) // 4 + 1))[: len(data)], "big")
    return (int.from_bytes(data, "big") ^ key).to_bytes(len(data), "big")


# ---- Caisson's side: web server, relay, database ------------------------------------------------------


class Stack:
    """The web server (python -m webui.serve) + console relay on a private SQLite database and node name."""

    def __init__(self, s: Session, caisson: CaissonSide, ctid: int):
        self.node = f"bench{os.getpid()}"
        data = s.workdir / "web"
        data.mkdir()
        self.env = {
            **caisson.env,
            "CAISSON_ROOT": str(caisson.root),
            "CAISSON_RUN": str(caisson.run_dir),
            "CAISSON_CGROUP_PARENT": "caisson-bench",
            "CAISSON_WEB_DATA": str(data),
            "CAISSON_NODE": self.node,
            "DJANGO_SETTINGS_MODULE": "webui.settings",
        }
        self.env.pop("DATABASE_URL", None)
        os.environ.update({k: v for k, v in self.env.items() if k.startswith(("CAISSON_", "DJANGO_"))})
        os.environ.pop("DATABASE_URL", None)
        run([sys.executable, "manage.py", "migrate", "--noinput", "-v0"], env={**self.env, "PWD": str(REPO)})
        import django

        django.setup()
        from django.contrib.auth.models import User
        from django.test import Client

        from webui.models import Container, Node

        node = Node.objects.create(name=self.node)
        Container.objects.create(ctid=ctid, node=node, status="running", hostname="bench-console")
        self.user = User.objects.create_superuser("bench", "bench@example.org", "bench-password")
        self.client = Client()
        self.client.force_login(self.user)
        self.cookie = f"sessionid={self.client.cookies['sessionid'].value}"
        self.ctid = ctid
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = probe.getsockname()[1]
        logs = s.workdir / "logs"
        logs.mkdir()
        self.procs = []
        for name, argv in (
            ("web", ["-m", "webui.serve", "--host", "127.0.0.1", "--port", str(self.port)]),
            ("relay", ["-m", "tasks.console_relay", "--loglevel", "WARNING"]),
        ):
            out = open(logs / f"{name}.log", "wb")
            proc = subprocess.Popen(
                [sys.executable, *argv],
                cwd=REPO,
                env=self.env,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
            self.procs.append(proc)
            s.stack.callback(_stop, proc)
        deadline = time.monotonic() + 30
        while b"console relay ready" not in (logs / "relay.log").read_bytes() or not _answers(self.port):
            if time.monotonic() > deadline or any(p.poll() is not None for p in self.procs):
                raise RuntimeError("web server or relay did not start; see " + str(logs))
            time.sleep(0.1)

    def ticket(self) -> str:
        answer = self.client.post(f"/ct/{self.ctid}/console/ticket", {"mode": "shell"}, HTTP_HOST="127.0.0.1")
        return answer.json()["ticket"]

    async def open(self) -> Console:
        ticket = await asyncio.to_thread(self.ticket)
        ws = await Ws.connect(self.port, f"/ws/console/{self.ctid}/?ticket={ticket}&cols=120&rows=40", self.cookie)
        console = Console(ws)
        while True:  # the status frame, then the prompt
            opcode, payload = await ws.recv()
            if opcode == 0x1 and b'"status"' in payload:
                break
            if opcode == 0x8:
                raise RuntimeError(f"console refused: {payload!r}")
        await console.read_until(b"# ")
        return console


def _answers(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()


class Console:
    def __init__(self, ws: Ws):
        self.ws = ws
        self.buffer = bytearray()

    async def read_until(self, marker: bytes) -> None:
        while marker not in self.buffer:
            opcode, payload = await self.ws.recv()
            if opcode == 0x2:
                self.buffer += payload
            elif opcode == 0x8:
                raise RuntimeError("console closed")
        del self.buffer[: self.buffer.index(marker) + len(marker)]

    async def echo(self, key: bytes) -> float:
        self.buffer.clear()
        start = time.perf_counter_ns()
        self.ws.send(key)
        await self.read_until(key)
        return (time.perf_counter_ns() - start) / 1e6

    async def throughput(self, path: str, marker: bytes) -> tuple[float, int]:
        self.buffer.clear()
        got = 0
        start = time.perf_counter_ns()
        self.ws.send(f"cat {path}; echo {marker.decode()[:4]}''{marker.decode()[4:]}\r".encode())
        tail = b""
        while True:
            opcode, payload = await self.ws.recv()
            if opcode != 0x2:
                continue
            got += len(payload)
            tail = (tail + payload)[-64:]
            if marker in tail:
                break
        return (time.perf_counter_ns() - start) / 1e9, got


async def keystrokes(console: Console, count: int) -> list[float]:
    samples = []
    for i in range(count):
        samples.append(await console.echo(b"x"))
        if i % 50 == 49:
            console.ws.send(b"\x15")  # Ctrl-U: an empty line again
            await asyncio.sleep(0.01)
    console.ws.send(b"\x15")
    return samples


# ---- LXC's side: lxc-attach on a pty, read and written here -------------------------------------------


class LxcTerm:
    def __init__(self, argv: list[str]):
        self.pid, self.fd = pty.fork()
        if self.pid == 0:
            os.execvp(argv[0], argv)
        self.buffer = bytearray()
        self.read_until(b"# ", 20)

    def read_until(self, marker: bytes, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while marker not in self.buffer:
            ready, _, _ = select.select([self.fd], [], [], max(0.0, deadline - time.monotonic()))
            if not ready:
                raise RuntimeError(f"lxc-attach: no {marker!r}; got {bytes(self.buffer[-200:])!r}")
            self.buffer += os.read(self.fd, 65536)
        del self.buffer[: self.buffer.index(marker) + len(marker)]

    def echo(self, key: bytes) -> float:
        self.buffer.clear()
        start = time.perf_counter_ns()
        os.write(self.fd, key)
        self.read_until(key)
        return (time.perf_counter_ns() - start) / 1e6

    def throughput(self, path: str, marker: bytes) -> tuple[float, int]:
        got, tail = 0, b""
        start = time.perf_counter_ns()
        os.write(self.fd, f"cat {path}; echo {marker.decode()[:4]}''{marker.decode()[4:]}\r".encode())
        while marker not in tail:
            data = os.read(self.fd, 65536)
            got += len(data)
            tail = (tail + data)[-64:]
        return (time.perf_counter_ns() - start) / 1e9, got

    def close(self) -> None:
        os.write(self.fd, b"exit\r")
        for _ in range(100):
            if os.waitpid(self.pid, os.WNOHANG)[0]:
                break
            time.sleep(0.02)
        else:
            os.kill(self.pid, signal.SIGKILL)
            os.waitpid(self.pid, 0)
        os.close(self.fd)


async def paced_keystrokes(console: Console, count: int, rate: float) -> list[float]:
    """Type ``count`` keys at ``rate`` a second, as a person would (a random phase first), timing each echo."""
    await asyncio.sleep(random.random() / rate)
    start = time.monotonic()
    samples = []
    for i in range(count):
        await asyncio.sleep(max(0.0, start + i / rate - time.monotonic()))
        samples.append(await console.echo(b"x"))
        if i % 50 == 49:
            console.ws.send(b"\x15")
    console.ws.send(b"\x15")
    return samples


def lxc_keystrokes(term: LxcTerm, count: int) -> list[float]:
    samples = []
    for i in range(count):
        samples.append(term.echo(b"x"))
        if i % 50 == 49:
            os.write(term.fd, b"\x15")
            time.sleep(0.01)
    os.write(term.fd, b"\x15")
    return samples


def main() -> None:
    p = parser(__doc__.splitlines()[0], templates=("busybox",))
    p.add_argument("--keys", type=int, default=500, help="keystrokes timed per console (default %(default)s)")
    p.add_argument("--consoles", type=int, default=50, help="consoles typing at once (default %(default)s)")
    p.add_argument("--mb", type=int, default=50, help="size of the file cat prints (default %(default)s MB)")
    p.add_argument("--rounds", type=int, default=3, help="throughput rounds per side (default %(default)s)")
    p.add_argument(
        "--rate", type=float, default=10.0, help="keys a second each console types, a person's (default %(default)s)"
    )
    args = p.parse_args()
    lines = args.mb * 1_000_000 // 8

    with Session("console", args) as s:
        template = s.template(args.template)
        caisson, lxc = CaissonSide(s), LxcSide(s)
        ctid = caisson.create(template, "bench-console", {"swap": "0"})
        caisson.engine.start(ctid)
        name = lxc.create(template, "console")
        run(lxc.start_argv(name))
        for argv in (lxc.attach_argv(name, "/bin/sh", "-c", f"seq -w 1 {lines} > /tmp/big"),):
            run(argv)
        caisson.engine.exec(ctid, ["/bin/sh", "-c", f"seq -w 1 {lines} > /tmp/big"])
        stack = Stack(s, caisson, ctid)

        async def caisson_side() -> dict:
            one = await stack.open()
            await keystrokes(one, 50)  # warm-up
            single = await keystrokes(one, args.keys)
            rates = []
            for _ in range(args.rounds):
                seconds, got = await one.throughput("/tmp/big", b"DONE-MARK")
                rates.append(got / seconds / 1e6)
            many = [await stack.open() for _ in range(args.consoles)]
            await asyncio.gather(*(keystrokes(c, 20) for c in many))
            paced = await asyncio.gather(*(paced_keystrokes(c, max(20, args.keys // 5), args.rate) for c in many))
            results = await asyncio.gather(*(keystrokes(c, max(20, args.keys // 5)) for c in many))
            return {
                "single": single,
                "paced": [x for r in paced for x in r],
                "many": [x for r in results for x in r],
                "rates": rates,
            }

        measured = asyncio.run(caisson_side())

        term = LxcTerm(lxc.attach_argv(name, "/bin/sh", "-l"))
        lxc_keystrokes(term, 50)
        lxc_single = lxc_keystrokes(term, args.keys)
        lxc_rates = []
        for _ in range(args.rounds):
            seconds, got = term.throughput("/tmp/big", b"DONE-MARK")
            lxc_rates.append(got / seconds / 1e6)
        terms = [LxcTerm(lxc.attach_argv(name, "/bin/sh", "-l")) for _ in range(args.consoles)]
        lxc_many: list[float] = []
        for _ in range(max(20, args.keys // 5)):  # lxc-attach ptys have no shared path: time them in turn
            for t in terms:
                lxc_many.append(t.echo(b"x"))
        for t in [term, *terms]:
            t.close()

        report = Report(
            f"browser console: echo and throughput — {args.template} template",
            {
                "keystrokes per console": args.keys,
                "concurrent consoles": args.consoles,
                "file": f"{args.mb} MB of numbered lines",
                "throughput rounds": args.rounds,
            },
            notes=s.notes
            + [
                "Caisson: websocket → uvicorn → Redis channel layer → console relay → pty → sh; "
                "LXC: lxc-attach on a local pty (no network, no web tier), the floor.",
                "With N consoles Caisson's N clients type at once; LXC's ptys are timed in turn.",
            ],
        )
        n = min(len(measured["single"]), len(lxc_single))
        report.add(
            "echo p99, 1 console", measured["single"][:n], lxc_single[:n], limit=ECHO_GOAL_P99_MS, statistic="p99"
        )
        n = min(len(measured["paced"]), len(lxc_many))
        report.add(
            f"echo p99, {args.consoles} consoles typing {args.rate:g} keys/s each",
            measured["paced"][:n],
            lxc_many[:n],
            limit=ECHO_GOAL_P99_MS,
            statistic="p99",
        )
        n = min(len(measured["many"]), len(lxc_many))
        report.add(
            f"echo, {args.consoles} consoles at once, as fast as echoes come (saturation)",
            measured["many"][:n],
            lxc_many[:n],
        )
        report.add(
            "cat throughput (MB/s, higher is better)", measured["rates"], lxc_rates, unit="MB/s", floor=THROUGHPUT_GOAL
        )
        report.finish(args.json)
        print()
        for label, a, b in (
            ("1 console", measured["single"], lxc_single),
            (f"{args.consoles} consoles at {args.rate:g} keys/s", measured["paced"], lxc_many),
            (f"{args.consoles} consoles, saturation", measured["many"], lxc_many),
        ):
            print(
                f"echo {label}: Caisson p50 {pct(a, 50):.2f} ms p99 {pct(a, 99):.2f} ms | "
                f"lxc-attach p50 {pct(b, 50):.3f} ms p99 {pct(b, 99):.3f} ms | "
                f"ratio p50 {pct(a, 50) / pct(b, 50):.1f}× p99 {pct(a, 99) / pct(b, 99):.1f}× "
                f"(goal p99 < {ECHO_GOAL_P99_MS:g} ms: {'met' if pct(a, 99) < ECHO_GOAL_P99_MS else 'NOT met'})"
            )
        mean_c, mean_l = statistics.median(measured["rates"]), statistics.median(lxc_rates)
        print(
            f"throughput: Caisson {mean_c:.1f} MB/s | lxc-attach {mean_l:.1f} MB/s | ratio {mean_c / mean_l:.2f}× "
            f"(goal ≥ {THROUGHPUT_GOAL:g} MB/s: {'met' if mean_c >= THROUGHPUT_GOAL else 'NOT met'})"
        )


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    entry(main)
