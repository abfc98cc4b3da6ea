#!/usr/bin/env python3
"""One veth on a bridge: start, stop and throughput, Caisson against LXC.

Both sides boot the same rootfs with one interface on the same bridge, which the benchmark makes
for itself (``cbn<hex>``, a private 10.213.N.0/24 found nowhere else on the host, never routed or
NATed) and removes at the end with every port left on it. Rows:

* start until ``true`` answers inside, with one veth: ``e.start(c); e.exec(c, ["true"])`` in this
  process against ``lxc-start -d`` + ``lxc-attach -- true``; the same with no network in the same
  rounds, and the difference, sample by sample: what one interface adds to a start;
* hard stop with one veth: ``e.stop`` against ``lxc-stop -k``, and again what the interface adds;
  also the time until the host end has left the bridge: the kernel deletes it as the container's
  network namespace goes, which may finish after the call returns (polled, and waited for before
  every next sample so that neither side's leftovers slow the other);
* throughput from the host to the container over the veth: ``iperf3 -s -1`` run by the host in
  the container's network namespace (``nsenter --net=/proc/<init>/ns/net``), ``iperf3 -c`` on the
  host, in Gbit/s;
* throughput between two containers on the bridge: a second container per side, the server in the
  first one's namespace and the client in the second one's, both the host's ``iperf3`` entered with
  ``nsenter --net`` (the templates carry no iperf3, and a static build is not packaged; only the
  network namespace matters for the path measured, veth - bridge - veth).

``--template debian`` gives the same rows for a Debian system (no network against one veth).

Rounds alternate Caisson with veth, LXC with veth, Caisson without, LXC without.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import secrets
import shutil
import subprocess
import time
from pathlib import Path

from common import (
    CaissonSide,
    LxcSide,
    Report,
    Session,
    alternate,
    entry,
    fmt,
    ms_since,
    parser,
    reap_children,
    run,
)

START_GOAL = 0.5  # start_to_exec.py's warm goal, here with one veth on each side
STOP_GOAL = 1.0
NET_LIMIT_MS = 3.0  # network set-up per interface on the warm path
IPERF_PORT = 5201
SYS_NET = Path("/sys/class/net")


def free_subnet() -> int:
    """A third octet N such that no host address or route touches 10.213.N.0/24."""
    seen = run_text(["ip", "-4", "-o", "addr"]) + run_text(["ip", "-4", "route", "show", "table", "all"])
    rest = [n for n in range(1, 250) if n % 50]
    for n in [*random.sample(range(250, 255), 5), *random.sample(rest, len(rest))]:
        if f"10.213.{n}." not in seen:
            return n
    raise RuntimeError("no free 10.213.N.0/24 on this host")


def run_text(argv: list[str]) -> str:
    return subprocess.run(argv, capture_output=True, text=True, check=True).stdout


def remove_bridge(name: str) -> None:
    """Delete the bridge, every port still on it (all of them ours: nothing else uses it) and the
    veth pair the deletion timing makes."""
    brif = SYS_NET / name / "brif"
    ports = sorted(os.listdir(brif)) if brif.is_dir() else []
    for link in [*ports, f"{name}a", name]:
        if (SYS_NET / link).exists():
            run(["ip", "link", "del", link], check=False)


def stop_servers(servers: list[subprocess.Popen]) -> None:
    for server in servers:
        if server.poll() is None:
            server.kill()
            server.wait()


def listening(pid: int, port: int) -> bool:
    """Is a TCP socket listening on ``port`` in the network namespace of ``pid``?"""
    for table in ("tcp", "tcp6"):
        with contextlib.suppress(OSError):
            for line in Path(f"/proc/{pid}/net/{table}").read_text().splitlines()[1:]:
                local, state = line.split()[1], line.split()[3]
                if state == "0A" and int(local.rsplit(":", 1)[1], 16) == port:
                    return True
    return False


def wait_address(pid: int, addr: str) -> None:
    """Until ``addr`` is on eth0 in the network namespace of ``pid`` (up to 20 s)."""
    deadline = time.monotonic() + 20
    while f" {addr}/24 " not in run_text(
        ["nsenter", f"--net=/proc/{pid}/ns/net", "ip", "-4", "-o", "addr", "show", "dev", "eth0"]
    ):
        if time.monotonic() > deadline:
            raise RuntimeError(f"the container answering for {addr} does not have it on eth0")
        time.sleep(0.1)


def main() -> None:
    p = parser(__doc__.splitlines()[0], runs=20)
    p.add_argument(
        "--stop-idle",
        type=float,
        default=0.05,
        metavar="SECONDS",
        help="pause between the untimed start and the timed stop (default %(default)s)",
    )
    p.add_argument(
        "--iperf-runs", type=int, default=3, help="iperf3 runs per side, after one warm-up (default %(default)s)"
    )
    p.add_argument("--iperf-time", type=int, default=3, help="seconds per iperf3 run (default %(default)s)")
    args = p.parse_args()
    if not shutil.which("iperf3") or not shutil.which("nsenter"):
        raise SystemExit("iperf3 and nsenter are needed: apt-get install -y iperf3")

    with Session("network", args) as s:
        bridge = f"cbn{secrets.token_hex(2)}"
        s.stack.callback(remove_bridge, bridge)  # registered first, so it runs after the containers are gone
        servers: list[subprocess.Popen] = []
        s.stack.callback(stop_servers, servers)
        template = s.template(args.template)
        caisson, lxc = CaissonSide(s), LxcSide(s)
        subnet = free_subnet()
        gw, c_ip, l_ip, c_ip2, l_ip2 = (f"10.213.{subnet}.{h}" for h in (1, 2, 3, 4, 5))
        defs = caisson.root / "network" / "interfaces"
        defs.parent.mkdir(parents=True, exist_ok=True)
        defs.write_text(f"auto {bridge}\niface {bridge} inet static\n    address {gw}/24\n    bridge-ports none\n")
        from engine.network import NodeNetwork, netlink

        NodeNetwork(caisson.root).ensure_bridge(bridge)  # as the node does at boot; LXC needs it too
        c_net = caisson.create(template, "bench-net", {"net0": f"name=eth0,bridge={bridge},ip={c_ip}/24,gw={gw}"})
        c_none = caisson.create(template, "bench-nonet")
        l_net = lxc.create(
            template,
            "net",
            net=[
                "lxc.net.0.type = veth",
                f"lxc.net.0.link = {bridge}",
                "lxc.net.0.flags = up",
                "lxc.net.0.name = eth0",
                f"lxc.net.0.ipv4.address = {l_ip}/24",
                f"lxc.net.0.ipv4.gateway = {gw}",
            ],
        )
        l_none = lxc.create(template, "nonet")
        c_net2 = caisson.create(template, "bench-net2", {"net0": f"name=eth0,bridge={bridge},ip={c_ip2}/24"})
        l_net2 = lxc.create(
            template,
            "net2",
            net=[
                "lxc.net.0.type = veth",
                f"lxc.net.0.link = {bridge}",
                "lxc.net.0.flags = up",
                "lxc.net.0.name = eth0",
                f"lxc.net.0.ipv4.address = {l_ip2}/24",
            ],
        )
        e = caisson.engine

        def lxc_pid(name: str) -> int:
            return int(run_text(lxc.cmd("lxc-info", name, "-p", "-H")).strip())

        # Both sides really have eth0 with their address, and a port on the bridge (untimed); that the host
        # reaches them over it, the iperf3 runs show.
        e.start(c_net)
        run(lxc.start_argv(l_net))
        # (A Debian container's own ifupdown sets its static address once its networking unit runs.)
        for pid, addr in ((e.status(c_net, stats=False).pid, c_ip), (lxc_pid(l_net), l_ip)):
            wait_address(pid, addr)
        if len(os.listdir(SYS_NET / bridge / "brif")) != 2:
            raise RuntimeError(f"expected two ports on {bridge}: {os.listdir(SYS_NET / bridge / 'brif')}")
        caisson.stop(c_net)
        lxc.stop(l_net)

        brif = SYS_NET / bridge / "brif"

        def settled(start_ns: int) -> float:
            """Wait until no port is left on the bridge (the kernel has finished deleting the host end);
            ms from ``start_ns`` until then. Between samples it keeps one side's leftovers off the next."""
            deadline = time.monotonic() + 5
            while os.listdir(brif):
                if time.monotonic() > deadline:
                    raise RuntimeError(f"ports stay on {bridge}: {os.listdir(brif)}")
                time.sleep(0.0002)
            return ms_since(start_ns)

        def caisson_answer(ctid: int) -> None:
            if e.exec(ctid, ["true"]) != 0:
                raise RuntimeError(f"exec true in container {ctid} failed")

        sides = {  # key: (start, answer, stop); only the first or the last is timed
            "c_net": (lambda: e.start(c_net), lambda: caisson_answer(c_net), lambda: e.stop(c_net)),
            "l_net": (
                lambda: run(lxc.start_argv(l_net)),
                lambda: run(lxc.attach_argv(l_net)),
                lambda: run(lxc.cmd("lxc-stop", l_net, "-k")),
            ),
            "c_none": (lambda: e.start(c_none), lambda: caisson_answer(c_none), lambda: e.stop(c_none)),
            "l_none": (
                lambda: run(lxc.start_argv(l_none)),
                lambda: run(lxc.attach_argv(l_none)),
                lambda: run(lxc.cmd("lxc-stop", l_none, "-k")),
            ),
        }
        until_gone: dict[str, list[float]] = {"c_net": [], "l_net": []}
        lingered: dict[str, list[bool]] = {"c_net": [], "l_net": []}

        def timed_start(key: str):
            def step() -> float:
                begin, answer, stop = sides[key]
                start = time.perf_counter_ns()
                begin()
                answer()
                elapsed = ms_since(start)
                stop()
                reap_children()
                settled(time.perf_counter_ns())
                return elapsed

            return step

        def timed_stop(key: str):
            def step() -> float:
                begin, _, stop = sides[key]
                begin()
                time.sleep(args.stop_idle)
                start = time.perf_counter_ns()
                stop()
                elapsed = ms_since(start)
                if key in lingered:
                    lingered[key].append(bool(os.listdir(brif)))
                    until_gone[key].append(settled(start))
                reap_children()
                return elapsed

            return step

        starts = alternate(
            [(key, timed_start(key)) for key in sides], args.runs, args.warmup, label="start→exec", idle=args.idle
        )
        stops = alternate([(key, timed_stop(key)) for key in sides], args.runs, args.warmup, label="hard stop")
        for key in until_gone:
            del until_gone[key][: args.warmup], lingered[key][: args.warmup]

        # The kernel's share of a stop: deleting one veth pair that sits on the bridge (netlink, warm).
        deletes = []
        with netlink.host() as ipr:
            for i in range(args.runs + args.warmup):
                a, b = f"{bridge}a", f"{bridge}b"
                run(["ip", "link", "add", a, "type", "veth", "peer", "name", b])
                run(["ip", "link", "set", a, "master", bridge, "up"])
                start = time.perf_counter_ns()
                netlink.delete_link(ipr, a)
                if i >= args.warmup:
                    deletes.append(ms_since(start))

        # Throughput: both containers up, one iperf3 server per run in the container's netns.
        e.start(c_net)
        run(lxc.start_argv(l_net))
        pids = {c_ip: e.status(c_net, stats=False).pid, l_ip: lxc_pid(l_net)}
        for addr, pid in pids.items():
            wait_address(pid, addr)

        def iperf(addr: str, client_pid: int | None = None):
            def step() -> float:
                server = subprocess.Popen(
                    [
                        "nsenter",
                        f"--net=/proc/{pids[addr]}/ns/net",
                        "iperf3",
                        "-s",
                        "-1",
                        "-B",
                        addr,
                        "-p",
                        str(IPERF_PORT),
                    ],
                    stdin=subprocess.DEVNULL,
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                )
                servers.append(server)
                deadline = time.monotonic() + 5
                while not listening(pids[addr], IPERF_PORT):
                    if server.poll() is not None or time.monotonic() > deadline:
                        raise RuntimeError(f"iperf3 server for {addr} did not come up")
                    time.sleep(0.01)
                inside = ["nsenter", f"--net=/proc/{client_pid}/ns/net"] if client_pid else []
                out = run_text([*inside, "iperf3", "-c", addr, "-p", str(IPERF_PORT), "-t", str(args.iperf_time), "-J"])
                server.wait(timeout=10)
                servers.remove(server)
                return json.loads(out)["end"]["sum_received"]["bits_per_second"] / 1e9

            return step

        gbits = alternate([("caisson", iperf(c_ip)), ("lxc", iperf(l_ip))], args.iperf_runs, 1, label="iperf3")
        e.start(c_net2)
        run(lxc.start_argv(l_net2))
        second = {"caisson": e.status(c_net2, stats=False).pid, "lxc": lxc_pid(l_net2)}
        wait_address(second["caisson"], c_ip2)
        wait_address(second["lxc"], l_ip2)
        between = alternate(
            [("caisson", iperf(c_ip, second["caisson"])), ("lxc", iperf(l_ip, second["lxc"]))],
            args.iperf_runs,
            1,
            label="iperf3 container to container",
        )
        caisson.stop(c_net2)
        lxc.stop(l_net2)
        caisson.stop(c_net)
        lxc.stop(l_net)

        def minus(a: list[float], b: list[float]) -> list[float]:
            return [x - y for x, y in zip(a, b, strict=True)]

        forward = Path("/proc/sys/net/ipv4/ip_forward").read_text().strip()
        report = Report(
            f"one veth on a bridge: start, stop, throughput — {args.template} template",
            {
                "runs": args.runs,
                "warm-ups": args.warmup,
                "iperf3": f"{args.iperf_runs} × {args.iperf_time} s",
                "order": "Caisson LXC Caisson LXC …",
                "bridge": f"{bridge} {gw}/24",
                "idle before each start": f"{args.idle:g} s",
                "pause before each stop": f"{args.stop_idle:g} s",
            },
            notes=s.notes,
        )
        report.add(
            "start→exec, one veth: e.start+e.exec  vs  lxc-start -d + lxc-attach",
            starts["c_net"],
            starts["l_net"],
            goal=START_GOAL,
        )
        report.add("start→exec, no network (same rounds)", starts["c_none"], starts["l_none"])
        report.add(
            "network set-up per interface: start one veth − start no network",
            minus(starts["c_net"], starts["c_none"]),
            minus(starts["l_net"], starts["l_none"]),
            limit=NET_LIMIT_MS,
            note="differences taken round by round; the ratio of two small noisy differences is only indicative",
        )
        report.add("hard stop, one veth: e.stop  vs  lxc-stop -k", stops["c_net"], stops["l_net"], goal=STOP_GOAL)
        report.add(
            "hard stop, one veth, until its host end is gone from the bridge",
            until_gone["c_net"],
            until_gone["l_net"],
            note="the stop call plus any wait, polled every 0.2 ms, until the bridge has "
            f"no port left; the host end was still there when the call returned in {sum(lingered['c_net'])}/"
            f"{args.runs} Caisson and {sum(lingered['l_net'])}/{args.runs} LXC stops (the kernel still "
            "deleting it as the container's network namespace goes)",
        )
        report.add("hard stop, no network (same rounds)", stops["c_none"], stops["l_none"])
        report.add(
            "network tear-down per interface: stop one veth − stop no network",
            minus(stops["c_net"], stops["c_none"]),
            minus(stops["l_net"], stops["l_none"]),
        )
        report.add(
            "throughput host → container, iperf3 TCP",
            gbits["caisson"],
            gbits["lxc"],
            unit="Gbit/s",
            note="higher is better; iperf3 -s -1 in the container's netns via nsenter, client on the host",
        )
        report.add(
            "throughput container → container on the bridge, iperf3 TCP",
            between["caisson"],
            between["lxc"],
            unit="Gbit/s",
            note="higher is better; server and client each in one container's netns via nsenter (the host's iperf3)",
        )
        report.notes.append(
            f"kernel: deleting one veth pair on the bridge explicitly (RTM_DELLINK, warm netlink "
            f"socket, in this process): {fmt(deletes)} ms — what a stop pays if it deletes the host "
            "end itself and waits; when the container's network namespace goes, the kernel deletes "
            "the pair in its own clean-up work instead, off the caller's path."
        )
        report.notes.append(
            f"host: net.ipv4.ip_forward = {forward} (left as it was); the bridge's subnet exists "
            "only on the bridge; nothing is routed or NATed."
        )
        report.finish(args.json)


if __name__ == "__main__":
    entry(main)
