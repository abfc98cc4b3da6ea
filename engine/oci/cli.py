"""The OCI verbs of ``python -m engine.templates``: ``pull``, ``tags``, ``abandon``, ``mirror``.

A registry password is read from standard input (``--password-stdin``), never from the command line,
which every user of the host can read in /proc.
"""

from __future__ import annotations

import json
import sys
import threading

from engine.errors import ValidationError
from engine.oci import registry
from engine.oci.pull import abandon, pull


def add_parsers(sub) -> None:
    p = sub.add_parser("pull", help="pull an OCI image from a registry into the cache as <name>.tar (as Proxmox)")
    p.add_argument("reference", help="[registry[:port]/]repository[:tag|@sha256:<digest>]")
    p.add_argument("--name", help="archive name (default: Proxmox's, from the reference: alpine_3.20.tar)")
    p.add_argument("--arch", default="amd64", help="platform of a multi-platform image (default: %(default)s)")
    _credentials_options(p)
    t = sub.add_parser("tags", help="the tags of a repository in its registry")
    t.add_argument("repository", help="[registry[:port]/]repository")
    _credentials_options(t)
    a = sub.add_parser("abandon", help="drop what an interrupted pull kept for its resume")
    a.add_argument("reference")
    a.add_argument("--name", help="the archive name the pull used")
    m = sub.add_parser("mirror", help="show or change the registry settings (mirrors, registries without TLS)")
    m.add_argument("registry", nargs="?", help="registry whose mirror to set (docker.io, ...)")
    m.add_argument("location", nargs="*", help="mirror host[:port][/path]s, tried in order; none: remove")
    m.add_argument("--insecure", action="append", default=[], help="a host[:port] reached over plain HTTP")
    m.add_argument("--secure", action="append", default=[], help="a host[:port] no longer reached over HTTP")


def _credentials_options(parser) -> None:
    parser.add_argument("--username", help="registry user name (for a private registry)")
    parser.add_argument(
        "--password-stdin", action="store_true", help="read the registry password or token from standard input"
    )


def credentials_of(args, stdin=None) -> registry.Credentials | None:
    if not args.username:
        if args.password_stdin:
            raise ValidationError("--password-stdin needs --username", key="username")
        return None
    if not args.password_stdin:
        raise ValidationError("--username needs --password-stdin (a password is never taken as an argument)")
    return registry.Credentials(args.username, (stdin or sys.stdin).readline().rstrip("\n"))


def run(args, store, out, progress) -> bool:
    """Handle an OCI verb; False if ``args.command`` is not one."""
    as_json = args.output == "json"
    if args.command == "pull":
        path = pull(
            store.root,
            store.cache,
            args.reference,
            name=args.name,
            credentials=credentials_of(args),
            arch=args.arch,
            progress=progress,
            cancel=threading.Event(),
        )
        if progress is not None:
            sys.stderr.write("\n")
        print(json.dumps({"name": path.name, "path": str(path)}) if as_json else str(path), file=out)
    elif args.command == "tags":
        tags = registry.list_tags(store.root, args.repository, credentials_of(args))
        print(json.dumps(tags) if as_json else "\n".join(tags), file=out)
    elif args.command == "abandon":
        found = abandon(store.cache, args.reference, args.name)
        print(json.dumps({"abandoned": found}) if as_json else ("dropped" if found else "nothing to drop"), file=out)
    elif args.command == "mirror":
        settings = registry.Settings.load(store.root)
        if args.registry:
            if args.location:
                settings.mirrors[args.registry] = list(args.location)
            else:
                settings.mirrors.pop(args.registry, None)
        settings.insecure = sorted((set(settings.insecure) | set(args.insecure)) - set(args.secure))
        if args.registry or args.insecure or args.secure:
            settings.save(store.root)
        if as_json:
            print(json.dumps({"mirrors": settings.mirrors, "insecure": settings.insecure}), file=out)
        else:
            for name, locations in sorted(settings.mirrors.items()):
                print(f"{name:<30}{' '.join(locations)}", file=out)
            for name in settings.insecure:
                print(f"{name:<30}(plain HTTP)", file=out)
    else:
        return False
    return True
