"""Root's password and SSH keys, written into a stopped container's rootfs (``pct create --password``).

Everything is opened below the rootfs by directory fd with O_NOFOLLOW, so a
symlink in the template cannot send a write to the host.  Files are replaced
atomically and keep their owner and mode; what is created is owned by the
container's root.
"""
from __future__ import annotations

import base64
import binascii
import os
import re
import subprocess
from contextlib import contextmanager

from engine.errors import HostError, InvalidState, ValidationError

KEY_TYPES = {"ssh-rsa", "ssh-ed25519", "ecdsa-sha2-nistp256", "ecdsa-sha2-nistp384", "ecdsa-sha2-nistp521",
             "sk-ssh-ed25519@openssh.com", "sk-ecdsa-sha2-nistp256@openssh.com", "ssh-dss"}
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
            raise ValidationError(f"ssh-public-keys: line {number} is not an OpenSSH public key "
                                  "(expected e.g. 'ssh-ed25519 AAAA... comment')", key="ssh-public-keys")
        try:
            blob = base64.b64decode(match["blob"], validate=True)
        except binascii.Error:
            raise ValidationError(f"ssh-public-keys: line {number}: the key data is not base64",
                                  key="ssh-public-keys") from None
        if not blob[4:].startswith(key_type.encode()):
            raise ValidationError(f"ssh-public-keys: line {number}: the key data does not match its type "
                                  f"'{key_type}'", key="ssh-public-keys")
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
        result = subprocess.run(["openssl", "passwd", "-6", "-stdin"], input=password + "\n", text=True,
                                capture_output=True, timeout=30, check=False)
    except FileNotFoundError:
        raise HostError("openssl is not installed on this node; it hashes container passwords") from None
    if result.returncode != 0 or not result.stdout.startswith("$6$"):
        raise HostError(f"openssl passwd failed: {result.stderr.strip()}")
    return result.stdout.strip()


@contextmanager
def _dir(parent_fd: int, name: str, create_mode: int | None = None, owner: tuple[int, int] | None = None):
    try:
        fd = os.open(name, os.O_PATH | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=parent_fd)
    except FileNotFoundError:
        if create_mode is None:
            raise
        os.mkdir(name, create_mode, dir_fd=parent_fd)
        fd = os.open(name, os.O_PATH | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=parent_fd)
        if owner:
            os.chown(f"/proc/self/fd/{fd}", *owner)
    try:
        yield fd
    finally:
        os.close(fd)


def _read(dir_fd: int, name: str) -> tuple[str, os.stat_result] | None:
    try:
        fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW, dir_fd=dir_fd)
    except FileNotFoundError:
        return None
    with os.fdopen(fd, "r", encoding="utf-8", errors="surrogateescape") as f:
        return f.read(), os.fstat(f.fileno())


def _replace(dir_fd: int, name: str, text: str, mode: int, owner: tuple[int, int]) -> None:
    tmp = f".{name}.caisson-new"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, mode, dir_fd=dir_fd)
    try:
        os.fchown(fd, *owner)
        os.fchmod(fd, mode)
        os.write(fd, text.encode("utf-8", "surrogateescape"))
        os.fsync(fd)
    finally:
        os.close(fd)
    os.rename(tmp, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)


def _set_root_field(text: str, index: int, value: str, what: str) -> str:
    lines = text.splitlines()
    for number, line in enumerate(lines):
        fields = line.split(":")
        if fields[0] == "root" and len(fields) > index:
            fields[index] = value
            lines[number] = ":".join(fields)
            return "\n".join(lines) + "\n"
    raise ValidationError(f"the container's {what} has no root entry")


def set_credentials(engine, ctid: int, password: str | None, ssh_keys: str | None,
                    password_hash: str | None = None) -> None:
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
    idmap = engine._idmap(config)
    root_owner = (idmap.host_uid(0), idmap.host_gid(0)) if idmap else (0, 0)
    _, driver, vol = engine._rootfs_volume(config)
    with driver.writable_tree(vol) as tree:
        _write(ctid, tree, hashed, keys, root_owner)


def _write(ctid: int, tree, hashed: str | None, keys: list[str] | None, root_owner: tuple[int, int]) -> None:
    root_fd = os.open(tree, os.O_PATH | os.O_DIRECTORY | os.O_NOFOLLOW)
    try:
        with _dir(root_fd, "etc") as etc:
            if hashed:
                shadow = _read(etc, "shadow")
                if shadow:
                    _replace(etc, "shadow", _set_root_field(shadow[0], 1, hashed, "/etc/shadow"),
                             shadow[1].st_mode & 0o7777, (shadow[1].st_uid, shadow[1].st_gid))
                else:
                    passwd = _read(etc, "passwd")
                    if not passwd:
                        raise ValidationError("the container has no /etc/passwd")
                    _replace(etc, "passwd", _set_root_field(passwd[0], 1, hashed, "/etc/passwd"),
                             passwd[1].st_mode & 0o7777, (passwd[1].st_uid, passwd[1].st_gid))
        if keys:
            with _dir(root_fd, "root", 0o700, root_owner) as home, _dir(home, ".ssh", 0o700, root_owner) as ssh:
                existing = _read(ssh, "authorized_keys")
                text = (existing[0].rstrip("\n") + "\n" if existing and existing[0].strip() else "")
                _replace(ssh, "authorized_keys", text + "\n".join(keys) + "\n", 0o600, root_owner)
    except OSError as exc:
        raise ValidationError(f"cannot write credentials into container {ctid}: {exc.strerror} "
                              f"({exc.filename or ''})") from None
    finally:
        os.close(root_fd)
