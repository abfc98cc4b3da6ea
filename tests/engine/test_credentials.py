"""Root's password and SSH keys written at create time, on a directory volume and on an ext4 image."""

from __future__ import annotations

import os

import pytest

from engine.credentials import set_credentials, validate_ssh_keys
from engine.errors import ValidationError

KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl alice@example"


def read(engine, ctid, relpath):
    config = engine.config(ctid)
    _, driver, vol = engine._rootfs_volume(config)
    with driver.tree(vol) as tree:
        path = tree / relpath
        return path.read_text(), os.lstat(path)


@pytest.mark.parametrize("rootfs", [None, "local:1"], ids=["directory", "ext4-image"])
def test_password_and_keys_land_in_the_rootfs(engine, busybox_template, ctid_factory, rootfs):
    ctid = ctid_factory()
    engine.create(ctid, busybox_template, {"rootfs": rootfs} if rootfs else {})
    set_credentials(engine, ctid, "s3cret-pass", KEY + "\n")
    shadow, _ = read(engine, ctid, "etc/shadow")
    assert shadow.startswith("root:$6$") and "s3cret" not in shadow
    keys, st = read(engine, ctid, "root/.ssh/authorized_keys")
    # Proxmox's form (its setup cases' authorized_keys.exp): the keys in a marked block
    assert keys == f"# --- BEGIN PVE ---\n{KEY}\n# --- END PVE ---\n" and st.st_mode & 0o777 == 0o600
    assert st.st_uid == engine._idmap(engine.config(ctid)).host_uid(0)
    # The container boots with them: root's entry is what login would check.
    engine.start(ctid)
    code, out, _ = engine.exec_output(ctid, ["/bin/sh", "-c", "cut -c1-8 /etc/shadow | head -1"])
    assert (code, out.strip()) == (0, b"root:$6$")
    engine.stop(ctid)


def test_a_symlinked_shadow_is_not_followed(engine, busybox_template, ctid_factory, tmp_path):
    ctid = ctid_factory()
    engine.create(ctid, busybox_template)
    target = tmp_path / "host-file"
    target.write_text("host data\n")
    etc = engine._rootfs(engine.config(ctid)) / "etc"
    (etc / "shadow").unlink(missing_ok=True)
    (etc / "shadow").symlink_to(target)
    with pytest.raises(ValidationError, match="cannot write credentials"):
        set_credentials(engine, ctid, "s3cret-pass", None)
    assert target.read_text() == "host data\n"


@pytest.mark.parametrize(
    "text, message",
    [
        ("ssh-ed25519", "not an OpenSSH public key"),
        ("ssh-ed25519 not*base64", "not an OpenSSH public key"),
        ("ssh-ed25519 AAAA", "does not match its type"),
        ("ssh-rsa AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl", "does not match its type"),
        ("# only a comment\n", "no key given"),
    ],
)
def test_bad_ssh_keys_are_refused_with_the_line(text, message):
    with pytest.raises(ValidationError, match=message):
        validate_ssh_keys(text)
