"""Custom templates from stopped containers: unshifted owners, identity cleared, usable like any template."""
from __future__ import annotations

import os
import tarfile

import pytest
import zstandard

from engine.errors import AlreadyExists, InvalidState, ValidationError


def members(path) -> dict[str, tarfile.TarInfo]:
    with open(path, "rb") as raw, zstandard.ZstdDecompressor().stream_reader(raw) as stream, \
            tarfile.open(fileobj=stream, mode="r|") as tar:
        return {m.name: m for m in tar}


def test_a_container_becomes_a_template_and_a_new_container_boots_from_it(engine, busybox_template, ctid_factory):
    ctid = ctid_factory()
    engine.create(ctid, busybox_template, {"hostname": "original"})
    engine.start(ctid)
    # A stand-in for OpenSSH: a config, host keys, and an ssh-keygen that makes a key for -A.
    keygen = "#!/bin/sh\n[ \"$1\" = -A ] && echo new > /etc/ssh/ssh_host_ed25519_key\n"
    script = ("mkdir -p /etc/ssh /srv /usr/bin && echo key > /etc/ssh/ssh_host_ed25519_key "
              "&& echo c > /etc/ssh/sshd_config "
              f"&& printf '{keygen}' > /usr/bin/ssh-keygen && chmod 755 /usr/bin/ssh-keygen "
              "&& echo 0123456789abcdef > /etc/machine-id && echo app > /srv/app && chown 1000:1000 /srv/app")
    assert engine.exec_output(ctid, ["sh", "-c", script])[0] == 0
    with pytest.raises(InvalidState, match="is running"):
        engine.make_template(ctid, "mine-1.0-1_amd64.tar.zst")
    engine.stop(ctid)
    name = f"mine{ctid}-1.0-1_amd64.tar.zst"
    path = engine.make_template(ctid, name)
    assert path == engine.layout.templates / name
    found = members(path)
    assert "./etc/ssh/ssh_host_ed25519_key" not in found and "./etc/ssh/sshd_config" in found
    assert found["./etc/machine-id"].size == 0
    assert (found["./srv/app"].uid, found["./srv/app"].gid) == (1000, 1000)  # back to the container's ids
    assert found["./bin/busybox"].uid == 0
    assert not any(p.name.startswith(".") for p in engine.layout.templates.iterdir())

    clone = ctid_factory()
    engine.create(clone, f"local:vztmpl/{name}", {"hostname": "fromtemplate"})
    engine.start(clone)
    code, out, _ = engine.exec_output(clone, ["sh", "-c", "cat /srv/app; hostname; stat -c %u /srv/app; "
                                                          "cat /etc/ssh/ssh_host_ed25519_key"])
    assert out.decode().split() == ["app", "fromtemplate", "1000", "new"]  # host keys made at first start
    assert os.stat(engine._rootfs(engine.config(clone)) / "srv" / "app").st_uid == 101000
    engine.stop(clone)
    with pytest.raises(AlreadyExists):
        engine.make_template(ctid, name)


@pytest.mark.parametrize("name", ["../x.tar.zst", "a/b.tar.zst", ".hidden.tar.zst", "plain.tar.gz", "noext"])
def test_bad_template_names_are_refused(engine, busybox_template, ctid_factory, name):
    ctid = ctid_factory()
    engine.create(ctid, busybox_template)
    with pytest.raises(ValidationError):
        engine.make_template(ctid, name)
