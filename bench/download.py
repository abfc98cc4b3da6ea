#!/usr/bin/env python3
"""Download a template from a loopback HTTP server: the engine's downloader against curl, same file.

The server is Python's http.server in its own process on 127.0.0.1 serving one file of --size MB
(random bytes, so nothing compresses); both clients write into the same directory and the file is
removed after each sample. The engine also verifies the sha512, makes the file durable (fdatasync)
and renames atomically; curl only writes, so a second row compares with ``curl -o`` followed by
``sync -d`` on the file (the same durability, without the checksum). Goal: within 1.1x of that.
A last row times the sha512 of the same bytes alone, from memory, in this process: the checksum
the engine must compute is a floor of its own (one core), whatever the network and the disk do.
"""

from __future__ import annotations

import hashlib
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

from common import Report, Session, alternate, entry, ms_since, parser

from engine.templates.aplinfo import Entry
from engine.templates.download import download

GOAL = 1.1


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def main() -> None:
    p = parser(__doc__.splitlines()[0], runs=5, warmup=1, templates=("busybox",))
    p.add_argument("--size", type=int, default=256, help="file size in MB (default %(default)s)")
    args = p.parse_args()
    with Session("download", args) as s:
        work = Path(s.workdir)
        served, dest = work / "served", work / "dest"
        served.mkdir()
        dest.mkdir()
        name = "bench-1.0-1_amd64.tar.zst"
        digest = hashlib.sha512()
        with open(served / name, "wb") as handle:
            for _ in range(args.size):
                chunk = os.urandom(1 << 20)
                digest.update(chunk)
                handle.write(chunk)
        port = free_port()
        server = subprocess.Popen(
            [sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1", "--directory", str(served)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        s.stack.callback(server.wait)
        s.stack.callback(server.kill)
        url = f"http://127.0.0.1:{port}/{name}"
        deadline = time.monotonic() + 10
        while subprocess.run(["curl", "-sf", "-o", "/dev/null", "-r", "0-0", url]).returncode != 0:
            if time.monotonic() > deadline:
                raise RuntimeError("the loopback server did not come up")
            time.sleep(0.1)
        item = Entry(
            name=name,
            package="bench",
            version="1.0",
            os="none",
            section="system",
            type="lxc",
            arch="amd64",
            location=url,
            source_id="bench",
            sha512=digest.hexdigest(),
        )

        def caisson() -> float:
            start = time.perf_counter_ns()
            path = download(item, dest)
            elapsed = ms_since(start)
            path.unlink()
            return elapsed

        def curl(sync: bool = False) -> float:
            """``curl -o``, and with ``sync`` the data flushed to disk too, as the engine's download does."""
            target = dest / name
            start = time.perf_counter_ns()
            subprocess.run(["curl", "-sf", "-o", str(target), url], check=True)
            if sync:
                subprocess.run(["sync", "-d", str(target)], check=True)
            elapsed = ms_since(start)
            target.unlink()
            return elapsed

        block = os.urandom(4 << 20)

        def sha512() -> float:
            """The checksum alone: sha512 over as many bytes, from memory."""
            start = time.perf_counter_ns()
            h = hashlib.sha512()
            for _ in range(args.size // 4):
                h.update(block)
            return ms_since(start)

        samples = alternate(
            [("caisson", caisson), ("curl", curl), ("curl_sync", lambda: curl(sync=True)), ("sha512", sha512)],
            args.runs,
            args.warmup,
            label="download",
        )
        report = Report(f"download {args.size} MB from a loopback server", {"runs": args.runs}, against="curl")
        mb = args.size
        report.add("download: engine (verified, atomic) vs curl -o", samples["caisson"], samples["curl"])
        report.add(
            "download: engine vs curl -o && sync -d (same durability)",
            samples["caisson"],
            samples["curl_sync"],
            goal=GOAL,
        )
        report.add(
            "floor: sha512 of as many bytes alone vs curl -o && sync -d", samples["sha512"], samples["curl_sync"]
        )
        report.add(
            "throughput",
            [mb / (ms / 1000) for ms in samples["caisson"]],
            [mb / (ms / 1000) for ms in samples["curl"]],
            unit="MB/s",
        )
        report.finish(args.json)


if __name__ == "__main__":
    entry(main)
