/* Replays an asciicast v2 recording in xterm.js: Play at a chosen speed, or jump to the end; and, for an
 * auditor, makes a read-only link (shown once). The file is fetched whole: recordings are text, and small. */
(function () {
  "use strict";
  const root = document.getElementById("replay");
  if (!root || typeof Terminal === "undefined") return;
  const state = document.getElementById("replay-state");
  let header = null, events = [], term = null, timer = null, shown = 0;

  function reset() {
    if (timer) clearTimeout(timer);
    timer = null;
    term.reset();
    shown = 0;
  }

  function apply(event) {
    const [, kind, data] = event;
    if (kind === "o") term.write(data);
    else if (kind === "r") {
      const [cols, rows] = data.split("x").map(Number);
      if (cols > 0 && rows > 0) term.resize(cols, rows);
    }
  }

  function play() {
    reset();
    const speed = Number(document.getElementById("replay-speed").value) || 1;
    const started = performance.now();
    state.textContent = "playing";
    const step = () => {
      const elapsed = ((performance.now() - started) / 1000) * speed;
      while (shown < events.length && events[shown][0] <= elapsed) apply(events[shown++]);
      if (shown < events.length) timer = setTimeout(step, Math.min(250, ((events[shown][0] - elapsed) / speed) * 1000));
      else ended();
    };
    root.dataset.state = "playing";
    step();
  }

  // xterm parses what it is given later, in order: "ended" once the screen shows the last event.
  function ended() {
    term.write("", () => { state.textContent = "ended"; root.dataset.state = "ended"; });
  }

  function toEnd() {
    reset();
    root.dataset.state = "playing";
    events.forEach(apply);
    shown = events.length;
    ended();
  }

  async function load() {
    const response = await fetch(root.dataset.castUrl, { credentials: "same-origin" });
    if (!response.ok) { state.textContent = "cannot load the recording (" + response.status + ")"; return; }
    const lines = (await response.text()).split("\n").filter(Boolean);
    header = JSON.parse(lines.shift());
    events = lines.map((l) => { try { return JSON.parse(l); } catch (e) { return null; } }).filter(Array.isArray);
    term = new Terminal({ cols: header.width, rows: header.height, disableStdin: true, convertEol: false, scrollback: 5000 });
    term.open(document.getElementById("replay-term"));
    window.caissonReplay = term;
    const end = events.length ? events[events.length - 1][0] : 0;
    state.textContent = events.length + " events, " + end.toFixed(1) + " s";
    root.dataset.state = "loaded";
  }

  document.getElementById("replay-play").addEventListener("click", () => term && play());
  document.getElementById("replay-end").addEventListener("click", () => term && toEnd());
  const share = document.getElementById("share-form");
  if (share) share.addEventListener("submit", async (event) => {
    event.preventDefault();
    const response = await fetch(share.action, { method: "POST", body: new FormData(share), credentials: "same-origin",
      headers: { "X-Requested-With": "fetch", "X-CSRFToken": share.querySelector("[name=csrfmiddlewaretoken]").value } });
    const data = await response.json().catch(() => ({}));
    const out = document.getElementById("share-url");
    out.textContent = response.ok ? data.url + " (copy it now: it is shown once)" : (data.error || {}).message || "refused";
    out.dataset.url = response.ok ? data.url : "";
  });
  load();
})();
