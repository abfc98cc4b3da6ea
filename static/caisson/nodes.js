/* The nodes' load average and container counts (node_list.html, the node page's cards) from each node's
 * tick (live.js hands every node.metrics event here), and the Datacenter's online/offline: a node whose ticks
 * stop for the offline limit is shown offline, as the server would say, timed on this browser's clock so a
 * skewed server clock does not matter (a row's data-age: seconds since its last heartbeat at render). */
(function () {
  "use strict";
  const table = document.getElementById("node-list");
  const limit = table ? Number(table.dataset.offlineAfter) * 1000 : 0;
  const seen = new Map(); // node -> this browser's time of its last heartbeat
  const loaded = Date.now();
  document.querySelectorAll("#node-list tr[data-node-row]").forEach((row) => {
    seen.set(row.dataset.nodeRow, loaded - Number(row.dataset.age) * 1000);
  });

  function markStatus() {
    if (!table) return;
    const now = Date.now();
    table.querySelectorAll("tr[data-node-row]").forEach((tr) => {
      const online = now - (seen.get(tr.dataset.nodeRow) || 0) < limit;
      const cell = tr.querySelector("[data-node-status]");
      cell.textContent = online ? "online" : "offline";
      tr.classList.toggle("offline", !online);
    });
  }

  function update(event) {
    seen.set(event.node, Date.now());
    const set = (key, text) => {
      document.querySelectorAll(`[data-node-row="${CSS.escape(event.node)}"] [data-metric="${key}"]`)
        .forEach((el) => { el.textContent = text; });
    };
    if (Array.isArray(event.load)) set("load", event.load.map((x) => x.toFixed(2)).join(", "));
    if (event.containers != null) set("containers", `${event.running} running of ${event.containers}`);
    markStatus();
  }

  markStatus();
  if (table) setInterval(markStatus, 2000);
  window.CaissonNodes = { update };
})();
