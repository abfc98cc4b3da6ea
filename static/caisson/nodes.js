/* The datacenter's node list (node_list.html): load average, container counts and online/offline from each
 * node's tick (live.js hands every node.metrics event here). A node whose ticks stop for the offline limit is
 * shown offline, as the server would say, timed on this browser's clock so a skewed server clock does not
 * matter: a row's data-age is the seconds since its last heartbeat when the page was made. */
(function () {
  "use strict";
  const table = document.getElementById("node-list");
  if (!table) return;
  const limit = Number(table.dataset.offlineAfter) * 1000;
  const seen = new Map(); // node -> this browser's time of its last heartbeat
  const loaded = Date.now();
  table.querySelectorAll("tr[data-node-row]").forEach((row) => {
    seen.set(row.dataset.nodeRow, loaded - Number(row.dataset.age) * 1000);
  });

  function row(node) { return table.querySelector(`tr[data-node-row="${CSS.escape(node)}"]`); }

  function markStatus() {
    const now = Date.now();
    table.querySelectorAll("tr[data-node-row]").forEach((tr) => {
      const online = now - (seen.get(tr.dataset.nodeRow) || 0) < limit;
      const cell = tr.querySelector("[data-node-status]");
      cell.textContent = online ? "online" : "offline";
      tr.classList.toggle("offline", !online);
    });
  }

  function update(event) {
    const tr = row(event.node);
    if (!tr) return;
    seen.set(event.node, Date.now());
    const set = (key, text) => { const el = tr.querySelector(`[data-metric="${key}"]`); if (el) el.textContent = text; };
    if (Array.isArray(event.load)) set("load", event.load.map((x) => x.toFixed(2)).join(", "));
    if (event.containers != null) set("containers", `${event.running} running of ${event.containers}`);
    markStatus();
  }

  markStatus();
  setInterval(markStatus, 2000);
  window.CaissonNodes = { update };
})();
