/* Graphs over MetricSample history (uPlot), with live points appended by live.js. */
(function () {
  "use strict";
  const KINDS = {
    cpu: { label: "CPU", series: [["cpu", "CPUs busy", "#2f6fb0"]], unit: "cpu" },
    memory: { label: "Memory", series: [["memory", "used", "#3a9a4f"], ["memory_total", "total", "#999"]], unit: "bytes" },
    disk: { label: "Disk", series: [["disk_used", "used", "#b0702f"], ["disk_total", "total", "#999"]], unit: "bytes" },
    net: { label: "Network", series: [["net_in", "in", "#2f6fb0"], ["net_out", "out", "#b02f5a"]], unit: "rate" },
  };
  const charts = [];

  function bytes(v) {
    if (v == null) return "–";
    const units = ["B", "KiB", "MiB", "GiB", "TiB"];
    let i = 0;
    while (Math.abs(v) >= 1024 && i < units.length - 1) { v /= 1024; i++; }
    return v.toFixed(i ? 1 : 0) + " " + units[i];
  }
  const format = {
    cpu: (v) => (v == null ? "–" : v.toFixed(2)),
    bytes: bytes,
    rate: (v) => (v == null ? "–" : bytes(v) + "/s"),
  };

  function make(figure) {
    const source = document.getElementById(figure.dataset.source);
    if (!source || typeof uPlot === "undefined") return;
    const data = JSON.parse(source.textContent);
    const kind = KINDS[figure.dataset.chart];
    if (!kind) return;
    const fmt = format[kind.unit];
    const columns = [data.ts.slice(), ...kind.series.map(([key]) => data[key].slice())];
    const opts = {
      width: Math.max(260, figure.clientWidth || 320), height: 150,
      legend: { show: true },
      // The whole timeframe, ending now: a few points do not stretch the axis over years.
      scales: { x: { time: true, range: (u, min, max) => {
        const end = Math.max(Number.isFinite(max) ? max : 0, Date.now() / 1000);
        return [end - data.window, end];
      } } },
      axes: [{}, { values: (u, ticks) => ticks.map(fmt), size: 70 }],
      series: [{}, ...kind.series.map(([, label, stroke]) => ({ label, stroke, width: 1.5, value: (u, v) => fmt(v) }))],
    };
    const plot = new uPlot(opts, columns, figure);
    figure.dataset.points = String(columns[0].length);
    charts.push({ figure, data, kind, columns, plot });
  }

  function append(scope, point) {
    for (const chart of charts) {
      if (chart.data.scope !== scope || !chart.data.live) continue;
      const { columns, kind } = chart;
      const ts = point.ts;
      const last = columns[0][columns[0].length - 1];
      if (last !== undefined && ts <= last) continue; // the same event through two subscriptions
      columns[0].push(ts);
      kind.series.forEach(([key], i) => columns[i + 1].push(point[key] == null ? null : point[key]));
      while (columns[0].length && columns[0][0] < ts - chart.data.window) columns.forEach((c) => c.shift());
      chart.plot.setData(columns);
      chart.figure.dataset.points = String(columns[0].length);
    }
  }

  window.CaissonCharts = { append, format };
  document.querySelectorAll("figure.chart").forEach(make);
})();
