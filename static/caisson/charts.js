/* Graphs over MetricSample history (uPlot), with live points appended by live.js.
 *
 * Axis ticks fall where their unit makes them round: byte axes step by powers of two (256 MiB, 512 MiB, not
 * 190.7 MiB), CPU ticks carry as many decimals as their step needs, and the value axis is as wide as its
 * longest label. Each figure keeps its tick labels in data-y-ticks, for the tests and for screen readers.
 */
(function () {
  "use strict";
  const KINDS = {
    cpu: { label: "CPU", series: [["cpu", "CPUs busy", "#2f6fb0"]], unit: "cpu" },
    memory: { label: "Memory", series: [["memory", "used", "#3a9a4f"], ["memory_total", "total", "#999"]], unit: "bytes" },
    disk: { label: "Disk", series: [["disk_used", "used", "#b0702f"], ["disk_total", "total", "#999"]], unit: "bytes" },
    net: { label: "Network", series: [["net_in", "in", "#2f6fb0"], ["net_out", "out", "#b02f5a"]], unit: "rate" },
    diskio: { label: "Disk I/O", series: [["io_read", "read", "#2f6fb0"], ["io_write", "write", "#b02f5a"]], unit: "rate" },
  };
  const UNITS = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
  const charts = [];

  // Byte tick steps: 1, 2, 4 ... 512 of each binary unit.
  const BINARY_INCRS = [];
  for (let power = 0; power < UNITS.length; power++) {
    for (let m = 1; m < 1024; m *= 2) BINARY_INCRS.push(m * 1024 ** power);
  }
  // CPU tick steps: 1, 2, 2.5, 5 x 10^k.
  const DECIMAL_INCRS = [];
  for (let e = -4; e <= 4; e++) [1, 2, 2.5, 5].forEach((m) => DECIMAL_INCRS.push(m * 10 ** e));

  function trim(text) { return text.includes(".") ? text.replace(/\.?0+$/, "") : text; }

  function bytes(v, digits) {
    if (v == null) return "–";
    let i = 0;
    while (Math.abs(v) >= 1024 && i < UNITS.length - 1) { v /= 1024; i++; }
    return (i ? trim(v.toFixed(digits == null ? 1 : digits)) : v.toFixed(0)) + " " + UNITS[i];
  }

  function cpu(v) {
    if (v == null) return "–";
    if (v === 0) return "0";
    return Math.abs(v) >= 0.01 ? v.toFixed(2) : v.toPrecision(2); // an idle container is not "0.00"
  }

  const format = { cpu, bytes: (v) => bytes(v), rate: (v) => (v == null ? "–" : bytes(v) + "/s") };

  // Tick labels: the step decides the decimals (0.0005 apart -> "0.0015", 256 MiB apart -> "768 MiB").
  function tickLabels(unit) {
    return (u, ticks, axisIdx, space, incr) => {
      let labels;
      if (unit === "cpu") {
        const digits = Math.max(0, Math.min(6, -Math.floor(Math.log10(incr || 1) + 1e-9)));
        labels = ticks.map((v) => (v === 0 ? "0" : v.toFixed(digits)));
      } else {
        labels = ticks.map((v) => bytes(v, 2) + (unit === "rate" ? "/s" : ""));
      }
      u.root.parentElement.dataset.yTicks = JSON.stringify(labels);
      return labels;
    };
  }

  // As wide as the longest label: "1023 MiB/s" is not cut at the canvas' left edge.
  function axisSize(u, values, axisIdx, cycleNum) {
    const axis = u.axes[axisIdx];
    if (cycleNum > 1) return axis._size;
    let size = axis.ticks.size + axis.gap;
    const longest = (values || []).reduce((a, v) => (String(v).length > a.length ? String(v) : a), "");
    if (longest) {
      u.ctx.font = axis.font[0];
      size += u.ctx.measureText(longest).width / devicePixelRatio;
    }
    return Math.ceil(size) + 4;
  }

  function make(figure) {
    const source = document.getElementById(figure.dataset.source);
    if (!source || typeof uPlot === "undefined") return;
    const data = JSON.parse(source.textContent);
    const kind = KINDS[figure.dataset.chart];
    if (!kind) return;
    const fmt = format[kind.unit];
    const columns = [data.ts.slice(), ...kind.series.map(([key]) => (data[key] || []).slice())];
    const opts = {
      width: Math.max(260, figure.clientWidth || 320), height: 150,
      legend: { show: true },
      // The whole timeframe, ending now. uPlot pads a single point's range by a thousand times its span in
      // time scales (one day sample would end in 2029): the end comes from the data and the clock only.
      scales: {
        x: { time: true, range: (u) => {
          const ts = u.data[0];
          const end = Math.max(ts.length ? ts[ts.length - 1] : 0, Date.now() / 1000);
          return [end - data.window, end];
        } },
        y: { range: (u, min, max) => [0, Math.max(max || 0, kind.unit === "cpu" ? 0.01 : 1024)] },
      },
      axes: [{}, { values: tickLabels(kind.unit), size: axisSize, incrs: kind.unit === "cpu" ? DECIMAL_INCRS : BINARY_INCRS }],
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

  window.CaissonCharts = { append, format, charts };
  document.querySelectorAll("figure.chart").forEach(make);
})();
