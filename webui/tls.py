"""``python -m webui.tls DIR [--owner USER]``: the web server's TLS certificate, made once, as Proxmox's
installer makes ``pve-ssl.pem``.

``DIR/caisson-ssl.pem`` and ``DIR/caisson-ssl.key`` (0600, owned by the web user): a self-signed
certificate for this host's name, ``localhost`` and the loopback addresses, valid ten years.  Existing
files are kept, so an administrator replaces them with their own (same names) and restarts the web
server.  The SHA-256 fingerprint is printed each time, for clients that pin it (``--fingerprint`` of
Proxmox's tools, or a browser's certificate view).
"""

from __future__ import annotations

import argparse
import ipaddress
import os
import pwd
import socket
from pathlib import Path

CERT, KEY = "caisson-ssl.pem", "caisson-ssl.key"


def fingerprint(cert_path: Path) -> str:
    """``AA:BB:...``: the certificate's SHA-256, as Proxmox shows it."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes

    cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
    return ":".join(f"{b:02X}" for b in cert.fingerprint(hashes.SHA256()))


def ensure(directory: Path, owner: int | None = None) -> tuple[Path, Path, bool]:
    """(certificate, key, made now): made when either file is missing."""
    cert_path, key_path = directory / CERT, directory / KEY
    if cert_path.exists() and key_path.exists():
        return cert_path, key_path, False
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    from engine.selfsigned import private_pem, self_signed

    host = socket.gethostname()
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name(
        [x509.NameAttribute(NameOID.COMMON_NAME, host), x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Caisson")]
    )
    names = [x509.DNSName(host), x509.DNSName("localhost")]
    names += [x509.IPAddress(ipaddress.ip_address(a)) for a in ("127.0.0.1", "::1")]
    cert = self_signed(
        key,
        name,
        days=3650,
        extensions=(
            (x509.SubjectAlternativeName(names), False),
            (x509.BasicConstraints(ca=True, path_length=None), True),
        ),
    )
    directory.mkdir(parents=True, exist_ok=True)
    pem = private_pem(key)
    for path, data, mode in ((key_path, pem, 0o600), (cert_path, cert.public_bytes(serialization.Encoding.PEM), 0o644)):
        tmp = path.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
        with os.fdopen(fd, "wb") as out:
            out.write(data)
        os.chmod(tmp, mode)
        if owner is not None:
            os.chown(tmp, owner, -1)
        os.replace(tmp, path)
    return cert_path, key_path, True


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m webui.tls", description=__doc__.split("\n\n")[0])
    parser.add_argument("directory", type=Path, help="where the certificate and key live (e.g. /etc/caisson)")
    parser.add_argument("--owner", help="the user the web server runs as (the key's owner)")
    args = parser.parse_args(argv)
    owner = pwd.getpwnam(args.owner).pw_uid if args.owner else None
    cert, _, made = ensure(args.directory, owner)
    print(f"{'made' if made else 'using'} TLS certificate {cert}, SHA-256 fingerprint {fingerprint(cert)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
