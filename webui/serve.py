"""``python -m webui.serve --host H --port P``: the ASGI web server (uvicorn) with Caisson's settings.

One place for how the web tier is served, used by ``scripts/run.sh``, the dev
compose file, the tests and the benchmarks:

- uvicorn on asyncio (uvloop and httptools when installed, as pinned in
  requirements.txt), websockets through the ``websockets`` package. asyncio
  sets ``TCP_NODELAY`` on every connection, so a console's small frames (a
  keystroke's echo) leave at once instead of waiting out Nagle's algorithm
  against the browser's delayed ACK (up to 40 ms).
- No proxy headers: the peer address is the client (throttles and the audit
  log key on it; ``X-Forwarded-For`` is not trusted).
- Idle keep-alive connections are kept 65 s (uvicorn's default is 5 s, less
  than an API client's pause between a job's request and its next one).
- PostgreSQL connections come from a process-wide pool (``CAISSON_DB_POOL``,
  see webui/settings.py).
- No lifespan protocol (Django and Channels have no use for it), no access
  log (the audit log records what matters), no Server header.
- ``--certfile``/``--keyfile``: HTTPS (``scripts/run.sh`` serves HTTPS on 8006 with the certificate of
  ``python -m webui.tls``, as Proxmox does; plain HTTP only when asked).
- On SIGTERM open websockets are closed (code 1012, which the console page
  resumes from) after at most ``--graceful`` seconds.
"""

from __future__ import annotations

import argparse
import os


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m webui.serve", description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8006)
    parser.add_argument(
        "--graceful",
        type=float,
        default=5.0,
        metavar="SECONDS",
        help="how long a stop waits for open connections (default %(default)s)",
    )
    parser.add_argument("--log-level", default="warning")
    parser.add_argument("--certfile", help="PEM certificate (chain): serve HTTPS; without it, plain HTTP")
    parser.add_argument("--keyfile", help="the certificate's PEM private key")
    args = parser.parse_args(argv)
    if bool(args.certfile) != bool(args.keyfile):
        parser.error("give both --certfile and --keyfile, or neither")
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "webui.settings")
    os.environ.setdefault("CAISSON_DB_POOL", "1")  # PostgreSQL connections from a pool: see webui/settings.py
    import uvicorn

    uvicorn.run(
        "webui.asgi:application",
        host=args.host,
        port=args.port,
        lifespan="off",
        access_log=False,
        proxy_headers=False,
        server_header=False,
        timeout_keep_alive=65,
        timeout_graceful_shutdown=args.graceful,
        log_level=args.log_level,
        ssl_certfile=args.certfile,
        ssl_keyfile=args.keyfile,
    )


if __name__ == "__main__":
    main()
