// The console page: xterm.js on a websocket to ws/console/<ctid>/ (see webui/console.py for the protocol).
// Binary frames carry terminal bytes both ways; text frames carry JSON control.
// A dropped socket is resumed within the relay's grace period, from the last byte received.
(function () {
  "use strict";
  const root = document.getElementById("console");
  const ctid = root.dataset.ctid;
  const graceMs = Math.max(1, parseFloat(root.dataset.grace || "30")) * 1000;
  const stateEl = document.getElementById("console-state");
  const banner = document.getElementById("console-banner");
  const bannerText = document.getElementById("console-banner-text");
  const startButton = document.getElementById("console-start");
  const readonlyBanner = document.getElementById("console-readonly");
  const modeSelect = document.getElementById("console-mode");
  // The shell of shell mode: the user's default, kept by this browser (empty: bash if there, else sh).
  const shellInput = document.getElementById("console-shell");
  if (shellInput) {
    shellInput.value = localStorage.getItem("caisson.console.shell") || "";
    shellInput.addEventListener("change", () => {
      localStorage.setItem("caisson.console.shell", shellInput.value.trim());
      if (con.mode === "shell") restart("shell");
    });
  }
  const storeKey = "caisson.console." + ctid;
  const encoder = new TextEncoder();

  const term = new Terminal({
    cursorBlink: true, scrollback: 5000, fontSize: 14, allowProposedApi: false,
    fontFamily: "ui-monospace, 'DejaVu Sans Mono', Menlo, Consolas, monospace",
    theme: { background: "#101010" },
  });
  const fit = new FitAddon.FitAddon();
  term.loadAddon(fit);
  term.loadAddon(new WebLinksAddon.WebLinksAddon());
  term.open(document.getElementById("terminal"));

  const con = {
    term: term, socket: null, session: null, mode: root.dataset.mode, offset: 0, state: "connecting",
    ended: false, droppedAt: null, tap: null, exitCode: null, lastError: null,
  };
  window.caissonTerm = term;
  window.caissonConsole = con;

  // A pop-out window (or a reload) takes over the same session: ?session=<id>&mode=<mode>.
  const params = new URLSearchParams(location.search);
  const stored = JSON.parse(sessionStorage.getItem(storeKey) || "null");
  if (params.get("session")) {
    con.session = params.get("session");
  } else if (stored && stored.mode === con.mode) {
    con.session = stored.session;
  }

  function setState(text, bad) {
    con.state = text;
    stateEl.textContent = text;
    stateEl.classList.toggle("bad", !!bad);
  }

  function showBanner(text, stopped) {
    bannerText.textContent = text;
    banner.hidden = false;
    if (startButton) startButton.hidden = !stopped;
  }

  function hideBanner() { banner.hidden = true; }

  function csrfToken() {
    const input = document.querySelector("input[name=csrfmiddlewaretoken]");
    return input ? input.value : "";
  }

  async function post(url, body) {
    const response = await fetch(url, {
      method: "POST", credentials: "same-origin", redirect: "manual",
      headers: { "Content-Type": "application/json", "X-CSRFToken": csrfToken(), "X-Requested-With": "fetch" },
      body: JSON.stringify(body || {}),
    });
    if (response.type === "opaqueredirect") return { status: 401, data: { error: { message: "log in again: your login has ended" } } };
    let data = {};
    try { data = await response.json(); } catch (e) { data = { error: { message: "the server answered " + response.status } }; }
    return { status: response.status, data: data };
  }

  function send(data) {
    if (con.socket && con.socket.readyState === WebSocket.OPEN) con.socket.send(data);
  }

  function sendResize() {
    send(JSON.stringify({ type: "resize", cols: term.cols, rows: term.rows }));
  }

  async function connect(resume) {
    const mode = con.mode;
    setState(resume ? "reconnecting…" : "connecting…");
    const answer = await post(root.dataset.ticketUrl, { mode: mode, session: resume ? con.session : "" });
    if (mode !== con.mode) return;  // the user switched modes meanwhile
    if (answer.status !== 200) {
      return failed((answer.data.error || {}).message || "no console ticket", answer.status >= 500 || answer.status === 0);
    }
    if (answer.data.status !== "running" && mode !== "console") {
      setState("stopped", true);
      showBanner("CT " + ctid + " is not running. Start it to open a " + mode + ".", true);
      return;
    }
    hideBanner();
    fit.fit();
    const scheme = location.protocol === "https:" ? "wss://" : "ws://";
    const query = new URLSearchParams({ ticket: answer.data.ticket, cols: term.cols, rows: term.rows });
    if (resume && con.offset > 0) query.set("since", con.offset);
    const shell = shellInput ? shellInput.value.trim() : "";
    if (mode === "shell" && shell) query.set("shell", shell);
    const socket = new WebSocket(scheme + location.host + answer.data.socket + "?" + query.toString());
    socket.binaryType = "arraybuffer";
    con.socket = socket;
    socket.onmessage = (event) => {
      if (socket !== con.socket) return;
      if (typeof event.data !== "string") {
        const bytes = new Uint8Array(event.data);
        con.offset += bytes.length;
        term.write(bytes);
        if (con.tap) con.tap(bytes);
        return;
      }
      let message;
      try { message = JSON.parse(event.data); } catch (e) { return; }
      control(message);
    };
    socket.onclose = (event) => {
      if (socket !== con.socket) return;
      closed(event.code);
    };
  }

  function control(message) {
    if (message.type === "status") {
      con.session = message.session;
      con.droppedAt = null;
      sessionStorage.setItem(storeKey, JSON.stringify({ session: con.session, mode: message.mode }));
      if (message.reset) {
        term.reset();
        con.offset = message.offset || 0;
      }
      readonlyBanner.hidden = !message.readonly;
      setState((message.resumed ? "resumed" : "connected") + " · " + message.mode);
      sendResize();
      term.focus();
    } else if (message.type === "error") {
      con.lastError = message.message;
      if (message.fatal && message.gone && con.offset === 0) {
        forget();  // a stored session (reload, pop-out) that has ended meanwhile: just open a new one
        return restart(con.mode);
      }
      if (message.fatal) {
        con.ended = true;
        forget();
        showBanner(message.message, !!message.stopped);
        setState(message.stopped ? "stopped" : "closed", true);
      } else {
        term.write("\r\n\x1b[33m[" + message.message + "]\x1b[0m\r\n");
      }
    } else if (message.type === "exit") {
      con.ended = true;
      con.exitCode = message.code;
      forget();
      term.write("\r\n\x1b[2m[session ended" + (message.code !== null && message.code !== undefined ? ", exit code " + message.code : "") + "; press Reconnect for a new one]\x1b[0m\r\n");
      setState("ended");
    }
  }

  function forget() {
    sessionStorage.removeItem(storeKey);
  }

  function closed(code) {
    con.socket = null;
    if (con.ended || code === 1000 || (code >= 4000 && code < 5000) || code === 1009) {
      if (!con.ended) { con.ended = true; forget(); setState("closed", true); }
      return;
    }
    // A drop (network, web server restart): resume the same session while the relay keeps it.
    if (!con.session) return failed("the connection failed", true);
    if (con.droppedAt === null) con.droppedAt = Date.now();
    retry();
  }

  function retry() {
    if (Date.now() - con.droppedAt > graceMs) {
      con.ended = true;
      forget();
      setState("disconnected", true);
      showBanner("The connection was lost for longer than the grace period; the session has ended. Press Reconnect.");
      return;
    }
    setState("reconnecting…", true);
    setTimeout(() => { if (!con.ended && !con.socket) connect(true).catch(() => retry()); }, 1000);
  }

  function failed(text, transient) {
    if (transient && con.session && con.droppedAt !== null) return retry();
    con.ended = true;
    setState("closed", true);
    showBanner(text);
  }

  function restart(mode) {
    if (con.socket) {
      const old = con.socket;
      con.socket = null;
      if (old.readyState === WebSocket.OPEN) old.send(JSON.stringify({ type: "close" }));
      old.close();
    }
    forget();
    con.mode = mode;
    con.session = null;
    con.offset = 0;
    con.ended = false;
    con.droppedAt = null;
    readonlyBanner.hidden = true;
    term.reset();
    connect(false).catch((e) => failed(String(e)));
  }

  // ---- terminal input, size, copy and paste -------------------------------------------------------
  term.onData((data) => send(encoder.encode(data)));
  term.onBinary((data) => send(Uint8Array.from(data, (c) => c.charCodeAt(0) & 255)));
  term.onResize(() => sendResize());
  term.attachCustomKeyEventHandler((event) => {
    if (event.type !== "keydown" || !event.ctrlKey || !event.shiftKey) return true;
    if (event.code === "KeyC") {  // Ctrl+Shift+C copies the selection; Ctrl+C stays the terminal's interrupt
      const text = term.getSelection();
      if (text && navigator.clipboard) navigator.clipboard.writeText(text).catch(() => {});
      return false;
    }
    if (event.code === "KeyV") return false;  // the browser pastes (into xterm's textarea, as a bracketed paste)
    return true;
  });
  new ResizeObserver(() => { try { fit.fit(); } catch (e) { /* hidden frame */ } }).observe(document.getElementById("terminal"));

  // ---- the bar ----------------------------------------------------------------------------------
  // Copy and Paste buttons, for a mouse and where a browser keeps Ctrl+Shift+V for itself.
  document.getElementById("console-copy").addEventListener("click", () => {
    const text = term.getSelection();
    if (text && navigator.clipboard) navigator.clipboard.writeText(text).catch(() => {});
    term.focus();
  });
  document.getElementById("console-paste").addEventListener("click", async () => {
    if (!navigator.clipboard || !navigator.clipboard.readText) return;
    try { const text = await navigator.clipboard.readText(); if (text) term.paste(text); } catch (e) { /* refused */ }
    term.focus();
  });
  modeSelect.addEventListener("change", () => restart(modeSelect.value));
  document.getElementById("console-reconnect").addEventListener("click", () => restart(con.mode));
  document.getElementById("console-popout").addEventListener("click", () => {
    const url = new URL(root.dataset.pageUrl, location.href);
    url.searchParams.set("mode", con.mode);
    if (con.session && !con.ended) url.searchParams.set("session", con.session);
    window.open(url.toString(), "caisson-console-" + ctid, "width=900,height=560");
  });
  if (startButton) {
    startButton.addEventListener("click", async () => {
      startButton.disabled = true;
      const answer = await post(root.dataset.startUrl, {});
      startButton.disabled = false;
      if (answer.status >= 400) return showBanner((answer.data.error || {}).message || "start refused", true);
      showBanner("Starting CT " + ctid + "…", false);
      const until = Date.now() + 120000;
      const poll = async () => {
        const probe = await post(root.dataset.ticketUrl, { mode: con.mode });
        if (probe.data.status === "running") return restart(con.mode);
        if (Date.now() > until) return showBanner("CT " + ctid + " did not start; see its task history.", true);
        setTimeout(poll, 1500);
      };
      setTimeout(poll, 1000);
    });
  }

  fit.fit();
  connect(!!con.session).catch((e) => failed(String(e)));
})();
