"""The node's bridges: the ones ``<state root>/network/interfaces`` defines (see ``ifupdown``),
created or adopted on the host, plus bridges that already exist there (used as they are).

A bridge Caisson creates has STP off, its MTU pinned (a container's smaller MTU must not lower
the whole bridge) and, without ports, a fixed MAC (so it does not change as containers come and
go).  A missing file means no defined bridges.
"""

from __future__ import annotations

from pathlib import Path

from engine.errors import HostError, NotSupported, ValidationError
from engine.network import netlink
from engine.network.ifupdown import Bridge, parse_interfaces

__all__ = ["Bridge", "NodeNetwork"]
SYS_NET = Path("/sys/class/net")


class NodeNetwork:
    """The bridges of one node: what the interfaces file defines, plus bridges already on the host."""

    def __init__(self, root: Path | str):
        self.path = Path(root) / "network" / "interfaces"
        self._bridges = parse_interfaces(self.path.read_text(), str(self.path)) if self.path.exists() else {}

    def bridges(self) -> dict[str, Bridge]:
        return dict(self._bridges)

    def bridge(self, name: str) -> Bridge:
        """The bridge of that name, defined or present; ValidationError naming it otherwise."""
        if name in self._bridges:
            return self._bridges[name]
        sys_dir = SYS_NET / name
        if not sys_dir.exists():
            raise ValidationError(f"bridge '{name}' does not exist (neither defined in {self.path} nor on the host)")
        if not (sys_dir / "bridge").is_dir():
            raise ValidationError(f"'{name}' is a host interface but not a bridge")
        filtering = sys_dir / "bridge" / "vlan_filtering"  # absent when the kernel cannot filter VLANs
        vlan = filtering.exists() and filtering.read_text().strip() == "1"
        return Bridge(name, vlan_aware=vlan, mtu=int((sys_dir / "mtu").read_text()), defined=False)

    def exists(self, name: str) -> bool:
        """Defined in the interfaces file or present on the host (as anything: :meth:`bridge` says what)."""
        return name in self._bridges or (SYS_NET / name).exists()

    def present(self, name: str) -> bool:
        return (SYS_NET / name / "bridge").is_dir()

    def ensure_bridges(self) -> None:
        """Create the defined bridges that are missing and bring every one to its definition (idempotent).

        One bridge that cannot be made does not keep the others down; the error names every failure.
        """
        failed: list[HostError] = []
        with netlink.host() as ipr:
            for bridge in self._bridges.values():
                try:
                    self._ensure(ipr, bridge)
                except HostError as exc:
                    failed.append(exc)
        self._nat_all()
        if failed:
            kind = NotSupported if all(isinstance(e, NotSupported) for e in failed) else HostError
            raise kind("; ".join(str(e) for e in failed))

    def ensure_bridge(self, name: str) -> Bridge:
        """One bridge, created if it is defined but absent (a start needs it now)."""
        bridge = self.bridge(name)
        if bridge.defined and not self.present(name):
            with netlink.host() as ipr:
                self._ensure(ipr, bridge)
            if bridge.nat:
                from engine.network.nat import apply_nat

                apply_nat(bridge)
        return bridge

    def remove_bridge(self, name: str) -> None:
        """Delete a bridge and its NAT rule (tests, and bridges dropped from the file)."""
        with netlink.host() as ipr:
            info = netlink.link(ipr, name)
            if info is not None and info["kind"] != "bridge":
                raise ValidationError(f"'{name}' is not a bridge; not deleting it")
            if info is not None:
                netlink.delete_link(ipr, name)
        bridge = self._bridges.get(name)
        if bridge is not None and bridge.nat:
            from engine.network.nat import remove_nat

            remove_nat(name)

    def _ensure(self, ipr, bridge: Bridge) -> None:
        info = netlink.link(ipr, bridge.name)
        try:
            if info is None:
                index = netlink.create_bridge(
                    ipr,
                    bridge.name,
                    bridge.vlan_aware,
                    bridge.mtu or 1500,
                    None if bridge.ports else stable_mac(bridge.name),
                )
            elif info["kind"] != "bridge":
                raise HostError(f"bridge '{bridge.name}': the host has an interface of that name that is not a bridge")
            else:
                index = info["index"]
                if bridge.vlan_aware and not info["vlan_filtering"]:
                    netlink.set_vlan_filtering(ipr, index, True)
                if bridge.mtu and info["mtu"] != bridge.mtu:
                    netlink.set_link(ipr, index, mtu=bridge.mtu)
            for cidr in (bridge.address, bridge.address6):
                if cidr is not None:
                    netlink.add_address(ipr, index, str(cidr), exist_ok=True)
            for port in bridge.ports:
                port_info = netlink.link(ipr, port)
                if port_info is None:
                    raise HostError(f"bridge '{bridge.name}': port '{port}' does not exist")
                netlink.set_link(ipr, port_info["index"], master=index, state="up")
            if bridge.vlan_aware:
                for vids in bridge.vids.split():
                    netlink.bridge_vlan(ipr, index, vids, add=True, self_=True)
                    for port in bridge.ports:
                        netlink.bridge_vlan(ipr, netlink.link(ipr, port)["index"], vids, add=True)
            netlink.set_link(ipr, index, state="up")
        except OSError as exc:
            if exc.errno == 95 and bridge.vlan_aware:  # EOPNOTSUPP
                raise NotSupported(
                    f"bridge '{bridge.name}': this kernel has no VLAN filtering on bridges "
                    "(CONFIG_BRIDGE_VLAN_FILTERING); set bridge-vlan-aware no"
                ) from None
            raise HostError(f"bridge '{bridge.name}': {exc.strerror}") from None

    def _nat_all(self) -> None:
        """NAT on where the file says yes; a table left from an earlier 'yes' is removed."""
        import shutil

        from engine.network.nat import apply_nat, nat_table, nat_tables, remove_nat  # nft and logging: only here

        for bridge in self._bridges.values():
            if bridge.nat:
                apply_nat(bridge)
        stale = {nat_table(b.name): b.name for b in self._bridges.values() if not b.nat}
        if stale and shutil.which("nft"):
            for table in nat_tables():
                if table in stale:
                    remove_nat(stale[table])


def stable_mac(name: str) -> str:
    """A fixed MAC for a bridge without ports, so it does not change as containers come and go
    (a bridge otherwise takes its lowest port's MAC).  Bridges with ports keep the uplink's, as in Proxmox."""
    try:
        seed = Path("/etc/machine-id").read_text().strip()
    except OSError:
        seed = ""
    import hashlib

    digest = hashlib.sha256(f"{seed}:{name}".encode()).digest()
    return "02:" + ":".join(f"{b:02X}" for b in digest[:5])
