"""Proxmox's own clients against a running Caisson: proxmoxer (PyPI) over HTTPS through a container's whole
life, with a password and with an API token, every task followed through its UPID."""

from __future__ import annotations

import secrets
import subprocess
import time

import pytest
from proxmoxer import ProxmoxAPI, ResourceException

from tests.webui.api_helpers import template_row
from tests.webui.conftest import PASSWORD
from webui.models import AccessEntry, ApiToken, Container

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(autouse=True)
def no_failed_logins():
    """Login failure counters live in the cache the web server shares; each test starts with none.  (Passwords
    keep the default hasher here: the web server checks them.)"""
    from django.core.cache import cache

    cache.clear()
    yield
    cache.clear()


@pytest.fixture
def bridge(node):
    """A host bridge of this test's, allowed on the node, for the container's NIC."""
    name = f"cpv{secrets.token_hex(3)}"
    subprocess.run(["ip", "link", "add", name, "type", "bridge"], check=True)
    node.allowed_bridges = [name]
    node.save(update_fields=["allowed_bridges"])
    yield name
    subprocess.run(["ip", "link", "del", name], check=False, capture_output=True)


def client(web_https, **auth) -> ProxmoxAPI:
    url, cert = web_https
    port = int(url.rsplit(":", 1)[1])
    return ProxmoxAPI("127.0.0.1", port=port, verify_ssl=str(cert), timeout=30, **auth)


def ended(prox: ProxmoxAPI, node: str, upid: str, timeout: float = 120) -> dict:
    """Poll the task through its UPID until it stops, as Proxmox's clients do; its status."""
    assert upid.startswith(f"UPID:{node}:"), upid
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status = prox.nodes(node).tasks(upid).status.get()
        if status["status"] == "stopped":
            return status
        time.sleep(0.2)
    pytest.fail(f"task {upid} still running after {timeout:g} s")


def follow(prox: ProxmoxAPI, node: str, upid: str) -> dict:
    """The task to its end, which must be OK (its log's last line too)."""
    status = ended(prox, node, upid)
    log = [line["t"] for line in prox.nodes(node).tasks(upid).log.get(limit=1000)]
    assert status["exitstatus"] == "OK", (status, log)
    assert log[-1] == "TASK OK", log
    return status


def backed_up(prox: ProxmoxAPI, node: str, ctid: int, **options) -> str:
    """Back the container up through vzdump; the archive's volume ID (the newest: an earlier test's container
    of the same ID may have left archives in the node's dump directory)."""
    since = int(time.time()) - 1
    follow(prox, node, prox.nodes(node).vzdump.post(vmid=ctid, storage="local", **options))
    backups = prox.nodes(node).storage("local").content.get(content="backup", vmid=ctid)
    newest = max(backups, key=lambda b: b["ctime"])
    assert newest["ctime"] >= since and newest["volid"].startswith(f"local:backup/vzdump-lxc-{ctid}-"), backups
    return newest["volid"]


def test_proxmoxer_drives_a_container_life_cycle(
    web_https, agent, node, stored_busybox, ctid_factory, engine, make_user, bridge
):
    make_user("alice", "Administrator", "/")
    template_row(node, stored_busybox.removeprefix("local:vztmpl/"))
    prox = client(web_https, user="alice@pve", password=PASSWORD)
    name = node.name
    assert prox.version.get()["version"] >= "4.2"
    assert name in [n["node"] for n in prox.nodes.get()]
    assert stored_busybox in [c["volid"] for c in prox.nodes(name).storage("local").content.get(content="vztmpl")]
    ctid, copy = ctid_factory(), ctid_factory()

    created = prox.nodes(name).lxc.create(
        vmid=ctid,
        ostemplate=stored_busybox,
        hostname=f"pve{ctid}",
        memory=128,
        swap=0,
        rootfs="local:1",
        password="s3cret!pw",
        unprivileged=1,
        net0=f"name=eth0,bridge={bridge}",
        onboot=0,
        description="made by proxmoxer",
    )
    follow(prox, name, created)
    assert engine.exists(ctid)
    config = prox.nodes(name).lxc(ctid).config.get()
    assert (config["hostname"], config["memory"], config["description"]) == (f"pve{ctid}", 128, "made by proxmoxer")
    assert len(config["digest"]) == 40

    follow(prox, name, prox.nodes(name).lxc(ctid).status.start.post())
    current = prox.nodes(name).lxc(ctid).status.current.get()
    assert (current["status"], current["vmid"], current["type"]) == ("running", ctid, "lxc")
    assert engine.status(ctid).status == "running"
    interfaces = {i["name"]: i for i in prox.nodes(name).lxc(ctid).interfaces.get()}
    mac = config["net0"].split("hwaddr=")[1].split(",")[0].lower()
    assert interfaces["eth0"]["hwaddr"] == mac and "lo" in interfaces

    follow(prox, name, prox.nodes(name).lxc(ctid).status.suspend.post())
    assert engine.status(ctid).paused
    follow(prox, name, prox.nodes(name).lxc(ctid).status.resume.post())
    assert not engine.status(ctid).paused and engine.status(ctid).status == "running"

    # Bad input through the client: Proxmox's status code and per-parameter errors, nothing changed.
    with pytest.raises(ResourceException) as refused:
        prox.nodes(name).lxc(ctid).config.put(memory="lots", colour="red")
    assert refused.value.status_code == 400 and set(refused.value.errors) == {"memory", "colour"}

    follow(prox, name, prox.nodes(name).lxc(ctid).snapshot.post(snapname="before", description="first"))
    assert "before" in [s["name"] for s in prox.nodes(name).lxc(ctid).snapshot.get()]
    digest = prox.nodes(name).lxc(ctid).config.get()["digest"]
    prox.nodes(name).lxc(ctid).config.put(memory=192, digest=digest)  # answers once the change is written
    assert prox.nodes(name).lxc(ctid).config.get()["memory"] == 192
    follow(prox, name, prox.nodes(name).lxc(ctid).snapshot("before").rollback.post())
    assert prox.nodes(name).lxc(ctid).config.get()["memory"] == 128

    volid = backed_up(prox, name, ctid, mode="snapshot", compress="zstd")
    restored = prox.nodes(name).lxc.create(vmid=copy, ostemplate=volid, restore=1, hostname=f"copy{copy}", unique=1)
    follow(prox, name, restored)
    assert engine.exists(copy)
    assert copy in [r["vmid"] for r in prox.cluster.resources.get(type="vm")]
    assert prox.nodes(name).lxc(copy).template.post() is None  # Proxmox's answer; a vztemplate task converts
    template_task = next(t for t in prox.nodes(name).tasks.get(vmid=copy) if t["type"] == "vztemplate")
    follow(prox, name, template_task["upid"])
    assert prox.nodes(name).lxc(copy).config.get()["template"] == 1

    follow(prox, name, prox.nodes(name).lxc(ctid).snapshot("before").delete())
    follow(prox, name, prox.nodes(name).lxc(ctid).status.stop.post())
    assert prox.nodes(name).lxc(ctid).status.current.get()["status"] == "stopped"
    for vmid in (ctid, copy):
        follow(prox, name, prox.nodes(name).lxc.delete(vmid, purge=1))
        assert not engine.exists(vmid) and not Container.objects.filter(ctid=vmid).exists()
    with pytest.raises(ResourceException) as gone:
        prox.nodes(name).lxc(ctid).status.current.get()
    assert gone.value.status_code == 500
    tasks = prox.nodes(name).tasks.get(vmid=ctid, limit=100)
    assert {
        "vzcreate",
        "vzstart",
        "vzsuspend",
        "vzresume",
        "vzsnapshot",
        "vzrollback",
        "vzdump",
        "vzstop",
        "vzdestroy",
    } <= {t["type"] for t in tasks}


def test_proxmoxer_with_an_api_token(web_https, node, make_user):
    alice = make_user("alice", "Auditor", "/")
    _, value = ApiToken.issue(alice, "ci")
    prox = client(web_https, user="alice@pve", token_name="ci", token_value=value.split("=", 1)[1])
    assert prox.version.get()["release"]
    assert node.name in [n["node"] for n in prox.nodes.get()]
    bad = client(web_https, user="alice@pve", token_name="ci", token_value="wrong")
    with pytest.raises(ResourceException) as refused:
        bad.nodes.get()
    assert refused.value.status_code == 401


def test_a_separated_token_is_held_to_its_own_rights_on_the_node(
    web_https, agent, node, stored_busybox, ctid_factory, engine, make_user, roles
):
    """A superuser's privilege-separated token granted Administrator is no superuser: the node refuses to
    restore a privileged container's archive for it (a root-equivalent setting only the node can read)."""
    root = make_user("chief", superuser=True)
    template_row(node, stored_busybox.removeprefix("local:vztmpl/"))
    prox = client(web_https, user="chief@pve", password=PASSWORD)
    name, ctid, copy = node.name, ctid_factory(), ctid_factory()
    made = prox.nodes(name).lxc.create(
        vmid=ctid, ostemplate=stored_busybox, memory=128, swap=0, rootfs="local:1", password="s3cret!pw"
    )  # no unprivileged=1: Proxmox's default, a privileged container
    follow(prox, name, made)
    volid = backed_up(prox, name, ctid, mode="stop")
    token, value = ApiToken.issue(root, "ci", privsep=True)
    AccessEntry.objects.create(token=token, role=roles["Administrator"], path="/")
    by_token = client(web_https, user="chief@pve", token_name="ci", token_value=value.split("=", 1)[1])
    refused = ended(prox, name, by_token.nodes(name).lxc.create(vmid=copy, ostemplate=volid, restore=1))
    assert "sets unprivileged, which only a superuser may set" in refused["exitstatus"], refused
    assert not engine.exists(copy) and not Container.objects.filter(ctid=copy).exists()
    follow(prox, name, prox.nodes(name).lxc.create(vmid=copy, ostemplate=volid, restore=1))  # its user may
    assert engine.exists(copy)
