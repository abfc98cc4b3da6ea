"""OCI archives unpacked layer by layer: Proxmox's own edge-case images, hostile layers, digests."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from engine.errors import UnsafeArchive, ValidationError
from engine.idmap import IdMap
from engine.oci.archive import is_oci_archive
from engine.oci.layers import extract_image
from tests.engine.oci_images import ImageBuilder, app_image, busybox_base

ROOT = Path(__file__).resolve().parents[2]
FIXTURES = ROOT.parent / "shared" / "peer-fixtures" / "proxmox-oci"


def _fixture(name: str) -> Path:
    path = FIXTURES / name
    if not path.is_file():
        pytest.skip(f"peer fixture {path} is missing")
    return path


def _tree(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")}


# ---- Proxmox's archives (proxmox-oci/tests), with the outcome its README states ------------------
@pytest.mark.parametrize(
    ("name", "check"),
    [
        ("oci_test_whiteout_root_breakout.tar", lambda r: r.is_dir() and _tree(r) == set()),
        ("oci_test_whiteout_current_directory.tar", lambda r: not (r / "etc").exists()),
        (
            "oci_test_whiteout_symlink.tar",
            lambda r: (r / "etc/passwd").is_file() and not os.path.lexists(r / "localetc"),
        ),
        ("oci_test_whiteout_dead_symlink_parent.tar", lambda r: (r / "etc/passwd").is_file()),
        ("oci_test_replace_file.tar", lambda r: (r / "etc/a").read_text() == "2"),
        ("oci_test_replace_file_with_dir.tar", lambda r: (r / "etc/a").is_dir()),
        ("oci_test_replace_dir_with_file.tar", lambda r: (r / "etc/a").is_file()),
    ],
)
def test_proxmox_archives_extract_as_proxmox_expects(tmp_path, name, check):
    archive = _fixture(name)
    assert is_oci_archive(archive)
    extract_image(archive, tmp_path / "root", None)
    assert check(tmp_path / "root")
    assert sorted(os.listdir(tmp_path)) == ["root"]


def test_a_whiteout_of_the_roots_parent_is_refused_and_nothing_is_touched(tmp_path):
    """Proxmox skips ``.wh...``; Caisson refuses it as an escape attempt (the target is not made, the
    directory around it keeps exactly what it had)."""
    (tmp_path / "beside").write_text("keep")
    with pytest.raises(UnsafeArchive, match=r"whiteout of '\.\.'"):
        extract_image(_fixture("oci_test_whiteout_root_parent_breakout.tar"), tmp_path / "root", None)
    assert sorted(os.listdir(tmp_path)) == ["beside"]
    assert (tmp_path / "beside").read_text() == "keep"


# ---- an image of several layers: whiteout, opaque directory, ids shifted --------------------------
def test_layers_apply_in_order_with_whiteouts_opaque_dirs_and_shifted_owners(tmp_path):
    archive = app_image().write_archive(tmp_path / "app.tar")
    idmap = IdMap(100000, 100000, 65536)
    config, stats = extract_image(archive, tmp_path / "root", idmap)
    root = tmp_path / "root"
    assert config["config"]["StopSignal"] == "SIGUSR1"
    assert not (root / "etc/removed").exists()  # whited out by layer 3
    assert sorted(os.listdir(root / "data")) == ["new"]  # opaque: layer 2's old and sub are gone
    assert (root / "data/new").read_text() == "from layer 3\n"
    st = (root / "data/new").stat()
    assert (st.st_uid, st.st_gid) == (101000, 101000)
    assert root.stat().st_uid == 100000 and (root / "bin/busybox").stat().st_uid == 100000
    assert os.readlink(root / "bin/sh") == "busybox"


# ---- hostile layers: refused, nothing left ------------------------------------------------------
def _hostile(tmp_path: Path, second: list) -> Path:
    image = ImageBuilder()
    image.add_layer(busybox_base())
    image.add_layer(second)
    return image.write_archive(tmp_path / "bad.tar")


@pytest.mark.parametrize(
    ("second", "message"),
    [
        ([("../escaped", "f", "x", 0o644, 0, 0)], "'..' components"),
        ([("etc/../../escaped", "f", "x", 0o644, 0, 0)], "'..' components"),
        ([("/abs/escaped", "f", "x", 0o644, 0, 0)], "absolute paths"),
        ([("out", "l", "{outside}", 0o777, 0, 0), ("out/escaped", "f", "x", 0o644, 0, 0)], "symlink 'out'"),
        ([("etc/.wh...", "f", "", 0o644, 0, 0)], r"whiteout of '\.\.'"),
        ([("../.wh.etc", "f", "", 0o644, 0, 0)], "'..' components"),
    ],
)
def test_a_hostile_layer_is_refused_and_nothing_is_left(tmp_path, second, message):
    outside = tmp_path / "outside"
    outside.mkdir()
    second = [(n, k, (p.format(outside=outside) if isinstance(p, str) else p), m, u, g) for n, k, p, m, u, g in second]
    archive = _hostile(tmp_path, second)
    work = tmp_path / "work"
    work.mkdir()
    with pytest.raises(UnsafeArchive, match=message):
        extract_image(archive, work / "root", None)
    assert os.listdir(work) == []
    assert os.listdir(outside) == []
    assert not (tmp_path / "escaped").exists()


def test_a_layer_whose_bytes_do_not_match_its_digest_is_refused(tmp_path):
    image = app_image()

    def tamper(blobs):
        digest = next(d for d, b in blobs.items() if b[:2] == b"\x1f\x8b" and len(b) > 1000)
        data = bytearray(blobs[digest])
        data[-12] ^= 0xFF  # inside the deflate stream's tail: the gzip CRC or our digest catches it
        blobs[digest] = bytes(data)

    archive = image.write_archive(tmp_path / "tampered.tar", tamper=tamper)
    with pytest.raises(ValidationError):
        extract_image(archive, tmp_path / "root", None)
    assert not (tmp_path / "root").exists()


def test_a_config_whose_diff_ids_do_not_match_is_refused(tmp_path):
    image = app_image()

    def swap_layer(blobs):  # a valid layer, but not the one the manifest names: digest mismatch
        layers = [d for d, b in blobs.items() if b[:2] == b"\x1f\x8b"]
        blobs[layers[0]], blobs[layers[1]] = blobs[layers[1]], blobs[layers[0]]

    archive = image.write_archive(tmp_path / "swapped.tar", tamper=swap_layer)
    with pytest.raises(ValidationError, match="digest mismatch|has .* bytes"):
        extract_image(archive, tmp_path / "root", None)
    assert not (tmp_path / "root").exists()
