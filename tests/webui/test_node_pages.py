"""Node-aware pages with two nodes in the database: the wizard offers each node's own storages, bridges and
templates and refuses another node's (the wizard, ``/api/`` and ``/api2/json`` alike), the datacenter
lists the nodes with their load and container counts, and a container's page and the lists name its node.
The browser half (choices changing with the node, rows kept live by a real agent) is test_node_browser.py."""

from __future__ import annotations

import re
from datetime import timedelta

import pytest
from django.test import Client
from django.utils import timezone

from tests.webui.api_helpers import client_for, create_body, error_of, fresh_throttles, template_row  # noqa: F401
from tests.webui.test_pve_api import login
from webui.models import Container, Job, Node, StorageMirror

pytestmark = pytest.mark.django_db


def two_nodes(node) -> tuple[Node, Node]:
    """``node`` with storage local, bridge vmbr7 and busybox; node-b with storage fast, bridge vmbr8 and debian."""
    Node.objects.filter(pk=node.pk).update(info={"bridges": [{"name": "vmbr7"}], "load": [0.25, 0.5, 1.0]})
    other = Node.objects.create(
        name="node-b", last_seen=timezone.now(), cpus=4, info={"bridges": [{"name": "vmbr8"}], "load": [3.5, 2, 1]}
    )
    for row, storage in ((node, "local"), (other, "fast")):
        StorageMirror.objects.create(node=row, name=storage, type="dir", content=["rootdir", "vztmpl"])
    template_row(node, "busybox-1.36.1-1_amd64.tar.zst")
    template_row(other, "debian-12-standard_12.7-1_amd64.tar.zst")
    node.refresh_from_db()
    return node, other


def offered(page: str, field: str) -> set[tuple[str, str]]:
    """(node, value) of the wizard's options for ``field`` (each option names its node)."""
    select = re.search(rf'<select name="{field}".*?</select>', page, re.S).group(0)
    return {(n, v) for v, n in re.findall(r'<option value="([^"]+)" data-node="([^"]+)"', select)}


def test_the_wizard_offers_each_nodes_own_storages_bridges_and_templates(node, make_user):
    a, b = two_nodes(node)
    page = client_for(make_user("root", superuser=True)).get("/create/").content.decode()
    assert offered(page, "storage") == {(a.name, "local"), ("node-b", "fast")}
    assert offered(page, "bridge") == {(a.name, "vmbr7"), ("node-b", "vmbr8")}
    assert offered(page, "template") == {
        (a.name, "local:vztmpl/busybox-1.36.1-1_amd64.tar.zst"),
        ("node-b", "local:vztmpl/debian-12-standard_12.7-1_amd64.tar.zst"),
    }
    # An operator allowed to create only on node-b is offered node-b alone, and only its choices.
    operator = make_user("op", "Administrator", "/nodes/node-b")
    page = client_for(operator).get("/create/").content.decode()
    assert re.findall(r'<select name="node".*?</select>', page, re.S)[0].count("<option") == 1
    assert offered(page, "storage") == {("node-b", "fast")} and offered(page, "bridge") == {("node-b", "vmbr8")}


WRONG_ON_B = {
    "storage": "storage 'local' is not a container storage of node 'node-b' (usable: fast)",
    "bridge": "bridge 'vmbr7' is not one a container may use on node 'node-b' (usable: vmbr8)",
    "template": "template 'busybox-1.36.1-1_amd64.tar.zst' is not in the store of node 'node-b'",
}


def test_another_nodes_storage_bridge_or_template_is_refused_everywhere(node, make_user):
    """node-b with node A's storage, bridge and template: each refused by name, in the wizard's steps, its
    final submit, /api/ and the Proxmox API; nothing is queued. node-b's own are taken."""
    a, b = two_nodes(node)
    root = make_user("root", superuser=True)
    web = client_for(root)
    fetch = {"HTTP_X_REQUESTED_WITH": "fetch"}
    steps = {
        "disk": {"storage": "local", "disk_size": "1"},
        "network": {"bridge": "vmbr7", "ipv4_mode": "dhcp", "ipv6_mode": "none"},
        "template": {"template": "local:vztmpl/busybox-1.36.1-1_amd64.tar.zst"},
    }
    for step, fields in steps.items():
        answer = web.post(f"/create/validate/{step}", {"node": "node-b", **fields}, **fetch)
        assert answer.status_code == 400, answer.content
        field = {"disk": "storage", "network": "bridge", "template": "template"}[step]
        assert answer.json()["error"]["fields"][field][0].startswith(WRONG_ON_B[field])
        answer = web.post(f"/create/validate/{step}", {"node": a.name, **fields}, **fetch)
        assert answer.status_code == 200, answer.content  # the same choices are node A's

    wrong = {
        **create_body(a, 4500, node="node-b"),  # busybox: node A's template
        **{"storage": "local", "bridge": "vmbr7", "ipv4_mode": "dhcp", "ipv6_mode": "none"},
    }
    submitted = web.post("/create/submit", wrong, **fetch)
    api = client_for(root).post("/api/containers/", wrong, format="json")
    for answer in (submitted, api):
        assert answer.status_code == 400, answer.content
        fields = error_of(answer)["fields"]
        for field, message in WRONG_ON_B.items():
            assert fields[field][0].startswith(message), fields

    pve = Client()
    data = login(pve, "root@pve").json()["data"]
    pve.cookies["PVEAuthCookie"] = data["ticket"]
    answer = pve.post(
        "/api2/json/nodes/node-b/lxc",
        {
            "vmid": 4501,
            "ostemplate": "local:vztmpl/busybox-1.36.1-1_amd64.tar.zst",
            "rootfs": "local:4",
            "net0": "name=eth0,bridge=vmbr7,ip=dhcp",
            "password": "s3cret!",
        },
        HTTP_CSRFPREVENTIONTOKEN=data["CSRFPreventionToken"],
    )
    assert answer.status_code == 400, answer.content
    said = str(answer.json())
    assert all(message in said for message in (WRONG_ON_B["storage"], WRONG_ON_B["template"])), said
    assert not Job.objects.exists() and not Container.objects.filter(ctid__in=(4500, 4501)).exists()

    right = dict(wrong, template="local:vztmpl/debian-12-standard_12.7-1_amd64.tar.zst", storage="fast")
    right["bridge"] = "vmbr8"
    accepted = client_for(root).post("/api/containers/", right, format="json")
    assert accepted.status_code == 202, accepted.content
    job = Job.objects.get()
    assert job.node == b and job.params["rootfs"] == "fast:8" and "bridge=vmbr8" in job.params["options"]["net0"]


def test_the_datacenter_lists_the_nodes_with_their_load_and_containers(node, make_user):
    a, b = two_nodes(node)
    for ctid, row, status in ((4600, a, "running"), (4601, a, "stopped"), (4602, b, "running")):
        Container.objects.create(ctid=ctid, node=row, status=status, hostname=f"ct{ctid}")
    Node.objects.filter(name="node-b").update(last_seen=timezone.now() - timedelta(minutes=5))
    page = client_for(make_user("root", superuser=True)).get("/").content.decode()
    rows = dict(re.findall(r'<tr data-node-row="([^"]+)" data-age="\d+">(.*?)</tr>', page, re.S))
    assert set(rows) == {a.name, "node-b"}

    def cell(name: str, key: str) -> str:
        pattern = r"<td data-node-status>(.*?)</td>" if key == "status" else rf'<td data-metric="{key}">(.*?)</td>'
        return re.search(pattern, rows[name], re.S).group(1).strip()

    assert cell(a.name, "status") == "online" and cell("node-b", "status") == "offline"
    assert cell(a.name, "load") == "0.25, 0.5, 1.0" and cell("node-b", "load") == "3.5, 2, 1"
    assert cell(a.name, "containers") == "1 running of 2" and cell("node-b", "containers") == "1 running of 1"
    assert 'data-offline-after="45"' in page and "caisson/nodes.js" in page
    # The container list names each container's node; so does the container's page.
    assert '<tr data-ct-row="4602" data-node="node-b">' in page
    assert "on node-b" in client_for(make_user("root2", superuser=True)).get("/ct/4602/").content.decode()

    node_page = client_for(make_user("root3", superuser=True)).get(f"/nodes/{a.name}/").content.decode()
    assert '<div class="big" data-metric="load">0.25, 0.5, 1.0</div>' in node_page and "nodes.js" in node_page

    # A node's row is for those who may audit that node.
    auditor = make_user("aud", "Auditor", f"/nodes/{a.name}")
    page = client_for(auditor).get("/").content.decode()
    assert f'data-node-row="{a.name}"' in page and 'data-node-row="node-b"' not in page
