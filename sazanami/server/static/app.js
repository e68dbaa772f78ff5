// sazanami playground: one page over the OpenAI-compatible API (no build step).
// Plain sampling streams n variants side by side (SSE); a search returns its tree.
// Tool results injected into a text (islands) are shown as <mark class="island">.
"use strict";

const $ = (id) => document.getElementById(id);
const SVG = "http://www.w3.org/2000/svg";
let info = null;        // GET /v1/sazanami
let controller = null;  // aborting the fetch cancels the generation on the server

function el(tag, attrs = {}, text) {
  const node = tag.startsWith("svg:") ? document.createElementNS(SVG, tag.slice(4)) : document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v);
  if (text !== undefined) node.textContent = text;
  return node;
}

function status(text, error = false) {
  $("status").textContent = text;
  $("status").className = error ? "error" : "muted";
}

async function init() {
  info = await (await fetch("/v1/sazanami")).json();
  $("model").textContent = `model: ${info.model}`;
  for (const name of Object.keys(info.presets)) $("preset").append(el("option", { value: name }, name));
  $("preset").value = "pink-temperature";
  for (const name of Object.keys(info.strategies)) $("strategy").append(el("option", { value: name }, name));
  for (const s of info.scorers) $("scorers").append(el("option", { value: s }));
  for (const name of info.tools) {
    const box = el("input", { type: "checkbox", value: name, id: `tool-${name}` });
    const label = el("label", { for: `tool-${name}` });
    label.append(box, name);
    $("tools").append(label);
  }
  if (!info.tools.length) $("tools").append(el("span", { class: "muted" }, "this server runs no tools"));
  $("controls").addEventListener("submit", (e) => { e.preventDefault(); run(); });
  $("stop").addEventListener("click", () => controller && controller.abort());
}

function numberOf(id) {
  const v = $(id).value.trim();
  return v === "" ? undefined : Number(v);
}

// The fluctuation JSON: the preset with σ/β overridden in every active entry.
function fluctuation() {
  const name = $("preset").value;
  if (name === "none") return undefined;
  const fl = JSON.parse(JSON.stringify(info.presets[name]));
  const sigma = numberOf("sigma"), beta = numberOf("beta");
  for (const [point, entry] of Object.entries(fl)) {
    if (!entry || typeof entry !== "object") continue;
    if (sigma !== undefined) entry.sigma = sigma;
    if (beta !== undefined) entry.beta = beta;
    fl[point] = entry;
  }
  return fl;
}

function body() {
  const b = {
    model: info.model,
    messages: [{ role: "user", content: $("prompt").value }],
    max_tokens: numberOf("max_tokens"),
    temperature: numberOf("temperature"),
    seed: numberOf("seed"),
    trace: true,
    fluctuation: fluctuation(),
  };
  const tools = [...document.querySelectorAll("#tools input:checked")].map((x) => x.value);
  if (tools.length) b.tools = tools;
  if ($("regex").value.trim()) b.regex = $("regex").value.trim();
  const strategy = $("strategy").value;
  if (strategy) {
    b.search = { strategy, budget: numberOf("budget"), scorer: $("scorer").value || undefined, return_tree: true };
  } else {
    b.n = numberOf("n");
    b.stream = true;
  }
  return b;
}

async function run() {
  const b = body();
  $("variants").replaceChildren();
  $("tree").replaceChildren();
  $("detail").hidden = true;
  $("search").hidden = !b.search;
  $("run").disabled = true;
  $("stop").disabled = false;
  controller = new AbortController();
  const t0 = performance.now();
  status(b.search ? `searching (${b.search.strategy}) …` : "streaming …");
  try {
    const res = await fetch("/v1/chat/completions", {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify(b),
      signal: controller.signal,
    });
    if (!res.ok) {
      const err = (await res.json()).error || {};
      throw new Error(`${res.status}: ${err.message}${err.param ? ` (param ${err.param})` : ""}`);
    }
    if (b.stream) await readStream(res);
    else showSearch(await res.json());
    status(`done in ${((performance.now() - t0) / 1000).toFixed(1)} s`);
  } catch (e) {
    status(e.name === "AbortError" ? "stopped" : String(e.message || e), e.name !== "AbortError");
  } finally {
    $("run").disabled = false;
    $("stop").disabled = true;
    controller = null;
  }
}

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

// -- variants --------------------------------------------------------------------------------
function variantCard(index) {
  let card = $(`variant-${index}`);
  if (card) return card;
  card = el("div", { id: `variant-${index}`, class: "variant" });
  const head = el("div", { class: "head" });
  head.append(el("span", { class: "label" }, `variant ${index}`), el("span", { class: "state" }, "…"));
  card.append(head, el("div", { class: "text" }));
  const cards = [...$("variants").children];
  const after = cards.find((c) => Number(c.id.split("-")[1]) > index);
  $("variants").insertBefore(card, after || null);
  return card;
}

async function readStream(res) {
  const reader = res.body.getReader();
  const decoder = new TextDecoder();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    buffer += decoder.decode(value, { stream: true });
    let cut;
    while ((cut = buffer.indexOf("\n\n")) >= 0) {
      const event = buffer.slice(0, cut);
      buffer = buffer.slice(cut + 2);
      const data = event.split("\n").filter((l) => l.startsWith("data: ")).map((l) => l.slice(6)).join("\n");
      if (!data || data === "[DONE]") continue;
      const chunk = JSON.parse(data);
      if (chunk.error) throw new Error(chunk.error.message);
      for (const choice of chunk.choices || []) onChoice(choice);
    }
  }
}

function onChoice(choice) {
  const card = variantCard(choice.index);
  const delta = choice.delta || {};
  if (delta.content) card.querySelector(".text").textContent += delta.content;
  if (choice.seed !== undefined) card.querySelector(".label").textContent = `variant ${choice.index} · seed ${choice.seed}`;
  if (choice.spans) {
    const text = card.querySelector(".text");
    showText(text, text.textContent, choice.spans);
  }
  if (choice.finish_reason) {
    card.classList.add("done");
    card.querySelector(".state").textContent = choice.finish_reason;
  }
  if (choice.trace) card.append(tracePlot(choice.trace));
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

function tracePlot(trace, extra = {}) {
  const series = Object.assign(trace && trace.length ? traceSeries(trace) : {}, extra);
  const names = Object.keys(series).filter((k) => series[k].some((v) => v !== null && v !== undefined));
  const W = 300, H = 34, pad = 2, left = 70;
  const svg = el("svg:svg", { class: "plot", viewBox: `0 0 ${W} ${names.length * (H + pad) + 2}`, role: "img" });
  svg.append(el("svg:title", {}, "per-step trace"));
  names.forEach((name, row) => {
    const ys = series[name];
    const vals = ys.filter((v) => v !== null && v !== undefined);
    let lo = Math.min(...vals), hi = Math.max(...vals);
    if (hi - lo < 1e-9) { lo -= 0.5; hi += 0.5; }
    const top = row * (H + pad) + 1;
    const x = (i) => left + (i / Math.max(1, ys.length - 1)) * (W - left - 2);
    const y = (v) => top + H - 2 - ((v - lo) / (hi - lo)) * (H - 4);
    svg.append(el("svg:line", { class: "axis", x1: left, x2: W - 2, y1: top + H, y2: top + H }));
    svg.append(el("svg:text", { x: 0, y: top + 12 }, name));
    svg.append(el("svg:text", { x: 0, y: top + H - 4 }, `${lo.toFixed(2)}…${hi.toFixed(2)}`));
    const pts = ys.map((v, i) => (v === null || v === undefined ? null : `${x(i).toFixed(1)},${y(v).toFixed(1)}`)).filter(Boolean);
    const kind = name.startsWith("noise") ? "noise" : name;
    svg.append(el("svg:polyline", { class: `series-${kind}`, points: pts.join(" ") }));
  });
  return svg;
}

// -- search tree -----------------------------------------------------------------------------
function showSearch(resp) {
  const choice = resp.choices[0];
  const card = variantCard(0);
  card.classList.add("done", "winner");
  card.querySelector(".label").textContent = `winner · seed ${choice.seed ?? "?"}`;
  card.querySelector(".state").textContent = choice.finish_reason;
  showText(card.querySelector(".text"), choice.message.content, choice.spans);
  if (choice.trace) card.append(tracePlot(choice.trace));
  const s = resp.search;
  const spend = s.spend || {};
  const run = spend.prompt_tokens ?? 0, reused = spend.prompt_tokens_reused ?? 0;
  const hit = run + reused > 0 ? ` · prefix cache ${Math.round((100 * reused) / (run + reused))}% of prompt tokens` : "";
  $("spend").textContent = `${s.strategy} · ${s.nodes} nodes · ${spend.generated_tokens ?? "?"} tokens${hit}`;
  if (s.tree) drawTree(s.tree);
}

function drawTree(tree) {
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
  const DX = 170, DY = 26, X0 = 14, Y0 = 16;
  const depth = Math.max(...Object.values(pos).map((p) => p.x));
  const svg = el("svg:svg", { width: X0 + depth * DX + 160, height: Y0 * 2 + leaf * DY });
  const at = (id) => [X0 + pos[id].x * DX, Y0 + pos[id].y * DY];
  for (const n of nodes) {
    if (n.parent === null) continue;
    const [x1, y1] = at(n.parent), [x2, y2] = at(n.id);
    const path = onPath.has(n.id) && onPath.has(n.parent);
    svg.append(el("svg:path", { class: `edge${path ? " path" : ""}`, d: `M${x1},${y1} C${(x1 + x2) / 2},${y1} ${(x1 + x2) / 2},${y2} ${x2},${y2}` }));
  }
  for (const n of nodes) {
    const [x, y] = at(n.id);
    const cls = ["node", n.parent === null ? "root" : "", n.id === tree.best ? "winner" : "", n.pruned ? "pruned" : ""];
    const g = el("svg:g", { class: cls.join(" ").trim(), "data-id": n.id, transform: `translate(${x},${y})` });
    const score = n.score === null || n.score === undefined ? "–" : Number(n.score).toFixed(3);
    g.append(el("svg:circle", { r: 6 }));
    g.append(el("svg:text", { x: 10, y: 4 }, n.parent === null ? "prompt" : `#${n.id} ${n.kind} · ${score}`));
    g.append(el("svg:title", {}, (n.text || "").slice(0, 200)));
    g.addEventListener("click", () => showNode(tree, n, g));
    svg.append(g);
  }
  $("tree").replaceChildren(svg);
  if (tree.best !== null && tree.best !== undefined) showNode(tree, nodes[tree.best], svg.querySelector(`[data-id="${tree.best}"]`));
}

function showNode(tree, n, g) {
  document.querySelectorAll(".tree .node.selected").forEach((x) => x.classList.remove("selected"));
  if (g) g.classList.add("selected");
  const d = $("detail");
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
  d.replaceChildren(el("div", { class: "muted" }, facts.join(" · ")), text, reason, plot);
}

init().catch((e) => status(`cannot load /v1/sazanami: ${e}`, true));
