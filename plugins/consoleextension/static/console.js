// The pipeline console: renders what /api/stream pushes (server-sent events read with fetch,
// so a bearer token can go with the request). Every string from the gateway is telemetry, so
// untrusted: the DOM is built with textContent only, never innerHTML.
"use strict";

const SVG = "http://www.w3.org/2000/svg";
const TOKEN_KEY = "pipeline-console-token";
const COLORS = ["#58a6ff", "#3fb950", "#d29922", "#f778ba", "#a371f7", "#39c5cf", "#f0883e",
  "#8b949e"];

const model = {
  state: null,          // the last view: components, pipelines, held, reloads
  workflows: [],        // recent workflows, oldest first (bounded)
  maxWorkflows: 200,
  series: new Map(),    // agent gauge series: key -> {name, labels, points: [[t, v]]}
  selected: null,       // the instance whose details are open
  openTrace: null,
  updates: 0,
};
window.consoleModel = model;  // for tests and the curious

// -- small DOM helpers ---------------------------------------------------------------------
function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k === "class") el.className = v;
    else if (k === "dataset") Object.assign(el.dataset, v);
    else el.setAttribute(k, v === true ? "" : String(v));
  }
  for (const c of children.flat()) {
    if (c === null || c === undefined) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return el;
}
function s(tag, attrs, ...children) {
  const el = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v !== null && v !== undefined) el.setAttribute(k, String(v));
  }
  for (const c of children.flat()) {
    if (c !== null && c !== undefined) el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return el;
}
const $ = (id) => document.getElementById(id);

function fmtNum(v) {
  if (v === null || v === undefined) return "–";
  const a = Math.abs(v);
  if (a >= 1e9) return (v / 1e9).toFixed(2) + "G";
  if (a >= 1e6) return (v / 1e6).toFixed(2) + "M";
  if (a >= 1e4) return (v / 1e3).toFixed(1) + "k";
  if (a >= 100 || Number.isInteger(v)) return Math.round(v).toString();
  return v.toFixed(1);
}
const fmtInt = (v) => (v === null || v === undefined ? "–" : Math.round(v).toLocaleString("en-US"));
function fmtDuration(sec) {
  if (sec === null || sec === undefined) return "–";
  if (sec < 1e-3) return (sec * 1e6).toFixed(0) + " µs";
  if (sec < 1) return (sec * 1e3).toFixed(sec < 0.01 ? 2 : 0) + " ms";
  if (sec < 120) return sec.toFixed(2) + " s";
  return (sec / 60).toFixed(1) + " min";
}
function fmtTime(t) {
  if (!t) return "–";
  const d = new Date(t * 1000);
  return String(d.getHours()).padStart(2, "0") + ":" + String(d.getMinutes()).padStart(2, "0") +
    ":" + String(d.getSeconds()).padStart(2, "0");
}
function fmtUptime(sec) {
  const d = Math.floor(sec / 86400), hh = Math.floor(sec % 86400 / 3600);
  const m = Math.floor(sec % 3600 / 60), ss = Math.floor(sec % 60);
  return (d ? d + "d " : "") + String(hh).padStart(2, "0") + ":" + String(m).padStart(2, "0") +
    ":" + String(ss).padStart(2, "0");
}
function shortName(c) {
  return c.kind === "processor" || c.kind === "connector" || c.kind === "extension" ? c.id : c.id;
}

// -- the stream ------------------------------------------------------------------------------
function authHeaders() {
  const token = sessionStorage.getItem(TOKEN_KEY);
  return token ? { Authorization: "Bearer " + token } : {};
}
async function api(path) {
  const resp = await fetch(path, { headers: authHeaders(), cache: "no-store" });
  if (resp.status === 401) { showLogin("the token was refused"); throw new Error("401"); }
  if (!resp.ok) throw new Error(path + ": HTTP " + resp.status);
  return resp.json();
}
function setConnection(live, text) {
  const el = $("connection");
  el.className = "conn " + (live ? "live" : "down");
  el.textContent = text;
}
function showLogin(message) {
  $("login").hidden = false;
  document.querySelectorAll(".view").forEach((v) => { v.hidden = true; });
  $("login-error").textContent = message || "";
  setConnection(false, "token needed");
}
$("login-form").addEventListener("submit", (ev) => {
  ev.preventDefault();
  sessionStorage.setItem(TOKEN_KEY, $("token").value);
  $("login").hidden = true;
  showView();
  connect();
});

let streamAbort = null;
async function connect() {
  if (streamAbort) streamAbort.abort();
  const ctl = new AbortController();
  streamAbort = ctl;
  try {
    const resp = await fetch("/api/stream", { headers: authHeaders(), signal: ctl.signal, cache: "no-store" });
    if (resp.status === 401) {
      showLogin(sessionStorage.getItem(TOKEN_KEY) ? "the token was refused" : "");
      return;
    }
    if (!resp.ok || !resp.body) throw new Error("HTTP " + resp.status);
    setConnection(true, "live");
    const reader = resp.body.getReader();
    const decoder = new TextDecoder();
    let buf = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buf += decoder.decode(value, { stream: true });
      let i;
      while ((i = buf.indexOf("\n\n")) >= 0) {
        const chunk = buf.slice(0, i);
        buf = buf.slice(i + 2);
        onEvent(chunk);
      }
    }
  } catch (err) {
    if (ctl.signal.aborted) return;
  }
  if (streamAbort === ctl) {
    setConnection(false, "reconnecting");
    setTimeout(connect, 1000);
  }
}
function onEvent(chunk) {
  let data = "";
  for (const line of chunk.split("\n")) {
    if (line.startsWith("data:")) data += line.slice(5).trim();
  }
  if (!data) return;
  const msg = JSON.parse(data);
  if (msg.type === "full") {
    model.workflows = msg.workflows || [];
    model.series = new Map();
  } else {
    for (const w of msg.workflows || []) model.workflows.push(w);
  }
  if (model.workflows.length > model.maxWorkflows) {
    model.workflows = model.workflows.slice(model.workflows.length - model.maxWorkflows);
  }
  for (const sr of msg.series || []) {
    const known = model.series.get(sr.key);
    if (!known) model.series.set(sr.key, { name: sr.name, labels: sr.labels, points: sr.points.slice() });
    else for (const p of sr.points) known.points.push(p);
  }
  const horizon = msg.time - 3600;
  for (const sr of model.series.values()) {
    while (sr.points.length && sr.points[0][0] < horizon) sr.points.shift();
  }
  model.state = msg;
  model.updates += 1;
  scheduleRender();
}

let renderPending = false;
function scheduleRender() {
  if (renderPending) return;
  renderPending = true;
  requestAnimationFrame(() => { renderPending = false; render(); });
}

// -- views -------------------------------------------------------------------------------------
function currentView() {
  const v = (location.hash || "#graph").slice(1);
  return ["graph", "components", "workflows", "agents", "reloads"].includes(v) ? v : "graph";
}
function showView() {
  const view = currentView();
  document.querySelectorAll(".view").forEach((el) => { el.hidden = el.dataset.view !== view; });
  document.querySelectorAll("#tabs a").forEach((a) => a.classList.toggle("active", a.dataset.view === view));
  scheduleRender();
}
window.addEventListener("hashchange", showView);

function render() {
  const st = model.state;
  if (!st) return;
  document.body.dataset.updates = String(model.updates);
  $("uptime").textContent = "up " + fmtUptime(st.time - st.start_time);
  $("generation").textContent = "config #" + st.generation;
  const view = currentView();
  if (view === "graph") { renderGraph(st); renderDetails(st); }
  else if (view === "components") renderComponents(st);
  else if (view === "workflows") renderWorkflows(st);
  else if (view === "agents") renderCharts();
  else if (view === "reloads") renderReloads(st);
}

// -- the graph -----------------------------------------------------------------------------------
function layout(components) {
  const nodes = components.filter((c) => c.kind !== "extension");
  const byName = new Map(nodes.map((c) => [c.instance, c]));
  const upstream = new Map(nodes.map((c) => [c.instance, []]));
  for (const c of nodes) for (const d of c.downstream) if (upstream.has(d)) upstream.get(d).push(c.instance);
  const layer = new Map();
  const visit = (name, seen) => {
    if (layer.has(name)) return layer.get(name);
    if (seen.has(name)) return 0;
    seen.add(name);
    const ups = upstream.get(name) || [];
    const l = ups.length ? Math.max(...ups.map((u) => visit(u, seen) + 1)) : 0;
    layer.set(name, l);
    return l;
  };
  for (const c of nodes) visit(c.instance, new Set());
  let maxLayer = 0;
  for (const l of layer.values()) maxLayer = Math.max(maxLayer, l);
  for (const c of nodes) if (c.kind === "exporter") layer.set(c.instance, maxLayer);
  const pipelineOrder = new Map((model.state.pipelines || []).map((p, i) => [p.id, i]));
  const columns = [];
  for (const c of nodes) {
    const l = layer.get(c.instance);
    (columns[l] = columns[l] || []).push(c);
  }
  const position = new Map();
  columns.forEach((col, l) => {
    col.sort((a, b) => {
      const ua = (upstream.get(a.instance) || []).map((u) => position.get(u) ?? 0);
      const ub = (upstream.get(b.instance) || []).map((u) => position.get(u) ?? 0);
      const ma = ua.length ? ua.reduce((x, y) => x + y, 0) / ua.length : null;
      const mb = ub.length ? ub.reduce((x, y) => x + y, 0) / ub.length : null;
      if (ma !== null && mb !== null && ma !== mb) return ma - mb;
      const pa = Math.min(...a.pipelines.map((p) => pipelineOrder.get(p) ?? 99), 99);
      const pb = Math.min(...b.pipelines.map((p) => pipelineOrder.get(p) ?? 99), 99);
      if (pa !== pb) return pa - pb;
      return a.instance < b.instance ? -1 : 1;
    });
    col.forEach((c, i) => position.set(c.instance, i));
  });
  return { nodes, byName, layer, columns, position };
}

const NODE_W = 190, NODE_H = 58, COL_W = 250, ROW_H = 74, PAD = 12;
let graphKey = "";
function renderGraph(st) {
  const svg = $("graph");
  const key = st.components.map((c) => c.instance + ">" + c.downstream.join(",")).join("|");
  if (key !== graphKey) {
    graphKey = key;
    buildGraph(svg, st);
  }
  for (const c of st.components) {
    const g = svg.querySelector(`g.node[data-instance="${CSS.escape(c.instance)}"]`);
    if (!g) continue;
    g.dataset.health = c.health;
    g.dataset.status = c.status;
    g.classList.toggle("selected", model.selected === c.instance);
    const r = c.rates || {};
    const rates = g.querySelector("text.rates");
    if (c.kind === "receiver") rates.textContent = `in ${fmtNum(r.in)}/s · refused ${fmtNum(r.refused)}/s`;
    else if (c.kind === "exporter") rates.textContent = `in ${fmtNum(r.in)}/s · sent ${fmtNum(r.out)}/s`;
    else rates.textContent = `in ${fmtNum(r.in)}/s · out ${fmtNum(r.out)}/s`;
    const err = g.querySelector("text.err");
    let line = "";
    if (c.failing && c.last_error) line = c.last_error;
    else if (c.status_error && c.health !== "ok") line = c.status_error;
    else if (c.queue && c.queue.capacity) line = `queue ${c.queue.size}/${c.queue.capacity}`;
    else if (c.totals && c.totals.dropped) line = `dropped ${fmtInt(c.totals.dropped)}`;
    err.textContent = line.length > 34 ? line.slice(0, 33) + "…" : line;
    err.setAttribute("class", c.health === "error" || c.health === "warning" ? "err bad" : "err");
    g.querySelector("title").textContent = c.instance + (line ? "\n" + line : "");
  }
  const ext = $("extensions");
  ext.replaceChildren(h("span", {}, "extensions: "),
    ...st.components.filter((c) => c.kind === "extension").map((c) =>
      h("span", { class: "ext", dataset: { instance: c.instance } },
        h("span", { class: "badge " + c.health }, c.status), " ", c.id)));
}
function buildGraph(svg, st) {
  const { nodes, layer, position, columns } = layout(st.components);
  const rows = Math.max(1, ...columns.map((c) => (c ? c.length : 0)));
  const width = PAD * 2 + (columns.length - 1) * COL_W + NODE_W;
  const height = PAD * 2 + (rows - 1) * ROW_H + NODE_H;
  svg.setAttribute("width", width);
  svg.setAttribute("height", height);
  svg.style.maxWidth = "100%";
  svg.style.height = "auto";
  svg.setAttribute("viewBox", `0 0 ${width} ${height}`);
  svg.replaceChildren();
  const xy = (name) => {
    const l = layer.get(name), col = columns[l] || [];
    const offset = (rows - col.length) * ROW_H / 2;
    return [PAD + l * COL_W, PAD + offset + position.get(name) * ROW_H];
  };
  const edges = s("g", { class: "edges" });
  for (const c of nodes) {
    const [x1, y1] = xy(c.instance);
    for (const d of c.downstream) {
      if (!layer.has(d)) continue;
      const [x2, y2] = xy(d);
      const sx = x1 + NODE_W, sy = y1 + NODE_H / 2, ex = x2, ey = y2 + NODE_H / 2;
      const mx = (sx + ex) / 2;
      edges.append(s("path", { class: "edge", "data-from": c.instance, "data-to": d,
        d: `M${sx},${sy} C${mx},${sy} ${mx},${ey} ${ex},${ey}` }));
    }
  }
  svg.append(edges);
  for (const c of nodes) {
    const [x, y] = xy(c.instance);
    const sub = c.kind === "processor" ? `processor · ${c.pipelines.join(", ")}` : `${c.kind} · ${c.signal}`;
    const g = s("g", { class: "node", "data-instance": c.instance, "data-kind": c.kind,
      transform: `translate(${x},${y})`, tabindex: 0 },
      s("title", {}, c.instance),
      s("rect", { width: NODE_W, height: NODE_H, rx: 6 }),
      s("text", { x: 10, y: 17 }, c.id),
      s("text", { class: "kind", x: 10, y: 30 }, sub.length > 32 ? sub.slice(0, 31) + "…" : sub),
      s("text", { class: "rates", x: 10, y: 43 }, ""),
      s("text", { class: "err", x: 10, y: 54 }, ""));
    g.addEventListener("click", () => { model.selected = c.instance; render(); });
    svg.append(g);
  }
}
$("details-close").addEventListener("click", () => { model.selected = null; render(); });
function renderDetails(st) {
  const panel = $("details");
  const c = model.selected && st.components.find((x) => x.instance === model.selected);
  if (!c) { panel.hidden = true; return; }
  panel.hidden = false;
  $("details-title").textContent = c.instance;
  const rows = [
    ["status", h("span", { class: "badge " + c.health }, c.failing ? c.status + " · exports failing" : c.status),
      c.status_error || ""],
    ["pipelines", c.pipelines.join(", ") || "–", ""],
    ["passes to", c.downstream.join(", ") || "–", ""],
  ];
  if (c.queue) rows.push(["sending queue", `${c.queue.size} / ${c.queue.capacity} batches`, ""]);
  if (c.last_error) rows.push(["last error", h("span", { class: "error last-error" }, c.last_error),
    (c.failing ? `failing (${c.consecutive_failures} attempts) since ` : "at ") + fmtTime(c.last_error_time)]);
  for (const [k, v] of Object.entries(c.counters).sort()) rows.push([k, fmtInt(v), ""]);
  $("details-body").replaceChildren(h("table", {}, h("tbody", {},
    rows.map(([k, v, x]) => h("tr", {}, h("th", {}, k), h("td", {}, v), h("td", {}, x))))));
}

// -- components table -----------------------------------------------------------------------
function renderComponents(st) {
  const body = $("components-table").tBodies[0];
  const rows = st.components.map((c) => {
    const r = c.rates || {}, t = c.totals || {};
    const q = c.queue ? h("span", {}, h("span", { class: "bar" + (c.queue.size >= c.queue.capacity ? " full" : "") },
      h("span", { style: null })), " ", `${c.queue.size}/${c.queue.capacity}`) : "";
    if (c.queue) {
      const fill = c.queue.capacity ? Math.min(100, 100 * c.queue.size / c.queue.capacity) : 0;
      q.querySelector(".bar > span").style.width = fill + "%";
    }
    const cell = (v, name) => h("td", { class: "n", dataset: { col: name, value: v ?? "" } }, fmtNum(v));
    return h("tr", { dataset: { instance: c.instance, health: c.health } },
      h("td", {}, c.instance),
      h("td", {}, h("span", { class: "badge " + c.health }, c.status)),
      cell(r.in, "rate-in"), cell(r.out, "rate-out"), cell(r.refused, "rate-refused"),
      cell(r.dropped, "rate-dropped"), cell(r.failed, "rate-failed"),
      h("td", { class: "n", dataset: { col: "total-in", value: t.in ?? "" } }, fmtInt(t.in)),
      h("td", { class: "n", dataset: { col: "total-out", value: t.out ?? "" } }, fmtInt(t.out)),
      h("td", {}, q),
      h("td", { class: "err" }, c.failing || c.health === "error" ? (c.last_error || c.status_error || "") : ""));
  });
  body.replaceChildren(...rows);
}

// -- workflows ----------------------------------------------------------------------------------
function renderWorkflows(st) {
  const held = $("held");
  held.replaceChildren(...(st.held || []).map((p) => {
    const fill = p.max_traces ? Math.min(100, 100 * p.traces / p.max_traces) : 0;
    const bar = h("span", { class: "bar" }, h("span", {}));
    bar.firstChild.style.width = fill + "%";
    const oldest = (p.oldest || []).slice(0, 3).map((o) =>
      `${o.workflow_type || "?"} ${o.trace_id.slice(0, 8)}… ${o.age.toFixed(1)} s, ${o.spans} spans`).join(" · ");
    return h("div", { class: "held-row", dataset: { processor: p.processor } },
      h("div", {}, h("div", { class: "big", dataset: { col: "held-traces" } }, fmtInt(p.traces)), "traces held"),
      h("div", {}, h("div", { class: "big" }, fmtInt(p.spans)), "spans"),
      h("div", {}, h("div", { class: "big" }, fmtNum(p.bytes / 1048576) + " MiB"), "held"),
      h("div", {}, bar, ` ${fmtInt(p.traces)} / ${fmtInt(p.max_traces)}`),
      h("div", { class: "hint" }, p.processor, h("br"), oldest ? "held longest: " + oldest : ""));
  }));
  if (!(st.held || []).length) held.replaceChildren(h("p", { class: "hint" }, "No workflow processor in this configuration."));
  const wf = model.workflows;
  const perSecond = (st.held || []).reduce((sum, p) => sum + (p.workflows_per_second || 0), 0);
  const known = (st.held || []).some((p) => p.workflows_per_second !== null && p.workflows_per_second !== undefined);
  $("workflow-rate").textContent = known ? `${fmtNum(perSecond * 60)} workflows/min · the last ${wf.length} listed` : "";
  // rows are made once per workflow: new ones go on top, those no longer kept are removed
  const body = $("workflows-table").tBodies[0];
  const keep = new Set(wf.map((w) => w.trace_id + ":" + w.seq));
  for (const tr of [...body.rows]) {
    if (!keep.has(tr.dataset.key)) tr.remove();
  }
  const have = new Set([...body.rows].map((tr) => tr.dataset.key));
  const fresh = document.createDocumentFragment();
  for (let i = wf.length - 1; i >= 0; i--) {
    const w = wf[i];
    const key = w.trace_id + ":" + w.seq;
    if (have.has(key)) break;  // the rest is on the page already
    fresh.append(workflowRow(w, key));
  }
  body.prepend(fresh);
  for (const tr of body.rows) tr.classList.toggle("selected", tr.dataset.trace === model.openTrace);
}
function workflowRow(w, key) {
  const tr = h("tr", { class: "clickable", dataset: { trace: w.trace_id, outcome: w.outcome, key } },
    h("td", {}, fmtTime(w.released_at)), h("td", {}, w.type), h("td", {}, w.agent),
    h("td", {}, h("span", { class: "badge " + w.outcome }, w.outcome)), h("td", {}, w.tier),
    h("td", { class: "n" }, fmtDuration(w.duration)), h("td", { class: "n" }, w.tool_calls),
    h("td", { class: "n" }, w.spans), h("td", {}, h("code", {}, w.trace_id.slice(0, 16) + "…")));
  tr.addEventListener("click", () => openWaterfall(w.trace_id));
  return tr;
}
$("waterfall-close").addEventListener("click", () => { model.openTrace = null; $("waterfall-panel").hidden = true; render(); });
async function openWaterfall(traceId) {
  model.openTrace = traceId;
  const panel = $("waterfall-panel");
  panel.hidden = false;
  $("waterfall-title").textContent = "trace " + traceId;
  $("waterfall").replaceChildren(h("p", { class: "hint" }, "loading…"));
  $("span-details").replaceChildren();
  let data;
  try {
    data = await api("/api/workflows/" + encodeURIComponent(traceId));
  } catch (err) {
    $("waterfall").replaceChildren(h("p", { class: "error" }, "This workflow is no longer kept."));
    return;
  }
  const w = data.workflow;
  if (w) $("waterfall-title").textContent = `${w.type} · ${w.agent} · ${w.outcome} · ${w.tier} · ${fmtDuration(w.duration)} · trace ${traceId}`;
  renderWaterfall(data.spans);
  render();
}
function renderWaterfall(spans) {
  if (!spans.length) { $("waterfall").replaceChildren(h("p", { class: "hint" }, "No spans.")); return; }
  const start = Math.min(...spans.map((x) => x.start_time));
  const end = Math.max(...spans.map((x) => x.end_time));
  const total = Math.max(end - start, 1e-6);
  const ids = new Set(spans.map((x) => x.span_id));
  const children = new Map();
  const roots = [];
  for (const sp of spans) {
    if (sp.parent_span_id && ids.has(sp.parent_span_id)) {
      if (!children.has(sp.parent_span_id)) children.set(sp.parent_span_id, []);
      children.get(sp.parent_span_id).push(sp);
    } else roots.push(sp);
  }
  const ordered = [];
  const walk = (sp, depth) => {
    if (ordered.length > 2000) return;
    ordered.push([sp, depth]);
    for (const c of (children.get(sp.span_id) || []).sort((a, b) => a.start_time - b.start_time)) walk(c, depth + 1);
  };
  for (const r of roots.sort((a, b) => a.start_time - b.start_time)) walk(r, 0);
  const rows = ordered.map(([sp, depth]) => {
    const bar = h("div", { class: "wf-bar" + (sp.status === "error" ? " error" : "") });
    bar.style.left = (100 * (sp.start_time - start) / total) + "%";
    bar.style.width = (100 * (sp.end_time - sp.start_time) / total) + "%";
    const name = h("div", { class: "wf-name", title: sp.name }, sp.name);
    name.style.paddingLeft = (depth * 14) + "px";
    const row = h("div", { class: "wf-row", dataset: { span: sp.span_id, status: sp.status } },
      name, h("div", { class: "wf-track" }, bar), h("div", { class: "wf-dur" }, fmtDuration(sp.end_time - sp.start_time)));
    row.addEventListener("click", () => showSpan(sp));
    return row;
  });
  $("waterfall").replaceChildren(...rows);
}
function showSpan(sp) {
  const attrs = Object.entries(sp.attributes || {}).map(([k, v]) => h("div", {}, h("code", {}, k), " = ", v));
  $("span-details").replaceChildren(
    h("div", {}, h("b", {}, sp.name), ` · ${sp.kind} · ${sp.service || "?"} · ${sp.status}`,
      sp.status_message ? " · " + sp.status_message : ""), ...attrs);
}

// -- charts -------------------------------------------------------------------------------------
const CHARTS = [
  ["chart-failure", "legend-failure", "agent_workflow_failure_ratio", (v) => (v * 100).toFixed(0) + "%", [0, 1]],
  ["chart-sla", "legend-sla", "agent_workflow_sla_compliance_ratio", (v) => (v * 100).toFixed(0) + "%", [0, 1]],
  ["chart-burn", "legend-burn", "agent_workflow_error_budget_burn_rate", (v) => v.toFixed(1) + "×", null],
];
function renderCharts() {
  let any = false;
  for (const [canvasId, legendId, name, fmt, range] of CHARTS) {
    let series = [...model.series.values()].filter((x) => x.name === name && x.points.length);
    if (name.endsWith("burn_rate")) {
      // the shortest window and the longest: the fast and the slow burn
      const windows = [...new Set(series.map((x) => x.labels.window))].sort((a, b) => seconds(a) - seconds(b));
      const keep = new Set([windows[0], windows[windows.length - 1]]);
      series = series.filter((x) => keep.has(x.labels.window));
    }
    series = series.slice(0, COLORS.length);
    any = any || series.length > 0;
    drawChart($(canvasId), series, fmt, range);
    $(legendId).replaceChildren(...series.map((x, i) => {
      const sw = h("i", {});
      sw.style.background = COLORS[i];
      const label = Object.entries(x.labels).map(([k, v]) => (k === "workflow_type" ? v : `${k}=${v}`)).join(" ");
      const last = x.points[x.points.length - 1][1];
      return h("span", { dataset: { series: label } }, sw, `${label}: ${fmt(last)}`);
    }));
  }
  $("charts-empty").hidden = any;
}
function seconds(text) {
  const m = /^([0-9.]+)(ms|s|m|h|d)?$/.exec(text || "");
  if (!m) return Infinity;
  return parseFloat(m[1]) * ({ ms: 0.001, s: 1, m: 60, h: 3600, d: 86400 }[m[2] || "s"]);
}
function drawChart(canvas, series, fmt, range) {
  const ctx = canvas.getContext("2d");
  const W = canvas.width, H = canvas.height, L = 48, R = 8, T = 8, B = 22;
  ctx.clearRect(0, 0, W, H);
  ctx.font = "11px system-ui, sans-serif";
  ctx.fillStyle = "#8b96a8";
  ctx.strokeStyle = "#263040";
  if (!series.length) { ctx.fillText("no data", W / 2 - 20, H / 2); return; }
  let t0 = Infinity, t1 = -Infinity, lo = Infinity, hi = -Infinity;
  for (const sr of series) for (const [t, v] of sr.points) {
    t0 = Math.min(t0, t); t1 = Math.max(t1, t); lo = Math.min(lo, v); hi = Math.max(hi, v);
  }
  if (range) { lo = Math.min(lo, range[0]); hi = Math.max(hi, range[1]); } else { lo = Math.min(lo, 0); hi = Math.max(hi, 1); }
  if (t1 - t0 < 60) t0 = t1 - 60;
  const x = (t) => L + (W - L - R) * (t - t0) / (t1 - t0 || 1);
  const y = (v) => T + (H - T - B) * (1 - (v - lo) / (hi - lo || 1));
  for (let i = 0; i <= 4; i++) {
    const v = lo + (hi - lo) * i / 4, yy = y(v);
    ctx.beginPath(); ctx.moveTo(L, yy); ctx.lineTo(W - R, yy); ctx.stroke();
    ctx.fillText(fmt(v), 4, yy + 4);
  }
  ctx.fillText(fmtTime(t0), L, H - 6);
  ctx.fillText(fmtTime(t1), W - R - 52, H - 6);
  series.forEach((sr, i) => {
    ctx.strokeStyle = COLORS[i];
    ctx.lineWidth = 2;
    ctx.beginPath();
    sr.points.forEach(([t, v], j) => { if (j) ctx.lineTo(x(t), y(v)); else ctx.moveTo(x(t), y(v)); });
    ctx.stroke();
    ctx.lineWidth = 1;
  });
  ctx.strokeStyle = "#263040";
}

// -- reloads ----------------------------------------------------------------------------------
function renderReloads(st) {
  const reloads = (st.reloads || []).slice().reverse();
  $("reloads-empty").hidden = reloads.length > 0;
  const list = (xs) => (xs.length ? xs.join(", ") : "–");
  $("reloads-table").tBodies[0].replaceChildren(...reloads.map((r) =>
    h("tr", { dataset: { result: r.result } },
      h("td", {}, fmtTime(r.time)), h("td", {}, r.trigger),
      h("td", {}, h("span", { class: "badge " + (r.result === "applied" || r.result === "unchanged" ? "ok" : "error") }, r.result)),
      h("td", {}, "#" + r.generation), h("td", {}, list(r.added)), h("td", {}, list(r.removed)),
      h("td", {}, list(r.replaced)), h("td", { class: "n" }, r.kept),
      h("td", { class: "n" }, fmtDuration(r.duration)),
      h("td", { class: "err" }, r.errors.join("\n")))));
}

showView();
connect();
