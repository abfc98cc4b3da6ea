"""``python -m engine``: a ``pct``-like command line for one node's containers.

Exit codes: 0 success; 2 bad input; 3 no such container; 4 already exists;
5 wrong state (running/stopped/locked); 6 busy; 7 start failed; 8/9 the host
lacks something; ``exec`` and ``enter`` return the command's own code.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from engine.cli.output import emit_json, table
from engine.config import SCHEMA, parse_ctid
from engine.errors import EngineError, ValidationError
from engine.state import DEFAULT_ROOT, DEFAULT_RUN
from engine.units import human_bytes, human_duration

CONFIG_OPTIONS = sorted(
    k
    for k in SCHEMA
    if not (k.startswith(("mp", "dev")) and k.lstrip("mpdev").isdigit() and int(k.lstrip("mpdev")) > 9)
    and k not in ("rootfs", "lock", "parent")
)


def _ctid(value: str) -> int:
    try:
        return parse_ctid(value)
    except ValidationError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _add_config_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("container settings (pct config keys)")
    for key in CONFIG_OPTIONS:
        group.add_argument(
            f"--{key}",
            dest=f"cfg_{key}",
            metavar="VALUE",
            help=argparse.SUPPRESS if key.startswith(("net", "mp", "dev")) and key[-1] != "0" else None,
        )


def _config_values(args: argparse.Namespace) -> dict[str, str]:
    keys = CONFIG_OPTIONS + [k for k in ("rootfs", "storage") if hasattr(args, f"cfg_{k}")]
    return {key: getattr(args, f"cfg_{key}") for key in keys if getattr(args, f"cfg_{key}") is not None}


def _verb_of(argv: list[str]) -> str | None:
    """The verb on the command line, found before parsing so only its options are built."""
    skip_next = False
    for arg in argv:
        if skip_next:
            skip_next = False
        elif arg in ("--root", "--run-dir", "--output", "-o"):
            skip_next = True
        elif arg in ("-h", "--help"):
            return None  # the top-level help lists every verb
        elif not arg.startswith("-"):
            return arg
    return None


# The verbs defined here, in the order --help lists them; the storage verbs follow (engine.cli.storage).
CORE_VERBS = (
    "create",
    "create-host-app",
    "start",
    "stop",
    "status",
    "config",
    "shutdown",
    "reboot",
    "destroy",
    "list",
    "set",
    "exec",
    "enter",
    "make-template",
    "network",
    "firewall",
    "startall",
    "stopall",
    "log",
    "lxcfs",
)


def build_parser(verb: str | None = None) -> argparse.ArgumentParser:
    """The parser.  Given one of :data:`CORE_VERBS`, only that verb's sub-parser is built (start-up time: the
    usage lines of errors name ``VERB``, not the list); otherwise (none, a storage verb, a typo) all of them.
    The 40-odd config options are added only to the verb in use, or to all when ``verb`` is None."""
    parser = argparse.ArgumentParser(prog="python -m engine", description="Manage this node's system containers.")
    parser.add_argument("--root", type=Path, default=DEFAULT_ROOT, help="state directory (default %(default)s)")
    parser.add_argument("--run-dir", type=Path, default=DEFAULT_RUN, help="runtime directory (default %(default)s)")
    parser.add_argument("--output", "-o", choices=("text", "json"), default="text", help="output format")
    verbs = parser.add_subparsers(dest="verb", metavar="VERB", required=True)
    only = verb if verb in CORE_VERBS else None

    def wanted(name: str) -> bool:
        return only is None or only == name

    if wanted("create"):
        create = verbs.add_parser("create", help="create a container from a template tarball or directory")
        create.add_argument("ctid", type=_ctid, help="container ID (100 and up)")
        create.add_argument("template", type=Path, help="rootfs tarball (.tar, .tar.gz/.xz/.zst) or directory")
        create.add_argument("--start", action="store_true", help="start it once created")
        create.add_argument(
            "--rootfs",
            dest="cfg_rootfs",
            metavar="STORAGE:GIB",
            help="storage and size of the root disk, e.g. local-btrfs:8 (default: local, no size)",
        )
        create.add_argument("--storage", dest="cfg_storage", metavar="STORAGE", help="storage of the root disk")
        create.add_argument(
            "--isolated-idmap",
            action="store_true",
            help="give the (unprivileged) container a 65536-id range of its own",
        )
        first_boot = create.add_argument_group("provisioning at first boot")
        for name, text in (
            ("user-data", "cloud-init user data (#cloud-config ...) for a template with cloud-init"),
            ("meta-data", "cloud-init meta data (default: instance-id and hostname)"),
            ("network-config", "cloud-init network config (v1 or v2 YAML)"),
            ("firstboot", "a script ('#!...') run once inside at the first start, for templates without cloud-init"),
        ):
            first_boot.add_argument(f"--{name}", type=Path, metavar="FILE", help=text)
        if verb in (None, "create"):
            _add_config_options(create)

    if wanted("create-host-app"):
        app = verbs.add_parser(
            "create-host-app",
            help="create an application container running one host program over a read-only view of the host's /usr",
        )
        app.add_argument("ctid", type=_ctid, help="container ID (100 and up)")
        app.add_argument(
            "command",
            nargs="*",
            help="the host program and its arguments, after -- (python -m engine create-host-app 200 -- /usr/bin/env)",
        )
        app.add_argument("--start", action="store_true", help="start it once created")
        if verb in (None, "create-host-app"):
            _add_config_options(app)

    for name, text in (
        ("start", "start a container"),
        ("stop", "stop a container at once (kill)"),
        ("status", "show a container's state"),
        ("config", "print a container's configuration"),
        ("log", "print what the container's init wrote to its console (the newest, up to the cap)"),
    ):
        if wanted(name):
            sub = verbs.add_parser(name, help=text)
            sub.add_argument("ctid", type=_ctid)

    for name, text in (("shutdown", "ask the container's init to power off"), ("reboot", "shut down, then start")):
        if wanted(name):
            sub = verbs.add_parser(name, help=text)
            sub.add_argument("ctid", type=_ctid)
            sub.add_argument("--timeout", type=float, default=60.0, help="seconds to wait (default %(default)s)")
            if name == "shutdown":
                sub.add_argument(
                    "--no-force-stop",
                    dest="force_stop",
                    action="store_false",
                    help="fail instead of killing the container after the timeout",
                )

    if wanted("destroy"):
        destroy = verbs.add_parser("destroy", help="delete a container and its root disk")
        destroy.add_argument("ctid", type=_ctid)
        destroy.add_argument("--force", action="store_true", help="stop it first if it is running")

    if wanted("list"):
        verbs.add_parser("list", help="list containers")

    if wanted("set"):
        setp = verbs.add_parser("set", help="change settings; limits of a running container change at once")
        setp.add_argument("ctid", type=_ctid)
        setp.add_argument("--delete", default="", help="comma-separated keys to remove")
        setp.add_argument("--digest", help="refuse if the config changed since this digest was read")
        if verb in (None, "set"):
            _add_config_options(setp)

    if wanted("exec"):
        execp = verbs.add_parser("exec", help="run a command inside a running container")
        execp.add_argument("ctid", type=_ctid)
        execp.add_argument("command", nargs=argparse.REMAINDER, help="-- command [args...]")

    if wanted("enter"):
        enter = verbs.add_parser("enter", help="open a shell inside a running container")
        enter.add_argument("ctid", type=_ctid)
        enter.add_argument(
            "--mode",
            choices=("shell", "tty"),
            default="shell",
            help="shell: a root login shell (default); tty: the container's own login prompt",
        )

    if wanted("make-template"):
        tmpl = verbs.add_parser("make-template", help="pack a stopped container as a template in the store")
        tmpl.add_argument("ctid", type=_ctid)
        tmpl.add_argument("name", help="template file name, e.g. web-1.0-1_amd64.tar.zst")

    if wanted("network"):
        network = verbs.add_parser("network", help="show the node's bridges; --apply creates or adopts them")
        network.add_argument("--apply", action="store_true", help="create missing bridges, set their addresses")
        network.add_argument(
            "--init-default",
            action="store_true",
            help="set-up: define and create vmbr0 on a free private /24 with a pool and DHCP "
            "range, unless the interfaces file or vmbr0 exists (safe to run again)",
        )
        network.add_argument("--nat", action="store_true", help="with --init-default: masquerade its subnet")

    if wanted("firewall"):
        fw = verbs.add_parser("firewall", help="show a container's firewall, or install new rules (applied live)")
        fw.add_argument("ctid", type=_ctid)
        fw.add_argument(
            "--rules",
            type=Path,
            metavar="FILE",
            help="rules in Proxmox's <ID>.fw format; checked, saved, applied to a running container",
        )
    if wanted("lxcfs"):
        lxcfs = verbs.add_parser(
            "lxcfs", help="start the node's lxcfs unless one serves (containers' /proc/meminfo, cpuinfo, uptime...)"
        )
        lxcfs.add_argument("--status", action="store_true", help="only say whether it serves (exit 1 if not)")
        lxcfs.add_argument("--log", type=Path, help="file for lxcfs's own output (default: none)")
    if wanted("startall"):
        startall = verbs.add_parser("startall", help="start the onboot containers in startup order (node boot)")
        startall.add_argument("ctids", nargs="*", type=_ctid, metavar="CTID", help="only these containers")
        startall.add_argument(
            "--force", action="store_true", help="start every stopped container, whether onboot is set or not"
        )
    if wanted("stopall"):
        stopall = verbs.add_parser("stopall", help="shut down every running container in reverse startup order")
        stopall.add_argument("ctids", nargs="*", type=_ctid, metavar="CTID", help="only these containers")
        stopall.add_argument(
            "--timeout",
            type=float,
            default=None,
            metavar="SECONDS",
            help="per container when its startup has no down= (default 180, as Proxmox)",
        )
        stopall.add_argument(
            "--no-force-stop",
            dest="force_stop",
            action="store_false",
            help="leave a container running when it does not stop within its timeout",
        )
    if only is None:  # a verb of another group, or none yet (help, errors): their parsers and modules too
        from engine.cli import disks, machine
        from engine.cli import migrate as migrate_cli
        from engine.cli import recover as recover_cli
        from engine.cli import storage as storage_cli

        storage_cli.add_parsers(verbs, _ctid)
        migrate_cli.add_parsers(verbs, _ctid)
        machine.add_parsers(verbs, _ctid, _add_config_options if verb in (None, "restore") else None)
        disks.add_parsers(verbs, _ctid)
        recover_cli.add_parser(verbs, _ctid)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = build_parser(_verb_of(argv) or "")
    command = []
    if _verb_of(argv) == "create-host-app" and "--" in argv:  # the host program's own options stay its own
        cut = argv.index("--")
        argv, command = argv[:cut], argv[cut + 1 :]
    args = parser.parse_args(argv)
    if command:
        args.command = command
    from engine.lifecycle import Engine  # after parsing, so that --help stays instant

    try:
        engine = Engine(args.root, args.run_dir)
        return _dispatch(engine, args)
    except EngineError as exc:
        if args.output == "json":
            emit_json({"error": str(exc), "kind": type(exc).__name__, "key": getattr(exc, "key", None)}, sys.stderr)
        else:
            print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # The reader went away (``| head``): not an error of ours; keep Python from complaining at exit.
        import os

        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


def _dispatch(engine, args) -> int:
    as_json = args.output == "json"
    verb = args.verb
    if verb == "create":
        status = engine.create(
            args.ctid,
            args.template,
            _config_values(args),
            isolated_idmap=args.isolated_idmap,
            finish=_provisioning_step(engine, args),
        )
        if args.start:
            status = engine.start(args.ctid)
        _show_status(status, as_json)
    elif verb == "create-host-app":
        from engine.oci.hostapp import create_host_app

        status = create_host_app(engine, args.ctid, args.command, _config_values(args))
        if args.start:
            status = engine.start(args.ctid)
        _show_status(status, as_json)
    elif verb == "start":
        _show_status(engine.start(args.ctid), as_json)
    elif verb == "stop":
        engine.stop(args.ctid)
        _show_status(engine.status(args.ctid), as_json)
    elif verb == "shutdown":
        engine.shutdown(args.ctid, timeout=args.timeout, force_stop=args.force_stop)
        _show_status(engine.status(args.ctid), as_json)
    elif verb == "reboot":
        _show_status(engine.reboot(args.ctid, timeout=args.timeout), as_json)
    elif verb == "destroy":
        engine.destroy(args.ctid, force=args.force)
        if as_json:
            emit_json({"ctid": args.ctid, "destroyed": True})
    elif verb == "status":
        _show_status(engine.status(args.ctid), as_json)
    elif verb == "log":
        data = engine.console_log(args.ctid)
        if as_json:
            emit_json({"ctid": args.ctid, "log": data.decode(errors="replace")})
        else:
            sys.stdout.buffer.write(data)
            sys.stdout.flush()
    elif verb == "list":
        statuses = engine.list()
        if as_json:
            emit_json([s.as_dict() for s in statuses])
        else:
            table(
                ["VMID", "STATUS", "NAME", "PID", "UPTIME", "MEMORY", "CPU TIME", "IPV4", "LOCK"],
                [
                    [
                        s.ctid,
                        "paused" if s.paused else s.status,
                        s.hostname,
                        s.pid or "-",
                        human_duration(s.uptime),
                        human_bytes(s.memory_bytes),
                        f"{s.cpu_ns / 1e9:.1f}s" if s.cpu_ns is not None else "-",
                        ",".join(s.ipv4 or []) or "-",
                        s.lock or "-",
                    ]
                    for s in statuses
                ],
            )
    elif verb == "config":
        config = engine.config(args.ctid)
        if as_json:
            data = dict(config.current.values)
            if config.current.description:
                data["description"] = config.current.description
            data["digest"] = config.digest()
            emit_json(data)
        else:
            sys.stdout.write(config.render())
    elif verb == "set":
        delete = [k.strip() for k in args.delete.split(",") if k.strip()]
        changes = _config_values(args)
        if not changes and not delete:
            raise ValidationError("nothing to change: give --KEY VALUE options or --delete KEYS")
        live = engine.set(args.ctid, changes, delete, args.digest)
        if as_json:
            emit_json({"ctid": args.ctid, "changed": sorted(changes), "deleted": delete, "applied_live": live})
        elif live:
            print(f"applied to the running container: {', '.join(live)}")
    elif verb == "exec":
        command = args.command[1:] if args.command[:1] == ["--"] else args.command
        if not command:
            raise ValidationError("exec: give the command after '--', e.g. exec 100 -- ls /")
        return engine.exec(args.ctid, command)
    elif verb == "enter":
        from engine.attach import LOGIN_ARGV, SHELL_ARGV

        return engine.enter(args.ctid, LOGIN_ARGV if args.mode == "tty" else SHELL_ARGV)
    elif verb == "make-template":
        path = engine.make_template(args.ctid, args.name)
        if as_json:
            emit_json({"ctid": args.ctid, "template": path.name, "path": str(path), "size": path.stat().st_size})
        else:
            print(f"local:vztmpl/{path.name}")
    elif verb in ("startall", "stopall"):
        return _boot(engine, args, as_json)
    elif verb == "lxcfs":
        return _lxcfs(args, as_json)
    elif verb == "network":
        if args.init_default:
            _init_default(engine, args.nat, as_json)
        else:
            _network(engine, args.apply, as_json)
    elif verb == "firewall":
        _firewall(engine, args.ctid, args.rules, as_json)
    else:
        return _other_group(engine, args)
    return 0


def _other_group(engine, args) -> int:
    """The verbs of engine/cli/<group>.py: machine (suspend, push, console...), disks, recover, else storage."""
    from engine.cli import disks, machine

    if args.verb in machine.VERBS:
        return machine.dispatch(engine, args, _config_values)
    if args.verb in disks.VERBS:
        return disks.dispatch(engine, args)
    if args.verb == "recover":
        from engine.cli import recover as recover_cli

        return recover_cli.dispatch(engine, args)
    from engine.cli import migrate as migrate_cli

    if args.verb in migrate_cli.VERBS:
        return migrate_cli.dispatch(engine, args)
    from engine.cli import storage as storage_cli

    return storage_cli.dispatch(engine, args)


def _provisioning_step(engine, args):
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


def _lxcfs(args, as_json: bool) -> int:
    from engine import lxcfs

    path = lxcfs.mountpoint()
    pid = None if args.status else lxcfs.ensure(path, log=args.log)
    serving = lxcfs.serving(path)
    if as_json:
        emit_json({"mountpoint": str(path), "serving": serving, "started_pid": pid or None})
    else:
        print(f"lxcfs {'serving' if serving else 'NOT serving'} at {path}" + (f" (started, pid {pid})" if pid else ""))
    return 0 if serving else 1


def _boot(engine, args, as_json: bool) -> int:
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


def _init_default(engine, nat: bool, as_json: bool) -> None:
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


def _network(engine, apply: bool, as_json: bool) -> None:
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


def _firewall(engine, ctid: int, rules: Path | None, as_json: bool) -> None:
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


def _show_status(status, as_json: bool) -> None:
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
