"""Create as named steps (engine.create_steps): a failure names its step and leaves nothing; the distro step."""

from __future__ import annotations

import io
import re
import tarfile
from pathlib import Path

import pytest

from engine.errors import AlreadyExists, ValidationError

ALPINE = {
    "sbin/init": "",
    "etc/os-release": "ID=alpine\n",
    "etc/alpine-release": "3.19.1\n",
    "etc/securetty": "console\n",
    "etc/hosts": "127.0.0.1 localhost\n127.0.1.1 LXC_NAME\n",
    "etc/crontab": "17 * * * * root run-parts /etc/periodic/hourly\n",
    "etc/runlevels/boot": None,
}


def _template(tmp_path: Path, files: dict[str, str | None]) -> Path:
    """A tarball of ``files`` (None: a directory)."""
    path = tmp_path / "template.tar.gz"
    with tarfile.open(path, "w:gz") as tar:
        for name, text in files.items():
            info = tarfile.TarInfo(f"./{name}")
            if text is None:
                info.type, info.mode = tarfile.DIRTYPE, 0o755
                tar.addfile(info)
                continue
            info.size = len(text.encode())
            info.mode = 0o755 if name == "sbin/init" else 0o644
            tar.addfile(info, io.BytesIO(text.encode()))
    return path


def _step_notes(exc: BaseException) -> list[str]:
    return [note for note in getattr(exc, "__notes__", []) if "failed at step" in note]


def test_a_failed_step_is_named_and_its_work_undone(engine, ctid_factory, tmp_path):
    ctid = ctid_factory()
    with pytest.raises(ValidationError, match="no /sbin/init") as refused:
        engine.create(ctid, _template(tmp_path, {"etc/motd": "hi\n"}))
    assert _step_notes(refused.value) == [f"create of container {ctid} failed at step 'inspect'"]
    assert not engine.exists(ctid) and not engine.layout.image_dir(ctid).exists()

    engine.create(ctid, _template(tmp_path, {"sbin/init": ""}))
    with pytest.raises(AlreadyExists) as taken:
        engine.create(ctid, _template(tmp_path, {"sbin/init": ""}))
    assert _step_notes(taken.value) == [f"create of container {ctid} failed at step 'reserve'"]


def test_the_distro_step_fixes_a_template_up(engine, ctid_factory, tmp_path):
    ctid = ctid_factory()
    engine.create(ctid, _template(tmp_path, ALPINE))
    root = engine._rootfs(engine.config(ctid))
    assert engine.config(ctid).current.values["ostype"] == "alpine"
    assert (root / "etc/securetty").read_text().split() == ["console", "tty1", "tty2", "tty3", "tty4"]
    assert "LXC_NAME" not in (root / "etc/hosts").read_text()
    link = root / "etc/runlevels/boot/networking"
    assert link.is_symlink() and str(link.readlink()) == "/etc/init.d/networking"
    assert re.fullmatch(r"\d+ \* \* \* \* root run-parts /etc/periodic/hourly\n", (root / "etc/crontab").read_text())
    assert link.lstat().st_uid == engine.idmap.host_uid(0)  # made as the container's root


def test_a_restore_keeps_the_files_as_they_came(engine, ctid_factory, tmp_path):
    ctid = ctid_factory()
    engine.create(ctid, _template(tmp_path, ALPINE), template_fixups=False)
    root = engine._rootfs(engine.config(ctid))
    for name, text in ALPINE.items():
        if text is not None:
            assert (root / name).read_text() == text
    assert list((root / "etc/runlevels/boot").iterdir()) == []
