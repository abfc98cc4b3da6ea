"""``pvesh`` on the node (``scripts/pvesh``, ``python -m webui.pvesh``): the same handlers as ``/api2/json``,
run by hand and by proxmoxer's ``local`` backend (what Ansible's modules use on the node itself)."""

from __future__ import annotations

import json
import os
import subprocess

import pytest
from proxmoxer import ProxmoxAPI, ResourceException

from tests.webui.conftest import REPO
from webui.models import Container

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def on_node(services_env, node, make_user, monkeypatch):
    """An administrator for pvesh to act as, a container, and ``scripts/`` first on the PATH."""
    make_user("root-admin", superuser=True)
    Container.objects.create(ctid=170, node=node, status="stopped", hostname="sh", config={"memory": "256"})
    env = {**services_env, "PATH": f"{REPO / 'scripts'}:{os.environ['PATH']}"}
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    return env


def pvesh(env, *args) -> subprocess.CompletedProcess:
    return subprocess.run(["pvesh", *args], env=env, capture_output=True, text=True, timeout=120)


def test_pvesh_get_and_refusals(on_node, node):
    done = pvesh(on_node, "get", f"/nodes/{node.name}/lxc", "--output-format", "json")
    assert done.returncode == 0, done.stderr
    assert [(r["vmid"], r["name"], r["status"]) for r in json.loads(done.stdout)] == [(170, "sh", "stopped")]
    text = pvesh(on_node, "get", "/cluster/resources", "-type", "vm")
    assert text.returncode == 0 and "lxc/170" in text.stdout and text.stdout.split()[0] == "cpu"
    bad = pvesh(on_node, "set", f"/nodes/{node.name}/lxc/170/config", "-memory", "lots")
    assert bad.returncode == 255
    assert bad.stderr.splitlines() == [
        "400 Parameter verification failed.",
        "memory: type check ('integer') failed - got 'lots'",
    ]
    gone = pvesh(on_node, "get", f"/nodes/{node.name}/lxc/999/config")
    assert gone.returncode == 255 and "does not exist" in gone.stderr
    usage = pvesh(on_node, "fetch", "/nodes")
    assert usage.returncode == 2


def test_proxmoxer_local_backend_runs_pvesh(on_node, node):
    prox = ProxmoxAPI(backend="local", service="PVE")
    assert node.name in [n["node"] for n in prox.nodes.get()]
    assert prox.nodes(node.name).lxc(170).config.get()["memory"] == 256
    with pytest.raises(ResourceException) as refused:
        prox.nodes(node.name).lxc(170).config.put(colour="red")
    assert refused.value.status_code == 400
