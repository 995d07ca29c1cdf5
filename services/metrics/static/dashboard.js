// quicfleet dashboard: polls /api/dashboard and redraws four uPlot charts, the tiles and the
// decisions table. Every chart figure carries data-points="<n>" once it holds data, so a headless
// browser test can tell an empty page from a live one.
"use strict";

const POLL_MS = 1000;
const POINTS = 600;
const STATE_COLOURS = {
  ready: "#3fb950", booting: "#d29922", cloning: "#a371f7",
  requested: "#58a6ff", draining: "#db6d28", failed: "#f85149", pooled: "#8b949e",
};

const charts = {};
let decisionTimes = [];

function line(label, stroke, extra) {
  return Object.assign({ label: label, stroke: stroke, width: 2, spanGaps: true, points: { show: false } }, extra || {});
}

function chartSpecs() {
  const fleet = Object.keys(STATE_COLOURS).map((s) => line(s, STATE_COLOURS[s]));
  fleet.push(line("desired", "#e6edf3", { dash: [6, 4] }));
  return {
    fleet: { series: fleet, columns: Object.keys(STATE_COLOURS).map((s) => "vms_" + s).concat(["desired"]) },
    rps: { series: [line("req/s", "#4fb3ff", { fill: "rgba(79,179,255,0.12)" })], columns: ["rps"] },
    latency: {
      series: [line("p50", "#3fb950"), line("p95", "#d29922"), line("p99", "#f85149", { show: false })],
      columns: ["p50_ms", "p95_ms", "p99_ms"],
    },
    errors: { series: [line("errors/s", "#f85149", { fill: "rgba(248,81,73,0.12)" })], columns: ["errors_ps"] },
  };
}

function axisStyle() {
  return { stroke: "#8a96a3", grid: { stroke: "#26303b", width: 1 }, ticks: { stroke: "#26303b" } };
}

// Rates, latencies and VM counts read best against zero; leave headroom above the top value.
function fromZero(_u, _min, max) {
  return [0, max > 0 ? max * 1.15 : 1];
}

// Scaling decisions as dashed vertical lines labelled "current→desired" on the fleet chart.
function drawDecisions(u) {
  const ctx = u.ctx;
  const [xMin, xMax] = [u.scales.x.min, u.scales.x.max];
  ctx.save();
  ctx.strokeStyle = "#8a96a3";
  ctx.fillStyle = "#d8dee6";
  ctx.setLineDash([3, 3]);
  ctx.font = "11px sans-serif";
  decisionTimes.filter((d) => d.t >= xMin && d.t <= xMax).forEach((d) => {
    const x = Math.round(u.valToPos(d.t, "x", true));
    ctx.beginPath();
    ctx.moveTo(x, u.bbox.top);
    ctx.lineTo(x, u.bbox.top + u.bbox.height);
    ctx.stroke();
    ctx.fillText(d.label, x + 3, u.bbox.top + 12);
  });
  ctx.restore();
}

function makeChart(name, spec) {
  const box = document.getElementById("chart-" + name);
  const opts = {
    width: Math.max(300, box.clientWidth - 16),
    height: 200,
    scales: { x: { time: true }, y: { range: fromZero } },
    series: [{}].concat(spec.series),
    axes: [axisStyle(), axisStyle()],
    legend: { live: false },
    hooks: name === "fleet" ? { draw: [drawDecisions] } : {},
  };
  const empty = [[]].concat(spec.series.map(() => []));
  charts[name] = { plot: new uPlot(opts, empty, box), spec: spec, box: box };
}

// data-points: how many x values have at least one plotted number (what a test can check).
function updateChart(name, series) {
  const chart = charts[name];
  const columns = chart.spec.columns.map((c) => series[c] || []);
  chart.plot.setData([series.t].concat(columns));
  const filled = series.t.filter((_t, i) => columns.some((col) => typeof col[i] === "number"));
  chart.box.dataset.points = String(filled.length);
}

function fmt(value, digits) {
  return value === null || value === undefined ? "–" : Number(value).toFixed(digits);
}

function ms(seconds) {
  return seconds === null || seconds === undefined ? "–" : (seconds * 1000).toFixed(1) + " ms";
}

function setText(id, text) {
  document.getElementById(id).textContent = text;
}

function updateTiles(data) {
  const latest = data.latest || {};
  const desired = data.desired === null ? "–" : data.desired;
  setText("tile-vms", data.states.ready + " / " + desired);
  setText("tile-rps", fmt(latest.rps, 1));
  setText("tile-latency", ms(latest.p50_s) + " / " + ms(latest.p95_s));
  setText("tile-errors", fmt((latest.error_rate || 0) * 100, 2) + " %");
  setText("tile-outstanding", fmt(latest.outstanding, 1));
  setText("tile-balancers", String(data.balancers));
  setText("window", fmt(data.window_s, 0));
}

function cell(text) {
  const td = document.createElement("td");
  td.textContent = text;
  return td;
}

function updateDecisions(decisions) {
  const body = document.getElementById("decisions");
  if (!decisions.length) return;
  body.replaceChildren(...decisions.map((d) => {
    const row = document.createElement("tr");
    row.className = "decision";
    const when = new Date(d.at).toLocaleTimeString();
    const observed = d.observed === null ? "–" : fmt(d.observed, 2) + " / " + fmt(d.target, 2);
    [when, d.current + " → " + d.desired, d.signal || "–", observed, d.reason].forEach((t) => row.appendChild(cell(t)));
    return row;
  }));
}

function setStatus(kind, text) {
  const el = document.getElementById("status");
  el.className = "status " + kind;
  el.textContent = text;
}

// The history the page holds: the first poll fetches up to POINTS points, later polls only the
// points newer than the last one held (`since`), appended here and trimmed to POINTS.
let held = null;

function sinceParam() {
  return held && held.t.length ? "&since=" + held.t[held.t.length - 1] : "";
}

function hold(series) {
  if (held === null) {
    held = series;
  } else {
    Object.keys(series).forEach((k) => { held[k] = (held[k] || []).concat(series[k]).slice(-POINTS); });
  }
  return held;
}

async function poll() {
  try {
    const response = await fetch("/api/dashboard?points=" + POINTS + sinceParam(), { cache: "no-store" });
    if (!response.ok) throw new Error("HTTP " + response.status);
    const data = await response.json();
    const series = hold(data.series);
    decisionTimes = data.decisions.map((d) => ({ t: Date.parse(d.at) / 1000, label: d.current + "→" + d.desired }));
    Object.keys(charts).forEach((name) => updateChart(name, series));
    updateTiles(data);
    updateDecisions(data.decisions);
    document.body.dataset.updates = String(Number(document.body.dataset.updates) + 1);
    setStatus(series.t.length ? "live" : "waiting", series.t.length ? "live" : "waiting for data…");
  } catch (error) {
    setStatus("error", "metrics unreachable (" + error.message + ")");
  } finally {
    setTimeout(poll, POLL_MS);
  }
}

function resize() {
  Object.values(charts).forEach((c) => c.plot.setSize({ width: Math.max(300, c.box.clientWidth - 16), height: 200 }));
}

function start() {
  const specs = chartSpecs();
  Object.keys(specs).forEach((name) => makeChart(name, specs[name]));
  window.addEventListener("resize", resize);
  poll();
}

start();
