"""The container page's Suspend/Resume, Files tab, disk move and Convert to template in Debian's Chromium,
each effect checked on the node."""

from __future__ import annotations

import os

import pytest

from tests.webui.conftest import wait_job
from tests.webui.test_browser import LIVE, accept_confirmations, browser, expect, login, page  # noqa: F401 - fixtures
from webui.models import Job, StorageMirror

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def running_ct(agent, node, engine, busybox_template, ctid_factory, monkeypatch):
    import tasks.mirror
    from tasks.mirror import sync_container

    monkeypatch.setattr(tasks.mirror, "node_engine", lambda: engine)
    ctid = ctid_factory()
    engine.create(ctid, busybox_template, {"hostname": "browsed", "memory": "128"})
    engine.start(ctid)
    sync_container(node, ctid)
    yield ctid
    if engine.exists(ctid):
        engine.destroy(ctid, force=True)


def test_suspend_resume_and_files_in_the_browser(page, web, make_user, running_ct, engine, tmp_path):  # noqa: F811
    ctid = running_ct
    make_user("filer", "ContainerAdmin", "/")
    login(page, web, "filer")
    page.goto(f"{web}/ct/{ctid}/")
    expect(page.locator("#ct-status")).to_have_text("running")
    expect(page.locator("#btn-resume")).to_be_disabled()
    page.click("#btn-suspend")
    expect(page.locator("#ct-status")).to_have_text("paused", timeout=LIVE)
    assert engine.status(ctid).paused
    expect(page.locator("#btn-resume")).to_be_enabled()
    expect(page.locator("#btn-suspend")).to_be_disabled()
    page.click("#btn-resume")
    expect(page.locator("#ct-status")).to_have_text("running", timeout=LIVE)
    assert not engine.status(ctid).paused

    # Files: upload with an owner and mode, checked on the node, then download it back
    source = tmp_path / "motd.txt"
    source.write_bytes(b"hello from the browser\n")
    page.click("#tab-files")
    page.set_input_files("#files-push input[name=file]", str(source))
    page.fill("#files-push input[name=path]", "/etc/motd")
    page.fill("#files-push input[name=user]", "nobody")
    page.fill("#files-push input[name=group]", "nogroup")
    page.fill("#files-push input[name=perms]", "0604")
    page.click("#push-button")
    expect(page.locator("#messages")).to_contain_text("upload to /etc/motd", timeout=LIVE)
    job = wait_job(Job.objects.filter(kind="push_file", path=f"/ct/{ctid}").latest("created"))
    assert job.status == "ok", job.message
    host = f"/proc/{engine.node.running(ctid).pid}/root/etc/motd"
    idmap = engine.node.idmap_of(engine.config(ctid))
    st = os.stat(host)
    assert (st.st_uid, st.st_gid, st.st_mode & 0o777) == (idmap.host_uid(65534), idmap.host_gid(65534), 0o604)
    assert open(host, "rb").read() == b"hello from the browser\n"

    page.fill("#files-pull input[name=path]", "/etc/motd")
    with page.expect_download() as download:
        page.click("#pull-button")
    saved = tmp_path / "pulled"
    download.value.save_as(saved)
    assert saved.read_bytes() == b"hello from the browser\n"
    pulled = Job.objects.filter(kind="pull_file", path=f"/ct/{ctid}").latest("created")
    answer = page.request.get(f"{web}/ct/{ctid}/files/pulled/{pulled.pk}")  # the same download, its headers
    assert answer.headers["x-caisson-owner"] == "nobody:nogroup"
    assert answer.headers["x-caisson-mode"] == "0604"

    # a path that climbs out through a symlink is refused by name
    engine.exec_output(ctid, ["/bin/sh", "-c", "ln -s / /tmp/root"])
    page.fill("#files-pull input[name=path]", "/tmp/root/etc/hostname")
    page.click("#pull-button")
    expect(page.locator("#pull-state")).to_contain_text("leaves the container's root", timeout=LIVE)


def test_move_volume_and_template_in_the_browser(page, web, make_user, running_ct, engine, node, tmp_path):  # noqa: F811
    from engine.storage import cfg
    from engine.storage.base import StorageDef

    ctid = running_ct
    defs = cfg.load(engine.layout.root)
    second = tmp_path / "second"
    second.mkdir()
    os.chmod(tmp_path, 0o755)
    cfg.save(engine.layout.root, {**defs, "second": StorageDef("second", "dir", second, frozenset({"rootdir"}))})
    StorageMirror.objects.update_or_create(node=node, name="local", defaults={"type": "dir", "content": ["rootdir"]})
    StorageMirror.objects.create(node=node, name="second", type="dir", content=["rootdir"])
    page.on("dialog", lambda dialog: dialog.accept())
    accept_confirmations(page)
    try:
        make_user("mover", "ContainerAdmin", "/")
        login(page, web, "mover")
        page.goto(f"{web}/ct/{ctid}/")
        page.click("#btn-stop")
        expect(page.locator("#ct-status")).to_have_text("stopped", timeout=LIVE)
        page.click("#tab-resources")
        expect(page.locator('#disk-table tr[data-disk="rootfs"]')).to_contain_text(f"local:{ctid}/")
        page.select_option("#move-rootfs select[name=storage]", "second")
        page.check("#move-rootfs input[name=delete]")
        page.click("#move-rootfs button")
        expect(page.locator('#disk-table tr[data-disk="rootfs"]')).to_contain_text(f"second:{ctid}/", timeout=LIVE)
        assert engine.config(ctid).current.get("rootfs")["volume"].startswith("second:")
        assert "unused0" not in engine.config(ctid).current.values
        page.click("#btn-template")
        expect(page.locator("#messages")).to_contain_text("template of CT", timeout=LIVE)
        job = wait_job(Job.objects.filter(kind="vztemplate", path=f"/ct/{ctid}").latest("created"))
        assert job.status == "ok", job.message
        page.reload()
        expect(page.locator("#ct-template")).to_have_text("template")
        assert engine.config(ctid).current.values["template"] == "1"
        expect(page.locator("#btn-template")).to_have_count(0)
        expect(page.locator("#btn-start")).to_be_disabled()  # a template never starts
    finally:
        engine.destroy(ctid, force=True)
        cfg.save(engine.layout.root, defs)
