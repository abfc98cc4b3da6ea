"""Two migration endpoints in network namespaces of their own, joined by one veth the test makes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from contextlib import contextmanager
from pathlib import Path


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, text=True)


@contextmanager
def veth_pair():
    """(source netns, source address, target netns, target address): traffic only between the two."""
    tag = f"cmig{os.getpid() % 100000}"
    a, b = f"{tag}a", f"{tag}b"
    _ip("netns", "add", a)
    try:
        _ip("netns", "add", b)
        try:
            _ip("link", "add", f"{tag}x", "netns", a, "type", "veth", "peer", "name", f"{tag}y", "netns", b)
            for ns, dev, addr in ((a, f"{tag}x", "10.254.77.1/30"), (b, f"{tag}y", "10.254.77.2/30")):
                _ip("-n", ns, "addr", "add", addr, "dev", dev)
                _ip("-n", ns, "link", "set", dev, "up")
                _ip("-n", ns, "link", "set", "lo", "up")
            yield a, "10.254.77.1", b, "10.254.77.2"
        finally:
            subprocess.run(["ip", "netns", "del", b], capture_output=True)
    finally:
        subprocess.run(["ip", "netns", "del", a], capture_output=True)


def receiver(
    env: dict, ctid: int, identity: Path, netns: str, address: str, fault: str | None = None, storage: str | None = None
):
    """``python -m engine migrate-receive`` started with ``env``'s layout, trusting ``identity``'s certificate;
    returns (process, its endpoint line: address, port, fingerprint)."""
    from engine.migrate.channel import certificate_of

    cert = identity.with_suffix(".crt")
    cert.write_text(certificate_of(identity))
    if fault:
        env = {**env, "CAISSON_FAULT_AT": fault}
    argv = ["migrate-receive", str(ctid), "--peer-cert", str(cert), "--listen", f"{address}:0", "--netns", netns]
    if storage:
        argv += ["--storage", storage]
    proc = subprocess.Popen(
        [sys.executable, "-m", "engine", *argv],
        cwd=Path(__file__).resolve().parents[2],
        env={**env, "CAISSON_CLI_SOCKET": ""},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    line = proc.stdout.readline()
    if not line:
        raise RuntimeError(f"the receiver did not start: {proc.stderr.read()}")
    return proc, json.loads(line)
