"""Self-signed certificates: the one builder behind the migration channel's one-time identities, the
web server's HTTPS certificate and the job-signing pair (the engine holds it so that both tiers can use it)."""

from __future__ import annotations

import datetime


def self_signed(key, name, days: int, extensions: tuple = ()):
    """A certificate for ``key`` named ``name`` (an ``x509.Name``), valid from five minutes ago for ``days``
    days; ``extensions`` are ``(extension, critical)`` pairs. Returns the certificate."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes

    now = datetime.datetime.now(datetime.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=days))
    )
    for extension, critical in extensions:
        builder = builder.add_extension(extension, critical=critical)
    return builder.sign(key, hashes.SHA256())


def private_pem(key) -> bytes:
    """``key`` as unencrypted PKCS#8 PEM (the files holding it are 0600)."""
    from cryptography.hazmat.primitives import serialization

    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
