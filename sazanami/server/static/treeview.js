// sazanami: the search tree view, text with tool marks and trace plots, shared by the
// playground (app.js) and the flow editor (flows.js). No build step: plain globals.
"use strict";

const $ = (id) => document.getElementById(id);
const SVG = "http://www.w3.org/2000/svg";
function el(tag, attrs = {}, text) {
  const node = tag.startsWith("svg:") ? document.createElementNS(SVG, tag.slice(4)) : document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v);
  if (text !== undefined) node.textContent = text;
  return node;
}

// -- JSON with exact seeds ------------------------------------------------------------------------
// Seeds are 63-bit integers: a JavaScript number keeps 53 bits, so JSON.parse would round them
// (8088524283061314308 → 8088524283061315000). parseJSON keeps every integer beyond 2^53 exact as a
// BigInt (from its source text); toJSON writes BigInts back as plain JSON integers. The API sends
// and takes seeds as JSON integers; the pages read and write all JSON through these two.
function parseJSON(text) {
  return JSON.parse(text, (key, value, ctx) =>
    typeof value === "number" && !Number.isSafeInteger(value) && ctx && /^-?\d+$/.test(ctx.source) ? BigInt(ctx.source) : value);
}
function toJSON(value, indent) {
  if (JSON.rawJSON) return JSON.stringify(value, (key, v) => (typeof v === "bigint" ? JSON.rawJSON(v.toString()) : v), indent);
  const big = [];  // a browser without JSON.rawJSON: marked strings, then the digits in their place
  const text = JSON.stringify(value, (key, v) => (typeof v === "bigint" ? `\u0000${big.push(v.toString()) - 1}\u0000` : v), indent);
  return text.replace(/"\\u0000(\d+)\\u0000"/g, (_, i) => big[Number(i)]);
}
// A typed integer (a seed) exactly: a Number while it is safe, else a BigInt; undefined when empty.
function exactInt(text) {
  const t = String(text).trim();
  if (t === "") return undefined;
  if (!/^-?\d+$/.test(t)) return NaN;
  const n = Number(t);
  return Number.isSafeInteger(n) ? n : BigInt(t);
}
async function readJSON(res) { return parseJSON(await res.text()); }

// Text with its injected spans (character offsets) wrapped in <mark class="island">.
function showText(node, text, spans) {
  node.replaceChildren();
  let pos = 0;
  for (const sp of [...(spans || [])].sort((a, b) => a.start - b.start)) {
    node.append(text.slice(pos, sp.start));
    const title = `${sp.name}(${sp.args})${sp.cached ? " · cached" : ""}${sp.error ? " · error" : ""}`;
    node.append(el("mark", { class: "island", title }, text.slice(sp.start, sp.end)));
    pos = sp.end;
  }
  node.append(text.slice(pos));
}

// -- trace plot: small multiples, one row per series ------------------------------------------
function traceSeries(trace) {
  const series = { temperature: [], entropy: [] };
  const noiseKeys = new Set();
  trace.forEach((s) => Object.keys(s.noise || {}).forEach((k) => noiseKeys.add(k)));
  for (const k of noiseKeys) series[`noise.${k}`] = [];
  for (const s of trace) {
    series.temperature.push(s.temperature);
    series.entropy.push(s.entropy);
    for (const k of noiseKeys) series[`noise.${k}`].push((s.noise || {})[k] ?? null);
  }
  return series;
}

// The width of a text in the page's font (SVG labels are laid out before they are on the page).
const textWidth = (() => {
  const ctx = document.createElement("canvas").getContext("2d");
  return (text, px) => {
    ctx.font = `${px}px ${getComputedStyle(document.body).fontFamily}`;
    return ctx.measureText(text).width;
  };
})();

function tracePlot(trace, extra = {}) {
  const series = Object.assign(trace && trace.length ? traceSeries(trace) : {}, extra);
  const names = Object.keys(series).filter((k) => series[k].some((v) => v !== null && v !== undefined));
  const ranges = {};
  for (const name of names) {
    const vals = series[name].filter((v) => v !== null && v !== undefined);
    let lo = Math.min(...vals), hi = Math.max(...vals);
    if (hi - lo < 1e-9) { lo -= 0.5; hi += 0.5; }
    ranges[name] = [lo, hi];
  }
  const label = (name) => `${ranges[name][0].toFixed(2)}…${ranges[name][1].toFixed(2)}`;
  // the labels' column is as wide as its longest label (9px text), so no label runs into its line
  const left = Math.ceil(Math.max(40, ...names.flatMap((n) => [textWidth(n, 9), textWidth(label(n), 9)]))) + 8;
  const W = Math.max(300, left + 200), H = 34, pad = 2;
  const svg = el("svg:svg", { class: "plot", viewBox: `0 0 ${W} ${names.length * (H + pad) + 2}`, role: "img" });
  svg.append(el("svg:title", {}, "per-step trace"));
  names.forEach((name, row) => {
    const ys = series[name];
    const [lo, hi] = ranges[name];
    const top = row * (H + pad) + 1;
    const x = (i) => left + (i / Math.max(1, ys.length - 1)) * (W - left - 2);
    const y = (v) => top + H - 2 - ((v - lo) / (hi - lo)) * (H - 4);
    svg.append(el("svg:line", { class: "axis", x1: left, x2: W - 2, y1: top + H, y2: top + H }));
    svg.append(el("svg:text", { x: 0, y: top + 12 }, name));
    svg.append(el("svg:text", { x: 0, y: top + H - 4 }, label(name)));
    const pts = ys.map((v, i) => (v === null || v === undefined ? null : `${x(i).toFixed(1)},${y(v).toFixed(1)}`)).filter(Boolean);
    const kind = name.startsWith("noise") ? "noise" : name;
    svg.append(el("svg:polyline", { class: `series-${kind}`, points: pts.join(" ") }));
  });
  return svg;
}

// -- search tree -----------------------------------------------------------------------------
// Depth runs left to right; each node's label sits right of its circle, and the edges to its
// children leave from the end of that label, so no edge crosses a label.
function treeLabel(n) {
  const score = n.score === null || n.score === undefined ? "–" : Number(n.score).toFixed(3);
  return n.parent === null ? "prompt" : `#${n.id} ${n.kind} · ${score}`;
}

function drawTree(tree, box = $("tree"), detail = $("detail"), onRepeat = null) {
  const nodes = tree.nodes;
  const kids = nodes.map(() => []);
  nodes.forEach((n) => n.parent !== null && kids[n.parent].push(n.id));
  // Tidy layout: depth → x; leaves take successive rows, a parent sits at its children's mean.
  const pos = {};
  let leaf = 0;
  const place = (id, depth) => {
    const ys = kids[id].map((c) => place(c, depth + 1));
    const y = ys.length ? ys.reduce((a, b) => a + b, 0) / ys.length : leaf++;
    pos[id] = { x: depth, y };
    return y;
  };
  place(0, 0);
  const onPath = new Set();
  for (let id = tree.best; id !== null && id !== undefined; id = nodes[id].parent) onPath.add(id);
  const labels = nodes.map(treeLabel);
  const widths = labels.map((t) => textWidth(t, 11));
  const R = 6, GAP = 10;  // circle radius; label starts GAP right of the centre
  const DX = Math.ceil(Math.max(...widths)) + GAP + 56, DY = 26, X0 = 14, Y0 = 16;
  const depth = Math.max(...Object.values(pos).map((p) => p.x));
  const svg = el("svg:svg", { width: X0 + depth * DX + DX, height: Y0 * 2 + leaf * DY });
  const at = (id) => [X0 + pos[id].x * DX, Y0 + pos[id].y * DY];
  for (const n of nodes) {
    if (n.parent === null) continue;
    const [px, y1] = at(n.parent), [cx, y2] = at(n.id);
    const x1 = px + GAP + widths[n.parent] + 4, x2 = cx - R - 1;
    const path = onPath.has(n.id) && onPath.has(n.parent);
    const mid = (x1 + x2) / 2;
    svg.append(el("svg:path", { class: `edge${path ? " path" : ""}`, d: `M${x1},${y1} C${mid},${y1} ${mid},${y2} ${x2},${y2}` }));
  }
  for (const n of nodes) {
    const [x, y] = at(n.id);
    const cls = ["node", n.parent === null ? "root" : "", n.id === tree.best ? "winner" : "", n.pruned ? "pruned" : ""];
    const g = el("svg:g", { class: cls.join(" ").trim(), "data-id": n.id, transform: `translate(${x},${y})` });
    g.append(el("svg:circle", { r: R }));
    g.append(el("svg:text", { x: GAP, y: 4 }, labels[n.id]));
    g.append(el("svg:title", {}, (n.text || "").slice(0, 200)));
    g.addEventListener("click", () => showNode(tree, n, g, detail, onRepeat));
    svg.append(g);
  }
  box.replaceChildren(svg);
  if (tree.best !== null && tree.best !== undefined) box.scrollTop = at(tree.best)[1] - box.clientHeight / 2;  // the winner in view
  if (tree.best !== null && tree.best !== undefined) showNode(tree, nodes[tree.best], svg.querySelector(`[data-id="${tree.best}"]`), detail, onRepeat);
}

// A node's details; ``onRepeat`` (the page's) puts the run that made the tree back in the form.
function showNode(tree, n, g, d = $("detail"), onRepeat = null) {
  g?.ownerSVGElement?.querySelectorAll(".node.selected").forEach((x) => x.classList.remove("selected"));
  if (g) g.classList.add("selected");
  d.hidden = false;
  const score = n.score === null || n.score === undefined ? "unscored" : `score ${Number(n.score).toFixed(4)}`;
  const facts = [`node #${n.id}`, n.kind, score, `seed ${n.seed ?? "–"}`, `T ${n.temperature ?? "–"}`, `${n.tokens} tokens`];
  if (n.id === tree.best) facts.push("winner");
  const reason = n.reason ? el("div", { class: "muted" }, n.reason) : "";
  // one point per drawn token, like the trace: injected tool results (log-prob 0) are left out
  const injected = new Set((n.spans || []).flatMap((sp) => [...Array(sp.token_end - sp.token_start).keys()].map((k) => sp.token_start + k)));
  const logprobs = (n.logprobs || []).filter((_, i) => !injected.has(i));
  const plot = tracePlot((n.meta || {}).trace, logprobs.length ? { logprob: logprobs } : {});
  const text = el("pre");
  showText(text, n.text || "", n.spans);
  const head = el("div", { class: "muted facts" }, facts.join(" · "));
  if (onRepeat) {
    const again = el("button", { type: "button", class: "repeat", title: `put this run back in the form (seed ${tree.seed})` }, "repeat this run");
    again.addEventListener("click", () => onRepeat(tree));
    head.append(" ", again);
  }
  d.replaceChildren(head, text, reason, plot);
}
