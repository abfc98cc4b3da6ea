"""Busybox (Caisson's own template) and any distribution no family knows.

Busybox has no network manager: the engine sets static addresses from
outside, and for ``ip=dhcp`` a marked block in ``/etc/inittab`` has init
respawn ``udhcpc`` in the foreground with the engine's event script, which
adds the lease's address and router and renews it.  An unknown distribution
gets hostname, hosts and resolv.conf, and a sysvinit power-off line.
"""

from __future__ import annotations

from pathlib import Path

from engine import inits
from engine.distro.base import DistroSetup, register
from engine.distro.debian import POWERFAIL
from engine.distro.text import BEGIN, REMOVE, modify_block

MANAGED = "# Managed by caisson: rewritten at each start from the container's netN settings."
UDHCPC_SCRIPT = "etc/caisson/udhcpc.script"
UDHCPC_EVENTS = f"""#!/bin/sh
{MANAGED}
# busybox udhcpc event script; run as "udhcpc.script run IFACE" from inittab it runs the client itself.
if [ "$1" = run ]; then
	/sbin/udhcpc -f -i "$2" -x hostname:"$(hostname)" -s "$0"
	sleep 2  # init respawns us: not in a tight loop if the interface is gone
	exit 0
fi
case "$1" in
	deconfig)
		ip -4 addr flush dev "$interface" scope global 2>/dev/null
		ip link set "$interface" up
		;;
	bound|renew)
		ip -4 addr flush dev "$interface" scope global 2>/dev/null
		ip addr add "$ip/${{mask:-24}}" dev "$interface"
		for r in $router; do ip route replace default via "$r" dev "$interface"; break; done
		;;
esac
exit 0
"""


class Generic(DistroSetup):
    """No family known: the files every distribution reads, static addresses set from outside."""

    name = "generic"
    configures_addresses = False

    def setup_init(self) -> None:
        """sysvinit powers off on SIGPWR only through a ``powerfail`` line in inittab: make sure there is one."""
        old = self.root.read("etc/inittab")
        if old is None or self.init_name() != "sysvinit":
            return
        if any(
            len(line.split(":")) >= 4 and line.split(":")[2] in ("powerfail", "powerwait") for line in old.splitlines()
        ):
            return
        self.root.write("etc/inittab", old + ("" if old.endswith("\n") or not old else "\n") + POWERFAIL)

    def init_name(self) -> str | None:
        init = inits.detect(Path(self.root.path))
        return init.name if init else None


@register("busybox")
class Busybox(Generic):
    name = "busybox"

    def setup_init(self) -> None:
        super().setup_init()  # a busybox tree booting another init still needs its power-off line
        block = "\n".join(
            f"::respawn:/{UDHCPC_SCRIPT} run {nic.name}" for nic in self.settings.nics if nic.ip == "dhcp"
        )
        if block:
            self.root.write(UDHCPC_SCRIPT, UDHCPC_EVENTS, mode=0o755)
        old = self.root.read("etc/inittab")
        if old is None or (not block and BEGIN not in old):
            return
        new = modify_block(old, block)
        if new is not None and new is not REMOVE:
            self.root.write("etc/inittab", new)


@register("unmanaged")
class Unmanaged(Generic):
    """``ostype: unmanaged``: the engine leaves the container's files alone."""

    name = "unmanaged"

    def pre_start(self) -> None:
        pass

    def post_create(self, password_hash, ssh_keys, rand=None) -> None:
        pass

    def create_fixups(self, rand=None) -> None:
        pass
