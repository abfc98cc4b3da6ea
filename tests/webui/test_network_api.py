"""``/api/nodes/<node>/network/``: bridges created, changed and deleted by the node's agent, seen on the host;
each bad field refused by name before any job; Sys.Audit to read, Sys.Modify to change."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from engine.network.default import free_subnet
from tests.webui.api_helpers import client_for
from tests.webui.conftest import wait_job
from webui.models import Job, Node

pytestmark = pytest.mark.django_db(transaction=True)
SYS = Path("/sys/class/net")
NAME = f"cna{os.getpid() % 100000}"


def _job(response) -> Job:
    assert response.status_code == 202, response.content
    return wait_job(Job.objects.get(pk=response.json()["job"]["id"]))


@pytest.fixture
def bridge_name(engine):
    yield NAME
    from engine.network.bridge_edit import replace_stanza

    subprocess.run(["ip", "link", "del", NAME], capture_output=True)
    path = engine.layout.root / "network" / "interfaces"
    if path.exists():
        path.write_text(replace_stanza(path.read_text(), NAME, None))


def test_create_edit_delete_through_the_agent(agent, node, engine, make_user, bridge_name):
    api = client_for(make_user("net-admin", superuser=True))
    host = [str(h) for h in free_subnet().hosts()]
    body = {"iface": bridge_name, "address": f"{host[0]}/24", "pool": f"{host[9]}-{host[19]}", "dhcp": ""}
    job = _job(api.post(f"/api/nodes/{node.name}/network/", body, format="json"))
    assert job.status == "ok", job.message
    assert (SYS / bridge_name / "bridge").is_dir()
    assert f"iface {bridge_name} inet static" in (engine.layout.root / "network" / "interfaces").read_text()
    listed = {b["name"]: b for b in api.get(f"/api/nodes/{node.name}/network/").json()}
    assert listed[bridge_name]["ipv4"] == f"{host[0]}/24" and listed[bridge_name]["active"]
    assert listed[bridge_name]["pool"] == f"{host[9]}-{host[19]}"
    assert bridge_name in [i for i in Node.objects.get(pk=node.pk).info["bridges"] for i in [i["name"]]]

    again = api.post(f"/api/nodes/{node.name}/network/", body, format="json")
    assert again.status_code == 400 and "already exists" in again.json()["error"]["fields"]["name"][0]

    changed = _job(
        api.put(f"/api/nodes/{node.name}/network/{bridge_name}", {"address": f"{host[1]}/24"}, format="json")
    )
    assert changed.status == "ok", changed.message
    shown = subprocess.run(["ip", "-o", "addr", "show", "dev", bridge_name], capture_output=True, text=True).stdout
    assert f"{host[1]}/24" in shown and f"{host[0]}/24" not in shown
    assert api.get(f"/api/nodes/{node.name}/network/{bridge_name}").json()["pool"] is None

    assert _job(api.put(f"/api/nodes/{node.name}/network/", format="json")).status == "ok"  # apply the file

    gone = _job(api.delete(f"/api/nodes/{node.name}/network/{bridge_name}"))
    assert gone.status == "ok", gone.message
    assert not (SYS / bridge_name).exists()
    assert api.get(f"/api/nodes/{node.name}/network/{bridge_name}").status_code == 404


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"iface": "1x"}, "iface"),
        ({"iface": "veth0x"}, "iface"),
        ({"address": "10.1.2.3"}, "address"),
        ({"address": 5}, "address"),
        ({"address6": "fd00::1"}, "address6"),
        ({"ports": "eth0"}, "ports"),
        ({"ports": ["no-such-nic0"]}, "ports"),
        ({"vlan_aware": "yes"}, "vlan_aware"),
        ({"vids": "1-9"}, "vids"),
        ({"mtu": 10}, "mtu"),
        ({"mtu": "1500"}, "mtu"),
        ({"pool": "10.1.0.10-10.1.0.20"}, "pool"),
        ({"address": "10.1.0.1/24", "dhcp": "10.1.1.10-10.1.1.20"}, "dhcp"),
        ({"nat": True}, "nat"),
        ({"gateway": "10.0.0.1"}, "gateway"),
    ],
)
def test_each_bad_field_is_refused_by_name(node, make_user, body, field):
    api = client_for(make_user("net-admin", superuser=True))
    body = {"iface": NAME, **body}
    answer = api.post(f"/api/nodes/{node.name}/network/", body, format="json")
    assert answer.status_code == 400, answer.content
    fields = answer.json()["error"]["fields"]
    assert (field if field != "iface" else "name") in fields or field in fields, fields
    assert not Job.objects.exists()


def test_rights(node, make_user):
    auditor = client_for(make_user("net-audit", "Auditor", "/"))
    assert auditor.get(f"/api/nodes/{node.name}/network/").status_code == 200
    refused = auditor.post(f"/api/nodes/{node.name}/network/", {"iface": NAME}, format="json")
    assert refused.status_code == 403 and "Sys.Modify" in refused.json()["error"]["message"]
    assert auditor.delete(f"/api/nodes/{node.name}/network/vmbr0").status_code == 403
    assert auditor.put(f"/api/nodes/{node.name}/network/", format="json").status_code == 403
    nobody = client_for(make_user("net-none"))
    assert nobody.get(f"/api/nodes/{node.name}/network/").status_code == 403
    assert not Job.objects.exists()
