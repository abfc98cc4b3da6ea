"""Two migration endpoints in network namespaces of their own, joined by one veth the test makes."""

from __future__ import annotations

import os
import subprocess
from contextlib import contextmanager


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
