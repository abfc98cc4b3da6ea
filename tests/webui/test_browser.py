"""The console in a real headless Chromium (Playwright) against the ASGI server and the real node agent.

Each test watches the page change through the live websocket: a marker set
in the page's JavaScript survives only if no navigation happened.
"""

from __future__ import annotations

import fcntl
import hashlib
import http.server
import os
import threading
from pathlib import Path

import pytest

from tests.webui.conftest import PASSWORD, wait_job
from webui.models import Container, Job, StoredTemplate
from webui.models.queue import submit

pytestmark = pytest.mark.django_db(transaction=True)
playwright_api = pytest.importorskip("playwright.sync_api")
expect = playwright_api.expect
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
LIVE = 30_000  # ms a live change may take to arrive (a job through the agent)


@pytest.fixture(scope="module")
def browser():
    if not Path("/usr/bin/chromium").exists():
        pytest.skip("needs Debian's chromium at /usr/bin/chromium")
    # Playwright's sync API keeps an event loop in this thread; the tests' ORM calls (and the database flush
    # between transactional tests) are still plain synchronous code.
    previous = os.environ.get("DJANGO_ALLOW_ASYNC_UNSAFE")
    os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = "true"
    try:
        with playwright_api.sync_playwright() as p:
            instance = p.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS)
            yield instance
            instance.close()
    finally:
        if previous is None:
            os.environ.pop("DJANGO_ALLOW_ASYNC_UNSAFE", None)


@pytest.fixture
def page(browser):
    context = browser.new_context(viewport={"width": 1400, "height": 900})
    context.set_default_timeout(15_000)
    tab = context.new_page()
    violations: list[str] = []  # every page must work under the Content-Security-Policy, with no violation
    tab.on("console", lambda m: "Content Security Policy" in m.text and violations.append(m.text))
    yield tab
    context.close()
    assert not violations, violations


def login(page, web: str, username: str) -> None:
    page.goto(f"{web}/login/")
    page.fill("input[name=username]", username)
    page.fill("input[name=password]", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_url(f"{web}/")
    expect(page.locator("body")).to_have_attribute("data-live", "ready")


def accept_confirmations(page) -> None:
    """Answer yes to the page's in-page confirmations (``#confirm-dialog``) as they open, for tests whose
    subject is what follows them; the tests of the confirmations themselves click ``#confirm-yes``."""
    page.add_init_script(
        """new MutationObserver(() => {
             const dialog = document.getElementById("confirm-dialog");
             if (dialog && dialog.open) dialog.close("yes");
           }).observe(document, {subtree: true, attributes: true, attributeFilter: ["open"]});"""
    )


def jobs_said(**filters) -> str:
    """The log of matching jobs, for a failure message."""
    return "\n".join(
        f"{job.kind} {job.status}: {job.message}\n" + "\n".join(job.lines.values_list("text", flat=True))
        for job in Job.objects.filter(**filters)
    )


def expect_status(page, ctid: int, status: str) -> None:
    try:
        expect(page.locator("#ct-status")).to_have_text(status, timeout=LIVE)
    except AssertionError as exc:
        raise AssertionError(
            f"{exc}\npage says: {page.inner_text('#messages')}\n{jobs_said(path=f'/ct/{ctid}')}"
        ) from None


def mark(page) -> None:
    page.evaluate("window.__stayed = true")


def stayed(page) -> bool:
    return page.evaluate("window.__stayed === true")


def test_wizard_create_start_and_stop_live(page, web, agent, node, make_user, stored_busybox, ctid_factory, engine):
    StoredTemplate.objects.get_or_create(node=node, name=stored_busybox.removeprefix("local:vztmpl/"))
    ctid = ctid_factory()
    make_user("admin", superuser=True)
    login(page, web, "admin")
    page.click("#create-ct")
    page.wait_for_url(f"{web}/create/")

    # General, with a mistake the server points out, then its correction.
    page.fill("#id_ctid", str(ctid))
    page.fill("#id_hostname", "my box")
    page.fill("#id_password", "s3cret!")
    page.fill("#id_password_confirm", "s3cret!")
    page.click("#next-general")
    expect(page.locator('[data-errors-for="hostname"]')).to_contain_text("is not a valid host name")
    expect(page.locator("#step-general")).to_be_visible()
    page.fill("#id_hostname", f"box{ctid}")
    page.click("#next-general")
    expect(page.locator("#step-template")).to_be_visible()
    expect(page.locator('[data-errors-for="hostname"]')).to_be_empty()
    page.click("#next-template")  # no template chosen yet
    expect(page.locator('[data-errors-for="template"]')).to_contain_text("required")
    page.select_option("#id_template", stored_busybox)
    page.click("#next-template")
    page.fill("#id_disk_size", "1")
    page.click("#next-disk")
    page.click("#next-cpu")
    page.fill("#id_memory", "8")  # below the minimum
    page.click("#next-memory")
    expect(page.locator('[data-errors-for="memory"]')).to_contain_text("greater than or equal to 16")
    page.fill("#id_memory", "128")
    page.fill("#id_swap", "0")
    page.click("#next-memory")
    page.click("#next-network")  # no bridge: no network interface
    page.click("#next-dns")
    expect(page.locator("#wizard-summary")).to_contain_text(f"box{ctid}")
    expect(page.locator("#wizard-summary")).to_contain_text("local:1")
    page.check("#id_start")

    # Hold the container's job lock (as a running job would) so the page sees "creating" first.
    lock_dir = Path(engine.layout.run) / "jobs"
    lock_dir.mkdir(parents=True, exist_ok=True)
    fd = os.open(lock_dir / f"_ct_{ctid}.lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        page.click("#wizard-finish")
        page.wait_for_url(f"{web}/ct/{ctid}/")
        expect(page.locator("body")).to_have_attribute("data-live", "ready")
        expect(page.locator("#ct-status")).to_have_text("creating")
        mark(page)
    finally:
        os.close(fd)
    expect_status(page, ctid, "running")
    expect(page.locator("#btn-start")).to_be_disabled()
    expect(page.locator("#btn-stop")).to_be_enabled()
    expect(page.locator(f'[data-ct-status-icon="{ctid}"]')).to_have_class("icon icon-ct status-running")
    expect(page.locator("#task-rows")).to_contain_text(f"vzcreate {ctid}")
    assert stayed(page)
    assert engine.status(ctid).status == "running"

    page.click("#btn-stop")
    expect(page.locator("#confirm-text")).to_contain_text(f"Stop CT {ctid} now?")  # asked in the page
    page.click("#confirm-yes")
    expect_status(page, ctid, "stopped")
    expect(page.locator("#btn-start")).to_be_enabled()
    expect(page.locator("#btn-stop")).to_be_disabled()
    expect(page.locator("#btn-destroy")).to_be_enabled()
    expect(page.locator(f'#task-rows tr:has-text("vzstop {ctid}")')).to_contain_text("OK", timeout=LIVE)
    assert stayed(page)
    assert engine.status(ctid).status == "stopped"

    page.click(f'#task-rows tr:has-text("vzstop {ctid}")')  # the task's log in the viewer
    expect(page.locator("#job-dialog-log")).to_contain_text("TASK OK")
    page.screenshot(path=str(Path(os.environ.get("CAISSON_SCREENSHOTS", "/tmp")) / "caisson-container.png"))
    page.click("#job-dialog button")
    page.goto(f"{web}/")
    page.screenshot(
        path=str(Path(os.environ.get("CAISSON_SCREENSHOTS", "/tmp")) / "caisson-dashboard.png"), full_page=True
    )
    wait_job(submit("vzdestroy", node, f"/ct/{ctid}", str(ctid)))


NAME = "slowbox-1.0-1_amd64.tar.gz"
SIZE = 4 << 20


class SlowHandler(http.server.BaseHTTPRequestHandler):
    """Serves the index and one template whose second half waits until the test has seen the progress bar."""

    def log_message(self, *args):
        pass

    def do_GET(self):
        srv = self.server
        if self.path == "/aplinfo.dat":
            body = srv.index
        elif self.path == f"/system/{NAME}":
            body = srv.payload
        else:
            self.send_error(404)
            return
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if body is srv.index:
            self.wfile.write(body)
            return
        half = len(body) // 2
        for offset in range(0, half, 256 << 10):  # the first half slowly: several progress readings
            self.wfile.write(body[offset : min(offset + (256 << 10), half)])
            self.wfile.flush()
            srv.release.wait(0.08)
        srv.release.wait(30)  # then hold until the test saw an intermediate value
        self.wfile.write(body[half:])


@pytest.fixture
def catalog(engine):
    from engine.templates.store import TemplateStore

    payload = os.urandom(SIZE)
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), SlowHandler)
    httpd.daemon_threads = True
    httpd.payload, httpd.release = payload, threading.Event()
    httpd.index = (
        f"Package: slowbox\nVersion: 1.0-1\nType: lxc\nOS: busybox\nSection: system\nArchitecture: amd64\n"
        f"Location: system/{NAME}\nsha512sum: {hashlib.sha512(payload).hexdigest()}\n"
        "Description: A template served slowly\n\n"
    ).encode()
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    store = TemplateStore(engine.layout.root)
    previous = store.sources_file.read_text() if store.sources_file.exists() else None
    store.set_sources(
        [{"id": "loop", "type": "aplinfo", "url": f"http://127.0.0.1:{httpd.server_address[1]}/aplinfo.dat"}]
    )
    yield httpd
    httpd.release.set()
    httpd.shutdown()
    httpd.server_close()
    (store.cache / NAME).unlink(missing_ok=True)
    if previous is None:
        store.sources_file.unlink(missing_ok=True)
    else:
        store.sources_file.write_text(previous)


def test_download_a_template_with_live_progress(page, web, agent, node, make_user, catalog):
    admin = make_user("admin", superuser=True)
    update = wait_job(submit("aptupdate", node, node.path, "", user=admin))
    assert update.status == "ok", update.message
    login(page, web, "admin")
    page.goto(f"{web}/templates/?node={node.name}")
    expect(page.locator("body")).to_have_attribute("data-live", "ready")
    mark(page)
    row = page.locator(f'tr[data-catalog="{NAME}"]')
    page.fill("#catalog-search", "no-such-template")
    expect(row).to_be_hidden()
    page.fill("#catalog-search", "slowbox")
    expect(row).to_be_visible()
    row.locator("button", has_text="Download").click()
    bar = page.locator(f'progress[data-progress-for="{NAME}"]')
    expect(bar).to_be_visible(timeout=LIVE)
    page.wait_for_function(
        f"""() => {{
        const bar = document.querySelector('progress[data-progress-for="{NAME}"]');
        return bar && !bar.hidden && bar.position > 0 && bar.value > 0 && bar.value < 1; }}""",
        timeout=LIVE,
    )
    expect(row.locator("form[data-cancel-for] button")).to_be_visible()
    expect(row.locator(f'[data-start-for="{NAME}"]')).to_be_disabled()
    catalog.release.set()
    expect(page.locator(f'#template-store tr[data-stored="{NAME}"]')).to_be_visible(timeout=LIVE)
    expect(bar).to_be_hidden()
    expect(page.locator(f'[data-progress-text-for="{NAME}"]')).to_have_text("done")
    assert stayed(page)
    assert Job.objects.get(kind="download", target=NAME).status == "ok"


def test_an_auditor_cannot_start(page, web, node, make_user):
    Container.objects.create(ctid=4999, node=node, hostname="watched", status="stopped")
    make_user("auditor", "Auditor")
    login(page, web, "auditor")
    expect(page.locator('[data-tree-ct="4999"]')).to_be_visible()
    page.goto(f"{web}/ct/4999/")
    expect(page.locator("#ct-status")).to_have_text("stopped")
    for action in ("start", "stop", "destroy"):
        expect(page.locator(f"#btn-{action}")).to_be_disabled()
    status = page.evaluate("""async () => {
        const token = document.querySelector('input[name=csrfmiddlewaretoken]').value;
        const response = await fetch('/ct/4999/power/start', {method: 'POST', headers: {'X-CSRFToken': token,
            'X-Requested-With': 'fetch'}});
        return [response.status, (await response.json()).error.message];
    }""")
    assert status[0] == 403 and "VM.PowerMgmt" in status[1]
    assert not Job.objects.filter(kind="vzstart").exists()


def test_the_api_docs_are_behind_login_and_work_under_the_csp(page, web, make_user):
    make_user("reader", "Auditor")
    page.goto(f"{web}/api/docs/")
    assert page.url.startswith(f"{web}/login/")
    login(page, web, "reader")
    answer = page.goto(f"{web}/api/docs/")
    assert "default-src 'self'" in answer.headers["content-security-policy"]
    expect(page.locator(".swagger-ui .info .title")).to_contain_text("Caisson API", timeout=LIVE)
