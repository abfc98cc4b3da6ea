"""A container's NIC uses only bridges Caisson manages or an administrator allowed; firewall off, its own MAC or
an address outside the bridge's allocation needs VM.Config.Network.  From a ContainerAdmin's side, through the API:
create and config edit, and the wizard's bridge list."""

from __future__ import annotations

from pathlib import Path

import pytest
from django.test import Client

from tests.webui.api_helpers import client_for, create_body, fresh_throttles  # noqa: F401 - fixture
from webui.models import Container, Job
from webui.nic_rights import nic_findings

pytestmark = pytest.mark.django_db

BRIDGES = [
    {"name": "vmbr0", "ipv4": "10.10.0.1/24", "ipv6": None, "pool": "10.10.0.100-10.10.0.199", "dhcp": None},
    {"name": "vmbr1", "ipv4": "10.20.0.1/24", "ipv6": "fd20::1/64", "pool": None, "dhcp": "10.20.0.200-10.20.0.249"},
]


@pytest.fixture
def net_node(node):
    node.info = {**node.info, "bridges": BRIDGES}
    node.save()
    return node


@pytest.fixture
def tenant(net_node, make_user, roles):
    from webui.models import AccessEntry

    user = make_user("tenant", "ContainerAdmin", net_node.path)
    AccessEntry.objects.create(user=user, role=roles["ContainerAdmin"], path="/storage/local")  # room for disks
    return client_for(user)


def create(client, node, ctid, **nic):
    return client.post("/api/containers/", create_body(node, ctid, **{"ipv4_mode": "dhcp", **nic}), format="json")


def test_only_managed_or_allowed_bridges(net_node, tenant, make_user):
    refused = create(tenant, net_node, 200, bridge="docker0")
    assert refused.status_code == 400 and "docker0" in refused.json()["error"]["fields"]["bridge"][0]
    assert create(tenant, net_node, 201, bridge="vmbr0").status_code == 202
    # Allowing a host bridge is Sys.Modify's on the node, not a ContainerAdmin's.
    assert (
        tenant.put(f"/api/nodes/{net_node.name}/bridges/", {"allowed": ["docker0"]}, format="json").status_code == 403
    )
    admin = client_for(make_user("netadmin", "Administrator", "/"))
    allowed = admin.put(f"/api/nodes/{net_node.name}/bridges/", {"allowed": ["docker0"]}, format="json")
    assert allowed.status_code == 200 and allowed.json()["allowed"] == ["docker0"]
    assert [b["name"] for b in tenant.get(f"/api/nodes/{net_node.name}/bridges/").json()["managed"]] == [
        "vmbr0",
        "vmbr1",
    ]
    assert create(tenant, net_node, 202, bridge="docker0").status_code == 202
    assert set(Job.objects.values_list("target", flat=True)) == {"201", "202"}


@pytest.mark.parametrize(
    "nic, needed",
    [
        ({"bridge": "vmbr0", "firewall": False}, "firewall off"),
        ({"bridge": "vmbr0", "ipv4_mode": "static", "ipv4": "10.10.0.150/24"}, "pool"),
        ({"bridge": "vmbr1", "ipv4_mode": "static", "ipv4": "10.30.0.5/24"}, "outside"),
        ({"bridge": "vmbr1", "ipv4_mode": "static", "ipv4": "10.20.0.210/24"}, "outside"),
        ({"bridge": "vmbr1", "ipv4_mode": "static", "ipv4": "10.20.0.1/24"}, "outside"),
        ({"bridge": "vmbr1", "ipv6_mode": "static", "ipv6": "fd99::5/64"}, "outside"),
    ],
    ids=["firewall-off", "static-on-pool-bridge", "outside-subnet", "in-dhcp-range", "bridge-address", "ipv6"],
)
def test_leaving_the_allocation_needs_its_privilege(net_node, tenant, make_user, nic, needed):
    refused = create(tenant, net_node, 210, **nic)
    assert refused.status_code == 403, refused.content
    message = refused.json()["error"]["message"]
    assert "VM.Config.Network" in message and needed in message
    assert not Job.objects.exists() and not Container.objects.exists()
    admin = client_for(make_user("netadmin", "Administrator", "/"))
    assert create(admin, net_node, 211, **nic).status_code == 202


def test_a_static_address_inside_a_poolless_subnet_is_fine(net_node, tenant):
    assert (
        create(
            tenant, net_node, 220, bridge="vmbr1", ipv4_mode="static", ipv4="10.20.0.5/24", gw="10.20.0.1"
        ).status_code
        == 202
    )


def test_config_edit_checks_what_changes(net_node, tenant):
    old = "name=eth0,bridge=vmbr1,ip=10.99.0.5/24"  # from before: no firewall, outside the subnet
    Container.objects.create(
        ctid=230, node=net_node, status="stopped", config={"hostname": "a", "net0": old}, digest="d" * 40
    )

    def put(changes):
        return tenant.put("/api/containers/230/config/", {"changes": changes}, format="json")

    assert put({"net0": old + ",rate=5"}).status_code == 202  # unchanged firewall and address: allowed
    mac = put({"net1": "name=eth1,bridge=vmbr0,ip=dhcp,firewall=1,hwaddr=02:00:00:00:00:01"})
    assert mac.status_code == 403 and "MAC" in mac.json()["error"]["message"]
    assert put({"net1": "name=eth1,bridge=vmbr0,ip=dhcp"}).status_code == 403  # a new NIC without firewall
    bridge = put({"net1": "name=eth1,bridge=lxcbr0,ip=dhcp,firewall=1"})
    assert bridge.status_code == 400 and "lxcbr0" in bridge.json()["error"]["fields"]["net1"][0]
    assert put({"net0": "name=eth0,bridge=vmbr1,ip=10.98.0.5/24"}).status_code == 403  # a new outside address
    assert put({"net1": "name=eth1,bridge=vmbr0,ip=dhcp,firewall=1"}).status_code == 202
    assert Job.objects.filter(kind="vzset").count() == 2


def test_the_generated_mac_is_the_allocation(net_node):
    from engine.network.nics import generate_mac

    own = generate_mac(300, 0)
    assert nic_findings(net_node, 300, "net0", f"name=eth0,bridge=vmbr0,ip=dhcp,firewall=1,hwaddr={own}") == (None, [])


def test_the_wizard_offers_only_usable_bridges(net_node, make_user):
    net_node.allowed_bridges = ["docker0"]
    net_node.save()
    pages = Client()
    pages.force_login(make_user("tenant2", "ContainerAdmin", net_node.path))
    html = pages.get("/create/").content.decode()
    assert '<select name="bridge"' in html
    for bridge in ("vmbr0", "vmbr1", "docker0"):
        assert f'<option value="{bridge}" data-node="{net_node.name}"' in html


def test_the_agent_reports_the_bridges_its_interfaces_file_defines(engine, monkeypatch):
    import tasks.mirror

    path = engine.layout.root / "network" / "interfaces"
    path.parent.mkdir(parents=True, exist_ok=True)
    before = path.read_text() if path.exists() else None
    path.write_text(
        "auto vmbr7\niface vmbr7 inet static\n    address 10.77.0.1/24\n    bridge-ports none\n"
        "    caisson-pool 10.77.0.100-10.77.0.199\n"
    )
    monkeypatch.setattr(tasks.mirror, "node_engine", lambda: engine)
    try:
        assert tasks.mirror.managed_bridges() == [
            {
                "name": "vmbr7",
                "ipv4": "10.77.0.1/24",
                "ipv6": None,
                "pool": "10.77.0.100-10.77.0.199",
                "dhcp": None,
                "ports": [],
                "vlan_aware": False,
                "vids": None,
                "mtu": None,
                "nat": False,
                "active": (Path("/sys/class/net/vmbr7/bridge")).is_dir(),
            }
        ]
    finally:
        path.write_text(before) if before is not None else path.unlink()
