"""Verbs of ``python -m engine`` for a container as a machine, as ``pct`` names them.

::

    suspend ID | resume ID                        freeze / thaw every process (cgroup freezer)
    push ID FILE DEST [--user U] [--group G] [--perms MODE]
    pull ID PATH DEST [--user U] [--group G] [--perms MODE]
    console ID [--escape ^a]                      attach as the container's cmode says; Ctrl-a q detaches
    template ID                                   a stopped container becomes a read-only base for clones
    pending ID                                    current and pending config values
    cpusets                                       the CPUs each running container may use
    restore ID ARCHIVE [--force] [--storage S] [--unique] [--KEY VALUE ...]
"""

from __future__ import annotations

import os
from pathlib import Path

from engine.cli.output import emit_json, table
from engine.errors import ValidationError

VERBS = ("suspend", "resume", "push", "pull", "console", "template", "pending", "cpusets", "restore")


def add_parsers(verbs, ctid_type, add_config_options=None) -> None:
    for name, text in (
        ("suspend", "freeze every process of a running container (its cgroup's freezer)"),
        ("resume", "thaw a suspended container"),
        ("template", "make a stopped container a template: a read-only base for clones that never starts"),
        ("pending", "show the container's current and pending config values (cur/new/del lines)"),
    ):
        sub = verbs.add_parser(name, help=text)
        sub.add_argument("ctid", type=ctid_type)
    owner_help = "owner {} name (looked up in the container's own files for push) or numeric id"
    push = verbs.add_parser("push", help="copy a local file into a running container")
    push.add_argument("ctid", type=ctid_type)
    push.add_argument("file", type=Path, help="the local file")
    push.add_argument("destination", help="absolute path inside the container")
    pull = verbs.add_parser("pull", help="copy a file out of a running container")
    pull.add_argument("ctid", type=ctid_type)
    pull.add_argument("path", help="absolute path inside the container")
    pull.add_argument("destination", type=Path, help="the local file to write")
    for sub in (push, pull):
        sub.add_argument("--user", help=owner_help.format("user"))
        sub.add_argument("--group", help=owner_help.format("group"))
        sub.add_argument("--perms", help="file mode, octal by default (0x for hexadecimal), e.g. 0640")
    console = verbs.add_parser("console", help="attach to a running container's console, tty or shell (its cmode)")
    console.add_argument("ctid", type=ctid_type)
    console.add_argument("--escape", default="^a", help="the detach key, followed by q (default %(default)s)")
    console.add_argument(
        "--mode", choices=("tty", "console", "shell"), help="override the container's cmode (default: its cmode)"
    )
    verbs.add_parser("cpusets", help="the CPUs each running container may run on")
    restore = verbs.add_parser("restore", help="restore a backup archive as a container (as pct restore)")
    restore.add_argument("ctid", type=ctid_type)
    restore.add_argument("archive", type=Path, help="a vzdump archive (.tar, .tar.zst, .tar.gz, .tar.lzo)")
    restore.add_argument("--force", action="store_true", help="replace an existing (stopped) container")
    restore.add_argument("--storage", help="storage of the restored volumes (default: the node's local storage)")
    restore.add_argument("--unique", action="store_true", help="new MAC addresses instead of the archive's")
    if add_config_options is not None:
        add_config_options(restore)


def dispatch(engine, args, config_values) -> int:
    as_json = args.output == "json"
    verb = args.verb
    if verb in ("suspend", "resume"):
        getattr(engine, verb)(args.ctid)
        status = engine.status(args.ctid, stats=False)
        if as_json:
            emit_json({"ctid": args.ctid, "status": status.status, "paused": status.paused})
        else:
            print(f"CT {args.ctid}: {'paused' if status.paused else status.status}")
    elif verb == "template":
        engine.template(args.ctid)
        if as_json:
            emit_json({"ctid": args.ctid, "template": True})
    elif verb == "pending":
        from engine.reports import pending, pending_lines

        rows = pending(engine.config(args.ctid))
        if as_json:
            emit_json(rows)
        else:
            print("\n".join(pending_lines(rows)))
    elif verb == "cpusets":
        from engine.reports import cpuset_lines, cpusets

        found = cpusets(engine)
        if as_json:
            emit_json({str(k): v for k, v in found.items()})
        else:
            print("\n".join(cpuset_lines(found)))
    elif verb == "push":
        info = engine.push(args.ctid, args.file, args.destination, args.user, args.group, args.perms)
        _show_file(info, as_json)
    elif verb == "pull":
        return _pull(engine, args, as_json)
    elif verb == "console":
        from engine import console

        return console.attach(engine, args.ctid, console.parse_escape(args.escape), args.mode)
    elif verb == "restore":
        from engine.backup.restore import restore

        result = restore(
            engine,
            args.archive,
            args.ctid,
            force=args.force,
            storage=args.storage,
            options=config_values(args),
            unique=args.unique,
        )
        if as_json:
            emit_json(result.as_dict())
        else:
            for note in result.notes:
                print(f"note: {note}")
            print(f"restored {args.archive.name} as container {result.ctid} ({result.hostname})")
    return 0


def _show_file(info, as_json: bool) -> None:
    if as_json:
        emit_json(info.as_dict())
    else:
        table(
            ["PATH", "SIZE", "OWNER", "MODE"],
            [[info.path, info.size, f"{info.user or info.uid}:{info.group or info.gid}", info.mode]],
        )


def _pull(engine, args, as_json: bool) -> int:
    """The container's file into a new local file beside the destination, renamed over it when complete."""
    from engine.files import parse_perms

    perms = parse_perms(args.perms)
    uid = _host_id(args.user, "user")
    gid = _host_id(args.group, "group")
    dest = args.destination
    temp = dest.with_name(f".{dest.name}.pull-{os.getpid()}")
    try:
        fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    except OSError as exc:
        raise ValidationError(f"destination: cannot write '{dest}': {exc.strerror}", key="destination") from None
    try:
        with os.fdopen(fd, "wb") as sink:
            info = engine.pull(args.ctid, args.path, sink)
            sink.flush()
            if uid is not None or gid is not None:
                os.fchown(sink.fileno(), -1 if uid is None else uid, -1 if gid is None else gid)
            os.fchmod(sink.fileno(), perms if perms is not None else 0o644)
            os.fsync(sink.fileno())
        os.rename(temp, dest)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise
    _show_file(info, as_json)
    return 0


def _host_id(value: str | None, kind: str) -> int | None:
    """A pull's owner: a name or id on this host (the file lands here)."""
    if value is None:
        return None
    if value.isdigit():
        return int(value)
    import grp
    import pwd

    try:
        return pwd.getpwnam(value).pw_uid if kind == "user" else grp.getgrnam(value).gr_gid
    except KeyError:
        raise ValidationError(f"{kind}: no {kind} '{value}' on this host", key=kind) from None
