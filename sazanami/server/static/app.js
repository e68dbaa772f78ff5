// sazanami playground: one page over the OpenAI-compatible API (no build step).
// Plain sampling streams n variants side by side (SSE); a search streams its tree as it grows
// (a `search_node` chunk per node added or scored) and ends with the winner and the whole tree.
// Tool results injected into a text (islands) are shown as <mark class="island">.
// Seeds are read and sent exactly (parseJSON/toJSON in treeview.js: 63-bit integers as BigInt).
// Chat mode keeps the conversation (/v1/chat/completions: the model's chat template formats it on
// the server); completion mode sends the prompt as it is (/v1/completions: no template). The last runs stay in localStorage; any run can be put back
// in the form ("repeat this run") or exported as its request and outputs.
"use strict";

let info = null;        // GET /v1/sazanami
let controller = null;  // aborting the fetch cancels the generation on the server
let current = null;     // the run on the page: {form, body, seed, outputs}
let chat = [];          // chat mode: the conversation so far ({role, content})
let ticker = null;      // the progress line's clock while a search runs
let tick = () => {};    // writes the progress line now (a node that arrives updates it at once)
let live = null;        // a streamed search's tree so far: {nodes, best, generated, budget}
let drawing = null;     // the pending redraw of the live tree (at most one per DRAW_MS)
const DRAW_MS = 120;
const HISTORY = "sazanami-playground-runs", HISTORY_MAX = 20;
const FIELDS = ["prompt", "n", "max_tokens", "temperature", "seed", "speculative", "preset", "sigma", "beta", "strategy", "budget", "scorer", "regex"];

function status(text, error = false) {
  $("status").textContent = text;
  $("status").className = error ? "error" : "muted";
}

async function init() {
  info = await readJSON(await fetch("/v1/sazanami"));
  $("model").textContent = `model: ${info.model}`;
  for (const name of Object.keys(info.presets)) $("preset").append(el("option", { value: name }, name));
  $("preset").value = "pink-temperature";
  for (const name of Object.keys(info.strategies)) $("strategy").append(el("option", { value: name }, name));
  for (const s of info.scorers) $("scorers").append(el("option", { value: s }));
  for (const s of info.speculative.sources) $("speculative-sources").append(el("option", { value: s }));
  for (const name of info.tools) {
    const box = el("input", { type: "checkbox", value: name, id: `tool-${name}` });
    const label = el("label", { for: `tool-${name}` });
    label.append(box, name);
    $("tools").append(label);
  }
  if (!info.tools.length) $("tools").append(el("span", { class: "muted" }, "this server runs no tools"));
  $("controls").addEventListener("submit", (e) => { e.preventDefault(); run(); });
  $("stop").addEventListener("click", () => controller && controller.abort());
  $("strategy").addEventListener("change", gate);
  for (const r of document.querySelectorAll("input[name=mode]")) r.addEventListener("change", setMode);
  for (const id of FIELDS) $(id).addEventListener("input", () => clearFieldError(id));
  $("repeat").addEventListener("click", () => current && repeat(current));
  $("export").addEventListener("click", () => current && exportRun(current));
  $("clear-history").addEventListener("click", () => { localStorage.removeItem(HISTORY); showHistory(); });
  gate();
  showHistory();
}

// -- the form ------------------------------------------------------------------------------------
// Fields a mode does not use are disabled, with a note saying why (a search sets its own number of
// candidates; budget and scorer are the search's).
function gate() {
  const search = Boolean($("strategy").value);
  $("n").disabled = search;
  $("budget").disabled = $("scorer").disabled = !search;
  $("n").title = search ? "a search sets how many candidates it draws (its strategy's options)" : "";
  $("search-note").textContent = search
    ? "n is not used by a search: its strategy decides how many candidates to draw."
    : "budget and scorer are used by a search strategy only.";
}

function mode() { return document.querySelector("input[name=mode]:checked").value; }

function setMode() {
  const isChat = mode() === "chat";
  $("chat").hidden = !isChat || !chat.length;
  $("prompt-label").textContent = isChat ? (chat.length ? "Your next message" : "Message") : "Prompt (continued as it is: no chat template)";
  showChat();
}

function showChat() {
  const box = $("chat");
  box.replaceChildren();
  chat.forEach((m) => box.append(el("div", { class: `msg ${m.role}` }, m.content)));
  if (chat.length) {
    const clear = el("button", { type: "button", class: "repeat" }, "new conversation");
    clear.addEventListener("click", () => { chat = []; setMode(); });
    box.append(clear);
  }
}

// A field's value for the request: numbers checked as the API checks them, named on error.
class FieldError extends Error {
  constructor(id, message) { super(message); this.id = id; }
}

function numberOf(id, { integer = false, min, max } = {}) {
  const input = $(id);
  const v = input.value.trim();
  if (v === "") return undefined;
  const x = id === "seed" ? exactInt(v) : Number(v);
  const name = input.closest("label").firstChild.textContent.trim();
  if (typeof x === "number" && (!Number.isFinite(x) || (integer && !Number.isInteger(x))))
    throw new FieldError(id, `${name} must be ${integer ? "a whole number" : "a number"}, got ${JSON.stringify(v)}`);
  if (min !== undefined && x < min) throw new FieldError(id, `${name} must be at least ${min}, got ${v}`);
  if (max !== undefined && x > max) throw new FieldError(id, `${name} must be at most ${max}, got ${v}`);
  return x;
}

function clearFieldError(id) {
  const input = $(id);
  input.classList.remove("invalid");
  input.removeAttribute("aria-invalid");
  input.closest("label").querySelector(".field-error")?.remove();
}

function fieldError(id, message) {
  clearFieldError(id);
  const input = $(id);
  input.classList.add("invalid");
  input.setAttribute("aria-invalid", "true");
  const box = el("div", { class: `field-error${message.includes("\n") ? " multiline" : ""}` }, message);
  input.closest("label").append(box);
  input.focus({ preventScroll: true });
  box.scrollIntoView({ block: "nearest" });
}

// The field a server error's `param` names (fluctuation fields name the point: temperature.sigma).
function fieldOf(param) {
  if (!param) return null;
  if (param === "messages" || param === "prompt") return "prompt";
  if (/\.sigma$/.test(param)) return "sigma";
  if (/\.beta$/.test(param)) return "beta";
  if (param.startsWith("speculative")) return "speculative";
  if (param.startsWith("search.budget")) return "budget";
  if (param.startsWith("search.scorer")) return "scorer";
  if (param.startsWith("search.")) return "strategy";
  if (param.startsWith("fluctuation") || /^(temperature|logits|hidden|embedding)\./.test(param)) return "preset";
  return FIELDS.includes(param) ? param : null;
}

// The fluctuation JSON: the preset with σ/β overridden in every active entry.
function fluctuation(sigma, beta) {
  const name = $("preset").value;
  if (name === "none") return undefined;
  const fl = structuredClone(info.presets[name]);
  for (const [point, entry] of Object.entries(fl)) {
    if (!entry || typeof entry !== "object") continue;
    if (sigma !== undefined) entry.sigma = sigma;
    if (beta !== undefined) entry.beta = beta;
    fl[point] = entry;
  }
  return fl;
}

function body() {
  const prompt = $("prompt").value;
  if (!prompt.trim()) throw new FieldError("prompt", mode() === "chat" ? "the message is empty" : "the prompt is empty");
  const b = {
    model: info.model,
    ...(mode() === "chat" ? { messages: [...chat, { role: "user", content: prompt }] } : { prompt }),
    max_tokens: numberOf("max_tokens", { integer: true, min: 1 }),
    temperature: numberOf("temperature", { min: 0 }),
    seed: numberOf("seed", { integer: true, min: 0 }),
    trace: true,
    fluctuation: fluctuation(numberOf("sigma", { min: 0 }), numberOf("beta", { min: 0, max: 2 })),
  };
  const tools = [...document.querySelectorAll("#tools input:checked")].map((x) => x.value);
  if (tools.length) b.tools = tools;
  if ($("regex").value.trim()) b.regex = $("regex").value.trim();
  if ($("speculative").value.trim()) b.speculative = $("speculative").value.trim();
  const strategy = $("strategy").value;
  if (strategy) {
    b.search = { strategy, budget: numberOf("budget", { integer: true, min: 1 }), scorer: $("scorer").value || undefined, return_tree: true };
    b.stream = true;  // its nodes arrive as the search adds them
  } else {
    b.n = numberOf("n", { integer: true, min: 1 });
    b.stream = true;
    b.stream_options = { include_usage: true };  // its last chunk carries the run's seed and usage
  }
  return b;
}

// The form as it was for a run (restored by "repeat this run" and from the history).
function formState() {
  const f = Object.fromEntries(FIELDS.map((id) => [id, $(id).value]));
  f.tools = [...document.querySelectorAll("#tools input:checked")].map((x) => x.value);
  f.mode = mode();
  return f;
}

function setForm(f, seed) {
  if (f.mode) document.querySelector(`input[name=mode][value=${f.mode}]`).checked = true;
  for (const id of FIELDS) if (f[id] !== undefined) $(id).value = f[id];
  for (const box of document.querySelectorAll("#tools input")) box.checked = (f.tools || []).includes(box.value);
  if (seed !== undefined && seed !== null) $("seed").value = String(seed);
  for (const id of FIELDS) clearFieldError(id);
  gate();
}

function repeat(r) {
  setForm(r.form, r.seed);
  chat = r.body.messages ? r.body.messages.slice(0, -1) : [];
  setMode();
  status(`the form holds the run with seed ${r.seed}: press Run to repeat it`);
}

// -- running -------------------------------------------------------------------------------------
async function run() {
  for (const id of FIELDS) clearFieldError(id);
  let b;
  try {
    b = body();
  } catch (e) {
    if (!(e instanceof FieldError)) throw e;
    fieldError(e.id, e.message);
    status(`not sent: ${e.message}`, true);
    return;
  }
  const url = b.messages ? "/v1/chat/completions" : "/v1/completions";
  current = { form: formState(), url, body: b, seed: b.seed, outputs: [], time: new Date().toISOString() };
  $("empty").hidden = true;
  $("runinfo").hidden = true;
  $("usage").textContent = "";
  $("variants").replaceChildren();
  $("variants-box").hidden = Boolean(b.search);
  $("tree").replaceChildren();
  $("detail").hidden = true;
  $("spend").textContent = "";
  $("search").hidden = !b.search;
  $("run").disabled = true;
  $("stop").disabled = false;
  controller = new AbortController();
  const t0 = performance.now();
  status(b.search ? `searching (${b.search.strategy}) …` : "streaming …");
  if (b.search) startProgress(b.search, t0);
  try {
    const res = await fetch(url, {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: toJSON(b),
      signal: controller.signal,
    });
    if (!res.ok) {
      const err = (await readJSON(res)).error || {};
      const e = new Error(`${res.status}: ${err.message}`);
      e.param = err.param;
      e.status = res.status;
      e.detail = err.message;
      throw e;
    }
    if (b.stream) await readStream(res);
    else showSearch(await readJSON(res));
    status(`done in ${((performance.now() - t0) / 1000).toFixed(1)} s`);
    remember(current);
  } catch (e) {
    if (e.name === "AbortError") {
      status("stopped");
      for (const s of document.querySelectorAll(".variant:not(.done) .state")) s.textContent = "stopped";
      document.querySelectorAll(".variant:not(.done)").forEach((c) => c.classList.add("stopped"));
      if (b.search) stoppedTree();
    } else {
      if (b.search && !$("tree").querySelector("svg")) $("search").hidden = true;  // no tree is coming
      const field = fieldOf(e.param);
      if (field) fieldError(field, e.detail);
      const where = e.param ? ` (param ${e.param})` : "";
      status(field ? `${e.status}: the server refused ${e.param}: see the highlighted field` : `${String(e.message || e)}${where}`, true);
      if (!field && String(e.message).includes("\n")) $("status").classList.add("multiline");
    }
  } finally {
    live = null;
    clearTimeout(drawing);
    drawing = null;
    stopProgress();
    $("run").disabled = false;
    $("stop").disabled = true;
    controller = null;
  }
}

// While a search runs, a clock, its nodes so far and a bar of the tokens generated of its budget
// (the bar slides until the first node says how far it is).
function startProgress(search, t0) {
  $("progress").hidden = false;
  $("progress").classList.remove("determinate");
  $("progress").removeAttribute("aria-valuenow");
  $("progress").querySelector(".bar span").style.width = "";
  const limit = info.limits.max_search_seconds;
  tick = () => {
    const s = (performance.now() - t0) / 1000;
    const spent = live && live.budget
      ? `${live.nodes.length - 1} nodes · ${live.generated} of ${live.budget} tokens`
      : `budget ${search.budget ?? "default"} tokens`;
    $("progress-text").textContent = `${search.strategy} running · ${s.toFixed(1)} s · ${spent} · at most ${limit} s`;
  };
  tick();
  ticker = setInterval(tick, 200);
  $("tree").replaceChildren(el("p", { class: "muted" }, "the tree appears as the search adds nodes"));
}

function stopProgress() {
  clearInterval(ticker);
  ticker = null;
  tick = () => {};
  $("progress").hidden = true;
}

// -- a streamed search's tree as it grows ------------------------------------------------------
function growTree(ev) {
  if (!live) live = { nodes: [], best: null, seed: current.seed };
  if (ev.event === "added") live.nodes[ev.node.id] = { score: null, ...ev.node };
  else if (live.nodes[ev.node.id]) Object.assign(live.nodes[ev.node.id], ev.node);
  live.generated = ev.generated_tokens;
  live.budget = ev.budget_tokens;
  const share = Math.min(1, live.generated / Math.max(1, live.budget));
  $("progress").classList.add("determinate");
  $("progress").setAttribute("aria-valuenow", String(Math.round(100 * share)));
  $("progress").querySelector(".bar span").style.width = `${(100 * share).toFixed(1)}%`;
  tick();
  if (!drawing) drawing = setTimeout(drawLive, DRAW_MS);
}

function drawLive() {
  drawing = null;
  if (!live || !live.nodes.length) return;
  const selected = $("tree").querySelector(".node.selected")?.dataset.id;
  drawTree(live, $("tree"), $("detail"));
  if (selected !== undefined) $("tree").querySelector(`[data-id="${selected}"]`)?.classList.add("selected");
  $("spend").textContent = `${live.nodes.length - 1} nodes so far`;
}

// A stopped search picks no winner: the tree as far as it grew stays, with a note.
function stoppedTree() {
  const grown = live && live.nodes.length > 1;
  if (grown) drawLive();
  const note = el("p", { class: "muted" }, grown ? "stopped: the tree so far (a stopped search picks no winner)" : "stopped: a search that is stopped returns no tree");
  if (grown) $("tree").prepend(note);
  else $("tree").replaceChildren(note);
}

function showRunInfo(seed) {
  if (seed === undefined || seed === null) return;
  current.seed = seed;
  $("runseed").textContent = `run seed ${seed}`;
  $("runinfo").hidden = false;
}

// The run's usage (the stream's last chunk): its tokens, the prompt tokens the prefix cache
// served, and speculative decoding's drafts (accepted + rejected prediction tokens) and how many
// of them the sampler drew.
function showUsage(u) {
  const parts = [`${u.prompt_tokens} prompt + ${u.completion_tokens} generated tokens`];
  const cached = (u.prompt_tokens_details || {}).cached_tokens;
  if (cached) parts.push(`${cached} prompt tokens from the prefix cache`);
  const d = u.completion_tokens_details;
  if (d) {
    const drafted = d.accepted_prediction_tokens + d.rejected_prediction_tokens;
    parts.push(`speculative: ${d.accepted_prediction_tokens} of ${drafted} drafted tokens accepted`);
  }
  $("usage").textContent = ` · ${parts.join(" · ")}`;
}

// -- variants --------------------------------------------------------------------------------
function variantCard(index) {
  let card = $(`variant-${index}`);
  if (card) return card;
  card = el("div", { id: `variant-${index}`, class: "variant" });
  const head = el("div", { class: "head" });
  head.append(el("span", { class: "label" }, `variant ${index}`), el("span", { class: "state" }, "…"));
  const tools = el("div", { class: "card-tools" });
  const again = el("button", { type: "button", class: "repeat", title: "put this run's settings and seed back in the form" }, "repeat this run");
  again.addEventListener("click", () => current && repeat(current));
  tools.append(again);
  if (mode() === "chat") {
    const reply = el("button", { type: "button", class: "repeat reply", title: "take this answer into the conversation and write the next message" }, "reply with this");
    reply.addEventListener("click", () => continueWith(card));
    tools.append(reply);
  }
  card.append(head, el("div", { class: "text" }), tools);
  const cards = [...$("variants").children];
  const after = cards.find((c) => Number(c.id.split("-")[1]) > index);
  $("variants").insertBefore(card, after || null);
  return card;
}

// Chat mode: the picked variant becomes the assistant's turn; the box is free for the next message.
function continueWith(card) {
  const r = current;
  if (!r) return;
  chat = [...r.body.messages, { role: "assistant", content: card.querySelector(".text").textContent }];
  $("prompt").value = "";
  $("seed").value = "";
  setMode();
  $("prompt").focus();
}

async function readStream(res) {
  const reader = res.body.getReader();
  const decoder = new TextDecoder();
  let buffer = "";
  const searching = Boolean(current.body.search);
  let winner = null, text = "", last = null;  // a search: its winner's text and its last chunk
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
      const chunk = parseJSON(data);
      if (chunk.error) throw new Error(chunk.error.message);
      if (chunk.seed !== undefined && chunk.seed !== null) showRunInfo(chunk.seed);
      if (chunk.usage) showUsage(chunk.usage);
      if (chunk.search_node) growTree(chunk.search_node);
      else if (searching) {  // the winner's text comes after the tree; shown whole at the end
        for (const choice of chunk.choices || []) {
          text += choice.text ?? (choice.delta || {}).content ?? "";
          if (choice.finish_reason) winner = choice;
        }
        if (chunk.search) last = chunk;
      } else for (const choice of chunk.choices || []) onChoice(choice);
    }
  }
  if (searching) {
    if (!last || !winner) throw new Error("the search's stream ended without its result");
    live = null;
    showSearch({ seed: last.seed, search: last.search, choices: [{ ...winner, text, delta: undefined }] });
    return;
  }
  current.outputs = [...document.querySelectorAll(".variant")].map((c) => ({
    seed: c.dataset.seed, text: c.querySelector(".text").textContent, finish_reason: c.querySelector(".state").textContent,
  }));
}

function onChoice(choice) {
  const card = variantCard(choice.index);
  const piece = choice.text ?? (choice.delta || {}).content;  // completions: text; chat: delta
  if (piece) card.querySelector(".text").textContent += piece;
  if (choice.seed !== undefined) {
    card.dataset.seed = String(choice.seed);
    card.querySelector(".label").textContent = `variant ${choice.index} · seed ${choice.seed}`;
  }
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
  showRunInfo(resp.seed);
  const choice = resp.choices[0];
  $("variants-box").hidden = false;
  const card = variantCard(0);
  card.classList.add("done", "winner");
  card.dataset.seed = String(choice.seed ?? "");
  card.querySelector(".label").textContent = `winner · seed ${choice.seed ?? "?"}`;
  card.querySelector(".state").textContent = choice.finish_reason;
  const text = choice.message ? choice.message.content : choice.text;
  showText(card.querySelector(".text"), text, choice.spans);
  if (choice.trace) card.append(tracePlot(choice.trace));
  current.outputs = [{ seed: choice.seed, text, finish_reason: choice.finish_reason }];
  current.search = { ...resp.search, tree: undefined };
  const s = resp.search;
  const spend = s.spend || {};
  const run = spend.prompt_tokens ?? 0, reused = spend.prompt_tokens_reused ?? 0;
  const hit = run + reused > 0 ? ` · prefix cache ${Math.round((100 * reused) / (run + reused))}% of prompt tokens` : "";
  $("spend").textContent = `${s.strategy} · ${s.nodes} nodes · ${spend.generated_tokens ?? "?"} tokens${hit}`;
  if (s.tree) {
    const r = current;
    drawTree(s.tree, $("tree"), $("detail"), () => repeat(r));
  }
}

// -- history and export ----------------------------------------------------------------------
function history() {
  try { return parseJSON(localStorage.getItem(HISTORY) || "[]"); } catch { return []; }
}

function remember(r) {
  const runs = [{ time: r.time, form: r.form, body: r.body, seed: r.seed, outputs: r.outputs, search: r.search }, ...history()];
  localStorage.setItem(HISTORY, toJSON(runs.slice(0, HISTORY_MAX)));
  showHistory();
}

function showHistory() {
  const list = $("history");
  list.replaceChildren();
  for (const r of history()) {
    const first = (r.outputs[0] || {}).text || "";
    const what = r.body.search ? r.body.search.strategy : `n ${r.body.n}`;
    const item = el("li", {});
    const open = el("button", { type: "button", class: "link", title: first.slice(0, 300) },
      `${r.time.slice(11, 19)} · ${what} · seed ${r.seed} · ${r.form.prompt.slice(0, 40)}`);
    open.addEventListener("click", () => repeat(r));
    item.append(open);
    list.append(item);
  }
  $("clear-history").hidden = !list.children.length;
}

// The request as sent (with its seed, so it reruns as it ran) and what came back.
function exportRun(r) {
  const request = { ...r.body, seed: r.seed };
  const doc = {
    request, outputs: r.outputs, search: r.search, time: r.time,
    rerun: `curl -s ${location.origin}${r.url || "/v1/chat/completions"} -H 'Content-Type: application/json' -d "$(jq .request run.json)"`,
  };
  const a = el("a", { href: URL.createObjectURL(new Blob([toJSON(doc, 2) + "\n"], { type: "application/json" })), download: `sazanami-run-${r.seed}.json` });
  document.body.append(a);
  a.click();
  a.remove();
}

init().catch((e) => status(`cannot load /v1/sazanami: ${e}`, true));
