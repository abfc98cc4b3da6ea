"""DHCP on a container bridge, served by the node with dnsmasq (Debian package dnsmasq-base).

One dnsmasq per bridge, DHCP only (``port=0``: no DNS, so it never answers for the host),
bound to that bridge alone.  Its files live in ``<state_dir>/<bridge>/``: ``dnsmasq.conf``,
``dnsmasq.pid``, ``leases`` and ``hosts`` (static MAC -> address mappings, re-read on SIGHUP).

dnsmasq runs in the foreground mode (``-k``) in its own session rather than double-forking:
it is still a background service that outlives the call, but the caller is its parent and can
reap it, so no zombie is left on hosts whose PID 1 does not reap.  It drops privileges to the
``dnsmasq`` user, so ``state_dir`` must be traversable by that user (it re-reads ``hosts`` after
dropping them).

Every value that reaches the config file or an argument list is validated first (interface
name rules, ``ipaddress``, MAC and hostname patterns) and no shell is ever involved.
"""

from __future__ import annotations

import ipaddress
import json
import os
import pwd
import re
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from engine.errors import EngineError, ValidationError

IFNAME_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,14}$")
MAC_RE = re.compile(r"^[0-9a-f]{2}(:[0-9a-f]{2}){5}$")
HOSTNAME_RE = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?$")
CLIENT_ID_RE = re.compile(r"^[0-9a-f]{2}(:[0-9a-f]{2})*$")
DNSMASQ_USER = "dnsmasq"


def check_ifname(name: str) -> str:
    """Kernel interface-name rules (1-15 bytes, no '/', ':' or blanks), stricter: no leading '-'."""
    if not isinstance(name, str) or not IFNAME_RE.match(name) or name in (".", ".."):
        raise ValidationError(f"invalid interface name {name!r}", key="bridge")
    return name


def check_mac(mac: str) -> str:
    mac = str(mac).strip().lower()
    if not MAC_RE.match(mac):
        raise ValidationError(f"invalid MAC address {mac!r}", key="mac")
    return mac


@dataclass(frozen=True)
class Lease:
    expiry: int  # seconds since the epoch; 0 means never
    mac: str
    ip: str
    hostname: str | None
    client_id: str | None


class DhcpServer:
    """A DHCP server for one bridge; all methods are idempotent and safe to call from a fresh instance."""

    def __init__(
        self,
        bridge: str,
        subnet: ipaddress.IPv4Network | str,
        range_start,
        range_end,
        state_dir: Path,
        lease_time: int = 3600,
        *,
        router: str | None = None,
        dns_servers: tuple[str, ...] = (),
    ):
        self.bridge = check_ifname(bridge)
        try:
            self.subnet = ipaddress.IPv4Network(str(subnet))
            self.dns_servers = tuple(ipaddress.IPv4Address(str(addr)) for addr in dns_servers)
        except ValueError as exc:
            raise ValidationError(f"DHCP on {self.bridge}: {exc}", key="subnet") from None
        self.range_start = self._host(range_start, "range_start")
        self.range_end = self._host(range_end, "range_end")
        if self.range_start > self.range_end:
            raise ValidationError(f"DHCP range {self.range_start}-{self.range_end} is reversed", key="range_end")
        if not isinstance(lease_time, int) or lease_time < 120:
            raise ValidationError(f"lease time {lease_time!r} must be an integer >= 120 seconds", key="lease_time")
        self.lease_time = lease_time
        self.router = self._host(router, "router") if router else None
        state_dir = Path(state_dir).absolute()
        if re.search(r'[\s,#"\x00-\x1f]', str(state_dir)):
            raise ValidationError(f"state dir {str(state_dir)!r} has characters dnsmasq cannot take", key="state_dir")
        self.dir = state_dir / self.bridge
        self.conf, self.pid_file = self.dir / "dnsmasq.conf", self.dir / "dnsmasq.pid"
        self.lease_file, self.hosts_file = self.dir / "leases", self.dir / "hosts"
        self.log_file = self.dir / "dnsmasq.log"

    def _host(self, value, key: str) -> ipaddress.IPv4Address:
        try:
            addr = ipaddress.IPv4Address(str(value))
        except ValueError as exc:
            raise ValidationError(f"{key}: {exc}", key=key) from None
        if addr not in self.subnet or addr in (self.subnet.network_address, self.subnet.broadcast_address):
            raise ValidationError(f"{key}: {addr} is not a host address of {self.subnet}", key=key)
        return addr

    # ---- process ---------------------------------------------------------------------------
    def _config(self) -> str:
        lines = [
            "port=0",
            f"interface={self.bridge}",
            "bind-interfaces",
            "except-interface=lo",
            "no-resolv",
            "no-hosts",
            "dhcp-authoritative",
            f"user={DNSMASQ_USER}",
            f"pid-file={self.pid_file}",
            f"dhcp-leasefile={self.lease_file}",
            f"dhcp-hostsfile={self.hosts_file}",
            f"dhcp-range={self.range_start},{self.range_end},{self.subnet.netmask},{self.lease_time}s",
        ]
        if self.router:
            lines.append(f"dhcp-option=option:router,{self.router}")
        if self.dns_servers:
            lines.append("dhcp-option=option:dns-server," + ",".join(map(str, self.dns_servers)))
        return "\n".join(lines) + "\n"

    def _pid(self) -> int | None:
        """dnsmasq's pid if it is alive and serving our config (a zombie has no cmdline)."""
        try:
            pid = int(self.pid_file.read_text().strip())
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except (OSError, ValueError):
            return None
        return pid if f"--conf-file={self.conf}".encode() in cmdline else None

    def running(self) -> bool:
        return self._pid() is not None

    def start(self) -> None:
        if self.running():
            return
        binary = shutil.which("dnsmasq") or shutil.which("dnsmasq", path="/usr/sbin:/sbin")
        if not binary:
            raise EngineError(f"cannot start DHCP on bridge {self.bridge}: dnsmasq not found (install dnsmasq-base)")
        if not Path(f"/sys/class/net/{self.bridge}").exists():
            raise EngineError(f"cannot start DHCP on bridge {self.bridge}: no such interface")
        if not any(ipaddress.IPv4Interface(a).ip in self.subnet for a in _addresses(self.bridge)):
            raise EngineError(f"cannot start DHCP on bridge {self.bridge}: it has no address in {self.subnet}")
        self._check_readable()
        self.dir.mkdir(parents=True, exist_ok=True)
        self.dir.chmod(0o755)
        self.hosts_file.touch(mode=0o644, exist_ok=True)
        self.lease_file.touch(mode=0o644, exist_ok=True)
        self.pid_file.unlink(missing_ok=True)
        _write(self.conf, self._config())
        with open(self.log_file, "wb") as log:
            proc = subprocess.Popen(
                [binary, "-k", f"--conf-file={self.conf}"],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                start_new_session=True,
                close_fds=True,
            )
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                why = self.log_file.read_text(errors="replace").strip() or f"exit status {proc.returncode}"
                raise EngineError(f"cannot start DHCP on bridge {self.bridge}: {why}")
            if self._pid() == proc.pid:
                return
            time.sleep(0.02)
        _terminate(proc.pid)
        raise EngineError(f"cannot start DHCP on bridge {self.bridge}: dnsmasq wrote no pid file within 5 s")

    def _check_readable(self) -> None:
        """dnsmasq re-reads the hosts file as its own user: every parent must let that user through."""
        try:
            pwd.getpwnam(DNSMASQ_USER)
        except KeyError:
            raise EngineError(
                f"cannot start DHCP on bridge {self.bridge}: no user {DNSMASQ_USER} (install dnsmasq-base)"
            ) from None
        path = self.dir.parent
        while not path.exists():
            path = path.parent
        for part in [path, *path.parents]:
            if not os.stat(part).st_mode & 0o001:
                raise EngineError(
                    f"cannot start DHCP on bridge {self.bridge}: {part} is not searchable by "
                    f"user {DNSMASQ_USER}; keep the DHCP state dir under world-searchable dirs"
                )

    def stop(self) -> None:
        pid = self._pid()
        if pid is not None:
            _terminate(pid)
        for path in (self.conf, self.pid_file, self.log_file):
            path.unlink(missing_ok=True)

    def _hup(self) -> None:
        pid = self._pid()
        if pid is not None:
            os.kill(pid, signal.SIGHUP)

    # ---- leases ----------------------------------------------------------------------------
    def leases(self) -> list[Lease]:
        """The lease file, one IPv4 lease a line: expiry mac ip hostname|* client-id|* (DHCPv6 lines skipped)."""
        result = []
        try:
            text = self.lease_file.read_text()
        except FileNotFoundError:
            return []
        for line in text.splitlines():
            fields = line.split()
            if len(fields) < 5 or fields[0] == "duid" or not MAC_RE.match(fields[1]):
                continue
            try:
                ipaddress.IPv4Address(fields[2])
                expiry = int(fields[0])
            except ValueError:
                continue
            result.append(
                Lease(
                    expiry,
                    fields[1],
                    fields[2],
                    None if fields[3] == "*" else fields[3],
                    None if fields[4] == "*" else fields[4],
                )
            )
        return result

    def release(self, mac: str) -> None:
        """Drop the leases of a stopped or destroyed container.

        dnsmasq keeps leases in memory and reads the lease file only when it starts, so editing the
        file and sending SIGHUP would not do: the lease would come back on the next write.  While
        dnsmasq runs we send it a DHCPRELEASE with dhcp_release (package dnsmasq-utils), the way
        the lease's own client would; if that tool is missing or the lease survives, dnsmasq is
        stopped, the file rewritten and dnsmasq started again.  When it is not running, the file
        is rewritten only.
        """
        mac = check_mac(mac)
        mine = [lease for lease in self.leases() if lease.mac == mac]
        if not mine:
            return
        tool = shutil.which("dhcp_release")
        if self.running() and tool:
            for lease in mine:
                args = [tool, self.bridge, lease.ip, mac]
                if lease.client_id and CLIENT_ID_RE.match(lease.client_id):
                    args.append(lease.client_id)
                subprocess.run(args, stdin=subprocess.DEVNULL, capture_output=True, check=False)
            deadline = time.monotonic() + 2
            while time.monotonic() < deadline:
                if not any(lease.mac == mac for lease in self.leases()):
                    return
                time.sleep(0.02)
        was_running = self.running()
        if was_running:
            self.stop()
        kept = [
            line
            for line in self.lease_file.read_text().splitlines()
            if len(line.split()) < 2 or line.split()[1].lower() != mac
        ]
        _write(self.lease_file, "".join(line + "\n" for line in kept))
        if was_running:
            self.start()

    # ---- static mappings -------------------------------------------------------------------
    def _hosts(self) -> dict[str, str]:
        try:
            lines = self.hosts_file.read_text().splitlines()
        except FileNotFoundError:
            return {}
        return {line.split(",", 1)[0]: line for line in lines if line.strip()}

    def add_host(self, mac: str, ip: str | None = None, hostname: str | None = None) -> None:
        """Pin a container's address and/or name (dhcp-host line), so it keeps them across restarts."""
        mac = check_mac(mac)
        fields = [mac]
        if ip is not None:
            addr = self._host(ip, "ip")
            taken = [m for m, line in self._hosts().items() if m != mac and str(addr) in line.split(",")[1:]]
            if taken:
                raise ValidationError(f"{addr} is already reserved for {taken[0]} on {self.bridge}", key="ip")
            fields.append(str(addr))
        if hostname is not None:
            if not HOSTNAME_RE.match(hostname):
                raise ValidationError(f"invalid hostname {hostname!r}", key="hostname")
            fields.append(hostname)
        hosts = self._hosts()
        hosts[mac] = ",".join(fields)
        self._save_hosts(hosts)

    def remove_host(self, mac: str) -> None:
        mac = check_mac(mac)
        hosts = self._hosts()
        if hosts.pop(mac, None) is not None:
            self._save_hosts(hosts)

    def _save_hosts(self, hosts: dict[str, str]) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        _write(self.hosts_file, "".join(line + "\n" for line in hosts.values()))
        self._hup()


def _addresses(ifname: str) -> list[str]:
    """The interface's IPv4 addresses as CIDRs (dnsmasq answers only where it has one in the subnet)."""
    done = subprocess.run(["ip", "-j", "-4", "addr", "show", "dev", ifname], capture_output=True, text=True)
    if done.returncode:
        return []
    return [f"{a['local']}/{a['prefixlen']}" for link in json.loads(done.stdout) for a in link.get("addr_info", [])]


def _write(path: Path, text: str) -> None:
    """Write-then-rename, world-readable: dnsmasq (unprivileged) never sees half a file."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    tmp.chmod(0o644)
    os.replace(tmp, path)


def _terminate(pid: int, timeout: float = 5.0) -> None:
    """SIGTERM, then SIGKILL; reap it when it is our child (no zombie), else wait for it to vanish."""
    for sig, wait in ((signal.SIGTERM, timeout), (signal.SIGKILL, 2.0)):
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            try:
                if os.waitpid(pid, os.WNOHANG)[0] == pid:
                    return
            except ChildProcessError:
                try:
                    state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
                except (OSError, IndexError):
                    return
                if state in ("Z", "X"):
                    return
            time.sleep(0.02)
