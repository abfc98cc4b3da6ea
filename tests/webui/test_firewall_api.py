"""The firewall API at the datacenter, node and container levels, through the real agent: files written on
the node in Proxmox's layout, rules added and deleted by position, options changed, each bad field refused
by name before any job, and the rights of each level."""

from __future__ import annotations

import pytest

from tests.webui.api_helpers import client_for
from tests.webui.conftest import wait_job
from webui.models import Container, Job
from webui.models.queue import submit

pytestmark = pytest.mark.django_db(transaction=True)
CLUSTER = "[OPTIONS]\n\nenable: 1\n\n[ALIASES]\n\nadmins 10.214.0.0/16\n\n[group web]\n\nIN HTTP(ACCEPT)\n\n"


def _ok(response) -> list[Job]:
    assert response.status_code == 202, response.content
    jobs = [wait_job(Job.objects.get(pk=j["id"])) for j in response.json()["jobs"]]
    for job in jobs:
        assert job.status == "ok", f"{job.message}\n" + "\n".join(job.lines.values_list("text", flat=True))
    return jobs


@pytest.fixture
def stopped_ct(agent, node, engine, busybox_template, ctid_factory, make_user):
    ctid = ctid_factory()
    engine.create(ctid, busybox_template, {"hostname": f"fw{ctid}"})
    assert wait_job(submit("noderesync", node, node.path, node.name)).status == "ok"
    assert Container.objects.filter(ctid=ctid).exists()
    return ctid


def test_three_levels_through_the_agent(agent, node, engine, stopped_ct, make_user):
    api = client_for(make_user("fw-root", superuser=True))
    root = engine.layout.root / "firewall"
    try:
        _ok(api.put("/api/cluster/firewall/", {"text": CLUSTER}, format="json"))
        assert (root / "cluster.fw").read_text() == CLUSTER
        shown = api.get("/api/cluster/firewall/").json()
        assert shown["options"] == {"enable": "1"} and shown["groups"]["web"][0]["macro"] == "HTTP"

        base = f"/api/containers/{stopped_ct}/firewall/"
        _ok(api.put(f"{base}options", {"enable": 1, "policy_in": "DROP"}, format="json"))
        _ok(api.post(f"{base}rules/", {"type": "group", "action": "web", "iface": "net0"}, format="json"))
        _ok(api.post(f"{base}rules/", {"type": "in", "action": "ACCEPT", "source": "admins", "proto": "tcp",
                                       "dport": "22", "comment": "ssh", "pos": 0}, format="json"))  # fmt: skip
        text = (root / f"{stopped_ct}.fw").read_text()
        assert text == (
            "[OPTIONS]\n\nenable: 1\npolicy_in: DROP\n\n[RULES]\n\n"
            "IN ACCEPT -source admins -p tcp -dport 22 # ssh\nGROUP web -i net0\n\n"
        )
        rules = api.get(f"{base}rules/").json()
        assert [r["text"] for r in rules] == ["IN ACCEPT -source admins -p tcp -dport 22 # ssh", "GROUP web -i net0"]
        _ok(api.delete(f"{base}rules/0"))
        assert "admins" not in (root / f"{stopped_ct}.fw").read_text()

        missing = api.post(f"{base}rules/", {"type": "group", "action": "nosuch"}, format="json")
        assert missing.status_code == 400 and "no security group 'nosuch'" in missing.json()["error"]["message"]

        _ok(api.put(f"/api/nodes/{node.name}/firewall/", {"text": "[OPTIONS]\n\nenable: 1\n"}, format="json"))
        assert (root / "host.fw").read_text() == "[OPTIONS]\n\nenable: 1\n\n"
        assert api.get(f"/api/nodes/{node.name}/firewall/log").status_code == 200
    finally:
        from engine.network import hostfw

        for name in ("cluster.fw", "host.fw", f"{stopped_ct}.fw"):
            (root / name).unlink(missing_ok=True)
        hostfw.apply(engine.layout.root)  # the node level's table goes with its files


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"type": "sideways", "action": "ACCEPT"}, "type"),
        ({"type": "in", "action": "ALLOW"}, "action"),
        ({"type": "in", "action": "ACCEPT", "macro": "Nope"}, "macro"),
        ({"type": "in", "action": "ACCEPT", "iface": "a/b"}, "iface"),
        ({"type": "in", "action": "ACCEPT", "source": "10.0.0.0/33"}, "source"),
        ({"type": "in", "action": "ACCEPT", "dest": "1.2.3.4;x"}, "dest"),
        ({"type": "in", "action": "ACCEPT", "dport": "22"}, "dport"),
        ({"type": "in", "action": "ACCEPT", "proto": "tcp", "sport": "99999"}, "sport"),
        ({"type": "in", "action": "ACCEPT", "proto": "t c p"}, "proto"),
        ({"type": "in", "action": "ACCEPT", "log": "loud"}, "log"),
        ({"type": "in", "action": "ACCEPT", "enable": "yes"}, "enable"),
        ({"type": "in", "action": "ACCEPT", "pos": 99}, "pos"),
        ({"type": "in", "action": "ACCEPT", "colour": "red"}, "colour"),
        ({"action": "ACCEPT"}, "type"),
    ],
)
def test_each_bad_rule_field_is_named(node, make_user, body, field):
    api = client_for(make_user("fw-root", superuser=True))
    answer = api.post("/api/cluster/firewall/rules/", body, format="json")
    assert answer.status_code == 400, answer.content
    assert field in answer.json()["error"]["fields"], answer.json()
    bad_option = api.put("/api/cluster/firewall/options", {"policy_in": "MAYBE"}, format="json")
    assert bad_option.status_code == 400 and "policy_in" in bad_option.json()["error"]["fields"]
    bad_text = api.put("/api/cluster/firewall/", {"text": "[RULES]\nIN ACCEPT -p tcp -dport 1;2\n"}, format="json")
    assert bad_text.status_code == 400 and "dport" in bad_text.json()["error"]["fields"]
    assert not Job.objects.exists()


def test_rights_per_level(node, make_user):
    auditor = client_for(make_user("fw-audit", "Auditor", "/"))
    assert auditor.get("/api/cluster/firewall/").status_code == 200
    assert auditor.get(f"/api/nodes/{node.name}/firewall/").status_code == 200
    assert auditor.put("/api/cluster/firewall/", {"text": ""}, format="json").status_code == 403
    assert (
        auditor.post("/api/cluster/firewall/rules/", {"type": "in", "action": "DROP"}, format="json").status_code == 403
    )
    nobody = client_for(make_user("fw-none"))
    assert nobody.get("/api/cluster/firewall/").status_code == 403
    assert nobody.get("/api/containers/999999/firewall/").status_code == 404
    assert not Job.objects.exists()


def test_aliases_ipsets_and_groups_one_at_a_time(agent, node, engine, make_user):
    api = client_for(make_user("fw-root", superuser=True))
    path = engine.layout.root / "firewall" / "cluster.fw"
    base = "/api/cluster/firewall/"
    try:
        _ok(api.post(f"{base}aliases/", {"name": "office", "cidr": "192.0.2.0/24", "comment": "HQ"}, format="json"))
        _ok(api.post(f"{base}ipset/", {"name": "blocked", "comment": "never"}, format="json"))
        _ok(api.post(f"{base}ipset/", {"name": "blocked", "cidr": "198.51.100.7"}, format="json"))
        _ok(api.post(f"{base}ipset/", {"name": "blocked", "cidr": "office", "nomatch": True}, format="json"))
        _ok(api.post(f"{base}groups/", {"group": "web", "comment": "web servers"}, format="json"))
        _ok(
            api.post(
                f"{base}groups/", {"group": "web", "type": "in", "action": "ACCEPT", "macro": "HTTPS"}, format="json"
            )
        )
        assert path.read_text() == (
            "[ALIASES]\n\noffice 192.0.2.0/24 # HQ\n\n"
            "[IPSET blocked] # never\n\n198.51.100.7\n!office\n\n"
            "[group web] # web servers\n\nIN HTTPS(ACCEPT)\n\n"
        )
        shown = api.get(f"{base}ipset/").json()["blocked"]
        assert shown["entries"][1] == {"cidr": "office", "nomatch": True, "comment": None}
        assert api.get(f"{base}groups/").json()["web"]["rules"][0]["text"] == "IN HTTPS(ACCEPT)"
        _ok(api.delete(f"{base}ipset/blocked/198.51.100.7"))
        _ok(api.delete(f"{base}groups/web/0"))
        _ok(api.delete(f"{base}groups/web"))
        _ok(api.delete(f"{base}aliases/office"))
        assert path.read_text() == "[IPSET blocked] # never\n\n!office\n\n"

        bad = {
            "aliases/": ({"name": "9x", "cidr": "10.0.0.1"}, "name"),
            "ipset/": ({"name": "nosuch", "cidr": "10.0.0.1"}, "name"),
            "groups/": ({"group": "a-group-name-far-too-long"}, "group"),
        }
        for url, (body, field) in bad.items():
            answer = api.post(f"{base}{url}", body, format="json")
            assert answer.status_code == 400 and field in answer.json()["error"]["fields"], answer.content
        answer = api.post(f"{base}aliases/", {"name": "x1", "cidr": "10.0.0.0/0"}, format="json")
        assert answer.status_code == 400 and "cidr" in answer.json()["error"]["fields"]
        assert api.post(f"/api/nodes/{node.name}/firewall/aliases/", {}, format="json").status_code == 404
    finally:
        path.unlink(missing_ok=True)
