"""The wizard's bridge and storage are pick lists of what the node's agent reported, and a wrong one is
refused at its own step (not after Finish), naming what the node has."""

from __future__ import annotations

import pytest
from django.test import Client

from webui.models import Node, StorageMirror

pytestmark = pytest.mark.django_db


@pytest.fixture
def admin_client(node, make_user):
    Node.objects.filter(pk=node.pk).update(info={"bridges": [{"name": "vmbr7", "ipv4": "10.7.0.1/24"}]})
    StorageMirror.objects.create(node=node, name="local", type="dir", content=["rootdir", "vztmpl", "backup"])
    StorageMirror.objects.create(node=node, name="dumps", type="dir", content=["backup"])
    client = Client()
    client.force_login(make_user("wiz", superuser=True))
    return client


def _step(client, node, step, **fields):
    return client.post(f"/create/validate/{step}", {"node": node.name, **fields}, HTTP_X_REQUESTED_WITH="fetch")


def test_a_wrong_bridge_is_refused_at_the_network_step(admin_client, node):
    refused = _step(admin_client, node, "network", bridge="vmbr99", ipv4_mode="dhcp", ipv6_mode="none")
    assert refused.status_code == 400
    message = refused.json()["error"]["fields"]["bridge"][0]
    assert "vmbr99" in message and "usable: vmbr7" in message
    assert _step(admin_client, node, "network", bridge="vmbr7", ipv4_mode="dhcp", ipv6_mode="none").status_code == 200


@pytest.mark.parametrize("storage", ["nowhere", "dumps"])
def test_a_wrong_storage_is_refused_at_the_disk_step(admin_client, node, storage):
    refused = _step(admin_client, node, "disk", storage=storage, disk_size="1")
    assert refused.status_code == 400
    assert "usable: local" in refused.json()["error"]["fields"]["storage"][0]
    assert _step(admin_client, node, "disk", storage="local", disk_size="1").status_code == 200


def test_the_wizard_lists_only_the_nodes_bridges_and_container_storages(admin_client, node):
    page = admin_client.get("/create/").content.decode()
    assert 'value="vmbr7"' in page and 'value="local"' in page and 'value="dumps"' not in page


def test_the_nic_form_picks_from_the_nodes_bridges(admin_client, node):
    from webui.models import Container

    Container.objects.create(ctid=4711, node=node, status="stopped", config={"net0": "name=eth0,bridge=vmbr7"})
    page = admin_client.get("/ct/4711/network/?edit=net0").content.decode()
    assert '<select name="bridge" id="nic-bridge" required><option selected>vmbr7</option></select>' in page
    Node.objects.filter(pk=node.pk).update(allowed_bridges=["docker0"])
    page = admin_client.get("/ct/4711/network/").content.decode()
    assert "<option>vmbr7</option><option>docker0</option>" in page
