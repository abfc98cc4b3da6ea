"""Pages' defects and the bulk endpoint, through Django's test client (no browser needed)."""

from __future__ import annotations

import re
import time

import pytest
from django.utils import timezone

from tests.webui import test_pages
from tests.webui.test_pages import login
from webui.models import BackupArchive, Container, Job, MetricSample

pytestmark = pytest.mark.django_db
world = test_pages.world  # two containers (100 running, 101 stopped), metrics


def test_favicon_answers_without_login(client):
    response = client.get("/favicon.ico")
    assert response.status_code == 200 and response["Content-Type"] == "image/svg+xml"
    assert b"<svg" in b"".join(response.streaming_content)


def test_sizes_are_binary_and_say_so(make_user, world):
    MetricSample.objects.filter(scope=f"node/{world['node'].name}").update(memory=3 << 29, memory_total=1 << 31)
    body = login(make_user, superuser=True).get("/").content.decode()
    assert "1.5 GiB of 2.0 GiB" in body
    assert not re.search(r"\d (KB|MB|GB|TB)\b", body)


def test_restore_proposes_a_free_id(make_user, world):
    BackupArchive.objects.create(
        node=world["node"],
        storage="local",
        ctid=101,
        name="vzdump-lxc-101-2026_01_01-00_00_00.tar.zst",
        time=timezone.now(),
        size=1 << 20,
        format="zstd",
    )
    body = login(make_user, superuser=True).get("/ct/101/backup/").content.decode()
    proposed = re.search(r'name="ctid" type="number"[^>]* value="(\d+)"', body).group(1)
    assert int(proposed) not in (100, 101) and not Container.objects.filter(ctid=int(proposed)).exists()


def test_bulk_checks_each_container(make_user, world, roles):
    from webui.models import AccessEntry

    client = login(make_user, "op", "Auditor", "/")
    user = client.session["_auth_user_id"]
    AccessEntry.objects.create(user_id=user, role=roles["Operator"], path="/ct/101")
    answer = client.post(
        "/bulk", {"action": "start", "ctid": ["100", "101", "555"]}, HTTP_X_REQUESTED_WITH="fetch"
    ).json()
    assert answer["skipped"] == [100]  # running already
    assert [j["target"] for j in answer["jobs"]] == ["101"]
    assert answer["refused"] == {"555": "CT 555 does not exist"}
    answer = client.post("/bulk", {"action": "stop", "ctid": ["100"]}, HTTP_X_REQUESTED_WITH="fetch").json()
    assert "VM.PowerMgmt" in answer["refused"]["100"] and not answer["jobs"]
    assert list(Job.objects.exclude(pk=world["job"].pk).values_list("kind", "target")) == [("vzstart", "101")]


def test_bulk_refuses_bad_input_by_name(make_user, world):
    client = login(make_user, superuser=True)
    bad = client.post("/bulk", {"action": "tag", "ctid": ["100"], "tags": "ok bad/tag"}, HTTP_X_REQUESTED_WITH="fetch")
    assert bad.status_code == 400 and "bad/tag" in bad.json()["error"]["message"]
    bad = client.post("/bulk", {"action": "explode", "ctid": ["100"]}, HTTP_X_REQUESTED_WITH="fetch")
    assert bad.status_code == 400 and "explode" in bad.json()["error"]["message"]
    bad = client.post("/bulk", {"action": "start"}, HTTP_X_REQUESTED_WITH="fetch")
    assert bad.status_code == 400 and "select at least one" in bad.json()["error"]["message"]
    assert not Job.objects.exclude(pk=world["job"].pk).exists()


def test_search_lists_what_one_may_see_with_tags(make_user, world):
    Container.objects.filter(ctid=100).update(config={"hostname": "web", "tags": "prod;edge"})
    body = login(make_user, superuser=True).get("/search/?q=prod").content.decode()
    assert 'data-resource="lxc/100"' in body and 'data-resource="lxc/101"' in body
    assert '<span class="tag">prod</span><span class="tag">edge</span>' in body
    assert 'value="prod"' in body and f'data-resource="node/{world["node"].name}"' in body
    operator = login(make_user, "op", "Operator", "/ct/101").get("/search/").content.decode()
    assert 'data-resource="lxc/101"' in operator and 'data-resource="lxc/100"' not in operator


def _history(scope: str, memory: int, cpu: float, hours: int = 3) -> None:
    now = int(time.time())
    for i in range(hours * 2):
        ts = now - now % 1800 - i * 1800
        MetricSample.objects.create(scope=scope, step=1800, ts=ts, cpu=cpu, memory=memory, memory_total=0)


def test_right_sizing_hints(make_user, world):
    client = login(make_user, superuser=True)
    assert 'id="sizing-hints"' not in client.get("/ct/100/").content.decode()  # no history yet: no hint
    Container.objects.filter(ctid=100).update(config={"hostname": "web", "memory": "2048", "cores": "4"})
    _history("ct/100", 60 << 20, 0.1)
    body = client.get("/ct/100/").content.decode()
    assert 'data-hint="memory-low"' in body and "128 MiB would do" in body
    assert 'data-hint="cpu-low"' in body
    _history("ct/101", 250 << 20, 0.0)  # its limit is 256 MiB
    body = client.get("/ct/101/").content.decode()
    assert 'data-hint="memory-high"' in body and "close to the limit 256 MiB" in body


def test_month_and_year_graphs(make_user, world):
    client = login(make_user, superuser=True)
    for frame, window in (("month", 10800 * 248), ("year", 86400 * 366)):
        body = client.get(f"/ct/100/?timeframe={frame}").content.decode()
        assert f'"window": {window}' in body and 'data-chart="diskio"' in body and 'data-chart="disk"' in body


def test_recordings_are_for_auditors_of_the_container(make_user, world, tmp_path, settings):
    from webui.models import ConsoleRecording, RecordingRule

    settings.DATA_DIR = tmp_path
    rec = ConsoleRecording.objects.create(session="a" * 32, ctid=100, node=world["node"].name, mode="shell")
    rec.path.write_text('{"version": 2, "width": 80, "height": 24, "timestamp": 0}\n[0.1, "o", "hi"]\n')
    operator = login(make_user, "op", "Operator", "/")  # VM.Console, no Sys.Audit: no recordings
    assert operator.get(f"/recordings/{rec.session}/cast").status_code == 404
    assert 'data-recording="' not in operator.get("/datacenter/recordings/").content.decode()
    assert operator.post("/datacenter/recordings/rules", {"ctid": "100"}).status_code == 403
    assert not RecordingRule.objects.exists()
    auditor = login(make_user, "aud", "Auditor", "/ct/100")
    got = auditor.get(f"/recordings/{rec.session}/cast?download=1")
    assert got.status_code == 200 and "attachment" in got["Content-Disposition"]
    assert b'"o", "hi"' in b"".join(got.streaming_content)
    bad = auditor.post(f"/recordings/{rec.session}/share", {"hours": "9999"}, HTTP_X_REQUESTED_WITH="fetch")
    assert bad.status_code == 400 and "hours" in bad.json()["error"]["message"]
    admin = login(make_user, superuser=True)
    assert admin.post("/datacenter/recordings/rules", {"ctid": "100", "username": "op"}).status_code == 302
    assert not RecordingRule.objects.exists()  # either a container or a user, not both
    admin.post("/datacenter/recordings/rules", {"username": "op"})
    assert RecordingRule.applies(999, operator.session["_auth_user_id"] and int(operator.session["_auth_user_id"]))


def test_the_console_shell_is_a_plain_absolute_path():
    from engine.attach import SHELL_ARGV, shell_argv
    from tasks.console_protocol import is_shell

    assert is_shell(None) and is_shell("/bin/bash") and is_shell("/usr/local/bin/fish")
    for bad in ("bash", "/bin/../sbin/x", "/bin/sh; reboot", "/bin/ sh", "/bin/sh\n", "", "/" + "a" * 200, 7):
        assert not is_shell(bad), bad
    assert shell_argv("/bin/zsh") == ["/bin/zsh", "-l"] and shell_argv(None) == SHELL_ARGV


def test_options_reach_the_console_settings_and_features(make_user, world):
    client = login(make_user, superuser=True)
    body = client.get("/ct/101/options/").content.decode()
    assert 'name="cmode"' in body and 'name="tty"' in body and 'name="features"' in body
    form = {"tab": "options", "keys": ["hostname", "cmode", "console", "features", "onboot"], "hostname": "db"}
    form.update(cmode="shell", console="1", features="nesting=1")  # console left on: no change for it
    answer = client.post("/ct/101/config", form, HTTP_X_REQUESTED_WITH="fetch")
    assert answer.status_code == 202, answer.content
    job = Job.objects.get(pk=answer.json()["job"]["id"])
    assert job.params["changes"] == {"cmode": "shell", "features": "nesting=1"} and job.params["delete"] == []
