"""The isolated bridge of a restore test: a bridge with no uplink, made for one throwaway container.

A restore test whose policy checks a TCP port "from outside" needs the
throwaway reachable, but never on the original's network: the copy would
answer on the original's addresses.  So the test makes a bridge of its own,
``rtb<ID>``, with no port but the throwaway's veth, no NAT and no route
beyond it: the host holds ``169.254.X.Y+1/30`` on it, the throwaway gets
``+2/30`` on its ``eth0`` and no gateway.  The host's check connects to that
address with its socket bound to the bridge (``SO_BINDTODEVICE``), so it
reaches the copy over that bridge only.  The bridge is removed when the
test ends, whatever its outcome.

The /30 is derived from the throwaway's ID (unique on the node while the
test runs), outside 169.254.169.0/24, where clouds keep their metadata
service.
"""

from __future__ import annotations

import contextlib
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass

from engine.errors import HostError
from engine.network import netlink

PREFIX = "rtb"


@dataclass(frozen=True)
class TestBridge:
    name: str
    host: str  # the host's address on it
    guest: str  # the throwaway's address

    def net0(self) -> str:
        """The throwaway's interface on this bridge (a fixed address, no gateway, no firewall)."""
        return f"name=eth0,bridge={self.name},ip={self.guest}/30"


def addresses(ctid: int) -> tuple[str, str]:
    """The host's and the throwaway's address in the /30 of ``ctid``."""
    n = ctid % (253 * 64)
    third = 1 + n // 64
    if third >= 169:
        third += 1
    base = (n % 64) * 4
    return f"169.254.{third}.{base + 1}", f"169.254.{third}.{base + 2}"


@contextlib.contextmanager
def isolated_bridge(ctid: int) -> Iterator[TestBridge]:
    """Make the bridge for throwaway ``ctid``, yield it, remove it (also when the block fails)."""
    name = f"{PREFIX}{ctid}"
    if len(name) > 15:
        raise HostError(f"restore test bridge name '{name}' is longer than 15 characters")
    host, guest = addresses(ctid)
    with netlink.host() as ipr:
        if netlink.link(ipr, name) is not None:
            raise HostError(f"interface '{name}' already exists; a restore test of CT {ctid} may be running")
        index = netlink.create_bridge(ipr, name, False, 1500, None)
        try:
            netlink.add_address(ipr, index, f"{host}/30")
            netlink.set_link(ipr, index, state="up")
        except BaseException:
            netlink.delete_link(ipr, name)
            raise
    try:
        yield TestBridge(name, host, guest)
    finally:
        with netlink.host() as ipr:
            netlink.delete_link(ipr, name)


def reachable(bridge: TestBridge, port: int, timeout: float = 1.0) -> bool:
    """Whether a TCP connection from the host to the throwaway's ``port`` succeeds over ``bridge`` only."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, bridge.name.encode())
        sock.settimeout(timeout)
        sock.connect((bridge.guest, port))
        return True
    except OSError:
        return False
    finally:
        sock.close()


def wait_reachable(bridge: TestBridge, port: int, deadline: float, alive) -> None:
    """Poll until the port answers over the bridge; ``alive()`` raises when the container stopped."""
    while not reachable(bridge, port):
        alive()
        if time.monotonic() > deadline:
            raise TimeoutError(f"TCP port {port} does not answer at {bridge.guest} over bridge {bridge.name}")
        time.sleep(0.2)
