"""The installation's secrets: made once at set-up, read by every process of Caisson.

One directory (``CAISSON_SECRETS``; ``scripts/run.sh`` uses ``/etc/caisson``,
development and tests ``var/secrets`` of the checkout), every file 0600,
owned by the web tier's user (root reads it too)::

    secret_key        Django's SECRET_KEY
    channel.key       HMAC key of channel-layer messages (console relay, live events)
    celery.key        private key signing Celery messages (task_serializer 'auth')
    celery.pem        its self-signed certificate
    certs/celery.pem  the certificates a worker accepts signatures of (security_cert_store)
    redis.password    Redis's requirepass; only where set-up asked for one

This module imports neither Django nor Celery: settings read it first.
Files that are missing are made under a lock on the directory, so processes
starting together agree on one set.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import os
import pwd
import secrets
import sys
from pathlib import Path

BASE_FILES = ("secret_key", "channel.key", "celery.key", "celery.pem", "certs/celery.pem")


def generate_signing_pair() -> tuple[bytes, bytes]:
    """An RSA private key (PEM, unencrypted; Celery signs with RSA only) and its self-signed certificate."""
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa
    from cryptography.x509.oid import NameOID

    from engine.selfsigned import private_pem, self_signed

    key = rsa.generate_private_key(public_exponent=65537, key_size=3072)
    cert = self_signed(key, x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "caisson job signer")]), days=3650)
    return private_pem(key), cert.public_bytes(serialization.Encoding.PEM)


def _write(path: Path, data: bytes, owner: int | None) -> None:
    """Write a file 0600 atomically (temp, fsync, rename), owned by ``owner`` when given."""
    temp = path.with_name(f".{path.name}.tmp")
    with contextlib.suppress(FileNotFoundError):
        temp.unlink()
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    try:
        os.write(fd, data)
        os.fsync(fd)
        if owner is not None:
            os.fchown(fd, owner, -1)
    finally:
        os.close(fd)
    os.replace(temp, path)


def _complete(directory: Path, redis_password: bool) -> bool:
    names = BASE_FILES + (("redis.password",) if redis_password else ())
    return all((directory / name).is_file() for name in names)


def ensure(
    directory: Path, owner: str | None = None, redis_password: bool = False, secret_key: str | None = None
) -> Path:
    """Make what is missing in ``directory``; ``owner`` (a user name) gets the files; returns the directory.

    ``secret_key``: the value to keep when there is no ``secret_key`` yet (an older installation's).
    """
    directory = Path(directory)
    if _complete(directory, redis_password) and owner is None:
        return directory
    uid = pwd.getpwnam(owner).pw_uid if owner else None
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    (directory / "certs").mkdir(mode=0o700, exist_ok=True)
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        made = []
        if not (directory / "secret_key").is_file():
            _write(directory / "secret_key", (secret_key or secrets.token_urlsafe(50)).encode(), uid)
            made.append("secret_key")
        if not (directory / "channel.key").is_file():
            _write(directory / "channel.key", secrets.token_hex(32).encode(), uid)
            made.append("channel.key")
        if not all((directory / name).is_file() for name in ("celery.key", "celery.pem", "certs/celery.pem")):
            pem_key, pem_cert = generate_signing_pair()
            _write(directory / "celery.key", pem_key, uid)
            _write(directory / "celery.pem", pem_cert, uid)
            _write(directory / "certs" / "celery.pem", pem_cert, uid)
            made.append("celery.key")
        if redis_password and not (directory / "redis.password").is_file():
            _write(directory / "redis.password", secrets.token_urlsafe(32).encode(), uid)
            made.append("redis.password")
        if uid is not None:  # an existing set, handed to the web tier's user
            for path in [directory, directory / "certs", *directory.iterdir(), *(directory / "certs").iterdir()]:
                os.chown(path, uid, -1, follow_symlinks=False)
                os.chmod(path, 0o700 if path.is_dir() else 0o600, follow_symlinks=False)
        return directory
    finally:
        os.close(fd)


def read(directory: Path, name: str) -> str | None:
    """A secret's text, or None when the file is absent."""
    try:
        return (Path(directory) / name).read_text().strip()
    except FileNotFoundError:
        return None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m webui.keys", description=__doc__.split("\n\n")[0])
    parser.add_argument("directory", type=Path)
    parser.add_argument("--owner", help="user that gets the files (the web tier's)")
    parser.add_argument("--redis-password", action="store_true", help="also make a Redis password")
    parser.add_argument("--secret-key-from", type=Path, help="an older installation's SECRET_KEY file to keep")
    args = parser.parse_args(argv)
    old = None
    if args.secret_key_from and args.secret_key_from.is_file():
        old = args.secret_key_from.read_text().strip() or None
    ensure(args.directory, args.owner, args.redis_password, old)
    return 0


if __name__ == "__main__":
    sys.exit(main())
