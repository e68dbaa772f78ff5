// sazanami playground: one page over the OpenAI-compatible API (no build step).
// Plain sampling streams n variants side by side (SSE); a search returns its tree.
// Tool results injected into a text (islands) are shown as <mark class="island">.
"use strict";

let info = null;        // GET /v1/sazanami
let controller = null;  // aborting the fetch cancels the generation on the server

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

init().catch((e) => status(`cannot load /v1/sazanami: ${e}`, true));
