"""Pulling from a real registry on loopback (Debian's docker-registry, started here), with skopeo:
an image built here, pushed, pulled into the store, made into a container, run and stopped."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import pytest

from engine.errors import AlreadyExists, Cancelled, EngineError, NotFound, ValidationError
from engine.oci import registry as oci_registry
from engine.oci.archive import OciArchive, is_oci_archive
from engine.oci.pull import abandon, pull
from engine.oci.reference import archive_name, parse
from tests.engine import registry_lab
from tests.engine.oci_images import app_image

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.skipif(not registry_lab.available(), reason="needs docker-registry and skopeo")

USER, PASSWORD = "alice", "s3cret-Pa55word"


@pytest.fixture(scope="module")
def layout(tmp_path_factory):
    return app_image().write_layout(tmp_path_factory.mktemp("image") / "layout")


@pytest.fixture(scope="module")
def open_registry(tmp_path_factory, layout):
    with registry_lab.registry(tmp_path_factory.mktemp("registry")) as address:
        registry_lab.push(layout, address, "test/app:1.0")
        registry_lab.push(layout, address, "test/app:1.1")
        yield address


@pytest.fixture(scope="module")
def private_registry(tmp_path_factory, layout):
    with registry_lab.registry(tmp_path_factory.mktemp("private"), {USER: PASSWORD}) as address:
        registry_lab.push(layout, address, "secret/app:1.0", creds=f"{USER}:{PASSWORD}")
        yield address


@pytest.fixture
def node_root(tmp_path, open_registry, private_registry):
    oci_registry.Settings(insecure=[open_registry, private_registry]).save(tmp_path)
    return tmp_path


def test_references_and_proxmoxs_archive_names():
    assert archive_name(parse("docker.io/library/alpine:3.20")) == "alpine_3.20.tar"
    assert archive_name(parse("alpine")) == "alpine_latest.tar"
    ref = parse("127.0.0.1:5000/test/app@sha256:" + "a" * 64)
    assert (ref.registry, ref.repository, ref.tag) == ("127.0.0.1:5000", "test/app", None)
    assert archive_name(parse("ghcr.io/x/y:1"), "My Image") == "My_Image.tar"
    for bad in ("", "UPPER/case", "a b", "x:tag with space", "../../etc", "x@sha256:short"):
        with pytest.raises(ValidationError):
            parse(bad)


def test_tags_are_listed(node_root, open_registry):
    assert oci_registry.list_tags(node_root, f"{open_registry}/test/app") == ["1.0", "1.1"]


def test_pulled_image_runs_as_an_application_container(engine, ctid_factory, node_root, open_registry):
    seen = []
    path = pull(
        node_root, engine.layout.templates, f"{open_registry}/test/app:1.0", progress=lambda d, t: seen.append((d, t))
    )
    try:
        assert path.name == "app_1.0.tar" and is_oci_archive(path)
        assert seen and seen[-1][0] == seen[-1][1] and seen[-1][1] > 0
        with OciArchive(path) as archive:
            assert archive.config["config"]["StopSignal"] == "SIGUSR1"
        assert not list(engine.layout.templates.glob(".app_1.0.pull"))
        with pytest.raises(AlreadyExists):
            pull(node_root, engine.layout.templates, f"{open_registry}/test/app:1.0")
        ctid = ctid_factory()
        engine.create(ctid, "local:vztmpl/app_1.0.tar", {"hostname": f"pulled{ctid}", "memory": "128", "swap": "0"})
        engine.start(ctid)
        deadline = time.monotonic() + 30
        while b"greeting=hello-oci" not in engine.console_log(ctid) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert b"greeting=hello-oci cwd=/data uid=1000" in engine.console_log(ctid)
        engine.shutdown(ctid, timeout=30, force_stop=False)
        assert b"stopping on USR1" in engine.console_log(ctid)
    finally:
        path.unlink(missing_ok=True)


def test_a_private_registry_needs_credentials_which_never_show(node_root, private_registry, tmp_path):
    cache = tmp_path / "cache"
    with pytest.raises(EngineError) as refused:
        pull(node_root, cache, f"{private_registry}/secret/app:1.0")
    assert "unauthorized" in str(refused.value).lower() or "authentication" in str(refused.value).lower()
    wrong = oci_registry.Credentials(USER, "not-the-password")
    with pytest.raises(EngineError) as refused:
        pull(node_root, cache, f"{private_registry}/secret/app:1.0", credentials=wrong)
    assert "not-the-password" not in str(refused.value)
    creds = oci_registry.Credentials(USER, PASSWORD)
    assert PASSWORD not in repr(creds)
    path = pull(node_root, cache, f"{private_registry}/secret/app:1.0", credentials=creds)
    assert is_oci_archive(path)
    assert oci_registry.list_tags(node_root, f"{private_registry}/secret/app", creds) == ["1.0"]
    stored = b"".join(p.read_bytes() for p in cache.rglob("*") if p.is_file())
    assert PASSWORD.encode() not in stored and b"YWxpY2U6" not in stored  # nor its base64


def test_a_registry_mirror_serves_docker_hub_names(node_root, open_registry, tmp_path):
    """docker.io is never reached (no network here): the mirror answers for it."""
    oci_registry.Settings(mirrors={"docker.io": [open_registry]}, insecure=[open_registry]).save(node_root)
    path = pull(node_root, tmp_path / "cache", "docker.io/test/app:1.1")
    assert path.name == "app_1.1.tar" and is_oci_archive(path)


def test_a_missing_image_is_not_found(node_root, open_registry, tmp_path):
    with pytest.raises(NotFound):
        pull(node_root, tmp_path / "cache", f"{open_registry}/test/nothing:1.0")
    assert not [p for p in (tmp_path / "cache").iterdir() if not p.name.endswith(".lock")]


def test_a_cancelled_pull_leaves_nothing_in_the_store(node_root, open_registry, tmp_path):
    cache, ref = tmp_path / "cache", f"{open_registry}/test/app:1.1"
    cancel = threading.Event()
    cancel.set()
    with pytest.raises(Cancelled):
        pull(node_root, cache, ref, cancel=cancel)
    assert not (cache / "app_1.1.tar").exists()


def test_an_interrupted_pull_resumes_with_the_blobs_it_has(tmp_path, layout):
    """What an earlier run fetched is reused: the layer deleted from the registry meanwhile is not asked for."""
    with registry_lab.registry(tmp_path / "registry") as address:
        registry_lab.push(layout, address, "test/app:1.0")
        oci_registry.Settings(insecure=[address]).save(tmp_path / "node")
        cache = tmp_path / "cache"
        kept = cache / ".app_1.0.pull"
        cache.mkdir()
        subprocess.run(
            ["skopeo", "copy", "--src-tls-verify=false", f"docker://{address}/test/app:1.0", f"oci:{kept}:1.0"],
            check=True,
            capture_output=True,
        )
        (kept / "index.json").unlink()  # interrupted before the end
        biggest = max((kept / "blobs/sha256").iterdir(), key=lambda p: p.stat().st_size)
        request = urllib.request.Request(f"http://{address}/v2/test/app/blobs/sha256:{biggest.name}", method="DELETE")
        assert urllib.request.urlopen(request).status == 202
        path = pull(tmp_path / "node", cache, f"{address}/test/app:1.0")
        assert is_oci_archive(path) and not kept.exists()
        assert abandon(cache, f"{address}/test/app:1.0") is False  # nothing left to abandon


def test_abandon_drops_what_an_interrupted_pull_kept(tmp_path):
    (tmp_path / ".app_2.0.pull" / "blobs").mkdir(parents=True)
    assert abandon(tmp_path, "127.0.0.1:5000/test/app:2.0") is True
    assert list(tmp_path.iterdir()) == []


def test_a_blob_whose_bytes_changed_in_the_registry_is_refused(tmp_path, layout):
    with registry_lab.registry(tmp_path / "registry") as address:
        registry_lab.push(layout, address, "test/app:1.0")
        oci_registry.Settings(insecure=[address]).save(tmp_path / "node")
        blobs = sorted((tmp_path / "registry/data").rglob("blobs/sha256/*/*/data"), key=lambda p: p.stat().st_size)
        biggest = blobs[-1]  # busybox's layer
        data = bytearray(biggest.read_bytes())
        data[len(data) // 2] ^= 0xFF
        biggest.write_bytes(bytes(data))
        cache = tmp_path / "cache"
        with pytest.raises(ValidationError, match="digest"):
            pull(tmp_path / "node", cache, f"{address}/test/app:1.0")
        assert not [p for p in cache.iterdir() if not p.name.endswith(".lock")]


def test_the_cli_pulls_lists_tags_and_sets_mirrors(tmp_path, open_registry, private_registry):
    root = str(tmp_path)
    cli = [sys.executable, "-m", "engine.templates", "--root", root]

    def run(*args, stdin=""):
        return subprocess.run([*cli, *args], input=stdin, capture_output=True, text=True, cwd=ROOT)

    done = run("--output", "json", "mirror", "--insecure", open_registry, "--insecure", private_registry)
    assert done.returncode == 0, done.stderr
    done = run("--output", "json", "mirror", "docker.io", open_registry)
    assert json.loads(done.stdout)["mirrors"] == {"docker.io": [open_registry]}
    done = run("--output", "json", "tags", f"{open_registry}/test/app")
    assert json.loads(done.stdout) == ["1.0", "1.1"]
    done = run("--output", "json", "pull", f"{private_registry}/secret/app:1.0")
    assert done.returncode == 1 and "unauthorized" in done.stderr.lower()
    done = run("pull", f"{private_registry}/secret/app:1.0", "--username", USER)
    assert done.returncode == 2 and "--password-stdin" in done.stderr
    done = run(
        "--output",
        "json",
        "pull",
        f"{private_registry}/secret/app:1.0",
        "--username",
        USER,
        "--password-stdin",
        stdin=PASSWORD + "\n",
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["name"] == "app_1.0.tar"
    done = run("--output", "json", "list")
    assert [t["name"] for t in json.loads(done.stdout)] == ["app_1.0.tar"]
    assert run("pull", "Not A Reference").returncode == 2
    assert run("pull", f"{open_registry}/test/missing:1").returncode == 3


def test_archives_move_between_skopeo_and_caisson(node_root, open_registry, tmp_path, engine, ctid_factory):
    """Caisson's archive is what skopeo's oci-archive transport reads (the manifest digest unchanged), and the
    archive Proxmox makes (``skopeo copy ... oci-archive:``) is a template here."""
    ref = f"{open_registry}/test/app:1.0"
    ours = pull(node_root, tmp_path / "cache", ref)

    def digest(source: str) -> str:
        argv = (
            ["skopeo", "inspect", "--tls-verify=false", source]
            if source.startswith("docker:")
            else ["skopeo", "inspect", source]
        )
        return json.loads(subprocess.run(argv, check=True, capture_output=True, text=True).stdout)["Digest"]

    assert digest(f"oci-archive:{ours}") == digest(f"docker://{ref}")
    theirs = tmp_path / "proxmox_1.0.tar"
    subprocess.run(
        ["skopeo", "copy", "--src-tls-verify=false", f"docker://{ref}", f"oci-archive:{theirs}"],
        check=True,
        capture_output=True,
    )
    assert is_oci_archive(theirs)
    ctid = ctid_factory()
    engine.create(ctid, theirs, {"hostname": f"px{ctid}"})
    assert engine.config(ctid).current.raw_values("lxc.signal.halt") == ["SIGUSR1"]


def test_a_pull_by_digest(node_root, open_registry, tmp_path):
    ref = f"{open_registry}/test/app:1.0"
    out = subprocess.run(
        ["skopeo", "inspect", "--tls-verify=false", f"docker://{ref}"], check=True, capture_output=True, text=True
    ).stdout
    digest = json.loads(out)["Digest"]
    path = pull(node_root, tmp_path / "cache", f"{open_registry}/test/app@{digest}")
    assert path.name == f"app_{digest.replace(':', '_')}.tar" and is_oci_archive(path)
    wrong = "sha256:" + "0" * 64
    with pytest.raises(NotFound):
        pull(node_root, tmp_path / "cache", f"{open_registry}/test/app@{wrong}")


def test_a_link_local_registry_is_refused(tmp_path):
    for reference in ("169.254.169.254/latest/meta:1", "[fe80::1]:5000/x:1"):
        with pytest.raises(ValidationError):
            pull(tmp_path, tmp_path / "cache", reference)
    with pytest.raises(ValidationError, match="link-local"):
        oci_registry.list_tags(tmp_path, "169.254.169.254/latest/meta")
