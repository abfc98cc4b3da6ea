/* The container tables: rows added live and the summary cards recounted (for live.js), the bulk bar (act on
 * the ticked rows), the filter box, the tree's context menu, and Datacenter → Search's filter.
 * Every action is one POST; what it queued shows in the task panel through live.js; refusals are named per
 * container. Destructive ones are confirmed in the page (CaissonLive.confirm).
 */
(function () {
  "use strict";
  const $ = (sel, root) => (root || document).querySelector(sel);
  const $$ = (sel, root) => Array.from((root || document).querySelectorAll(sel));
  const live = () => window.CaissonLive || { flash: () => {}, track: () => {}, confirm: (t) => Promise.resolve(window.confirm(t)) };

  async function post(url, body) {
    body.append("csrfmiddlewaretoken", $("input[name=csrfmiddlewaretoken]").value);
    const response = await fetch(url, { method: "POST", body, credentials: "same-origin",
      headers: { "X-Requested-With": "fetch" } });
    const data = await response.json().catch(() => ({}));
    return { response, data };
  }

  function report(response, data) {
    if (!response.ok) { live().flash((data.error || {}).message || "refused (" + response.status + ")", "error"); return; }
    live().flash(data.message || "done", Object.keys(data.refused || {}).length ? "warning" : "success");
    Object.entries(data.refused || {}).forEach(([ctid, reason]) => live().flash("CT " + ctid + ": " + reason, "error"));
    (data.jobs || []).forEach((job) => live().track(job));
  }

  // ---- live rows and the summary cards (called by live.js on ct.status and ct.removed) ----
  // The summary cards (running, stopped, total) count the container table's rows as they change.
  function recount() {
    const table = document.getElementById("ct-table");
    if (!table) return;
    const counts = { running: 0, stopped: 0, total: 0 };
    $$("tr[data-ct-row]", table).forEach((tr) => {
      const badge = $("[data-ct-status]", tr);
      const status = badge ? badge.textContent.trim() : "";
      counts.total++;
      if (status in counts) counts[status]++;
    });
    $$("[data-count]").forEach((el) => { el.textContent = String(counts[el.dataset.count] || 0); });
  }

  function addTableRow(ct) {
    const table = document.getElementById("ct-table");
    if (!table || (table.dataset.node && table.dataset.node !== ct.node)) return;
    const body = $("tbody", table);
    const empty = $("tr.empty", body);
    if (empty) empty.remove();
    const tr = document.createElement("tr");
    tr.dataset.ctRow = ct.ctid;
    const cell = (text, data) => {
      const td = document.createElement("td");
      if (text != null) td.textContent = text;
      if (data) Object.assign(td.dataset, data);
      tr.append(td);
      return td;
    };
    const pick = cell(null);
    const box = document.createElement("input");
    box.type = "checkbox";
    box.className = "ct-select";
    box.value = ct.ctid;
    box.setAttribute("aria-label", "select CT " + ct.ctid);
    pick.append(box);
    const link = document.createElement("a");
    link.href = "/ct/" + ct.ctid + "/";
    link.textContent = ct.ctid;
    cell(null).append(link);
    cell(ct.hostname || "", { ctHostname: ct.ctid });
    cell(ct.node);
    const badge = document.createElement("span");
    badge.className = "badge status-" + ct.status;
    badge.dataset.ctStatus = ct.ctid;
    badge.textContent = ct.status;
    cell(null).append(badge);
    cell((ct.ipv4 || []).join(", "), { ctIpv4: ct.ctid });
    cell(null, { ctTags: ct.ctid }).append(...tagSpans(ct.tags));
    const after = Array.from(body.children).find((el) => Number(el.dataset.ctRow) > ct.ctid);
    body.insertBefore(tr, after || null);
  }

  function tagSpans(tags) {
    return (tags || []).map((t) => {
      const span = document.createElement("span");
      span.className = "tag";
      span.textContent = t;
      return span;
    });
  }

  window.CaissonTables = { recount, addTableRow, tagSpans };

  // ---- the bulk bar ----------------------------------------------------------------------
  function wireBar(bar) {
    const table = document.getElementById(bar.dataset.table);
    if (!table) return;
    const boxes = () => $$("input.ct-select", table).filter((b) => !b.closest("tr").hidden);
    const selected = () => boxes().filter((b) => b.checked).map((b) => b.value);
    const all = $("#ct-select-all", table);

    function refresh() {
      const n = selected().length;
      $("#bulk-count", bar).textContent = n + " selected";
      $$("button[name=action]", bar).forEach((b) => { b.disabled = n === 0; });
      if (all) all.checked = n > 0 && n === boxes().length;
    }

    table.addEventListener("change", (event) => {
      if (event.target === all) boxes().forEach((b) => { b.checked = all.checked; });
      refresh();
    });

    bar.addEventListener("submit", async (event) => {
      event.preventDefault();
      const button = event.submitter;
      const ids = selected();
      if (!button || !ids.length) return;
      const question = button.dataset.confirm;
      if (question && !(await live().confirm(question.replace("{n}", ids.length)))) return;
      const body = new FormData();
      body.append("action", button.value);
      ids.forEach((id) => body.append("ctid", id));
      if (button.value === "tag" || button.value === "untag") body.append("tags", $("#bulk-tags", bar).value);
      const { response, data } = await post(bar.getAttribute("action"), body);
      report(response, data);
    });

    const filter = $("#ct-filter", bar);
    if (filter) filter.addEventListener("input", () => {
      const words = filter.value.toLowerCase().split(/\s+/).filter(Boolean);
      $$("tr[data-ct-row]", table).forEach((tr) => {
        const text = tr.textContent.toLowerCase();
        tr.hidden = !words.every((w) => text.includes(w));
      });
      refresh();
    });
    refresh();
    new MutationObserver(refresh).observe($("tbody", table), { childList: true });
  }

  // ---- the tree's context menu -----------------------------------------------------------
  const MENU = [
    ["start", "Start", "stopped"], ["shutdown", "Shutdown", "running"], ["stop", "Stop", "running"],
    ["reboot", "Reboot", "running"], ["backup", "Backup now", null], ["console", "Console", "running"],
  ];
  const CONFIRM = {
    shutdown: "Shut down CT {id}?", stop: "Stop CT {id} now, without a clean shutdown?", reboot: "Reboot CT {id}?",
  };
  let menu = null;

  function closeMenu() { if (menu) { menu.remove(); menu = null; } }

  function openMenu(leaf, x, y) {
    closeMenu();
    const id = leaf.dataset.treeCt;
    const icon = $("[data-ct-status-icon]", leaf);
    const status = icon ? icon.title : "";
    menu = document.createElement("ul");
    menu.className = "context-menu";
    menu.id = "ct-menu";
    menu.setAttribute("role", "menu");
    for (const [action, label, when] of MENU) {
      const li = document.createElement("li");
      const button = document.createElement("button");
      button.type = "button";
      button.textContent = label;
      button.dataset.action = action;
      button.setAttribute("role", "menuitem");
      button.disabled = when !== null && when !== status;
      button.addEventListener("click", () => act(id, action));
      li.append(button);
      menu.append(li);
    }
    menu.style.left = x + "px";
    menu.style.top = y + "px";
    document.body.append(menu);
    const first = $("button:not(:disabled)", menu);
    if (first) first.focus();
  }

  async function act(id, action) {
    closeMenu();
    if (action === "console") { location.href = "/ct/" + id + "/console/"; return; }
    if (CONFIRM[action] && !(await live().confirm(CONFIRM[action].replace("{id}", id)))) return;
    const body = new FormData();
    body.append("action", action);
    body.append("ctid", id);
    const { response, data } = await post("/bulk", body);
    report(response, data);
  }

  document.addEventListener("contextmenu", (event) => {
    const leaf = event.target.closest("[data-tree-ct]");
    if (!leaf) return;
    event.preventDefault();
    openMenu(leaf, event.clientX, event.clientY);
  });
  document.addEventListener("keydown", (event) => {
    if (event.key === "Escape") closeMenu();
    const leaf = event.target.closest && event.target.closest("[data-tree-ct]");
    if (leaf && (event.key === "ContextMenu" || (event.shiftKey && event.key === "F10"))) {
      event.preventDefault();
      const box = leaf.getBoundingClientRect();
      openMenu(leaf, box.left + 20, box.bottom);
    }
  });
  document.addEventListener("click", (event) => { if (menu && !menu.contains(event.target)) closeMenu(); });

  // ---- Datacenter → Search: filter as one types -----------------------------------------
  const search = document.getElementById("resource-search");
  if (search) {
    const apply = () => {
      const words = search.value.toLowerCase().split(/\s+/).filter(Boolean);
      $$("#search-table tr[data-search]").forEach((tr) => {
        tr.hidden = !words.every((w) => tr.dataset.search.includes(w));
      });
    };
    search.addEventListener("input", apply);
    apply();
  }

  $$("form.bulk-bar").forEach(wireBar);
})();
