// sazanami flow editor: a flow as nodes and wires on an SVG canvas (no build step).
// The server does the flow logic: /v1/flows/validate parses YAML/JSON, binds pools into a
// graph, checks it (errors name the node) and dumps YAML; /v1/flows/run streams per-step
// events by SSE, then the tree, which opens in the playground's tree view (treeview.js).
// All JSON goes through parseJSON/toJSON (treeview.js), so 63-bit seeds stay exact.
"use strict";

const W = 178, H = 66;           // node size on the canvas
const KIND_COLORS = {
  generate: "#2563eb", extend: "#0891b2", improve: "#7c3aed", score: "#d97706", select: "#059669",
  synthesize: "#db2777", merge: "#64748b", strategy: "#0f766e", repeat: "#a16207",
};
const FLOW_FIELDS = ["name", "description", "prompt", "seed", "budget", "params", "scorer", "scorers", "islands", "raw", "model"];
const JSON_FIELDS = new Set(["params", "scorers", "islands", "budget"]);

let kinds = null;        // GET /v1/flows/kinds
let info = null;         // GET /v1/sazanami (presets, strategies, scorers)
let examples = [];
// The document being edited: flow-wide fields, nodes {key, id, kind, args, x, y}, wires {from, to} (node keys).
let state = { meta: {}, nodes: [], wires: [] };
let nextKey = 1;
let selected = null;     // {node: key} | {wire: index} | null
let view = { x: 40, y: 30, k: 1 };
const undoStack = [], redoStack = [];
let nodeStatus = {};     // id → {cls, text, pool}
let latest = {};         // candidate id → its latest state in any step's pool (scores come later)
let check = { error: null, warnings: [] };
let controller = null;
let validateTimer = null;
// Fields the page could not read (malformed JSON): node key (or "flow") → {field, text, message}.
// The flow is invalid while one is left; the field keeps what was typed, so it can be fixed.
let local = {};

// -- state -------------------------------------------------------------------------------------
const snapshot = () => toJSON({ meta: state.meta, nodes: state.nodes, wires: state.wires });
function commit(before) {      // record an edit made since `before` (a snapshot)
  if (before === snapshot()) return;
  undoStack.push(before);
  if (undoStack.length > 200) undoStack.shift();
  redoStack.length = 0;
  changed();
}
function restore(text) {
  const s = parseJSON(text);
  state = { meta: s.meta, nodes: s.nodes, wires: s.wires };
  nextKey = Math.max(0, ...state.nodes.map((n) => n.key)) + 1;
  if (selected && selected.node && !byKey(selected.node)) selected = null;
  if (selected && selected.wire !== undefined && !state.wires[selected.wire]) selected = null;
  changed();
}
function undo() { if (undoStack.length) { redoStack.push(snapshot()); restore(undoStack.pop()); } }
function redo() { if (redoStack.length) { undoStack.push(snapshot()); restore(redoStack.pop()); } }
function changed() { render(); showForm(); scheduleValidate(); }

const byKey = (key) => state.nodes.find((n) => n.key === key);
const byId = (id) => state.nodes.find((n) => n.id === id);
const inputsOf = (node) => state.wires.filter((w) => w.to === node.key).map((w) => byKey(w.from));
const readsInput = (n) => (n.kind === "generate" ? Boolean(n.args.keep) : n.kind !== "strategy");

function uniqueId(base) {
  let i = state.nodes.length;
  while (byId(`${base}_${i}`)) i++;
  return `${base}_${i}`;
}

function addNode(kind, x, y) {
  const before = snapshot();
  const args = { select: { k: 1 }, extend: { n: 1 }, improve: { n: 1 }, repeat: { times: 2, steps: [{ improve: { n: 1 } }] },
    strategy: { name: "best_of_n", share: 0.5 }, generate: { n: 4 } }[kind] || {};
  const node = { key: nextKey++, id: uniqueId(kind), kind, args: structuredClone(args), x, y };
  state.nodes.push(node);
  selected = { node: node.key };
  commit(before);
  return node;
}

function connect(from, to) {
  if (from === to || state.wires.some((w) => w.from === from && w.to === to)) return;
  const before = snapshot();
  state.wires.push({ from, to });
  commit(before);
}

function deleteSelected() {
  if (!selected) return;
  const before = snapshot();
  if (selected.node !== undefined) {
    state.nodes = state.nodes.filter((n) => n.key !== selected.node);
    state.wires = state.wires.filter((w) => w.from !== selected.node && w.to !== selected.node);
  } else {
    state.wires.splice(selected.wire, 1);
  }
  selected = null;
  commit(before);
}

// -- document <-> state ------------------------------------------------------------------------
// Steps in running order: topological, ties in canvas order (a cycle's nodes go last, as they are).
function order() {
  const waiting = new Map(state.nodes.map((n) => [n.key, new Set(inputsOf(n).map((m) => m.key))]));
  const out = [];
  const left = [...state.nodes];
  while (left.length) {
    const i = left.findIndex((n) => waiting.get(n.key).size === 0);
    if (i < 0) { out.push(...left); break; }
    const [n] = left.splice(i, 1);
    out.push(n);
    for (const set of waiting.values()) set.delete(n.key);
  }
  return out;
}

// The flow document. A chain (each step reads the one above, or nothing) is written in the linear
// form, without pools; any other graph names pools: each step writes the pool named after its id.
function toDoc() {
  const steps = order();
  const linear = steps.every((n, i) => {
    const ins = inputsOf(n);
    const chained = i > 0 && ins.length === 1 && ins[0] === steps[i - 1];
    return chained || (!readsInput(n) && ins.length === 0);
  });
  const doc = {};
  for (const k of FLOW_FIELDS) if (state.meta[k] !== undefined && state.meta[k] !== "") doc[k] = state.meta[k];
  doc.steps = steps.map((n) => {
    const args = { id: n.id };
    if (!linear) {
      const ins = inputsOf(n).map((m) => m.id);
      if (ins.length) args.in = ins.length === 1 ? ins[0] : ins;
      args.out = n.id;
    }
    return { [n.kind]: Object.assign(args, n.args) };
  });
  doc.layout = Object.fromEntries(state.nodes.map((n) => [n.id, [Math.round(n.x), Math.round(n.y)]]));
  return doc;
}

// A document into nodes and wires; the graph (sources per step) comes from the server when the
// flow is valid, else from the steps' own `in` names and the list order (enough to show it).
function fromDoc(doc, graph) {
  const meta = {};
  for (const k of FLOW_FIELDS) if (doc[k] !== undefined) meta[k] = doc[k];
  const nodes = [];
  (doc.steps || []).forEach((raw, i) => {
    const item = typeof raw === "string" ? { [raw]: {} } : raw;
    const kind = Object.keys(item)[0];
    const args = Object.assign({}, item[kind] || {});
    const id = args.id || `${kind}_${i}`;
    const node = { key: i + 1, id, kind, args, inNames: args.in, out: args.out || "pool" };
    delete args.id; delete args.in; delete args.out;
    nodes.push(node);
  });
  const wires = [];
  const sources = graph ? Object.fromEntries(graph.nodes.map((g) => [g.id, g.sources])) : null;
  nodes.forEach((n, i) => {
    let src;
    if (sources) src = (sources[n.id] || []).map((id) => nodes.find((m) => m.id === id));
    else {
      const names = n.inNames === undefined ? (readsInput(n) ? ["pool"] : []) : [].concat(n.inNames);
      src = names.map((p) => nodes.slice(0, i).reverse().find((m) => m.out === p) || nodes.find((m) => m.out === p && m !== n));
    }
    for (const m of src) if (m) wires.push({ from: m.key, to: n.key });
    delete n.inNames; delete n.out;
  });
  const layout = doc.layout || {};
  const placed = autoLayout(nodes, wires);
  for (const n of nodes) [n.x, n.y] = Array.isArray(layout[n.id]) ? layout[n.id] : placed[n.key];
  return { meta, nodes, wires };
}

// Columns by depth (longest path from a source), rows in list order; every 4 columns a new band.
function autoLayout(nodes, wires) {
  const depth = {}, row = {}, rows = {};
  for (const n of nodes) {
    const ups = wires.filter((w) => w.to === n.key).map((w) => depth[w.from] ?? 0);
    const d = (depth[n.key] = ups.length ? Math.max(...ups) + 1 : 0);
    row[n.key] = rows[d] = (rows[d] || 0) + 1;
  }
  const band = Math.max(1, ...Object.values(rows)) * (H + 40) + 50;
  return Object.fromEntries(nodes.map((n) => {
    const d = depth[n.key];
    return [n.key, [(d % 4) * (W + 70), Math.floor(d / 4) * band + (row[n.key] - 1) * (H + 40)]];
  }));
}

async function loadDoc(doc, label) {
  const res = await post.json("/v1/flows/validate", { flow: doc });
  const before = snapshot();
  local = {};
  state = fromDoc(doc, res.valid ? res.graph : null);
  nextKey = state.nodes.length + 1;
  selected = null;
  nodeStatus = {};
  $("result").hidden = true;
  if (state.nodes.length && before !== snapshot()) commit(before); else changed();  // the same file again: validated too
  fit();
  status(`loaded ${label || doc.name || "flow"}`);
}

async function loadText(text, name) {
  const fmt = /\.json$/i.test(name) ? "json" : /\.ya?ml$/i.test(name) ? "yaml" : undefined;
  if (!text.trim()) return status(`cannot open ${name}: the file is empty`, true);
  try {
    const res = await post.json("/v1/flows/validate", { text, format: fmt });
    await loadDoc(res.flow, name);
    $("examples").value = "";  // the canvas holds the file now, not the example; picking it again reloads it
  } catch (e) {
    status(`cannot open ${name}: ${e.message}`, true);
  }
}

// -- server ------------------------------------------------------------------------------------
async function post(url, body, signal) {
  const res = await fetch(url, { method: "POST", headers: { "Content-Type": "application/json" }, body: toJSON(body), signal });
  if (!res.ok) {
    const err = (await readJSON(res)).error || {};
    const e = new Error(`${res.status}: ${err.message}${err.param ? ` (param ${err.param})` : ""}`);
    e.node = err.node;
    throw e;
  }
  return res;
}
post.json = async (url, body) => readJSON(await post(url, body));

function scheduleValidate() {
  clearTimeout(validateTimer);
  validateTimer = setTimeout(validate, 250);
}

async function validate() {
  for (const key of Object.keys(local)) if (!byKey(Number(key))) delete local[key];
  const bad = Object.entries(local)[0];
  if (bad) {  // the page could not read a field: the server would check a flow without it
    check = { error: { message: bad[1].message, node: byKey(Number(bad[0])).id }, warnings: [] };
    render();
    if (!$("form").contains(document.activeElement)) showForm();
    status(`invalid: ${bad[1].message}`, true, false);  // the node's form shows it
    return { valid: false, error: check.error };
  }
  if (!state.nodes.length) { check = { error: null, warnings: [] }; render(); return null; }
  let res;
  try {
    res = await post.json("/v1/flows/validate", { flow: toDoc() });
  } catch (e) {
    check = { error: { message: e.message, node: null }, warnings: [] };
    render();
    return null;
  }
  check = { error: res.valid ? null : res.error, warnings: res.warnings || [], plan: res.plan };
  render();
  if (!$("form").contains(document.activeElement)) showForm();
  if (!res.valid) status(`invalid: ${res.error.message}`, true, false);  // the node's or the flow's form shows it
  else if (!controller) {
    const least = res.plan.reduce((a, p) => a + p.min_tokens, 0);
    const most = res.plan.some((p) => p.max_tokens === null) ? "?" : res.plan.reduce((a, p) => a + p.max_tokens, 0);
    const budget = state.meta.budget?.tokens ?? state.meta.budget ?? "default";
    status(`valid · ${state.nodes.length} steps · plan ${least}…${most} tokens of ${budget}` +
      (res.warnings.length ? ` · ${res.warnings.length} warning` : ""));
  }
  return res;
}

// -- rendering ---------------------------------------------------------------------------------
// A wire leaves its source's right port and enters its target's left port. Forward, a curve;
// back to the left, it goes round: out to the right, along a lane in the gap beside the target's
// row (above it, or below when the target is higher), then into the port from the left, so it
// never runs behind a node and its arrow reads the right way.
function wirePath(a, b) {
  const x1 = a.x + W, y1 = a.y + H / 2, x2 = b.x, y2 = b.y + H / 2;
  if (x2 >= x1 + 30) {
    const dx = Math.max(40, (x2 - x1) / 2);
    return `M${x1},${y1} C${x1 + dx},${y1} ${x2 - dx},${y2} ${x2},${y2}`;
  }
  const out = x1 + 18, into = x2 - 18, r = 8;
  let lane;
  if (b.y >= a.y + H + 24) lane = b.y - 20;           // the target's row is lower: the gap above it
  else if (b.y + H + 24 <= a.y) lane = b.y + H + 20;  // higher: the gap below it
  else lane = Math.max(a.y, b.y) + H + 20;            // side by side: below both
  const down1 = lane > y1 ? 1 : -1, down2 = y2 > lane ? 1 : -1;
  return [
    `M${x1},${y1} H${out - r} Q${out},${y1} ${out},${y1 + down1 * r}`,
    `V${lane - down1 * r} Q${out},${lane} ${out - r},${lane}`,
    `H${into + r} Q${into},${lane} ${into},${lane + down2 * r}`,
    `V${y2 - down2 * r} Q${into},${y2} ${into + r},${y2} H${x2}`,
  ].join(" ");
}

function summary(n) {
  const a = n.args;
  const parts = [];
  for (const [k, v] of Object.entries(a)) {
    if (k === "steps") parts.push(`${v.length} steps`);
    else if (typeof v !== "object") parts.push(`${{ temperature: "T", max_tokens: "max", method: "" }[k] ?? k} ${v}`.trim());
  }
  return parts.join(" · ");
}

// A text cut (with "…") to fit a node, clear of its output port.
function fitText(text, px, room = W - 12 - 12) {
  if (textWidth(text, px) <= room) return text;
  let lo = 0, hi = text.length;
  while (lo < hi) {
    const mid = Math.ceil((lo + hi) / 2);
    if (textWidth(text.slice(0, mid) + "…", px) <= room) lo = mid; else hi = mid - 1;
  }
  return text.slice(0, lo) + "…";
}

function render() {
  $("view").setAttribute("transform", `translate(${view.x},${view.y}) scale(${view.k})`);
  const wires = $("wires"), nodes = $("nodes");
  wires.replaceChildren();
  nodes.replaceChildren();
  state.wires.forEach((w, i) => {
    const a = byKey(w.from), b = byKey(w.to);
    if (!a || !b) return;
    const d = wirePath(a, b);
    const cls = selected && selected.wire === i ? "wire selected" : "wire";
    const g = el("svg:g", { "data-wire": i });
    g.append(el("svg:path", { class: "wire hit", d }), el("svg:path", { class: cls, d, "data-from": a.id, "data-to": b.id }));
    g.addEventListener("mousedown", (e) => { e.stopPropagation(); selected = { wire: i }; render(); showForm(); });
    wires.append(g);
  });
  const warned = new Set(check.warnings.map((w) => w.node));
  for (const n of state.nodes) {
    const st = nodeStatus[n.id] || {};
    const err = check.error && check.error.node === n.id;
    const cls = ["fnode", selected && selected.node === n.key ? "selected" : "", err ? "error" : "",
      warned.has(n.id) ? "warn" : "", st.cls || ""].filter(Boolean).join(" ");
    const g = el("svg:g", { class: cls, "data-id": n.id, transform: `translate(${n.x},${n.y})`, style: `--k:${KIND_COLORS[n.kind] || "#64748b"}` });
    g.append(el("svg:rect", { class: "body", width: W, height: H }));
    g.append(el("svg:rect", { class: "band", width: 5, height: H - 2, x: 1, y: 1 }));
    g.append(el("svg:text", { class: "title", x: 12, y: 17 }, n.id));
    const line = `${n.kind}${summary(n) ? " · " + summary(n) : ""}`;
    g.append(el("svg:text", { class: "kind", x: 12, y: 33 }, fitText(line, 11)));
    const text = err ? check.error.message.split("\n")[0] : st.text || "";
    g.append(el("svg:text", { class: "state", x: 12, y: 52 }, fitText(text, 11)));
    if (err || st.text) g.append(el("svg:title", {}, err ? check.error.message : st.text));
    const inPort = el("svg:circle", { class: "port in", cx: 0, cy: H / 2, r: 6 });
    const outPort = el("svg:circle", { class: "port out", cx: W, cy: H / 2, r: 6 });
    g.append(inPort, outPort);
    g.addEventListener("mousedown", (e) => startDrag(e, n));
    outPort.addEventListener("mousedown", (e) => startWire(e, n));
    nodes.append(g);
  }
}

// -- pointer: drag nodes, draw wires, pan; wheel: zoom ----------------------------------------------
function toCanvas(e) {
  const r = $("canvas").getBoundingClientRect();
  return { x: (e.clientX - r.left - view.x) / view.k, y: (e.clientY - r.top - view.y) / view.k };
}

function track(move, up) {
  const onMove = (e) => move(e);
  const onUp = (e) => { window.removeEventListener("mousemove", onMove); window.removeEventListener("mouseup", onUp); up(e); };
  window.addEventListener("mousemove", onMove);
  window.addEventListener("mouseup", onUp);
}

function startDrag(e, n) {
  if (e.button !== 0) return;
  e.stopPropagation();
  const before = snapshot();
  const p0 = toCanvas(e), x0 = n.x, y0 = n.y;
  if (!selected || selected.node !== n.key) { selected = { node: n.key }; render(); showForm(); }
  track((ev) => {
    const p = toCanvas(ev);
    n.x = Math.round(x0 + p.x - p0.x);
    n.y = Math.round(y0 + p.y - p0.y);
    const g = $("nodes").querySelector(`[data-id="${CSS.escape(n.id)}"]`);  // a validation may have redrawn it
    g.setAttribute("transform", `translate(${n.x},${n.y})`);
    for (const path of $("wires").querySelectorAll(`path[data-from="${CSS.escape(n.id)}"], path[data-to="${CSS.escape(n.id)}"]`)) {
      const d = wirePath(byId(path.dataset.from), byId(path.dataset.to));
      path.setAttribute("d", d);
      path.previousSibling.setAttribute("d", d);
    }
  }, () => {
    if (before !== snapshot()) { undoStack.push(before); redoStack.length = 0; render(); }  // a move needs no validation
  });
}

function startWire(e, n) {
  if (e.button !== 0) return;
  e.stopPropagation();
  const line = $("drag-wire");
  track((ev) => {
    const p = toCanvas(ev);
    line.setAttribute("d", wirePath(n, { x: p.x, y: p.y - H / 2 }));
  }, (ev) => {
    line.setAttribute("d", "");
    const target = ev.target.closest && ev.target.closest(".fnode");
    if (target) connect(n.key, byId(target.dataset.id).key);
  });
}

function startPan(e) {
  if (e.button !== 0) return;
  const x0 = e.clientX - view.x, y0 = e.clientY - view.y;
  let moved = false;
  $("canvas").classList.add("panning");
  track((ev) => {
    moved = true;
    view.x = ev.clientX - x0;
    view.y = ev.clientY - y0;
    $("view").setAttribute("transform", `translate(${view.x},${view.y}) scale(${view.k})`);
  }, () => {
    $("canvas").classList.remove("panning");
    if (!moved && selected) { selected = null; render(); showForm(); }
  });
}

function zoom(e) {
  e.preventDefault();
  const r = $("canvas").getBoundingClientRect();
  const mx = e.clientX - r.left, my = e.clientY - r.top;
  const k = Math.min(2.5, Math.max(0.2, view.k * Math.exp(-e.deltaY * 0.0015)));
  view.x = mx - ((mx - view.x) * k) / view.k;
  view.y = my - ((my - view.y) * k) / view.k;
  view.k = k;
  $("view").setAttribute("transform", `translate(${view.x},${view.y}) scale(${view.k})`);
}

function fit() {
  if (!state.nodes.length) return;
  const r = $("canvas").getBoundingClientRect();
  const xs = state.nodes.map((n) => n.x), ys = state.nodes.map((n) => n.y);
  const x0 = Math.min(...xs) - 30, y0 = Math.min(...ys) - 30;
  const w = Math.max(...xs) + W + 30 - x0, h = Math.max(...ys) + H + 30 - y0;
  view.k = Math.min(1.2, r.width / w, r.height / h);
  view.x = (r.width - w * view.k) / 2 - x0 * view.k;
  view.y = (r.height - h * view.k) / 2 - y0 * view.k;
  render();
}

// -- the side panel: the selected node's form, or the flow's ---------------------------------------
function parseValue(text) {
  const t = text.trim();
  if (t === "") return undefined;
  if (/^-?\d+$/.test(t)) return exactInt(t);  // a seed beyond 2^53 stays exact
  if (/^-?\d+(\.\d+)?(e-?\d+)?$/i.test(t)) return Number(t);
  if (t === "true" || t === "false") return t === "true";
  if (/^[[{]/.test(t)) { try { return parseJSON(t); } catch { return t; } }
  return t;
}
const showValue = (v) => (v === undefined ? "" : typeof v === "object" ? toJSON(v) : String(v));

function field(label, value, onChange, opts = {}) {
  const box = el("label", {}, label);
  let input;
  if (opts.choices) {
    input = el("select", {});
    for (const c of ["", ...opts.choices]) input.append(el("option", { value: c }, c || "(default)"));
    input.value = value === undefined ? "" : String(value);
  } else if (opts.area) {
    input = el("textarea", { rows: opts.rows || 3, spellcheck: "false" });
    input.value = opts.text !== undefined ? opts.text : opts.json && value !== undefined ? toJSON(value, 1) : showValue(value);
  } else {
    input = el("input", { placeholder: opts.placeholder || "default", spellcheck: "false" });
    if (opts.list) input.setAttribute("list", opts.list);
    input.value = showValue(value);
  }
  if (opts.name) input.name = opts.name;
  input.addEventListener("change", () => onChange(input.value));
  box.append(input);
  return box;
}

function edit(apply) {   // one undoable form edit
  const before = snapshot();
  apply();
  commit(before);
}

function showForm() {
  const form = $("form");
  const node = selected && selected.node !== undefined ? byKey(selected.node) : null;
  if (!node) return showFlowForm(form);
  const fs = el("fieldset", { "data-node": node.id });
  fs.append(el("legend", {}, `${node.kind} step`));
  fs.append(field("id", node.id, (v) => {
    v = v.trim();
    if (!v || byId(v)) return showForm();
    edit(() => { delete nodeStatus[node.id]; node.id = v; });
  }, { name: "id" }));
  const own = kinds.kinds[node.kind] || [];
  const shown = [...own.filter((f) => f !== "steps"), ...(kinds.sampling[node.kind] ? ["temperature", "max_tokens", "fluctuation"] : [])];
  for (const f of [...new Set(shown)]) {
    const opts = { name: f };
    if (f === "method") opts.choices = ["top-k", "mmr"];
    if (f === "keep") opts.choices = ["true", "false"];
    if (f === "name" && node.kind === "strategy") opts.choices = Object.keys(info.strategies);
    if (f === "scorer") opts.list = "scorer-names";
    if (f === "fluctuation") opts.list = "preset-names";
    fs.append(field(f, node.args[f], (v) => edit(() => {
      const value = parseValue(v);
      if (value === undefined) delete node.args[f]; else node.args[f] = value;
    }), opts));
  }
  if (node.kind === "repeat") {
    fs.append(field("steps (JSON list, one chain)", node.args.steps, (v) => edit(() => {
      try { node.args.steps = parseJSON(v); } catch { /* shown by validation */ node.args.steps = v; }
    }), { area: true, json: true, rows: 5, name: "steps" }));
  }
  const rest = Object.fromEntries(Object.entries(node.args).filter(([k]) => !shown.includes(k) && k !== "steps"));
  const bad = local[node.key];
  fs.append(field("other fields (JSON)", Object.keys(rest).length ? rest : undefined, (v) => {
    let obj;
    try {
      obj = v.trim() ? parseJSON(v) : {};
      if (!obj || typeof obj !== "object" || Array.isArray(obj)) throw new Error("an object {…} is needed");
    } catch (e) {
      local[node.key] = { field: "other", text: v, message: `other fields (JSON) of ${node.id}: ${e.message}` };
      changed();
      return;
    }
    delete local[node.key];
    edit(() => {
      for (const k of Object.keys(rest)) delete node.args[k];
      Object.assign(node.args, obj);
    });
  }, { area: true, json: true, name: "other", text: bad ? bad.text : undefined }));
  if (bad) fs.querySelector("[name=other]").classList.add("invalid");
  if (check.error && check.error.node === node.id) fs.append(errorBox(check.error.message));
  for (const w of check.warnings.filter((x) => x.node === node.id)) fs.append(el("div", { class: "warn" }, w.message));
  const ins = inputsOf(node).map((m) => m.id);
  fs.append(el("div", { class: "muted" }, ins.length ? `reads ${ins.join(" + ")}` : "reads nothing"));
  form.replaceChildren(fs);
  showCandidates(node);
}

// An error under its form: a multi-line one (YAML, regex) keeps its lines and its ^ markers.
function errorBox(message) {
  return el("div", { class: `err${message.includes("\n") ? " multiline" : ""}` }, message);
}

function showFlowForm(form) {
  const m = state.meta;
  const fs = el("fieldset", {});
  fs.append(el("legend", {}, "Flow"));
  const set = (k) => (v) => edit(() => {
    const value = k === "prompt" || k === "name" || k === "description" ? v : parseValue(v);
    if (value === undefined || value === "") delete m[k]; else m[k] = value;
  });
  fs.append(field("name", m.name, set("name"), { name: "name" }));
  fs.append(field("prompt", m.prompt, set("prompt"), { area: true, rows: 4, name: "prompt" }));
  fs.append(field("seed", m.seed, set("seed"), { name: "seed", placeholder: "random" }));
  fs.append(field("budget (tokens)", m.budget, set("budget"), { name: "budget" }));
  fs.append(field("scorer", m.scorer, set("scorer"), { name: "scorer", list: "scorer-names", placeholder: "judge" }));
  for (const k of ["params", "scorers", "islands"]) fs.append(field(`${k} (JSON)`, m[k], set(k), { area: true, json: true, name: k }));
  if (check.error && !check.error.node) fs.append(errorBox(check.error.message));
  form.replaceChildren(fs);
  $("candidates").replaceChildren();
}

function showCandidates(node) {
  const box = $("candidates");
  const st = nodeStatus[node.id];
  if (!st || !st.pool) return box.replaceChildren();
  box.replaceChildren(el("h2", {}, `${node.id}: ${st.pool.length} candidates`));
  for (const old of st.pool) {
    const c = latest[old.id] || old;
    const card = el("div", { class: "cand", "data-id": c.id });
    const score = c.score === null || c.score === undefined ? "unscored" : Number(c.score).toFixed(3);
    card.append(el("div", { class: "muted" }, `#${c.id} ${c.kind} · ${score}`));
    const pre = el("pre");
    showText(pre, c.text || "", c.spans);
    card.append(pre);
    box.append(card);
  }
}

// -- running -----------------------------------------------------------------------------------
async function run() {
  const res = await validate();
  if (!res || !res.valid) return;
  nodeStatus = {};
  latest = {};
  $("result").hidden = true;
  render();
  $("run").disabled = true;
  $("stop").disabled = false;
  controller = new AbortController();
  const t0 = performance.now();
  status("running …");
  try {
    // batch-invariant: the tree does not depend on other traffic, so the saved file reruns it exactly
    const resp = await post("/v1/flows/run", { flow: toDoc(), batch_invariant: true }, controller.signal);
    await readEvents(resp, onEvent);
    status(`done in ${((performance.now() - t0) / 1000).toFixed(1)} s`);
  } catch (e) {
    status(e.name === "AbortError" ? "stopped" : String(e.message || e), e.name !== "AbortError");
  } finally {
    $("run").disabled = false;
    $("stop").disabled = true;
    controller = null;
  }
}

async function readEvents(res, handle) {
  const reader = res.body.getReader();
  const decoder = new TextDecoder();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    buffer += decoder.decode(value, { stream: true });
    let cut;
    while ((cut = buffer.indexOf("\n\n")) >= 0) {
      const data = buffer.slice(0, cut).split("\n").filter((l) => l.startsWith("data: ")).map((l) => l.slice(6)).join("\n");
      buffer = buffer.slice(cut + 2);
      if (!data || data === "[DONE]") continue;
      const obj = parseJSON(data);
      if (obj.error) throw new Error(`${obj.error.message}${obj.error.node ? ` (node ${obj.error.node})` : ""}`);
      handle(obj);
    }
  }
}

function onEvent(ev) {
  if (ev.object === "flow.result") return showResult(ev);
  const st = nodeStatus[ev.node] || (nodeStatus[ev.node] = {});
  if (ev.event === "started") { st.cls = "running"; st.text = "running …"; }
  else if (ev.event === "skipped") { st.cls = "skipped"; st.text = "skipped: budget spent"; }
  else {
    const best = ev.best === null || ev.best === undefined ? "–" : Number(ev.best).toFixed(2);
    st.cls = ev.event === "finished" ? "done" : "running";
    st.text = `${ev.candidates} cand · ${ev.tokens} tok · best ${best}`;
    st.pool = ev.pool;
    for (const c of ev.pool) latest[c.id] = c;
  }
  status(`running … ${ev.spent}/${ev.budget} tokens`);
  render();
  const node = selected && selected.node !== undefined ? byKey(selected.node) : null;
  if (node) showCandidates(node);  // its candidates' scores may have changed
}

function showResult(r) {
  $("result").hidden = false;
  const s = r.spend || {};
  const score = r.score === null || r.score === undefined ? "–" : Number(r.score).toFixed(3);
  $("spend").textContent = `best #${r.best} · score ${score} · ${r.tree.nodes.length} nodes · ${s.generated_tokens} tokens · seed ${r.seed}`;
  drawTree(r.tree, $("tree"), $("detail"), () => edit(() => { state.meta.seed = r.seed; }));
  $("result").scrollIntoView({ block: "start" });  // below the editor: bring it into view
}

// -- saving ------------------------------------------------------------------------------------
function download(name, text, type) {
  const a = el("a", { href: URL.createObjectURL(new Blob([text], { type })), download: name });
  document.body.append(a);
  a.click();
  a.remove();
}

async function save(fmt) {
  const doc = toDoc();
  const base = (doc.name || "flow").replace(/[^\w.-]+/g, "_");
  if (fmt === "json") return download(`${base}.json`, toJSON(doc, 2) + "\n", "application/json");
  const res = await post.json("/v1/flows/validate", { flow: doc });
  if (!res.valid) status(`saved as JSON: the flow is invalid (${res.error.message})`, true);
  if (res.valid) download(`${base}.yaml`, res.yaml, "application/yaml");
  else download(`${base}.json`, toJSON(doc, 2) + "\n", "application/json");
}

// -- start -------------------------------------------------------------------------------------
// The toolbar's status is one line (the canvas never moves); its whole text is its tooltip, and
// an error's whole text (all its lines) is shown in the side panel too.
function status(text, error = false, detail = error) {
  $("status").textContent = text.split("\n")[0];
  $("status").title = text;
  $("status").className = error ? "error" : "muted";
  $("message").replaceChildren(...(detail ? [errorBox(text)] : []));
  $("message").hidden = !detail;
}

async function init() {
  [kinds, info, examples] = await Promise.all([
    fetch("/v1/flows/kinds").then(readJSON),
    fetch("/v1/sazanami").then(readJSON),
    fetch("/v1/flows/examples").then(readJSON).then((r) => r.data),
  ]);
  $("model").textContent = `model: ${info.model}`;
  const lists = [["scorer-names", info.scorers], ["preset-names", Object.keys(info.presets)]];
  for (const [id, values] of lists) {
    const dl = el("datalist", { id });
    for (const v of values) dl.append(el("option", { value: v }));
    document.body.append(dl);
  }
  for (const kind of Object.keys(kinds.kinds)) {
    const b = el("button", { type: "button", "data-kind": kind, style: `--k:${KIND_COLORS[kind] || "#64748b"}` }, kind);
    b.addEventListener("click", () => {
      const r = $("canvas").getBoundingClientRect();
      const c = toCanvas({ clientX: r.left + r.width / 2, clientY: r.top + r.height / 2 });
      addNode(kind, Math.round(c.x - W / 2 + (state.nodes.length % 5) * 12), Math.round(c.y - H / 2 + (state.nodes.length % 5) * 12));
    });
    $("kinds").append(b);
  }
  for (const ex of examples) $("examples").append(el("option", { value: ex.file }, ex.file));
  $("examples").addEventListener("change", () => {
    const ex = examples.find((x) => x.file === $("examples").value);
    if (ex) loadDoc(ex.flow, ex.file);
  });
  $("open").addEventListener("click", () => $("file").click());
  $("file").addEventListener("change", async () => {
    const f = $("file").files[0];
    if (f) await loadText(await f.text(), f.name);
    $("file").value = "";
  });
  window.addEventListener("dragover", (e) => { e.preventDefault(); $("drop-hint").hidden = false; });
  window.addEventListener("dragleave", (e) => { if (!e.relatedTarget) $("drop-hint").hidden = true; });
  window.addEventListener("drop", async (e) => {
    e.preventDefault();
    $("drop-hint").hidden = true;
    const f = e.dataTransfer.files[0];
    if (f) await loadText(await f.text(), f.name);
  });
  $("canvas").addEventListener("mousedown", startPan);
  $("canvas").addEventListener("wheel", zoom, { passive: false });
  $("save-yaml").addEventListener("click", () => save("yaml"));
  $("save-json").addEventListener("click", () => save("json"));
  $("undo").addEventListener("click", undo);
  $("redo").addEventListener("click", redo);
  $("delete").addEventListener("click", deleteSelected);
  $("fit").addEventListener("click", fit);
  $("run").addEventListener("click", run);
  $("stop").addEventListener("click", () => controller && controller.abort());
  window.addEventListener("keydown", (e) => {
    if (/^(INPUT|TEXTAREA|SELECT)$/.test(document.activeElement.tagName)) return;
    if ((e.key === "Delete" || e.key === "Backspace") && selected) { e.preventDefault(); deleteSelected(); }
    else if ((e.ctrlKey || e.metaKey) && e.key.toLowerCase() === "z") { e.preventDefault(); (e.shiftKey ? redo : undo)(); }
    else if ((e.ctrlKey || e.metaKey) && e.key.toLowerCase() === "y") { e.preventDefault(); redo(); }
  });
  const first = examples.find((x) => x.file === "hot_and_cold.yaml") || examples[0];
  if (first) { $("examples").value = first.file; await loadDoc(first.flow, first.file); }
  else changed();
}

init().catch((e) => status(`cannot start the editor: ${e}`, true));
