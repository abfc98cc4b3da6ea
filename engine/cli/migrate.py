"""``python -m engine migrate|migrate-receive|migrate-identity``: a container moved to another node's engine.

The two sides authenticate each other with per-migration certificates: the sender makes its identity
(``migrate-identity FILE`` prints the fingerprint), the receiver is started with the sender's
certificate (``--peer-cert FILE``, the public part of that file) and prints one JSON line with its
address, port and fingerprint once it listens; the sender is then run with ``--to`` and
``--fingerprint`` from that line.  The node's jobs do the same without the command line.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from engine.cli.output import emit_json

VERBS = ("migrate", "migrate-receive", "migrate-identity")


def add_parsers(verbs, ctid_type) -> None:
    send = verbs.add_parser(
        "migrate",
        help="move a stopped container (or a running one with --restart) to another node's migrate-receive",
        description="Stream the container's root disk, volume mount points, config and firewall rules over "
        "mutual TLS to the receiver, which verifies size and SHA-256 and restores it; the container is removed "
        "here only after the target confirms.  A failure leaves it whole here and nothing there.",
    )
    send.add_argument("ctid", type=ctid_type)
    send.add_argument("--to", required=True, metavar="HOST:PORT", help="the receiver's address and port")
    send.add_argument("--fingerprint", required=True, help="the receiver's certificate SHA-256 (its JSON line)")
    send.add_argument("--identity", required=True, type=Path, help="this side's key and certificate (migrate-identity)")
    send.add_argument("--restart", action="store_true", help="a running container: stop, move, start on the target")
    send.add_argument("--online", action="store_true", help="live migration (refused: no working CRIU here)")
    send.add_argument(
        "--drop-snapshots",
        action="store_true",
        help="leave the container's snapshots behind (by default they travel where both storages are btrfs, "
        "and the migration is refused elsewhere)",
    )
    send.add_argument("--netns", help="make the connection from this network namespace (/run/netns/NAME)")
    send.add_argument("--timeout", type=float, default=60.0, help="seconds to wait for the receiver (default 60)")
    recv = verbs.add_parser(
        "migrate-receive",
        help="receive one migration of container ID from the holder of --peer-cert",
        description="Listen, print {address, port, fingerprint} as one JSON line, accept the sender whose "
        "certificate is --peer-cert, verify and restore the container, commit when the sender asks.",
    )
    recv.add_argument("ctid", type=ctid_type)
    recv.add_argument("--peer-cert", required=True, type=Path, help="the sender's certificate (PEM; its identity file)")
    recv.add_argument("--listen", default="127.0.0.1:0", metavar="ADDR:PORT", help="default 127.0.0.1:0 (any port)")
    recv.add_argument("--storage", help="target storage (default: the container's, which must exist here)")
    recv.add_argument("--netns", help="listen in this network namespace (/run/netns/NAME)")
    recv.add_argument("--timeout", type=float, default=60.0, help="seconds to wait for the sender (default 60)")
    ident = verbs.add_parser(
        "migrate-identity", help="make a one-time migration key and certificate; prints its fingerprint"
    )
    ident.add_argument("file", type=Path)


def _to_stderr(text: str) -> None:
    print(text, file=sys.stderr, flush=True)  # stdout carries the endpoint line and the result


def dispatch(engine, args) -> int:
    from engine.migrate.channel import make_identity, parse_endpoint

    as_json = args.output == "json"
    if args.verb == "migrate-identity":
        fingerprint = make_identity(args.file)
        emit_json({"fingerprint": fingerprint}) if as_json else print(fingerprint)
        return 0
    if args.verb == "migrate-receive":
        from engine.errors import ValidationError
        from engine.migrate.receive import Receiver

        host, port = parse_endpoint(args.listen, "listen", any_port=True)
        try:
            peer = args.peer_cert.read_text()
        except OSError as err:
            raise ValidationError(f"--peer-cert {args.peer_cert}: {err.strerror}", key="peer-cert") from None
        receiver = Receiver(engine, args.ctid, peer, (host, port), storage=args.storage, netns=args.netns)
        print(json.dumps(receiver.endpoint()), flush=True)
        result = receiver.run(args.timeout, log=_to_stderr)
        emit_json(result) if as_json else print(f"container {result['ctid']} received ({result['bytes']} bytes)")
        return 0
    from engine.migrate.send import migrate

    result = migrate(
        engine,
        args.ctid,
        args.to,
        args.fingerprint,
        args.identity,
        restart=args.restart,
        online=args.online,
        drop_snapshots=args.drop_snapshots,
        netns=args.netns,
        timeout=args.timeout,
        log=None if as_json else print,
    )
    if as_json:
        emit_json(result.as_dict())
    else:
        print(f"container {args.ctid} migrated to {args.to} ({result.bytes} bytes in {result.seconds:.1f} s)")
    return 0
