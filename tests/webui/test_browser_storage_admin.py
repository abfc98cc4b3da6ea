"""In Chromium: a storage clicked in the tree (summary, a destroyed container's backup downloaded with its
bytes intact), a template uploaded in chunks with the node's checksum shown, a storage added and removed,
a bridge edited and deleted, the datacenter's firewall file saved; each effect checked on the node."""

from __future__ import annotations

import hashlib
import os
import subprocess
from pathlib import Path

import pytest

from tests.webui import test_browser as kit
from tests.webui.conftest import wait_job
from tests.webui.test_browser import LIVE, accept_confirmations, expect, login
from tests.webui.test_browser_network_firewall import free_subnet_elsewhere
from webui.models import BackupArchive, StoredTemplate
from webui.models.queue import submit

pytestmark = pytest.mark.django_db(transaction=True)
browser, page = kit.browser, kit.page
SYS = Path("/sys/class/net")
BRIDGE = f"cbe{os.getpid() % 100000}"
TEMPLATE = f"upl-{os.getpid()}_1.0_amd64.tar.gz"


@pytest.fixture
def leftovers(engine):
    yield
    from engine.network.bridge_edit import replace_stanza

    subprocess.run(["ip", "link", "del", BRIDGE], capture_output=True)
    interfaces = engine.layout.root / "network" / "interfaces"
    if interfaces.exists():
        interfaces.write_text(replace_stanza(interfaces.read_text(), BRIDGE, None))
    (engine.layout.root / "template" / "cache" / TEMPLATE).unlink(missing_ok=True)
    from engine.network import hostfw

    (engine.layout.root / "firewall" / "cluster.fw").unlink(missing_ok=True)
    (engine.layout.root / "firewall" / "host.fw").unlink(missing_ok=True)
    hostfw.apply(engine.layout.root)


def test_storage_network_and_firewall_administration(
    page, web, agent, node, engine, make_user, ctid_factory, leftovers, tmp_path
):
    page.on("dialog", lambda dialog: dialog.accept())
    accept_confirmations(page)
    ctid = ctid_factory()
    dump = engine.layout.root / "dump" / f"vzdump-lxc-{ctid}-2026_02_03-04_05_06.tar.zst"
    dump.parent.mkdir(exist_ok=True)
    dump.write_bytes(os.urandom(2 * (1 << 20) + 99))
    assert wait_job(submit("noderesync", node, node.path, node.name)).status == "ok"
    make_user("admin", superuser=True)
    login(page, web, "admin")
    try:
        # The storage from the tree: usage, the destroyed container's backup, its download.
        page.click(f'li[data-node="{node.name}"] a[data-storage="local"]')
        page.wait_for_url(f"{web}/storage/{node.name}/local/")
        expect(page.locator("#storage-usage")).to_contain_text("%")
        row = page.locator(f'#storage-backups tr[data-backup="{BackupArchive.objects.get(name=dump.name).pk}"]')
        expect(row).to_contain_text("(destroyed)")
        with page.expect_download() as info:
            row.locator(".backup-download").click()
        saved = tmp_path / "downloaded"
        info.value.save_as(saved)
        assert hashlib.sha256(saved.read_bytes()).digest() == hashlib.sha256(dump.read_bytes()).digest()

        # A template uploaded in two chunks; the node's checksum is shown and the file is in its store.
        data = os.urandom(9 * (1 << 20) + 5)
        page.set_input_files("#upload-file", files=[{"name": TEMPLATE, "mimeType": "application/gzip", "buffer": data}])
        page.click("#upload-submit")
        expect(page.locator("#upload-sha256")).to_have_text(hashlib.sha256(data).hexdigest(), timeout=LIVE)
        assert (engine.layout.root / "template" / "cache" / TEMPLATE).read_bytes() == data
        assert StoredTemplate.objects.filter(node=node, name=TEMPLATE).exists()

        # Datacenter -> Storage: add a dir storage, then remove it.
        page.click("#tree-dc-storage")
        form = page.locator(f"#storage-add-{node.name}")
        form.locator(".storage-id").fill("browserdir")
        form.locator(".storage-path").fill(str(tmp_path / "browserdir"))
        form.locator(".storage-add").click()
        added = page.locator(f'#storages tr[data-storage="{node.name}/browserdir"]')
        expect(added).to_be_visible(timeout=LIVE)
        assert "dir: browserdir" in (engine.layout.root / "storage.cfg").read_text()
        added.locator(".remove-storage").click()
        expect(added).to_have_count(0, timeout=LIVE)
        assert "browserdir" not in (engine.layout.root / "storage.cfg").read_text()

        # Node -> Network: a bridge made, its address changed, then deleted.
        hosts = [str(h) for h in free_subnet_elsewhere().hosts()]
        page.click(f'li[data-node="{node.name}"] a.node-network')
        page.fill("#bridge-name", BRIDGE)
        page.fill("#bridge-address", f"{hosts[0]}/24")
        page.click("#bridge-submit")
        bridge_row = page.locator(f'tr[data-bridge="{BRIDGE}"]')
        expect(bridge_row.locator(".bridge-active")).to_have_text("yes", timeout=LIVE)
        bridge_row.locator(".edit-bridge").click()
        page.fill("#bridge-address", f"{hosts[1]}/24")
        page.click("#bridge-submit")
        expect(page.locator(f'tr[data-bridge="{BRIDGE}"]')).to_contain_text(f"{hosts[1]}/24", timeout=LIVE)
        shown = subprocess.run(["ip", "-o", "addr", "show", "dev", BRIDGE], capture_output=True, text=True).stdout
        assert f"{hosts[1]}/24" in shown and f"{hosts[0]}/24" not in shown
        page.locator(f'tr[data-bridge="{BRIDGE}"] .delete-bridge').click()
        expect(page.locator(f'tr[data-bridge="{BRIDGE}"]')).to_have_count(0, timeout=LIVE)
        assert not (SYS / BRIDGE).exists()

        # Datacenter -> Firewall: the file with a security group, saved on the node in Proxmox's layout.
        page.click("#tree-dc-firewall")
        page.fill("#fw-text", "[group web]\nIN HTTP(ACCEPT)\n[OPTIONS]\nenable: 1\n")
        page.click("#fw-save")
        expect(page.locator("#fw-text")).to_contain_text("[group web]", timeout=LIVE)
        written = (engine.layout.root / "firewall" / "cluster.fw").read_text()
        assert written == "[OPTIONS]\n\nenable: 1\n\n[group web]\n\nIN HTTP(ACCEPT)\n\n"
        page.fill("#fw-text", "[group web]\nIN HTTP(ALLOW)\n")
        page.click("#fw-save")
        expect(page.locator("#messages")).to_contain_text("ALLOW")

        # Node -> Firewall: its options saved into host.fw; a rule naming the datacenter's group.
        page.click(f'li[data-node="{node.name}"] a.node-firewall')
        page.wait_for_url(f"{web}/nodes/{node.name}/firewall/")
        page.fill("#fw-opt-enable", "1")
        page.click("#fw-options-save")
        expect(page.locator("#fw-text")).to_contain_text("enable: 1", timeout=LIVE)
        page.select_option("#fw-type", "group")
        page.fill("#fw-action", "web")
        page.click("#fw-add-rule")
        expect(page.locator("#fw-rules")).to_contain_text("GROUP web", timeout=LIVE)
        host_fw = (engine.layout.root / "firewall" / "host.fw").read_text()
        assert host_fw == "[OPTIONS]\n\nenable: 1\n\n[RULES]\n\nGROUP web\n\n"
    finally:
        dump.unlink(missing_ok=True)
