"""Ansible (``ansible-core`` and the community.proxmox collection, from PyPI) against a running Caisson: a
playbook that creates, starts, stops and removes a container with the ``proxmox`` module, over HTTPS with
the certificate verified."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.webui.api_helpers import template_row
from tests.webui.conftest import PASSWORD
from webui.models import Container, Job

pytestmark = pytest.mark.django_db(transaction=True)
PLAYBOOK_BIN = Path(sys.executable).parent / "ansible-playbook"


@pytest.fixture(autouse=True)
def no_failed_logins():
    from django.core.cache import cache

    cache.clear()
    yield
    cache.clear()


def playbook(path: Path, url: str, cert: Path, node: str, vmid: int, template: str) -> None:
    host, port = url.removeprefix("https://").split(":")
    auth = {
        "api_host": host,
        "api_port": int(port),
        "api_user": "alice@pve",
        "api_password": PASSWORD,
        "ca_path": str(cert),
        "validate_certs": True,
        "api_timeout": 30,
        "node": node,
        "vmid": vmid,
        "timeout": 120,
    }
    steps = [
        {
            "state": "present",
            "hostname": f"ans{vmid}",
            "ostemplate": template,
            "password": "s3cret!pw",
            "memory": 128,
            "swap": 0,
            "disk": "local:1",
            "onboot": False,
            "description": "made by ansible",
        },
        {"state": "started"},
        {"state": "stopped"},
        {"state": "absent", "purge": True},
    ]
    tasks = [
        {"name": f"container {step['state']}", "community.proxmox.proxmox": {**auth, **step}, "register": f"r{i}"}
        for i, step in enumerate(steps)
    ]
    tasks.append({"name": "results", "ansible.builtin.debug": {"msg": "{{ [r0, r1, r2, r3] | to_json }}"}})
    path.write_text(json.dumps([{"hosts": "localhost", "gather_facts": False, "tasks": tasks}]))


def test_ansible_playbook_creates_starts_stops_and_removes(
    web_https, agent, node, stored_busybox, ctid_factory, engine, make_user, tmp_path
):
    make_user("alice", "Administrator", "/")
    template_row(node, stored_busybox.removeprefix("local:vztmpl/"))
    vmid = ctid_factory()
    url, cert = web_https
    book = tmp_path / "site.yml"
    playbook(book, url, cert, node.name, vmid, stored_busybox)
    env = {
        **os.environ,
        "ANSIBLE_HOME": str(tmp_path / "home"),
        "ANSIBLE_LOCAL_TEMP": str(tmp_path / "tmp"),
        "ANSIBLE_PYTHON_INTERPRETER": sys.executable,  # the module imports proxmoxer from this virtualenv
        "ANSIBLE_STDOUT_CALLBACK": "json",
        "ANSIBLE_NOCOLOR": "1",
    }
    done = subprocess.run(
        [str(PLAYBOOK_BIN), "-i", "localhost,", "-c", "local", str(book)],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stdout[-6000:] + done.stderr[-3000:]
    report = json.loads(done.stdout)
    results = [task["hosts"]["localhost"] for task in report["plays"][0]["tasks"][:4]]
    assert [r["changed"] for r in results] == [True, True, True, True], results
    assert "removed" in results[3]["msg"]
    assert not engine.exists(vmid) and not Container.objects.filter(ctid=vmid).exists()
    kinds = set(Job.objects.filter(path=f"/ct/{vmid}").values_list("kind", flat=True))
    assert {"vzcreate", "vzstart", "vzshutdown", "vzdestroy"} <= kinds, kinds
