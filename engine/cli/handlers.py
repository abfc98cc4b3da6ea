"""The longer bodies of the core verbs of ``python -m engine`` (:mod:`engine.cli.main` dispatches to them).

Each imports its engine module when called, so that ``--help`` and the other verbs stay quick to start.
"""

from __future__ import annotations

import sys
from pathlib import Path

from engine.cli.output import emit_json, table
from engine.errors import ValidationError
from engine.units import human_bytes, human_duration


def provisioning_step(engine, args):
    """The create's ``finish`` step writing the cloud-init seed or first-boot script given as files, or None."""
    from engine.provision import Provisioning

    texts = {}
    for name in ("user-data", "meta-data", "network-config", "firstboot"):
        path = getattr(args, name.replace("-", "_"))
        if path is not None:
            try:
                texts[name.replace("-", "_")] = path.read_text()
            except (OSError, UnicodeDecodeError) as exc:
                raise ValidationError(f"--{name}: cannot read {path}: {exc}", key=name) from None
    wanted = Provisioning.from_dict(texts)
    if wanted is None:
        return None

    def provision() -> None:
        from engine import provision as writer

        writer.write(engine, args.ctid, wanted)

    return provision


def run_lxcfs(args, as_json: bool) -> int:
    from engine import lxcfs

    path = lxcfs.mountpoint()
    pid = None if args.status else lxcfs.ensure(path, log=args.log)
    serving = lxcfs.serving(path)
    if as_json:
        emit_json({"mountpoint": str(path), "serving": serving, "started_pid": pid or None})
    else:
        print(f"lxcfs {'serving' if serving else 'NOT serving'} at {path}" + (f" (started, pid {pid})" if pid else ""))
    return 0 if serving else 1


def run_boot(engine, args, as_json: bool) -> int:
    """startall/stopall: one line per container as it happens; exit 1 if any of them failed."""
    from engine import boot

    def say(outcome) -> None:
        if not as_json:
            print(f"{outcome.ctid}: {outcome.action} {'ok' if outcome.ok else 'FAILED'}: {outcome.message}", flush=True)

    ctids = args.ctids or None
    if args.verb == "startall":
        outcomes = boot.start_all(engine, ctids, force=args.force, report=say)
    else:
        outcomes = boot.stop_all(engine, ctids, timeout=args.timeout, force_stop=args.force_stop, report=say)
    if as_json:
        emit_json([o.as_dict() for o in outcomes])
    return 0 if all(o.ok for o in outcomes) else 1


def run_init_default(engine, nat: bool, as_json: bool) -> None:
    from engine.network.default import init_default

    result = init_default(engine.layout.root, nat=nat)
    if as_json:
        emit_json(result.as_dict())
    elif result.created:
        print(
            f"{result.name}: {result.address}, pool {result.pool}, DHCP {result.dhcp}, "
            f"NAT {'on' if result.nat else 'off'}"
        )
    else:
        print(f"{result.name}: not created: {result.reason}")


def show_network(engine, apply: bool, as_json: bool) -> None:
    from engine.network import NodeNetwork

    node = NodeNetwork(engine.layout.root)
    if apply:
        node.ensure_bridges()
    rows = []
    for bridge in node.bridges().values():
        rows.append(
            {
                "name": bridge.name,
                "address": str(bridge.address) if bridge.address else None,
                "vlan_aware": bridge.vlan_aware,
                "present": node.present(bridge.name),
                "pool": "-".join(map(str, bridge.pool)) if bridge.pool else None,
                "dhcp": "-".join(map(str, bridge.dhcp)) if bridge.dhcp else None,
                "nat": bridge.nat,
            }
        )
    if as_json:
        emit_json(rows)
    else:
        table(
            ["BRIDGE", "ADDRESS", "PRESENT", "VLAN", "POOL", "DHCP", "NAT"],
            [
                [
                    r["name"],
                    r["address"] or "-",
                    "yes" if r["present"] else "no",
                    "yes" if r["vlan_aware"] else "no",
                    r["pool"] or "-",
                    r["dhcp"] or "-",
                    "yes" if r["nat"] else "no",
                ]
                for r in rows
            ],
        )


def run_firewall(engine, ctid: int, rules: Path | None, as_json: bool) -> None:
    from engine.config import write_atomic
    from engine.network import container as network
    from engine.network import firewall

    config = engine.config(ctid)
    path = network.firewall_file(engine.layout.root, ctid)
    if rules is not None:
        try:
            text = rules.read_text()
        except OSError as exc:
            raise ValidationError(f"--rules: cannot read {rules}: {exc.strerror}") from None
        from engine.network.fwcompile import load, parse_rules

        parse_rules(text, load(engine.layout.root, "cluster"))  # refuse bad rules before anything changes
        path.parent.mkdir(mode=0o700, exist_ok=True)
        write_atomic(path, text)
        if engine.status(ctid, stats=False).status == "running":
            network.reload_firewall(engine.layout.root, ctid, config)
    active = firewall.ruleset_for(ctid)
    if as_json:
        emit_json(
            {
                "ctid": ctid,
                "rules_file": str(path),
                "rules": path.read_text() if path.exists() else None,
                "active": active,
            }
        )
    else:
        print(path.read_text() if path.exists() else f"# no {path}: anti-spoofing only on firewall=1 interfaces")
        print(active or "# nothing active in nftables for this container")


def show_status(status, as_json: bool) -> None:
    if as_json:
        emit_json(status.as_dict())
        return
    for warning in status.warnings or []:
        print(f"warning: {warning}", file=sys.stderr)
    print(f"status: {status.status}")
    if status.paused:
        print("paused: yes (suspended; 'resume' thaws it)")
    if status.lock:
        print(f"lock: {status.lock}")
    if status.status == "running":
        print(f"pid: {status.pid}\ninit: {status.init}\nuptime: {human_duration(status.uptime)}")
        if status.memory_bytes is not None:
            print(f"memory: {human_bytes(status.memory_bytes)} / {human_bytes(status.memory_limit_bytes)}")
        for family in ("ipv4", "ipv6"):
            if getattr(status, family):
                print(f"{family}: {', '.join(getattr(status, family))}")
