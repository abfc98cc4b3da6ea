/* Caisson's live page: one websocket to /ws/live/, subscribed to what the page shows, updating the DOM in place.
 *
 * The server renders every page complete; this module only keeps it current (status badges, buttons, the
 * task panel, progress bars, graphs), sends forms marked data-async with fetch, and shows a job's log.
 * It reconnects with exponential backoff and never polls.
 */
(function () {
  "use strict";
  const TASK_ROWS = 15;
  const ACTIVE = new Set(["queued", "running"]);
  const wanted = new Set();
  const pending = new Map(); // job id -> {reload: bool} for jobs this page submitted
  let socket = null;
  let delay = 1000;
  let dialogJob = null;

  const $ = (sel, root) => (root || document).querySelector(sel);
  const $$ = (sel, root) => Array.from((root || document).querySelectorAll(sel));

  function readJSON(id) {
    const el = document.getElementById(id);
    if (!el) return [];
    const value = JSON.parse(el.textContent);
    return Array.isArray(value) ? value : [];
  }

  function csrf() {
    const input = $("input[name=csrfmiddlewaretoken]");
    return input ? input.value : "";
  }

  // ---- messages --------------------------------------------------------------------------
  function flash(text, kind) {
    const box = document.getElementById("messages");
    if (!box) return;
    const div = document.createElement("div");
    div.className = "message " + (kind || "info");
    div.textContent = text;
    box.prepend(div);
    while (box.children.length > 4) box.lastElementChild.remove();
  }

  // ---- the websocket ---------------------------------------------------------------------
  function setLive(text, ready) {
    const el = document.getElementById("live-state");
    if (el) { el.textContent = text; el.classList.toggle("ok", !!ready); }
    document.body.dataset.live = ready ? "ready" : "down";
  }

  function subscribe(items) {
    const fresh = items.filter((i) => i && !wanted.has(i));
    fresh.forEach((i) => wanted.add(i));
    if (fresh.length && socket && socket.readyState === WebSocket.OPEN) {
      socket.send(JSON.stringify({ subscribe: fresh }));
    }
  }

  function connect() {
    const proto = location.protocol === "https:" ? "wss:" : "ws:";
    socket = new WebSocket(proto + "//" + location.host + "/ws/live/");
    socket.onopen = () => {
      delay = 1000;
      if (wanted.size) socket.send(JSON.stringify({ subscribe: Array.from(wanted) }));
      else setLive("live", true);
    };
    socket.onmessage = (message) => {
      let event;
      try { event = JSON.parse(message.data); } catch (e) { return; }
      const handler = HANDLERS[event.type];
      if (handler) handler(event);
    };
    socket.onclose = () => {
      setLive("reconnecting…", false);
      setTimeout(connect, delay);
      delay = Math.min(delay * 2, 30000);
    };
  }

  // ---- containers ------------------------------------------------------------------------
  function setStatus(ct) {
    const id = String(ct.ctid);
    $$(`[data-ct-status="${id}"]`).forEach((el) => {
      el.textContent = ct.paused ? "paused" : ct.status;
      el.className = el.className.replace(/status-\S+/, "") + " status-" + ct.status;
    });
    $$(`[data-ct-status-icon="${id}"]`).forEach((el) => {
      el.className = "icon icon-ct status-" + ct.status;
      el.title = ct.status;
    });
    if (ct.hostname) $$(`[data-ct-hostname="${id}"]`).forEach((el) => {
      el.textContent = el.tagName === "TD" ? ct.hostname : "(" + ct.hostname + ")";
    });
    $$(`[data-ct-ipv4="${id}"]`).forEach((el) => { el.textContent = (ct.ipv4 || []).join(", ") || "–"; });
    $$(`[data-ct-ipv6="${id}"]`).forEach((el) => { el.textContent = (ct.ipv6 || []).join(", ") || "–"; });
    if (ct.tags) $$(`[data-ct-tags="${id}"]`).forEach((el) => { el.replaceChildren(...tagSpans(ct.tags)); });
    $$(`[data-ct-uptime="${id}"]`).forEach((el) => { el.textContent = ct.uptime == null ? "–" : duration(ct.uptime); });
    $$(`[data-ct-actions="${id}"] button[data-when]`).forEach((button) => {
      const paused = button.dataset.paused === undefined || (button.dataset.paused === "1") === Boolean(ct.paused);
      button.disabled = !(button.dataset.allowed === "1" && button.dataset.when === ct.status && paused);
    });
    const page = $(`[data-ct-page="${id}"]`);
    if (page) page.dataset.status = ct.status;
    if (!$(`[data-tree-ct="${id}"]`)) addTreeLeaf(ct);
    if (!$(`[data-ct-row="${id}"]`)) addTableRow(ct);
    recount();
  }

  // The container tables' part (bulk.js): rows added live, the summary cards recounted, tags drawn.
  const tables = window.CaissonTables || { recount() {}, addTableRow() {}, tagSpans: () => [] };
  const { recount, addTableRow, tagSpans } = tables;

  function addTreeLeaf(ct) {
    const list = $(`[data-node-cts="${ct.node}"]`);
    if (!list) return;
    const li = document.createElement("li");
    li.dataset.treeCt = ct.ctid;
    const a = document.createElement("a");
    a.href = "/ct/" + ct.ctid + "/";
    const icon = document.createElement("span");
    icon.className = "icon icon-ct status-" + ct.status;
    icon.dataset.ctStatusIcon = ct.ctid;
    const name = document.createElement("span");
    name.className = "muted";
    name.dataset.ctHostname = ct.ctid;
    name.textContent = "(" + (ct.hostname || "") + ")";
    const tags = document.createElement("span");
    tags.className = "tags";
    tags.dataset.ctTags = ct.ctid;
    tags.append(...tagSpans(ct.tags));
    a.append(icon, ct.ctid + " ", name, " ", tags);
    li.append(a);
    const after = Array.from(list.children).find((el) => Number(el.dataset.treeCt) > ct.ctid);
    list.insertBefore(li, after || null);
  }

  function removed(event) {
    const id = String(event.ctid);
    $$(`[data-tree-ct="${id}"], [data-ct-row="${id}"]`).forEach((el) => el.remove());
    const page = $(`[data-ct-page="${id}"]`);
    if (page) {
      page.dataset.status = "destroyed";
      $$(`[data-ct-status="${id}"]`).forEach((el) => { el.textContent = "destroyed"; });
      $$(`[data-ct-actions="${id}"] button`).forEach((b) => { b.disabled = true; });
      const banner = document.getElementById("ct-gone");
      if (banner) banner.hidden = false;
    }
    recount();
  }

  function duration(seconds) {
    seconds = Math.floor(seconds);
    const d = Math.floor(seconds / 86400), h = Math.floor((seconds % 86400) / 3600);
    const m = Math.floor((seconds % 3600) / 60), s = seconds % 60;
    return (d ? d + "d " : "") + String(h).padStart(2, "0") + ":" + String(m).padStart(2, "0") + ":" + String(s).padStart(2, "0");
  }

  function ctMetrics(event) {
    const fmt = window.CaissonCharts ? window.CaissonCharts.format : null;
    if (window.CaissonCharts) window.CaissonCharts.append("ct/" + event.ctid, event);
    if (!fmt) return;
    $$(`[data-ct-cpu="${event.ctid}"]`).forEach((el) => { el.textContent = fmt.cpu(event.cpu) + " CPUs"; });
    $$(`[data-ct-memory="${event.ctid}"]`).forEach((el) => {
      el.textContent = fmt.bytes(event.memory) + " of " + fmt.bytes(event.memory_total);
    });
  }

  function nodeMetrics(event) {
    if (window.CaissonNodes) window.CaissonNodes.update(event); // the datacenter's node list (nodes.js)
    if (!window.CaissonCharts) return;
    window.CaissonCharts.append("node/" + event.node, event);
    const fmt = window.CaissonCharts.format;
    $$(`[data-node-row="${event.node}"]`).forEach((row) => {
      const set = (key, text) => { const el = $(`[data-metric="${key}"]`, row); if (el) el.textContent = text; };
      set("cpu", fmt.cpu(event.cpu) + " CPUs busy");
      set("memory", fmt.bytes(event.memory) + " of " + fmt.bytes(event.memory_total));
      set("disk", fmt.bytes(event.disk_used) + " of " + fmt.bytes(event.disk_total));
    });
  }

  // ---- jobs: the task panel, progress bars, logs -----------------------------------------
  function jobStatusText(job) {
    if (ACTIVE.has(job.status)) return job.progress_text || job.status;
    return job.message || job.status;
  }

  function taskRow(job) {
    const tr = document.createElement("tr");
    tr.dataset.jobId = job.id;
    tr.tabIndex = 0;
    const cells = [job.created.slice(0, 19).replace("T", " "), job.node, job.user || "root",
      job.kind + " " + (job.target || "")];
    cells.forEach((text) => { const td = document.createElement("td"); td.textContent = text; tr.append(td); });
    const status = document.createElement("td");
    status.className = "job-status";
    tr.append(status);
    return tr;
  }

  function fillStatus(tr, job) {
    tr.className = "job-row status-" + job.status;
    const cell = $(".job-status", tr);
    if (!cell) return;
    cell.textContent = "";
    if (ACTIVE.has(job.status) && job.progress != null) {
      const bar = document.createElement("progress");
      bar.max = 1;
      bar.value = job.progress;
      cell.append(bar, " ");
    }
    cell.append(jobStatusText(job));
  }

  function updateJob(event) {
    const job = event.job;
    const body = document.getElementById("task-rows");
    if (body) {
      let tr = $(`tr[data-job-id="${job.id}"]`, body);
      if (!tr) {
        const empty = $("tr.empty", body);
        if (empty) empty.remove();
        tr = taskRow(job);
        body.prepend(tr);
        while (body.children.length > TASK_ROWS) body.lastElementChild.remove();
      }
      fillStatus(tr, job);
    }
    $$(`#ct-tasks tr[data-job-id="${job.id}"]`).forEach((tr) => {
      tr.className = "job-row status-" + job.status;
      const cell = $(".job-status", tr);
      if (cell) cell.textContent = jobStatusText(job);
    });
    const ctTasks = $("#ct-tasks tbody");
    const page = $("[data-ct-page]");
    if (ctTasks && page && job.path === "/ct/" + page.dataset.ctPage && !$(`tr[data-job-id="${job.id}"]`, ctTasks)) {
      const empty = $("tr.empty", ctTasks);
      if (empty) empty.remove();
      const tr = taskRow(job);
      ctTasks.prepend(tr);
      fillStatus(tr, job);
    }
    $$(`[data-job-status="${job.id}"]`).forEach((el) => { el.textContent = job.status; });
    $$(`[data-job-message="${job.id}"]`).forEach((el) => { el.textContent = job.message || ""; });
    templateProgress(job);
    lastRun(job);
    if (job.kind === "vzstart" && !ACTIVE.has(job.status)) refreshDiagnosis(job);
    if (dialogJob === job.id) dialogStatus(job);
    const mine = pending.get(job.id);
    if (mine && !ACTIVE.has(job.status)) {
      pending.delete(job.id);
      if (job.status === "ok") {
        if (mine.reload) location.reload();
      } else {
        flash(job.kind + " " + (job.target || "") + ": " + (job.message || job.status), "error");
      }
    }
  }

  function templateProgress(job) {
    if (job.kind !== "download" && job.kind !== "tmplbuild") return;
    const name = CSS.escape(job.target);
    const bar = $(`[data-progress-for="${name}"]`);
    if (!bar) return;
    const text = $(`[data-progress-text-for="${name}"]`);
    const start = $(`[data-start-for="${name}"]`);
    const cancel = $(`form[data-cancel-for="${name}"]`);
    if (ACTIVE.has(job.status)) {
      bar.hidden = false;
      if (job.progress == null) bar.removeAttribute("value"); else bar.value = job.progress;
      bar.dataset.job = job.id;
      if (text) text.textContent = job.progress_text || job.status;
      if (start) start.disabled = true;
      if (cancel) { cancel.setAttribute("action", "/jobs/" + job.id + "/cancel"); cancel.hidden = false; }
    } else {
      bar.hidden = true;
      if (text) text.textContent = job.status === "ok" ? "done" : job.message || job.status;
      if (start) start.disabled = false;
      if (cancel) cancel.hidden = true;
    }
  }

  function appendLines(jobId, lines) {
    const targets = $$(`[data-job-log="${jobId}"]`);
    if (dialogJob === jobId) targets.push(document.getElementById("job-dialog-log"));
    for (const pre of targets) {
      let last = Number(pre.dataset.lastSeq || 0);
      if (!pre.dataset.lastSeq) {
        const spans = $$("span[data-seq]", pre);
        if (spans.length) last = Number(spans[spans.length - 1].dataset.seq);
      }
      for (const line of lines) {
        if (line.seq <= last) continue;
        const span = document.createElement("span");
        span.dataset.seq = line.seq;
        span.textContent = line.text + "\n";
        pre.append(span);
        last = line.seq;
      }
      pre.dataset.lastSeq = String(last);
      pre.scrollTop = pre.scrollHeight;
    }
  }

  function dialogStatus(job) {
    $("#job-dialog-title").textContent = job.kind + " " + (job.target || "") + " on " + job.node;
    $("#job-dialog-status").textContent = ACTIVE.has(job.status) ? (job.progress_text || job.status)
      : job.status + (job.message && job.message !== "OK" ? ": " + job.message : "");
    const bar = $("#job-dialog-progress");
    bar.hidden = !(ACTIVE.has(job.status) && job.progress != null);
    if (job.progress != null) bar.value = job.progress;
  }

  async function openJob(jobId) {
    const dialog = document.getElementById("job-dialog");
    if (!dialog) return;
    dialogJob = jobId;
    const pre = document.getElementById("job-dialog-log");
    pre.textContent = "";
    delete pre.dataset.lastSeq;
    pre.dataset.job = jobId;
    subscribe(["job/" + jobId]); // first follow, then read history: nothing falls in between (lines are numbered)
    if (!dialog.open) dialog.showModal();
    const response = await fetch("/jobs/" + jobId + "/", { headers: { Accept: "application/json" } });
    if (!response.ok) { pre.textContent = "This task's log cannot be shown (" + response.status + ")."; return; }
    const data = await response.json();
    if (dialogJob !== jobId) return;
    dialogStatus(data.job);
    appendLines(jobId, data.lines);
  }

  // ---- templates -------------------------------------------------------------------------
  async function templatesChanged(event) {
    const store = document.getElementById("template-store");
    if (!store || !store.dataset.refresh.includes("node=" + event.node + "&")) return;
    const response = await fetch(store.dataset.refresh, { headers: { "X-Requested-With": "fetch" } });
    if (response.ok) store.innerHTML = await response.text();
  }

  function filterCatalog() {
    const search = document.getElementById("catalog-search");
    if (!search) return;
    search.addEventListener("input", () => {
      const words = search.value.toLowerCase().split(/\s+/).filter(Boolean);
      $$("tr[data-catalog]").forEach((tr) => {
        tr.hidden = !words.every((w) => tr.dataset.search.includes(w));
      });
    });
  }

  // ---- forms sent with fetch -------------------------------------------------------------
  // Asked in the page, not by the browser's window.confirm (which some browsers let users silence for good).
  function confirmInPage(text) {
    const dialog = document.getElementById("confirm-dialog");
    if (!dialog) return Promise.resolve(window.confirm(text));
    $("#confirm-text", dialog).textContent = text;
    dialog.returnValue = "";
    dialog.showModal();
    $("#confirm-no", dialog).focus();
    return new Promise((resolve) => {
      dialog.addEventListener("close", () => resolve(dialog.returnValue === "yes"), { once: true });
    });
  }

  async function sendForm(form, submitter) {
    const question = (submitter && submitter.dataset.confirm) || form.dataset.confirm;
    if (question && !(await confirmInPage(question))) return;
    const body = new FormData(form, submitter || undefined);
    let response, data = {};
    try {
      response = await fetch(form.getAttribute("action") || location.href, { method: "POST", body, credentials: "same-origin",
        headers: { "X-Requested-With": "fetch", "X-CSRFToken": csrf() } });
      data = await response.json();
    } catch (e) {
      flash("The request failed: " + (response ? response.status + " " + response.statusText : e.message), "error");
      return;
    }
    if (!response.ok) {
      const error = data.error || {};
      flash(error.message || "refused (" + response.status + ")", "error");
      if (error.gone) removed({ ctid: Number(($("[data-ct-page]") || { dataset: {} }).dataset.ctPage) });
      return;
    }
    flash(data.message || "done", "success");
    if (data.job) {
      pending.set(data.job.id, { reload: form.hasAttribute("data-reload-on-done") || form.id.endsWith("-form") });
      updateJob({ job: data.job });
    } else if (form.hasAttribute("data-remove-on-done")) {
      const row = form.closest("tr");
      if (row) row.remove();
    } else if (form.hasAttribute("data-reload-on-done")) {
      location.reload(); // done at once (no job to wait for)
    }
  }

  // A start that failed: the container's summary shows the diagnosis the node made (the page's own slot).
  async function refreshDiagnosis(job) {
    const slot = document.getElementById("start-diagnosis-slot");
    if (!slot || slot.dataset.ct !== String(job.target)) return;
    const response = await fetch(location.pathname, { credentials: "same-origin" });
    if (!response.ok) return;
    const fresh = new DOMParser().parseFromString(await response.text(), "text/html").getElementById("start-diagnosis-slot");
    if (fresh) slot.replaceChildren(...fresh.childNodes);
  }

  // A scheduled backup run (vzdumpjob, target: the schedule's ID) shows as its schedule's "Last run".
  function lastRun(job) {
    if (job.kind !== "vzdumpjob") return;
    $$(`[data-last-run="${CSS.escape(String(job.target))}"]`).forEach((cell) => {
      const span = document.createElement("span");
      span.className = "job-row status-" + job.status;
      span.dataset.jobId = job.id;
      span.tabIndex = 0;
      span.textContent = job.created.slice(0, 16).replace("T", " ") + ": " + jobStatusText(job);
      cell.replaceChildren(span);
    });
  }

  // ---- wiring ----------------------------------------------------------------------------
  const HANDLERS = {
    subscribed: () => setLive("live", true),
    error: (event) => console.warn("live:", event.message),
    job: updateJob,
    "job.log": (event) => appendLines(event.job, event.lines),
    "ct.status": (event) => setStatus(event.ct),
    "ct.removed": removed,
    "ct.metrics": ctMetrics,
    "node.metrics": nodeMetrics,
    "node.status": (event) => { if (window.CaissonNodes) window.CaissonNodes.status(event); },
    templates: templatesChanged,
  };

  document.addEventListener("submit", (event) => {
    const form = event.target;
    if (!form.matches("form[data-async]")) return;
    event.preventDefault();
    sendForm(form, event.submitter);
  });
  document.addEventListener("click", (event) => {
    const row = event.target.closest("[data-job-id]");
    if (row && !event.target.closest("a, button, form")) openJob(Number(row.dataset.jobId));
  });
  document.addEventListener("keydown", (event) => {
    const row = event.target.closest && event.target.closest("tr[data-job-id]");
    if (row && event.key === "Enter") openJob(Number(row.dataset.jobId));
  });
  const dialog = document.getElementById("job-dialog");
  if (dialog) dialog.addEventListener("close", () => { dialogJob = null; });

  readJSON("active-template-jobs").forEach((job) => templateProgress(job));
  filterCatalog();
  [...readJSON("live-subscriptions"), ...readJSON("page-subscriptions")].forEach((item) => wanted.add(item));
  window.CaissonLive = { subscribe, flash, openJob, confirm: confirmInPage, track: (job) => updateJob({ job }) };
  connect();
})();
