"""The argument parser of ``python -m engine``: global options, the core verbs, and the other groups' verbs.

Built per call for the verb in use only (see :func:`build_parser`): a short command's start-up time is
mostly imports and parser building, and the 40-odd config options need not exist for ``status``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from engine.config import SCHEMA, parse_ctid
from engine.errors import ValidationError
from engine.state import DEFAULT_ROOT, DEFAULT_RUN

CONFIG_OPTIONS = sorted(
    k
    for k in SCHEMA
    if not (k.startswith(("mp", "dev")) and k.lstrip("mpdev").isdigit() and int(k.lstrip("mpdev")) > 9)
    and k not in ("rootfs", "lock", "parent")
)


def ctid_arg(value: str) -> int:
    try:
        return parse_ctid(value)
    except ValidationError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def add_config_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("container settings (pct config keys)")
    for key in CONFIG_OPTIONS:
        group.add_argument(
            f"--{key}",
            dest=f"cfg_{key}",
            metavar="VALUE",
            help=argparse.SUPPRESS if key.startswith(("net", "mp", "dev")) and key[-1] != "0" else None,
        )


def config_values(args: argparse.Namespace) -> dict[str, str]:
    keys = CONFIG_OPTIONS + [k for k in ("rootfs", "storage") if hasattr(args, f"cfg_{k}")]
    return {key: getattr(args, f"cfg_{key}") for key in keys if getattr(args, f"cfg_{key}") is not None}


def verb_of(argv: list[str]) -> str | None:
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


_built: dict[str | None, argparse.ArgumentParser] = {}


def parser_for(verb: str) -> argparse.ArgumentParser:
    """:func:`build_parser` for ``verb``, built once per process: the CLI service builds each verb's before
    it forks the children that run commands (parsing leaves a parser as it was)."""
    # Any other verb gets the parser of every verb with every verb's options (restore's config options
    # included), which parses that verb's command line as its own would.
    key = verb if verb in CORE_VERBS else None
    if key not in _built:
        _built[key] = build_parser(key)
    return _built[key]


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
        create.add_argument("ctid", type=ctid_arg, help="container ID (100 and up)")
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
            add_config_options(create)

    if wanted("create-host-app"):
        app = verbs.add_parser(
            "create-host-app",
            help="create an application container running one host program over a read-only view of the host's /usr",
        )
        app.add_argument("ctid", type=ctid_arg, help="container ID (100 and up)")
        app.add_argument(
            "command",
            nargs="*",
            help="the host program and its arguments, after -- (python -m engine create-host-app 200 -- /usr/bin/env)",
        )
        app.add_argument("--start", action="store_true", help="start it once created")
        if verb in (None, "create-host-app"):
            add_config_options(app)

    for name, text in (
        ("start", "start a container"),
        ("stop", "stop a container at once (kill)"),
        ("status", "show a container's state"),
        ("config", "print a container's configuration"),
        ("log", "print what the container's init wrote to its console (the newest, up to the cap)"),
    ):
        if wanted(name):
            sub = verbs.add_parser(name, help=text)
            sub.add_argument("ctid", type=ctid_arg)

    for name, text in (("shutdown", "ask the container's init to power off"), ("reboot", "shut down, then start")):
        if wanted(name):
            sub = verbs.add_parser(name, help=text)
            sub.add_argument("ctid", type=ctid_arg)
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
        destroy.add_argument("ctid", type=ctid_arg)
        destroy.add_argument("--force", action="store_true", help="stop it first if it is running")

    if wanted("list"):
        verbs.add_parser("list", help="list containers")

    if wanted("set"):
        setp = verbs.add_parser("set", help="change settings; limits of a running container change at once")
        setp.add_argument("ctid", type=ctid_arg)
        setp.add_argument("--delete", default="", help="comma-separated keys to remove")
        setp.add_argument("--digest", help="refuse if the config changed since this digest was read")
        if verb in (None, "set"):
            add_config_options(setp)

    if wanted("exec"):
        execp = verbs.add_parser("exec", help="run a command inside a running container")
        execp.add_argument("ctid", type=ctid_arg)
        execp.add_argument("command", nargs=argparse.REMAINDER, help="-- command [args...]")

    if wanted("enter"):
        enter = verbs.add_parser("enter", help="open a shell inside a running container")
        enter.add_argument("ctid", type=ctid_arg)
        enter.add_argument(
            "--mode",
            choices=("shell", "tty"),
            default="shell",
            help="shell: a root login shell (default); tty: the container's own login prompt",
        )

    if wanted("make-template"):
        tmpl = verbs.add_parser("make-template", help="pack a stopped container as a template in the store")
        tmpl.add_argument("ctid", type=ctid_arg)
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
        fw.add_argument("ctid", type=ctid_arg)
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
        startall.add_argument("ctids", nargs="*", type=ctid_arg, metavar="CTID", help="only these containers")
        startall.add_argument(
            "--force", action="store_true", help="start every stopped container, whether onboot is set or not"
        )
    if wanted("stopall"):
        stopall = verbs.add_parser("stopall", help="shut down every running container in reverse startup order")
        stopall.add_argument("ctids", nargs="*", type=ctid_arg, metavar="CTID", help="only these containers")
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

        storage_cli.add_parsers(verbs, ctid_arg)
        migrate_cli.add_parsers(verbs, ctid_arg)
        machine.add_parsers(verbs, ctid_arg, add_config_options if verb in (None, "restore") else None)
        disks.add_parsers(verbs, ctid_arg)
        recover_cli.add_parser(verbs, ctid_arg)
    return parser
