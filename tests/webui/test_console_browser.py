"""The console in a real browser: headless Chromium on the console page, through uvicorn, Redis and the relay."""

from __future__ import annotations

import pytest

from tests.webui.console_kit import login_cookie, mirror

pytestmark = pytest.mark.django_db(transaction=True)

CHROMIUM = "/usr/bin/chromium"
ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
LINES = 1_250_000  # `seq -w 1 1250000`: 7 digits and a newline each, 10,000,000 bytes

BUFFER = """() => {
  const b = window.caissonTerm.buffer.active, out = [];
  for (let i = 0; i < b.length; i++) out.push(b.getLine(i).translateToString(true));
  return out.join("\\n");
}"""

# Installed by the test, not the page: checks the numbered lines arrive whole and in order.
TAP = """() => {
  const check = { expect: 1, bad: 0, line: "" };
  window.linesCheck = check;
  window.caissonConsole.tap = (bytes) => {
    for (let i = 0; i < bytes.length; i++) {
      const c = bytes[i];
      if (c === 10) {
        if (/^[0-9]{7}$/.test(check.line)) {
          if (Number(check.line) !== check.expect) check.bad++;
          check.expect++;
        }
        check.line = "";
      } else if (c !== 13) {
        check.line += String.fromCharCode(c);
      }
    }
  };
}"""


def test_console_in_chromium(web, engine, container, node, console_relay, make_user):
    from playwright.sync_api import sync_playwright

    mirror(node, container, engine=engine)
    user = make_user("bianca", "Operator", "/")
    session_id = login_cookie(user).decode().split("=", 1)[1]  # the login page may not exist yet: a session cookie

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        try:
            context = browser.new_context(viewport={"width": 1000, "height": 640})
            context.add_cookies([{"name": "sessionid", "value": session_id, "url": web}])
            page = context.new_page()
            violations: list[str] = []  # the Content-Security-Policy must let the console work unhindered
            page.on("console", lambda m: "Content Security Policy" in m.text and violations.append(m.text))
            answer = page.goto(f"{web}/ct/{container}/console/term/")
            assert "script-src 'self'" in answer.headers["content-security-policy"]
            page.wait_for_function(
                "() => window.caissonConsole && window.caissonConsole.state.startsWith('connected')", timeout=15000
            )
            page.click("#terminal")

            def screen() -> str:
                return page.evaluate(BUFFER)

            def wait_text(text: str, timeout: int = 15000) -> None:
                page.wait_for_function(f"() => ({BUFFER})().includes({text!r})", timeout=timeout)

            page.keyboard.type("echo $((6*7))\n")
            page.wait_for_function(f"() => ({BUFFER})().split('\\n').some(l => l.trim() === '42')", timeout=15000)
            assert "\n42" in screen()

            # The terminal follows the window, and the pty follows the terminal.
            page.set_viewport_size({"width": 700, "height": 420})
            page.wait_for_function("() => window.caissonTerm.cols < 90", timeout=10000)
            cols, rows = page.evaluate("() => [window.caissonTerm.cols, window.caissonTerm.rows]")
            page.keyboard.type("stty size\n")
            wait_text(f"{rows} {cols}")

            # 10 MB of numbered lines: whole and in order, counted in the page as they arrive.
            page.keyboard.type(f"seq -w 1 {LINES} > /tmp/big; echo made-$((1+1))\n")
            wait_text("made-2", timeout=30000)
            page.evaluate(TAP)
            page.keyboard.type("cat /tmp/big; echo done-$((2+2))\n")
            page.wait_for_function(f"() => window.linesCheck.expect > {LINES}", timeout=60000, polling=200)
            wait_text("done-4", timeout=30000)
            check = page.evaluate("() => window.linesCheck")
            assert check["bad"] == 0 and check["expect"] == LINES + 1
            assert not violations, violations
        finally:
            browser.close()
