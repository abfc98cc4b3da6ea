"""A small lab for the network tests: a bridge and namespaces wired with engine-style veth names."""

from __future__ import annotations

import os
import subprocess
import sys

RUN = os.getpid() % 9000
BASE_ID = 900000 + RUN * 10  # veth<ID>i0 stays within 15 characters
TIMEOUT = 0.6  # a dropped packet costs this much

# Runs inside a namespace: TCP listeners that answer "ok", one per port given.
LISTENER = """
import socket, sys, threading
def serve(port):
    s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("0.0.0.0", port)); s.listen(8)
    while True:
        c, _ = s.accept(); c.sendall(b"ok"); c.close()
for p in sys.argv[1:]:
    threading.Thread(target=serve, args=(int(p),), daemon=True).start()
print("ready", flush=True)
sys.stdin.read()
"""
# Runs inside a namespace: argv = proto src dst port; exit 0 if a TCP connect works / a datagram was sent.
CLIENT = """
import socket, sys
proto, src, dst, port = sys.argv[1:5]
s = socket.socket(type=socket.SOCK_STREAM if proto == "tcp" else socket.SOCK_DGRAM)
s.settimeout(float(sys.argv[5]))
if src != "-":
    s.bind((src, 0))
try:
    if proto == "tcp":
        s.connect((dst, int(port))); sys.exit(0 if s.recv(2) == b"ok" else 1)
    s.sendto(b"hello", (dst, int(port)))
except OSError:
    sys.exit(1)
"""


def sh(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(list(args), capture_output=True, text=True, check=check)


class NetLab:
    """A bridge with an address and containers as namespaces plugged in by veth<ID>i0; removes all it made."""

    def __init__(self) -> None:
        self.prefix = f"cs{RUN}"
        self.bridge = f"{self.prefix}br"
        self.subnet = self._free_subnet()
        self.host_ip = f"{self.subnet}.1"
        self.namespaces: list[str] = []
        self.veths: list[str] = []
        self.procs: list[subprocess.Popen] = []
        sh("ip", "link", "add", self.bridge, "type", "bridge")
        sh("ip", "addr", "add", f"{self.host_ip}/24", "dev", self.bridge)
        sh("ip", "link", "set", self.bridge, "up")

    @staticmethod
    def _free_subnet() -> str:
        for third in [RUN % 200 + 20, *range(20, 250)]:
            prefix = f"10.214.{third}.0/24"
            used = (
                sh("ip", "-4", "-o", "addr", "show", "to", prefix).stdout
                + sh("ip", "-4", "route", "show", "table", "all", "root", prefix).stdout
            )
            if not used.strip():
                return f"10.214.{third}"
        raise RuntimeError("no free 10.214.x.0/24 for the test bridge")

    def container(self, n: int, ip: str | None) -> tuple[int, str, str]:
        """A namespace on the bridge: (ctid, netns, mac); eth0 gets ``ip`` (last octet) if given."""
        ctid, ns, mac = BASE_ID + n, f"{self.prefix}n{n}", f"02:00:00:00:{n:02x}:01"
        sh("ip", "netns", "add", ns)
        self.namespaces.append(ns)
        sh("ip", "link", "add", f"veth{ctid}i0", "type", "veth", "peer", "name", "eth0", "netns", ns)
        self.veths.append(f"veth{ctid}i0")
        sh("ip", "-n", ns, "link", "set", "eth0", "address", mac)
        sh("ip", "link", "set", f"veth{ctid}i0", "master", self.bridge, "up")
        sh("ip", "-n", ns, "link", "set", "lo", "up")
        sh("ip", "-n", ns, "link", "set", "eth0", "up")
        if ip:
            sh("ip", "-n", ns, "addr", "add", f"{self.subnet}.{ip}/24", "dev", "eth0")
            self.wait_reachable(f"{self.subnet}.{ip}")
        return ctid, ns, mac

    def wait_reachable(self, address: str, tries: int = 10) -> None:
        """Ping the new namespace from the host until it answers: the link is up and ARP resolved, so a
        test's first connect does not spend its short time-out on either (a loaded machine is slow)."""
        for _ in range(tries):
            if subprocess.run(["busybox", "ping", "-c1", "-W1", address], capture_output=True).returncode == 0:
                return
        raise AssertionError(f"{address} on the test bridge does not answer ping")

    def run(self, ns: str, *args: str, timeout: float = 20) -> subprocess.CompletedProcess:
        return subprocess.run(["ip", "netns", "exec", ns, *args], capture_output=True, text=True, timeout=timeout)

    def listen(self, ns: str, *ports: int) -> None:
        proc = subprocess.Popen(
            ["ip", "netns", "exec", ns, sys.executable, "-c", LISTENER, *map(str, ports)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        self.procs.append(proc)
        assert proc.stdout.readline().strip() == "ready"

    def client(self, ns: str, proto: str, dst: str, port: int, src: str = "-") -> bool:
        return self.run(ns, sys.executable, "-c", CLIENT, proto, src, dst, str(port), str(TIMEOUT)).returncode == 0

    def close(self) -> None:
        for proc in self.procs:
            proc.kill()
            proc.wait()
        for veth in self.veths:  # now: a namespace's own devices go only when the kernel gets round to it
            sh("ip", "link", "del", veth, check=False)
        for ns in self.namespaces:
            sh("ip", "netns", "del", ns, check=False)
        sh("ip", "link", "del", self.bridge, check=False)
