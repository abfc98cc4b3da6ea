"""The command line of ``python -m engine.templates``: the template catalog, in the spirit of ``pveam``.

Commands: ``update [SOURCE]``, ``available [--section S]``, ``download NAME``,
``build BUILDER [...]`` (the local builders), ``list``, ``remove NAME``; OCI images
(:mod:`engine.oci.cli`): ``pull REFERENCE``, ``tags REPOSITORY``, ``abandon REFERENCE``, ``mirror``.
Exit codes are the engine's (2 bad input, 3 not found, 1 other errors, 130 interrupted).
"""

from __future__ import annotations

import argparse
import json
import sys
import threading

from engine import builders
from engine.builders.__main__ import main as build_main
from engine.errors import EngineError, ValidationError
from engine.oci import cli as oci_cli
from engine.state import DEFAULT_ROOT
from engine.templates.download import download
from engine.templates.entry import Entry
from engine.templates.store import TemplateStore, UpdateFailed

LOCAL_SECTION = "local-build"


def local_builds() -> list[Entry]:
    """What the local builders offer, listed beside the sources' templates (``build`` makes them)."""
    entries = []
    for offer in builders.offers():
        version = builders.get_builder(offer.builder).current_version(offer) or "local"
        how = " ".join(
            [
                "python -m engine.templates build",
                offer.builder,
                *(f"--{key} {value}" for key, value in offer.options.items()),
            ]
        )
        entries.append(
            Entry(
                name=offer.name,
                package=offer.name,
                version=version,
                os=offer.os,
                section=LOCAL_SECTION,
                type="lxc",
                arch="",
                location="",
                source_id="local",
                description=how,
            )
        )
    return entries


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m engine.templates", description="List, download and remove container templates."
    )
    parser.add_argument("--root", default=str(DEFAULT_ROOT), help="state root (default: %(default)s)")
    parser.add_argument("--output", choices=("text", "json"), default="text", help="output format")
    sub = parser.add_subparsers(dest="command", required=True)
    update = sub.add_parser("update", help="fetch the indexes of the configured sources")
    update.add_argument("source", nargs="?", help="only this source id")
    available = sub.add_parser("available", help="templates listed by the cached indexes")
    available.add_argument("--section", help="only this section (system, turnkeylinux, ...)")
    dl = sub.add_parser("download", help="download a template into the cache")
    dl.add_argument("name")
    build = sub.add_parser(
        "build",
        help=f"build a template locally into the cache: {' or '.join(builders.names())}, "
        "with the builder's options (see python -m engine.builders)",
    )
    build.add_argument("builder_args", nargs=argparse.REMAINDER, metavar="BUILDER [OPTIONS]")
    sub.add_parser("list", help="templates in the local cache")
    remove = sub.add_parser("remove", help="delete a template from the local cache")
    remove.add_argument("name")
    oci_cli.add_parsers(sub)
    return parser


class _Progress:
    def __init__(self, stream):
        self.stream, self.last = stream, -1

    def __call__(self, done: int, total: int | None) -> None:
        if not total:
            return
        percent = min(100, done * 100 // total)
        if percent != self.last:
            self.last = percent
            self.stream.write(f"\r{percent:3d}% ({done}/{total} bytes)")
            self.stream.flush()


def _run(args, out) -> None:
    store = TemplateStore(args.root)
    as_json = args.output == "json"
    if args.command == "update":
        failed = None
        try:
            counts = store.update(args.source)
        except UpdateFailed as exc:  # the other sources were updated: say so, then fail
            counts, failed = exc.counts, exc
        if as_json:
            print(json.dumps(counts), file=out)
        for sid, count in counts.items():
            if not as_json:
                trust = "" if store.trusted(sid) else " (signature not checked)"
                print(f"{sid}: {count} templates{trust}", file=out)
        if failed is not None:
            raise failed
    elif oci_cli.run(args, store, out, _Progress(sys.stderr) if sys.stderr.isatty() else None):
        pass
    elif args.command == "build":
        if not args.builder_args:
            raise ValidationError(f"build: name a builder: {' or '.join(builders.names())}", key="builder")
        code = build_main([*args.builder_args, "--dest", str(store.cache)])
        if code:
            raise EngineError(f"build {args.builder_args[0]} failed (exit code {code})")
    elif args.command == "available":
        groups = store.available(args.section)
        if args.section in (None, LOCAL_SECTION):
            groups = {**groups, LOCAL_SECTION: local_builds()}
        if as_json:
            print(json.dumps({k: [e.to_dict() for e in v] for k, v in groups.items()}, indent=2), file=out)
        for section, entries in groups.items() if not as_json else ():
            for entry in entries:
                print(f"{section:<16}{entry.name}", file=out)
    elif args.command == "download":
        entry = store.find(args.name)
        progress = _Progress(sys.stderr) if sys.stderr.isatty() else None
        path = download(entry, store.cache, progress=progress, cancel=threading.Event())
        if progress is not None:
            sys.stderr.write("\n")
        print(json.dumps({"name": entry.name, "path": str(path)}) if as_json else str(path), file=out)
    elif args.command == "list":
        items = store.local()
        if as_json:
            print(json.dumps(items, indent=2), file=out)
        for item in items if not as_json else ():
            print(f"{item['name']:<60}{item['size']:>14}", file=out)
    elif args.command == "remove":
        store.remove(args.name)
        if as_json:
            print(json.dumps({"removed": args.name}), file=out)


def main(argv: list[str] | None = None, out=None) -> int:
    """Run the CLI; return the process exit code."""
    args = _parser().parse_args(argv)
    try:
        _run(args, out or sys.stdout)
    except EngineError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    return 0
