"""In Chromium, browser only: a new bridge made on the node's Network page, a container created on it with the
wizard and started, then its Firewall tab: a rule that drops ping is added and the host sees its pings dropped,
deleted and the pings answered again.  Traffic only between the host and the test's own bridge and container."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from tests.webui import test_browser as kit
from tests.webui.test_browser import LIVE, accept_confirmations, expect, expect_status, login
from webui.models import Container, StoredTemplate

pytestmark = pytest.mark.django_db(transaction=True)
browser, page = kit.browser, kit.page  # Chromium and a tab, as the other browser tests have them
NAME = f"cbb{os.getpid() % 100000}"
SYS = Path("/sys/class/net")


def free_subnet_elsewhere():
    """engine's free_subnet, asked in another process: pyroute2 cannot run in Playwright's event-loop thread."""
    import ipaddress
    import sys

    code = "from engine.network.default import free_subnet; print(free_subnet())"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    return ipaddress.IPv4Network(out.strip())


def answers_ping(ip: str) -> bool:
    return subprocess.run(["busybox", "ping", "-c1", "-W1", ip], capture_output=True).returncode == 0


@pytest.fixture
def own_bridge(engine):
    yield NAME
    from engine.network.bridge_edit import replace_stanza

    subprocess.run(["ip", "link", "del", NAME], capture_output=True)
    path = engine.layout.root / "network" / "interfaces"
    if path.exists():
        path.write_text(replace_stanza(path.read_text(), NAME, None))


def test_new_bridge_container_and_a_firewall_rule_that_drops(
    page, web, agent, node, make_user, stored_busybox, ctid_factory, engine, own_bridge
):
    StoredTemplate.objects.get_or_create(node=node, name=stored_busybox.removeprefix("local:vztmpl/"))
    hosts = [str(h) for h in free_subnet_elsewhere().hosts()]
    page.on("dialog", lambda dialog: dialog.accept())
    accept_confirmations(page)
    make_user("admin", superuser=True)
    login(page, web, "admin")

    # Node -> Network: a wrong address is refused naming the field, then the bridge is made.
    page.click(f'li[data-node="{node.name}"] a.node-network')
    page.wait_for_url(f"{web}/nodes/{node.name}/network/")
    page.fill("#bridge-name", own_bridge)
    page.fill("#bridge-address", hosts[0])
    page.click("#bridge-submit")
    expect(page.locator("#messages")).to_contain_text("address")
    page.fill("#bridge-address", f"{hosts[0]}/24")
    page.click("#bridge-submit")
    expect(page.locator(f'tr[data-bridge="{own_bridge}"] .bridge-active')).to_have_text("yes", timeout=LIVE)
    assert (SYS / own_bridge / "bridge").is_dir()

    # The wizard offers the new bridge; the container gets a static address on it and starts.
    ctid = ctid_factory()
    page.click("#create-ct")
    page.wait_for_url(f"{web}/create/")
    page.fill("#id_ctid", str(ctid))
    page.fill("#id_hostname", f"fw{ctid}")
    page.fill("#id_password", "s3cret!")
    page.fill("#id_password_confirm", "s3cret!")
    page.click("#next-general")
    page.select_option("#id_template", stored_busybox)
    page.click("#next-template")
    page.fill("#id_disk_size", "1")
    page.click("#next-disk")
    page.click("#next-cpu")
    page.fill("#id_memory", "128")
    page.fill("#id_swap", "0")
    page.click("#next-memory")
    page.select_option("#id_bridge", own_bridge)
    page.select_option("#id_ipv4_mode", "static")
    page.fill("#id_ipv4", f"{hosts[4]}/24")
    page.click("#next-network")
    page.click("#next-dns")
    expect(page.locator("#wizard-summary")).to_contain_text(f"bridge={own_bridge}")
    page.check("#id_start")
    page.click("#wizard-finish")
    page.wait_for_url(f"{web}/ct/{ctid}/")
    expect_status(page, ctid, "running")
    assert answers_ping(hosts[4])

    # Its Firewall tab: on, accepting by default; then a rule that drops ping.
    page.click("#tab-firewall")
    page.wait_for_url(f"{web}/ct/{ctid}/firewall/")
    page.fill("#fw-opt-enable", "1")
    page.fill("#fw-opt-policy_in", "ACCEPT")
    page.click("#fw-options-save")
    expect(page.locator("#fw-text")).to_contain_text("policy_in: ACCEPT", timeout=LIVE)
    assert answers_ping(hosts[4])
    page.select_option("#fw-type", "in")
    page.fill("#fw-action", "DROP")
    page.fill("#fw-proto", "icmp")
    page.fill("#fw-comment", "no ping")
    page.click("#fw-add-rule")
    expect(page.locator("#fw-rules")).to_contain_text("IN DROP -p icmp # no ping", timeout=LIVE)
    assert not answers_ping(hosts[4])
    assert "IN DROP -p icmp # no ping" in (engine.layout.root / "firewall" / f"{ctid}.fw").read_text()
    nft = subprocess.run(
        ["nft", "list", "chain", "bridge", "caisson", f"ct{ctid}i0-in"], capture_output=True, text=True
    )
    assert 'meta l4proto icmp drop comment "no ping"' in nft.stdout

    page.click('#fw-rules tr[data-pos="0"] .fw-delete')
    expect(page.locator("#fw-rules")).not_to_contain_text("no ping", timeout=LIVE)
    assert answers_ping(hosts[4])
    assert Container.objects.get(ctid=ctid).config["net0"].startswith("name=eth0")
