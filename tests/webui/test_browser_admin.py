"""Everyday administration in Chromium: live summary cards, backup job rows, graphs' axes, in-page confirmations,
bulk actions and the tree's context menu. Each defect test failed before its fix.
"""

from __future__ import annotations

import subprocess
import threading
import time
from pathlib import Path

import pytest
from django.db import connection

from tests.webui import test_browser as kit
from tests.webui.test_browser import LIVE, expect, login, mark, stayed
from webui import live
from webui.models import BackupSchedule, Container, Job, MetricSample

pytestmark = pytest.mark.django_db(transaction=True)
browser, page = kit.browser, kit.page  # the same Chromium fixtures


def publish(paths: list[str], event: dict) -> None:
    """``webui.live.publish`` from a thread of its own: this one runs Playwright's event loop."""

    def send():
        try:
            live.publish(paths, event)
        finally:
            connection.close()

    worker = threading.Thread(target=send)
    worker.start()
    worker.join()


def ct_event(container: Container) -> dict:
    return {
        "type": "ct.status",
        "ct": {
            "ctid": container.ctid,
            "node": container.node.name,
            "hostname": container.hostname,
            "status": container.status,
        },
    }


def set_status(container: Container, status: str) -> None:
    container.status = status
    container.save(update_fields=["status"])
    publish([container.path, container.node.path], ct_event(container))


def test_summary_cards_count_live(page, web, node, make_user):
    first = Container.objects.create(ctid=4101, node=node, hostname="one", status="stopped")
    Container.objects.create(ctid=4102, node=node, hostname="two", status="stopped")
    make_user("admin", superuser=True)
    login(page, web, "admin")
    expect(page.locator("#count-stopped")).to_have_text("2")
    expect(page.locator("#count-running")).to_have_text("0")
    mark(page)
    set_status(first, "running")
    expect(page.locator('[data-ct-status="4101"]')).to_have_text("running", timeout=LIVE)
    expect(page.locator("#count-running")).to_have_text("1")
    expect(page.locator("#count-stopped")).to_have_text("1")
    third = Container(ctid=4103, node=node, hostname="three", status="running")  # one created elsewhere
    publish([f"/ct/{third.ctid}", node.path], ct_event(third))
    expect(page.locator('#ct-table [data-ct-row="4103"]')).to_be_visible(timeout=LIVE)
    expect(page.locator("#count-running")).to_have_text("2")
    expect(page.locator("#count-total")).to_have_text("3")
    Container.objects.filter(ctid=4102).delete()
    publish(["/ct/4102", node.path], {"type": "ct.removed", "ctid": 4102})
    expect(page.locator("#count-stopped")).to_have_text("0", timeout=LIVE)
    expect(page.locator("#count-total")).to_have_text("2")
    page.goto(f"{web}/nodes/{node.name}/")  # the node page's cards too
    expect(page.locator("body")).to_have_attribute("data-live", "ready")
    set_status(first, "stopped")
    expect(page.locator("#count-stopped")).to_have_text("1", timeout=LIVE)


def test_backup_job_rows_go_on_removal_and_last_run_follows(page, web, node, make_user):
    keep = BackupSchedule.objects.create(schedule="mon..fri 02:00")
    gone = BackupSchedule.objects.create(schedule="sat 03:00")
    make_user("admin", superuser=True)
    login(page, web, "admin")
    page.goto(f"{web}/datacenter/backup/")
    expect(page.locator("body")).to_have_attribute("data-live", "ready")
    mark(page)
    page.locator(f'tr[data-schedule="{gone.pk}"] button', has_text="Remove").click()
    expect(page.locator("#confirm-text")).to_contain_text(f"Remove backup job {gone.pk}?")
    page.click("#confirm-yes")
    expect(page.locator(f'tr[data-schedule="{gone.pk}"]')).to_have_count(0)
    assert not BackupSchedule.objects.filter(pk=gone.pk).exists()

    run = Job.objects.create(node=node, kind="vzdumpjob", path="/", target=str(keep.pk), status="running")
    publish(["/"], {"type": "job", "job": run.summary()})
    cell = page.locator(f'[data-last-run="{keep.pk}"]')
    expect(cell).to_contain_text("running", timeout=LIVE)
    run.status, run.message = "ok", "OK: 2 containers"
    run.save()
    publish(["/"], {"type": "job", "job": run.summary()})
    expect(cell).to_contain_text("OK: 2 containers", timeout=LIVE)
    assert stayed(page)


def test_the_container_buttons_ask_in_the_page(page, web, node, make_user):
    Container.objects.create(ctid=4111, node=node, hostname="busy", status="running")
    make_user("admin", superuser=True)
    login(page, web, "admin")
    page.goto(f"{web}/ct/4111/")
    expect(page.locator("body")).to_have_attribute("data-live", "ready")
    for action, words in (("shutdown", "Shut down CT 4111?"), ("reboot", "Reboot CT 4111?"), ("stop", "Stop CT 4111")):
        page.click(f"#btn-{action}")
        expect(page.locator("#confirm-dialog")).to_be_visible()
        expect(page.locator("#confirm-text")).to_contain_text(words)
        page.click("#confirm-no")
        expect(page.locator("#confirm-dialog")).to_be_hidden()
    assert not Job.objects.exists()  # nothing was sent


def _samples(scope: str, step: int, count: int, **values) -> None:
    now = int(time.time())
    for i in range(count):
        ts = now - now % step - i * step
        MetricSample.objects.create(scope=scope, step=step, ts=ts, **{k: v(i) for k, v in values.items()})


CHART = "window.CaissonCharts.charts.find((c) => c.figure.dataset.chart === '{}')"


def test_graph_axes(page, web, node, make_user):
    scope = f"node/{node.name}"
    _samples(
        scope,
        10,
        30,
        cpu=lambda i: 0.001 + i * 0.0001,  # an idle node: ticks are not all "0.00"
        memory=lambda i: 700_000_000 + i * 10_000_000,
        memory_total=lambda i: 1_000_000_000,
        disk_used=lambda i: 5 << 30,
        disk_total=lambda i: 9 << 30,
    )
    _samples(scope, 300, 1, cpu=lambda i: 0.5, memory=lambda i: 1 << 29, memory_total=lambda i: 1 << 30)
    make_user("admin", superuser=True)
    login(page, web, "admin")
    cpu = page.evaluate(f"JSON.parse({CHART.format('cpu')}.figure.dataset.yTicks)")
    assert len(set(cpu)) == len(cpu) > 1, cpu
    memory = page.evaluate(f"JSON.parse({CHART.format('memory')}.figure.dataset.yTicks)")
    # Binary steps: every tick a whole number of its unit (256 MiB, 512 MiB), not 190.7 MiB.
    assert all(label == "0 B" or label.split()[0].isdigit() for label in memory), memory
    for kind in ("cpu", "memory", "disk"):  # the value axis is as wide as its longest label
        fits = page.evaluate(f"""(() => {{
            const u = {CHART.format(kind)}.plot, axis = u.axes[1];
            u.ctx.font = axis.font[0];
            const widest = Math.max(...axis._values.map((v) => u.ctx.measureText(v).width / devicePixelRatio));
            return [axis._size, widest + axis.ticks.size + axis.gap];
        }})()""")
        assert fits[0] >= fits[1], (kind, fits)

    page.goto(f"{web}/?timeframe=day")  # one sample in the day: the axis ends now, not in 2029
    span = page.evaluate(f"(() => {{ const x = {CHART.format('cpu')}.plot.scales.x; return [x.min, x.max]; }})()")
    now = time.time()
    assert abs(span[1] - now) < 600 and abs(span[1] - span[0] - 86400) < 1, span


def test_the_wizard_confirm_step_and_errors(page, web, node, make_user):
    make_user("admin", superuser=True)
    login(page, web, "admin")
    page.goto(f"{web}/create/")
    page.fill("#id_hostname", "my box")
    page.click("#next-general")
    errors = page.locator('[data-errors-for="hostname"]')
    expect(errors).to_contain_text("is not a valid host name")
    page.fill("#id_hostname", "mybox")  # fixed: the error goes at once, not at the next Next
    expect(errors).to_be_empty()
    expect(page.locator("#id_hostname")).not_to_have_class("invalid")
    # The Confirm step with a long summary: the "Start after created" box has its own row below it.
    page.evaluate("""() => {
        const form = document.getElementById('wizard');
        form.querySelectorAll('fieldset[data-step]').forEach((f) => { f.hidden = f.dataset.step !== 'confirm'; });
        const body = document.createElement('tbody');
        for (let i = 0; i < 12; i++) {
            const tr = document.createElement('tr');
            tr.innerHTML = '<th>Network ' + i + '</th><td>name=eth0,bridge=vmbr0,ip=10.0.0.' + i
                + '/24,gw=10.0.0.1,firewall=1</td>';
            body.append(tr);
        }
        document.getElementById('wizard-summary').replaceChildren(body);
    }""")
    summary = page.locator("#wizard-summary").bounding_box()
    box = page.locator("#step-confirm label.check").bounding_box()
    overlap = not (
        box["x"] >= summary["x"] + summary["width"]
        or summary["x"] >= box["x"] + box["width"]
        or box["y"] >= summary["y"] + summary["height"]
        or summary["y"] >= box["y"] + box["height"]
    )
    assert not overlap, (summary, box)


def test_bulk_start_of_ten_containers(page, web, agent, node, make_user, engine, busybox_template, ctid_factory):
    ids = [ctid_factory() for _ in range(10)]
    for ctid in ids:
        engine.create(ctid, busybox_template, {"hostname": f"bulk{ctid}", "memory": "64", "swap": "0"})
        Container.objects.create(ctid=ctid, node=node, hostname=f"bulk{ctid}", status="stopped")
    Container.objects.create(ctid=ids[-1] + 1000, node=node, hostname="other", status="stopped")  # not selected
    make_user("admin", superuser=True)
    login(page, web, "admin")
    mark(page)
    page.fill("#ct-filter", "bulk")
    expect(page.locator(f'#ct-table tr[data-ct-row="{ids[-1] + 1000}"]')).to_be_hidden()
    page.check("#ct-select-all")
    expect(page.locator("#bulk-count")).to_have_text("10 selected")
    page.click("#bulk-start")
    for ctid in ids:
        expect(page.locator(f'#ct-table [data-ct-status="{ctid}"]')).to_have_text("running", timeout=LIVE * 3)
    expect(page.locator("#count-running")).to_have_text("10")
    assert stayed(page)
    assert [engine.status(ctid).status for ctid in ids] == ["running"] * 10
    assert Job.objects.filter(kind="vzstart").count() == 10  # the one filtered out was not started

    # Tags for the selection, shown in the table and the tree, and found by the filter.
    page.fill("#bulk-tags", "web;prod")
    page.click("#bulk-tag")
    page.wait_for_function(
        "() => document.querySelectorAll('#ct-table [data-ct-tags] .tag').length >= 20", timeout=LIVE * 2
    )
    assert all(engine.config(ctid).current.values.get("tags") == "web;prod" for ctid in ids)
    expect(page.locator(f'[data-tree-ct="{ids[0]}"] .tag')).to_have_text(["web", "prod"])

    # The tree's context menu: Stop, asked in the page, on one container.
    page.click(f'[data-tree-ct="{ids[0]}"] a', button="right")
    expect(page.locator("#ct-menu button[data-action=start]")).to_be_disabled()
    page.click("#ct-menu button[data-action=stop]")
    page.click("#confirm-yes")
    expect(page.locator(f'#ct-table [data-ct-status="{ids[0]}"]')).to_have_text("stopped", timeout=LIVE)
    assert engine.status(ids[0]).status == "stopped"

    # Datacenter → Search finds them by tag.
    page.goto(f"{web}/search/")
    page.fill("#resource-search", "prod")
    expect(page.locator(f'#search-table tr[data-resource="lxc/{ids[0]}"]')).to_be_visible()
    expect(page.locator(f'#search-table tr[data-resource="lxc/{ids[-1] + 1000}"]')).to_be_hidden()
    expect(page.locator("#search-table tr[data-search]:visible")).to_have_count(10)


def test_resources_disks_and_nic_settings(page, web, agent, node, make_user, engine, busybox_template, ctid_factory):
    ctid = ctid_factory()
    engine.create(ctid, busybox_template, {"hostname": f"res{ctid}", "memory": "64", "swap": "0"})
    config = {k: str(v) for k, v in engine.config(ctid).current.values.items()}
    Container.objects.create(ctid=ctid, node=node, hostname=f"res{ctid}", status="stopped", config=config)
    make_user("admin", superuser=True)
    login(page, web, "admin")
    page.goto(f"{web}/ct/{ctid}/resources/")
    page.fill("#resources-form [name=pids]", "64")
    page.fill("#resources-form [name=ioweight]", "200")
    page.fill("#resources-form [name=cpuset]", "0")
    page.click("#resources-form button[type=submit]")
    page.wait_for_function(
        "() => document.querySelector('#resources-form [name=pids]').value === '64'"
        " && document.querySelector('#resources-form [name=digest]').value !== ''",
        timeout=LIVE,
    )
    values = engine.config(ctid).current.values
    expect(page.locator('#disk-table tr[data-disk="rootfs"]')).to_be_visible(timeout=LIVE)
    assert (values.get("pids"), values.get("ioweight"), values.get("cpuset")) == ("64", "200", "0"), values

    page.fill("#mp-form [name=size]", "0.1")
    page.fill("#mp-form [name=path]", "/srv/data")
    page.click("#mp-form button[type=submit]")
    expect(page.locator('#disk-table tr[data-disk="mp0"]')).to_contain_text("/srv/data", timeout=LIVE)
    assert "mp=/srv/data" in engine.config(ctid).current.values["mp0"]
    page.locator('#disk-table tr[data-disk="mp0"] button', has_text="Remove").click()
    expect(page.locator("#confirm-text")).to_contain_text("is destroyed with its data")
    page.click("#confirm-yes")
    expect(page.locator('#disk-table tr[data-disk="mp0"]')).to_have_count(0, timeout=LIVE)
    assert "mp0" not in engine.config(ctid).current.values

    bridge = f"cbr{ctid % 100000}"  # a real bridge of this test's own, allowed by an administrator
    subprocess.run(["ip", "link", "add", "name", bridge, "type", "bridge"], check=True)
    try:
        node.allowed_bridges = [bridge]
        node.save(update_fields=["allowed_bridges"])
        page.goto(f"{web}/ct/{ctid}/network/")
        page.select_option("#nic-form [name=bridge]", bridge)
        page.fill("#nic-form [name=mtu]", "1400")
        page.fill("#nic-form [name=hwaddr]", "BC:24:11:00:00:42")
        page.click("#nic-form button[type=submit]")
        expect(page.locator('#nic-table tr[data-nic="net0"]')).to_contain_text("1400", timeout=LIVE)
        net0 = engine.config(ctid).current.values["net0"]
        assert "mtu=1400" in net0 and "hwaddr=BC:24:11:00:00:42" in net0, net0
    finally:
        subprocess.run(["ip", "link", "del", bridge], check=False)


def test_a_start_failure_diagnosed_on_the_page(
    page, web, agent, node, make_user, engine, busybox_template, ctid_factory
):
    ctid = ctid_factory()
    bridge = f"dbr{ctid % 100000}"
    subprocess.run(["ip", "link", "add", "name", bridge, "type", "bridge"], check=True)
    try:
        engine.create(
            ctid,
            busybox_template,
            {"hostname": f"diag{ctid}", "memory": "64", "swap": "0", "net0": f"name=eth0,bridge={bridge}"},
        )
    finally:
        subprocess.run(["ip", "link", "del", bridge], check=False)  # gone before the start: the classic case
    config = {k: str(v) for k, v in engine.config(ctid).current.values.items()}
    Container.objects.create(ctid=ctid, node=node, hostname=f"diag{ctid}", status="stopped", config=config)
    make_user("admin", superuser=True)
    login(page, web, "admin")
    page.goto(f"{web}/ct/{ctid}/")
    expect(page.locator("body")).to_have_attribute("data-live", "ready")
    expect(page.locator("#start-diagnosis")).to_have_count(0)
    mark(page)
    page.click("#btn-start")
    diagnosis = page.locator("#start-diagnosis")
    expect(diagnosis).to_be_visible(timeout=LIVE)
    expect(page.locator("#diagnosis-step")).to_have_text("network")
    expect(page.locator("#diagnosis-cause")).to_contain_text(f"bridge '{bridge}'")
    expect(page.locator("#diagnosis-fix")).to_contain_text("Node → Network")
    assert stayed(page)
    assert engine.status(ctid).status == "stopped"
    page.reload()  # it stays on the page until a start succeeds
    expect(page.locator("#diagnosis-cause")).to_contain_text(f"bridge '{bridge}'")


REPLAY_BUFFER = """() => {
  const b = window.caissonReplay.buffer.active, out = [];
  for (let i = 0; i < b.length; i++) out.push(b.getLine(i).translateToString(true));
  return out.join("\\n");
}"""


def test_a_recorded_console_session_replayed_and_shared(
    page, browser, web, services_env, engine, container, node, console_relay, make_user
):
    from tests.webui.console_kit import mirror
    from webui.models import ConsoleRecording, RecordingRule

    mirror(node, container, engine=engine)
    make_user("admin", superuser=True)
    RecordingRule.objects.create(ctid=container)
    login(page, web, "admin")
    page.goto(f"{web}/ct/{container}/console/term/")
    page.wait_for_function(
        "() => window.caissonConsole && window.caissonConsole.state.startsWith('connected')", timeout=15000
    )
    # The default shell of Shell mode, chosen in the bar (and kept by the browser): a new session runs it.
    page.fill("#console-shell", "/bin/ash")
    page.dispatch_event("#console-shell", "change")
    page.wait_for_function(
        "() => window.caissonConsole.state.startsWith('connected') && window.caissonConsole.offset > 0", timeout=15000
    )
    page.click("#terminal")
    page.keyboard.type('echo "$0"-x\n')
    page.wait_for_function(
        "() => { const b = window.caissonTerm.buffer.active; for (let i = 0; i < b.length; i++)"
        " if (b.getLine(i).translateToString(true).trim() === '/bin/ash-x') return true; return false; }",
        timeout=15000,
    )
    page.keyboard.type("echo rec-$((40+2))\n")
    page.wait_for_function(
        "() => { const b = window.caissonTerm.buffer.active; for (let i = 0; i < b.length; i++)"
        " if (b.getLine(i).translateToString(true).trim() === 'rec-42') return true; return false; }",
        timeout=15000,
    )
    # Copy and Paste buttons: the selection to the clipboard, the clipboard typed into the terminal.
    page.context.grant_permissions(["clipboard-read", "clipboard-write"], origin=web)
    page.evaluate("() => window.caissonTerm.selectAll()")
    page.click("#console-copy")
    page.wait_for_function("async () => (await navigator.clipboard.readText()).includes('rec-42')")
    page.evaluate("() => navigator.clipboard.writeText('echo pasted-$((3+4))\\n')")
    page.click("#console-paste")
    page.wait_for_function(
        "() => { const b = window.caissonTerm.buffer.active; for (let i = 0; i < b.length; i++)"
        " if (b.getLine(i).translateToString(true).trim() === 'pasted-7') return true; return false; }",
        timeout=15000,
    )
    page.goto(f"{web}/datacenter/recordings/")  # leaving the console ends the socket: the recording closes
    recording = ConsoleRecording.objects.filter(ctid=container).order_by("-started").first()  # the ash session
    deadline = time.monotonic() + 15
    while recording.ended is None and time.monotonic() < deadline:
        time.sleep(0.1)
        recording.refresh_from_db()
    cast = Path(services_env["CAISSON_WEB_DATA"]) / "recordings" / f"{recording.session}.cast"  # the server's
    header = cast.read_text().splitlines()[0]
    assert '"version": 2' in header and recording.size > 0 and cast.stat().st_mode & 0o077 == 0

    page.reload()
    page.locator(f'tr[data-recording="{recording.session}"] a', has_text="Replay").click()
    expect(page.locator("#replay")).to_have_attribute("data-state", "loaded")
    page.select_option("#replay-speed", "64")
    page.click("#replay-play")
    expect(page.locator("#replay")).to_have_attribute("data-state", "ended", timeout=LIVE)
    screen = page.evaluate(REPLAY_BUFFER)
    assert "rec-42" in [line.strip() for line in screen.splitlines()], screen

    # A read-only link: works without logging in, and no longer once revoked.
    page.fill("#share-form [name=hours]", "2")
    page.click("#share-form button")
    expect(page.locator("#share-url")).to_contain_text("/shared/recording/")
    url = page.locator("#share-url").get_attribute("data-url")
    stranger = browser.new_context()
    try:
        other = stranger.new_page()
        other.goto(url)
        expect(other.locator("#replay")).to_have_attribute("data-state", "loaded")
        other.click("#replay-end")
        expect(other.locator("#replay")).to_have_attribute("data-state", "ended")
        assert "rec-42" in other.evaluate(REPLAY_BUFFER)
        assert other.locator("#share-form").count() == 0 and other.locator("#replay-download").count() == 0
        page.reload()
        page.locator("#share-table button", has_text="Revoke").click()
        expect(page.locator("#share-table")).to_contain_text("revoked")
        assert other.goto(url).status == 404
        assert other.goto(url + "cast").status == 404
    finally:
        stranger.close()


def test_a_custom_template_from_a_stopped_container(
    page, web, agent, node, make_user, engine, busybox_template, ctid_factory
):
    from webui.models import StoredTemplate

    ctid = ctid_factory()
    engine.create(ctid, busybox_template, {"hostname": f"tpl{ctid}", "memory": "64", "swap": "0"})
    config = {k: str(v) for k, v in engine.config(ctid).current.values.items()}
    Container.objects.create(ctid=ctid, node=node, hostname=f"tpl{ctid}", status="stopped", config=config)
    name = f"web{ctid}-1.0-1_amd64.tar.zst"
    make_user("admin", superuser=True)
    login(page, web, "admin")
    page.goto(f"{web}/ct/{ctid}/options/")
    page.fill("#template-form [name=name]", f"web{ctid}-1.0-1_amd64")  # the suffix is added
    page.click("#template-form button")
    expect(page.locator(f'#task-rows tr:has-text("vzmktemplate {ctid}")')).to_contain_text("OK", timeout=LIVE * 2)
    try:
        assert (engine.layout.templates / name).stat().st_size > 0
        assert StoredTemplate.objects.filter(node=node, name=name).exists()  # offered by the wizard at once
    finally:
        (engine.layout.templates / name).unlink(missing_ok=True)
