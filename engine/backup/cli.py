"""``python -m engine.backup``: backups, restores and retention from the command line, in vzdump's spirit.

Verbs: ``backup ID...``, ``restore ARCHIVE ID``, ``verify ARCHIVE``, ``list``,
``prune``, ``protect ARCHIVE``, ``next-run EVENT``. Tables for people,
``-o json`` for scripts, progress on a terminal; exit codes are the engine's
(2 bad input, 3 not found, 4 exists, 5 wrong state, 6 busy, 8/9 host, 130 cancelled).
"""

from __future__ import annotations

import argparse
import sys
import time
from datetime import datetime
from pathlib import Path

from engine.cli.output import emit_json, table
from engine.config import parse_ctid
from engine.errors import EngineError, ValidationError
from engine.state import DEFAULT_ROOT, DEFAULT_RUN
from engine.units import human_bytes

from .prune import RULES, PruneOptions


def _ctid(value: str) -> int:
    try:
        return parse_ctid(value)
    except ValidationError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _key_value(value: str) -> tuple[str, str]:
    key, sep, rest = value.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"'{value}' is not key=value")
    return key, rest


def _add_keep(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--keep-all",
        action="store_true",
        default=None,
        help="keep every backup (Proxmox's keep-all=1; not with other --keep-* rules)",
    )
    for rule in RULES:
        parser.add_argument(f"--{rule}", type=int, metavar="N", help=f"{rule.replace('-', ' ')} (see PBS prune)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m engine.backup",
        description="Back up, restore, verify and prune container backups (Proxmox vzdump archives).",
    )
    parser.add_argument("--root", type=Path, default=DEFAULT_ROOT, help="state directory (default %(default)s)")
    parser.add_argument("--run-dir", type=Path, default=DEFAULT_RUN, help="runtime directory (default %(default)s)")
    parser.add_argument("--output", "-o", choices=("text", "json"), default="text", help="output format")
    verbs = parser.add_subparsers(dest="verb", metavar="VERB", required=True)

    bk = verbs.add_parser("backup", help="back up containers into the dump directory")
    bk.add_argument("ctids", nargs="+", type=_ctid, metavar="ID")
    bk.add_argument("--mode", default="suspend", help="stop, suspend or snapshot (default %(default)s)")
    bk.add_argument("--compress", default="zstd", help="zstd, gzip or none (default %(default)s)")
    bk.add_argument("--dumpdir", type=Path, help="where archives go (default <root>/dump)")
    bk.add_argument("--tmpdir", type=Path, help="where suspend mode's copy goes (default the dump directory)")
    bk.add_argument(
        "--exclude-path",
        action="append",
        default=[],
        metavar="GLOB",
        help="leave out matching paths; /x is anchored at the root, x matches at any depth",
    )
    bk.add_argument("--notes", help="notes beside the archive ({{guestname}}, {{vmid}}, {{node}} are filled in)")
    bk.add_argument("--protected", action="store_true", help="mark the backup protected (never pruned)")
    bk.add_argument("--prune-backups", metavar="KEEP", help="prune after success, e.g. keep-last=3,keep-daily=7")
    bk.add_argument("--threads", type=int, default=-1, help="zstd threads (-1: one per CPU, 0: none)")
    bk.add_argument("--timeout", type=float, default=60.0, help="shutdown timeout in stop mode (s)")

    rs = verbs.add_parser("restore", help="restore an archive as container ID")
    rs.add_argument("archive", type=Path)
    rs.add_argument("ctid", type=_ctid, metavar="ID")
    rs.add_argument("--force", action="store_true", help="replace an existing (stopped) container")
    rs.add_argument("--storage", help="storage for the root disk (default: the node's local storage)")
    rs.add_argument("--unique", action="store_true", help="new MAC addresses instead of the archive's")
    rs.add_argument(
        "-o",
        dest="set_options",
        action="append",
        default=[],
        type=_key_value,
        metavar="KEY=VALUE",
        help="override a config key of the archive (hostname, unprivileged, memory, ...)",
    )

    vf = verbs.add_parser("verify", help="read an archive end to end without restoring it")
    vf.add_argument("archive", type=Path)

    ls = verbs.add_parser("list", help="list the backups in the dump directory")
    ls.add_argument("--dumpdir", type=Path)
    ls.add_argument("--vmid", type=_ctid, help="only this container's backups")

    pr = verbs.add_parser("prune", help="remove old backups by retention rules")
    pr.add_argument("--dumpdir", type=Path)
    pr.add_argument("--vmid", type=_ctid, help="only this container's backups (default: each container's)")
    pr.add_argument("--dry-run", action="store_true", help="only show what would be kept and removed")
    _add_keep(pr)

    pt = verbs.add_parser("protect", help="protect a backup from pruning (or --off)")
    pt.add_argument("archive", type=Path)
    pt.add_argument("--off", action="store_true", help="remove the protection")

    nr = verbs.add_parser("next-run", help="when a calendar event or cron line fires next")
    nr.add_argument("event", help="e.g. 'mon..fri 02:00', '*/6:00', 'daily' or '0 3 * * 1-5'")
    nr.add_argument("--after", help="ISO date-time to start from (default: now)")
    nr.add_argument("--tz", help="time zone name, e.g. Europe/Berlin (default: local)")
    nr.add_argument("--count", type=int, default=1, help="how many runs to show")
    return parser


class _Progress:
    """``\\r 42% 1.2 GiB / 2.9 GiB`` on a terminal, at most a few times a second."""

    def __init__(self, label: str, stream=None):
        self.label, self.stream, self.last = label, stream or sys.stderr, 0.0

    def __call__(self, done: int, total: int) -> None:
        now = time.monotonic()
        if now - self.last < 0.2 and done < total:
            return
        self.last = now
        percent = f"{done * 100 // total:3d}%" if total else "   "
        self.stream.write(f"\r\033[K{self.label} {percent} {human_bytes(done)} / {human_bytes(total)}")
        self.stream.flush()

    def end(self) -> None:
        self.stream.write("\r\033[K")
        self.stream.flush()


def _progress(label: str, as_json: bool) -> _Progress | None:
    return _Progress(label) if sys.stderr.isatty() and not as_json else None


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(sys.argv[1:] if argv is None else argv)
    try:
        return _dispatch(args)
    except EngineError as exc:
        if args.output == "json":
            emit_json({"error": str(exc), "kind": type(exc).__name__, "key": getattr(exc, "key", None)}, sys.stderr)
        else:
            print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        return 130


def _engine(args):
    from engine.lifecycle import Engine

    return Engine(args.root, args.run_dir)


def _dumpdir(args) -> Path:
    return args.dumpdir if args.dumpdir is not None else Path(args.root) / "dump"


def _dispatch(args) -> int:
    as_json = args.output == "json"
    if args.verb == "next-run":
        return _next_run(args, as_json)
    if args.verb == "list":
        return _list(args, as_json)
    if args.verb == "prune":
        return _prune(args, as_json)
    if args.verb == "protect":
        from . import names

        if names.parse_archive(args.archive) is None:
            raise ValidationError(f"{args.archive} is not a vzdump archive in a dump directory")
        names.set_protected(args.archive, not args.off)
        if as_json:
            emit_json({"archive": str(args.archive), "protected": not args.off})
        return 0
    if args.verb == "verify":
        from .verify import verify

        bar = _progress("verify", as_json)
        result = verify(args.archive, progress=bar)
        if bar:
            bar.end()
        if as_json:
            emit_json(result.as_dict())
        else:
            print(
                f"{args.archive}: OK, {result.members} members, {human_bytes(result.bytes)} of data in "
                f"{human_bytes(result.size)}; container '{result.hostname}'"
                f"{'' if result.unprivileged else ' (privileged)'}"
            )
        return 0
    engine = _engine(args)
    if args.verb == "restore":
        from .restore import restore

        bar = _progress(f"restore {args.ctid}", as_json)
        result = restore(
            engine,
            args.archive,
            args.ctid,
            force=args.force,
            storage=args.storage,
            options=dict(args.set_options),
            unique=args.unique,
            progress=bar,
        )
        if bar:
            bar.end()
        if as_json:
            emit_json(result.as_dict())
        else:
            for note in result.notes:
                print(f"note: {note}")
            print(
                f"restored {args.archive.name} as container {result.ctid} ({result.hostname})"
                f"{', replacing the old one' if result.replaced else ''}"
            )
        return 0
    return _backup(engine, args, as_json)


def _backup(engine, args, as_json: bool) -> int:
    from .dump import backup

    prune_options = PruneOptions.parse(args.prune_backups) if args.prune_backups else None
    results, code = [], 0
    for ctid in args.ctids:
        bar = _progress(f"backup {ctid}", as_json)
        try:
            result = backup(
                engine,
                ctid,
                dumpdir=args.dumpdir,
                mode=args.mode,
                compress=args.compress,
                exclude_paths=args.exclude_path,
                notes=args.notes,
                protected=args.protected,
                prune_options=prune_options,
                threads=args.threads,
                shutdown_timeout=args.timeout,
                progress=bar,
                tmpdir=args.tmpdir,
            )
        except EngineError as exc:  # vzdump goes on with the other containers and fails at the end
            if bar:
                bar.end()
            if len(args.ctids) == 1:
                raise
            code = code or exc.exit_code
            results.append({"ctid": ctid, "error": str(exc), "kind": type(exc).__name__})
            if not as_json:
                print(f"error: container {ctid}: {exc}", file=sys.stderr)
            continue
        if bar:
            bar.end()
        results.append(result.as_dict())
        if not as_json:
            print(
                f"{result.archive}  {human_bytes(result.size)}  {result.seconds:.1f} s"
                + (f"  pruned: {', '.join(result.pruned)}" if result.pruned else "")
            )
    if as_json:
        emit_json(results)
    return code


def _list(args, as_json: bool) -> int:
    from .names import list_backups

    found = list_backups(_dumpdir(args), args.vmid)
    if as_json:
        emit_json([b.as_dict() for b in found])
    else:
        table(
            ["VMID", "TIME", "SIZE", "FORMAT", "PROTECTED", "NAME", "NOTES"],
            [
                [
                    b.ctid,
                    time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(b.time)),
                    human_bytes(b.size),
                    b.compression,
                    "yes" if b.protected else "",
                    b.name,
                    b.notes.splitlines()[0] if b.notes else "",
                ]
                for b in found
            ],
        )
    return 0


def _prune(args, as_json: bool) -> int:
    from .names import list_backups, remove_backup
    from .prune import Backup, prune

    options = PruneOptions(
        keep_all=args.keep_all, **{r.replace("-", "_"): getattr(args, r.replace("-", "_")) for r in RULES}
    )
    if not options.active() and not options.keep_all:
        raise ValidationError("prune: give --keep-all or at least one --keep-* rule above 0")
    dumpdir = _dumpdir(args)
    found = list_backups(dumpdir, args.vmid)
    decisions = prune([Backup(b.time, b.ctid, b.protected, b.name) for b in found], options)
    if not args.dry_run:
        for decision in decisions:
            if not decision.keep:
                remove_backup(dumpdir / decision.backup.name)
    rows = [
        {
            "name": d.backup.name,
            "ctid": d.backup.ctid,
            "time": d.backup.time,
            "action": "keep" if d.keep else ("would remove" if args.dry_run else "removed"),
            "reason": d.reason if d.keep else d.removed_by,
        }
        for d in decisions
    ]
    if as_json:
        emit_json(rows)
    else:
        table(
            ["VMID", "TIME", "ACTION", "REASON", "NAME"],
            [
                [
                    r["ctid"],
                    time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(r["time"])),
                    r["action"],
                    r["reason"],
                    r["name"],
                ]
                for r in rows
            ],
        )
    return 0


def _next_run(args, as_json: bool) -> int:
    from .schedule import parse_schedule

    tz = None
    if args.tz:
        from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

        try:
            tz = ZoneInfo(args.tz)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValidationError(f"time zone '{args.tz}' is not known", key="tz") from None
    if args.after:
        try:
            after = datetime.fromisoformat(args.after)
        except ValueError:
            raise ValidationError(f"--after '{args.after}' is not an ISO date-time", key="after") from None
    else:
        after = datetime.now().astimezone()
    if tz is None:
        tz = after.tzinfo or datetime.now().astimezone().tzinfo
    if args.count < 1:
        raise ValidationError("--count must be at least 1", key="count")
    schedule = parse_schedule(args.event)
    runs = []
    for _ in range(args.count):
        found = schedule.next_after(after, tz)
        if found is None:
            break
        runs.append(found)
        after = found
    if as_json:
        emit_json({"event": args.event, "runs": [r.isoformat() for r in runs]})
    else:
        for run in runs:
            print(run.isoformat(sep=" "))
        if not runs:
            print("never (the event has no time left)")
    return 0
