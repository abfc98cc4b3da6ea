"""``python -m engine``: a ``pct``-like command line for one node's containers.

Exit codes: 0 success; 2 bad input; 3 no such container; 4 already exists;
5 wrong state (running/stopped/locked); 6 busy; 7 start failed; 8/9 the host
lacks something; ``exec`` and ``enter`` return the command's own code.
"""

from __future__ import annotations

import sys

from engine.cli.handlers import (
    provisioning_step,
    run_boot,
    run_firewall,
    run_init_default,
    run_lxcfs,
    show_network,
    show_status,
)
from engine.cli.output import emit_json, table
from engine.cli.parser import CONFIG_OPTIONS, CORE_VERBS, build_parser, config_values, parser_for, verb_of
from engine.errors import EngineError, ValidationError
from engine.units import human_bytes, human_duration

__all__ = ["CONFIG_OPTIONS", "CORE_VERBS", "build_parser", "main"]


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = parser_for(verb_of(argv) or "")
    command = []
    if verb_of(argv) == "create-host-app" and "--" in argv:  # the host program's own options stay its own
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
            config_values(args),
            isolated_idmap=args.isolated_idmap,
            finish=provisioning_step(engine, args),
        )
        if args.start:
            status = engine.start(args.ctid)
        show_status(status, as_json)
    elif verb == "create-host-app":
        from engine.oci.hostapp import create_host_app

        status = create_host_app(engine, args.ctid, args.command, config_values(args))
        if args.start:
            status = engine.start(args.ctid)
        show_status(status, as_json)
    elif verb == "start":
        show_status(engine.start(args.ctid), as_json)
    elif verb == "stop":
        engine.stop(args.ctid)
        show_status(engine.status(args.ctid), as_json)
    elif verb == "shutdown":
        engine.shutdown(args.ctid, timeout=args.timeout, force_stop=args.force_stop)
        show_status(engine.status(args.ctid), as_json)
    elif verb == "reboot":
        show_status(engine.reboot(args.ctid, timeout=args.timeout), as_json)
    elif verb == "destroy":
        engine.destroy(args.ctid, force=args.force)
        if as_json:
            emit_json({"ctid": args.ctid, "destroyed": True})
    elif verb == "status":
        show_status(engine.status(args.ctid), as_json)
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
        changes = config_values(args)
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
        return run_boot(engine, args, as_json)
    elif verb == "lxcfs":
        return run_lxcfs(args, as_json)
    elif verb == "network":
        if args.init_default:
            run_init_default(engine, args.nat, as_json)
        else:
            show_network(engine, args.apply, as_json)
    elif verb == "firewall":
        run_firewall(engine, args.ctid, args.rules, as_json)
    else:
        return _other_group(engine, args)
    return 0


def _other_group(engine, args) -> int:
    """The verbs of engine/cli/<group>.py: machine (suspend, push, console...), disks, recover, else storage."""
    from engine.cli import disks, machine

    if args.verb in machine.VERBS:
        return machine.dispatch(engine, args, config_values)
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
