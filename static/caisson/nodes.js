/* The nodes' load average and container counts (node_list.html, the node page's cards) from each node's
 * tick (live.js hands every node.metrics event here), and the Datacenter's online/offline: a node whose ticks
 * stop for the offline limit is shown offline, as the server would say, timed on this browser's clock so a
 * skewed server clock does not matter (a row's data-age: seconds since its last heartbeat at render). The
 * server's node.status event (tasks/presence.py: once per transition) marks a node offline or back everywhere,
 * the tree's node icon included, and greys an offline node's containers as "unknown". */
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

  function treeNode(name, online) {
    document.querySelectorAll(`li.node[data-node="${CSS.escape(name)}"]`).forEach((li) => {
      li.classList.toggle("offline", !online);
      const icon = li.querySelector(".icon-node");
      if (!icon) return;
      icon.classList.toggle("online", online);
      icon.classList.toggle("offline", !online);
      icon.title = online ? "online" : "offline";
    });
  }

  function unknown(ctid) {
    document.querySelectorAll(`[data-ct-status-icon="${ctid}"]`).forEach((el) => {
      el.className = "icon icon-ct status-unknown";
      el.title = "unknown";
    });
    document.querySelectorAll(`[data-ct-status="${ctid}"]`).forEach((el) => {
      el.textContent = "unknown";
      el.className = el.className.replace(/status-\S+/, "") + " status-unknown";
    });
  }

  function status(event) {
    seen.set(event.node, event.online ? Date.now() : 0);
    treeNode(event.node, event.online);
    if (!event.online) (event.ctids || []).forEach(unknown); // back online: its mirror sends each one again
    markStatus();
  }

  function update(event) {
    seen.set(event.node, Date.now());
    treeNode(event.node, true);
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
  window.CaissonNodes = { update, status };
})();
