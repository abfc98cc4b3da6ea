"""Disk verbs of ``python -m engine``, as ``pct`` names them.

::

    mount ID | unmount ID                 a stopped container's volumes on the host for repair (lock: mounted)
    df ID                                 each volume's size, used and available space
    fstrim ID [--ignore-mountpoints]      discard unused blocks of its image volumes
    fsck ID [--device rootfs|mpN] [--force]
    move-volume ID VOLUME STORAGE [--delete] [--digest D]
    rescan [--vmid ID] [--dryrun]         record volumes found on the storages as unusedN, fix image sizes
"""

from __future__ import annotations

from engine.cli.output import emit_json, table

VERBS = ("mount", "unmount", "df", "fstrim", "fsck", "move-volume", "rescan")


def add_parsers(verbs, ctid_type) -> None:
    for name, text in (
        ("mount", "mount a stopped container's volumes on the host for repair (lock: mounted until unmount)"),
        ("unmount", "unmount what mount made and clear the mounted lock"),
        ("df", "each volume's size, used and available space"),
    ):
        sub = verbs.add_parser(name, help=text)
        sub.add_argument("ctid", type=ctid_type)
    trim = verbs.add_parser("fstrim", help="discard unused blocks of the container's image volumes")
    trim.add_argument("ctid", type=ctid_type)
    trim.add_argument("--ignore-mountpoints", action="store_true", help="only the root disk")
    fsck = verbs.add_parser("fsck", help="check the file system of a stopped container's image volume")
    fsck.add_argument("ctid", type=ctid_type)
    fsck.add_argument("--device", default="rootfs", help="rootfs or mpN (default %(default)s)")
    fsck.add_argument("--force", action="store_true", help="check even if the file system seems clean")
    move = verbs.add_parser("move-volume", help="move a stopped container's volume to another storage")
    move.add_argument("ctid", type=ctid_type)
    move.add_argument("volume", help="rootfs or mpN")
    move.add_argument("storage", help="the target storage")
    move.add_argument("--delete", action="store_true", help="remove the old volume (default: keep it as unusedN)")
    move.add_argument("--digest", help="refuse if the config changed since this digest was read")
    rescan = verbs.add_parser("rescan", help="record volumes found on the storages as unusedN; fix image sizes")
    rescan.add_argument("--vmid", type=ctid_type, help="only this container (default: all)")
    rescan.add_argument("--dryrun", action="store_true", help="show the changes without writing them")


def dispatch(engine, args) -> int:
    as_json = args.output == "json"
    verb = args.verb
    if verb == "mount":
        path = engine.mount(args.ctid)
        if as_json:
            emit_json({"ctid": args.ctid, "mounted": str(path)})
        else:
            print(f"mounted CT {args.ctid} in '{path}'")
    elif verb == "unmount":
        engine.unmount(args.ctid)
        if as_json:
            emit_json({"ctid": args.ctid, "mounted": None})
    elif verb == "df":
        rows = engine.df(args.ctid)
        if as_json:
            emit_json(rows)
        else:
            table(
                ["MP", "Volume", "Size", "Used", "Avail", "Use%", "Path"],
                [
                    [
                        r["mp"],
                        r["volume"],
                        _size(r["size"]),
                        _size(r["used"]),
                        _size(r["avail"]),
                        r["use_pct"],
                        r["path"],
                    ]
                    for r in rows
                ],
            )
    elif verb == "fstrim":
        rows = engine.fstrim(args.ctid, args.ignore_mountpoints)
        if as_json:
            emit_json(rows)
        else:
            for r in rows:
                done = f"{_size(r['trimmed'])} trimmed" if r["skipped"] is None else f"skipped ({r['skipped']})"
                print(f"{r['mp']} ({r['volume']}): {done}")
    elif verb == "fsck":
        output = engine.fsck(args.ctid, args.device, args.force)
        if as_json:
            emit_json({"ctid": args.ctid, "device": args.device, "output": output})
        else:
            print(output, end="")
    elif verb == "move-volume":
        volid = engine.move_volume(args.ctid, args.volume, args.storage, delete=args.delete, digest=args.digest)
        if as_json:
            emit_json({"ctid": args.ctid, "volume": args.volume, "new": volid})
        else:
            print(f"{args.volume}: {volid}")
    elif verb == "rescan":
        from engine.rescan import rescan

        rows = rescan(engine, args.vmid, dry_run=args.dryrun)
        if as_json:
            emit_json(rows)
        else:
            if args.dryrun:
                print("NOTE: running in dry-run mode, won't write changes out!")
            for r in rows:
                print(f"CT {r['ctid']}: {r['key'] or '-'} {r['volume'] or ''} {r['change']}".replace("  ", " "))
    return 0


def _size(value: float | None) -> str:
    """As pct df: bytes up to 1023, then one decimal with K, M, G, T."""
    if value is None:
        return "-"
    if value < 1024:
        return str(int(value))
    for unit in "KMGT":
        value /= 1024
        if value < 1024 or unit == "T":
            return f"{value:.1f}{unit}"
    return str(value)
