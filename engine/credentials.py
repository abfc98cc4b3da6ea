"""Root's password and SSH keys, written into a stopped container's rootfs (``pct create --password``).

Written through ``engine.distro`` as Proxmox writes them: paths resolved
inside the rootfs (a symlink in the template cannot send a write to the host),
files replaced atomically keeping their owner and mode, what is created owned
by the container's root.
"""

from __future__ import annotations

import base64
import binascii
import re
import subprocess

from engine.errors import HostError, InvalidState, ValidationError

KEY_TYPES = {
    "ssh-rsa",
    "ssh-ed25519",
    "ecdsa-sha2-nistp256",
    "ecdsa-sha2-nistp384",
    "ecdsa-sha2-nistp521",
    "sk-ssh-ed25519@openssh.com",
    "sk-ecdsa-sha2-nistp256@openssh.com",
    "ssh-dss",
}
_KEY_LINE = re.compile(r"^(?:(?P<options>\S+) )?(?P<type>[a-z0-9@.-]+) (?P<blob>[A-Za-z0-9+/=]+)(?: .*)?$")


def validate_password(password: str) -> str:
    if len(password) < 5:
        raise ValidationError("password: at least 5 characters", key="password")
    if len(password) > 1024 or any(c in password for c in "\n\r\x00"):
        raise ValidationError("password: at most 1024 characters, on one line", key="password")
    return password


def validate_ssh_keys(text: str) -> list[str]:
    """OpenSSH public key lines; each is checked to be a known key type with a decodable key blob."""
    keys = []
    for number, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        match = _KEY_LINE.match(line)
        key_type = match and (match["type"] if match["type"] in KEY_TYPES else None)
        if not match or not key_type:
            raise ValidationError(
                f"ssh-public-keys: line {number} is not an OpenSSH public key "
                "(expected e.g. 'ssh-ed25519 AAAA... comment')",
                key="ssh-public-keys",
            )
        try:
            blob = base64.b64decode(match["blob"], validate=True)
        except binascii.Error:
            raise ValidationError(
                f"ssh-public-keys: line {number}: the key data is not base64", key="ssh-public-keys"
            ) from None
        if not blob[4:].startswith(key_type.encode()):
            raise ValidationError(
                f"ssh-public-keys: line {number}: the key data does not match its type '{key_type}'",
                key="ssh-public-keys",
            )
        keys.append(line)
    if not keys:
        raise ValidationError("ssh-public-keys: no key given", key="ssh-public-keys")
    return keys


# SHA-512 crypt as /etc/shadow holds it: $6$[rounds=N$]salt$86-character digest.
_SHA512_CRYPT = re.compile(r"^\$6\$(?:rounds=[0-9]{1,9}\$)?[./0-9A-Za-z]{1,16}\$[./0-9A-Za-z]{86}$")


def check_password_hash(value: str) -> str:
    """A hash made elsewhere (the web tier hashes before anything is queued): SHA-512 crypt only."""
    if not isinstance(value, str) or not _SHA512_CRYPT.match(value):
        raise ValidationError("password-hash: not a SHA-512 crypt hash ($6$salt$digest)", key="password-hash")
    return value


def hash_password(password: str) -> str:
    """SHA-512 crypt, as Debian's passwd makes it (openssl does the hashing; Python 3.13 has no crypt)."""
    try:
        result = subprocess.run(
            ["openssl", "passwd", "-6", "-stdin"],
            input=password + "\n",
            text=True,
            capture_output=True,
            timeout=30,
            check=False,
        )
    except FileNotFoundError:
        raise HostError("openssl is not installed on this node; it hashes container passwords") from None
    if result.returncode != 0 or not result.stdout.startswith("$6$"):
        raise HostError(f"openssl passwd failed: {result.stderr.strip()}")
    return result.stdout.strip()


def set_credentials(
    engine, ctid: int, password: str | None, ssh_keys: str | None, password_hash: str | None = None
) -> None:
    """Set root's password (clear, hashed here; or ``password_hash``, already hashed) and/or authorized keys
    in a stopped container."""
    if password and password_hash:
        raise ValidationError("give a password or a password hash, not both", key="password")
    config = engine.config(ctid)
    if engine.status(ctid, stats=False).status != "stopped":
        raise InvalidState(f"container {ctid} is running; credentials are written at create time only")
    keys = validate_ssh_keys(ssh_keys) if ssh_keys else None
    hashed = hash_password(validate_password(password)) if password else None
    if password_hash:
        hashed = check_password_hash(password_hash)
    idmap = engine.node.idmap_of(config)
    root_owner = (idmap.host_uid(0), idmap.host_gid(0)) if idmap else (0, 0)
    _, driver, vol = engine.node.rootfs_volume(config)
    with driver.writable_tree(vol) as tree:
        _write(ctid, tree, hashed, keys, root_owner)


def _write(ctid: int, tree, hashed: str | None, keys: list[str] | None, root_owner: tuple[int, int]) -> None:
    """Through the container's distribution family (Proxmox's files: shadow's root entry, the keys in a
    marked block of root's authorized_keys), every path resolved inside the rootfs."""
    from engine import distro

    try:
        with distro.Root(tree, owner=root_owner) as root:
            if not root.is_file("etc/passwd"):
                raise ValidationError(f"cannot write credentials into container {ctid}: it has no /etc/passwd")
            for path in ("etc/shadow", "etc/passwd"):
                if root.is_symlink(path) and not root.is_file(path):
                    raise ValidationError(
                        f"cannot write credentials into container {ctid}: /{path} is a "
                        "symlink that leads nowhere inside it"
                    )
            setup = distro.detect(root, distro.Settings())
            if hashed:
                setup.set_root_password(hashed)
            if keys:
                setup.set_authorized_keys("\n".join(keys) + "\n")
            root.commit()
    except OSError as exc:
        raise ValidationError(
            f"cannot write credentials into container {ctid}: {exc.strerror} ({exc.filename or ''})"
        ) from None
