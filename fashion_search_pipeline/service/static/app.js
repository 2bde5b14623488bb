// The search page: talks to /v1 only; no build step, no dependencies.
"use strict";

const $ = (id) => document.getElementById(id);
const state = { query: null, offset: 0, filters: {}, inFlight: null };

async function api(path, options) {
  const response = await fetch(path, options);
  const body = await response.json().catch(() => ({ detail: response.statusText }));
  if (!response.ok) {
    const detail = typeof body.detail === "string" ? body.detail : JSON.stringify(body.detail);
    throw new Error(`${response.status}: ${detail}`);
  }
  return body;
}

async function loadModels() {
  const { models, default: chosen, fusions } = await api("/v1/models");
  $("model").replaceChildren(...models.map((m) => new Option(`${m.name} (${m.fusion})`, m.name, false, m.name === chosen)));
  $("fusion").append(...fusions.map((name) => new Option(name, name)));
  await loadFacets();
}

async function loadFacets() {
  const { facets } = await api(`/v1/facets?model=${encodeURIComponent($("model").value)}`);
  state.filters = {};
  $("facets").replaceChildren(...Object.entries(facets).filter(([, values]) => values.length > 1).map(([name, values]) => {
    const box = document.createElement("fieldset");
    const legend = document.createElement("legend");
    legend.textContent = name;
    const select = document.createElement("select");
    select.dataset.attribute = name;
    select.setAttribute("aria-label", name);
    select.append(new Option("any", ""), ...values.map((v) => new Option(`${v.value} (${v.count})`, v.value)));
    select.addEventListener("change", () => {
      if (select.value) state.filters[name] = select.value; else delete state.filters[name];
      if (state.query) run(state.query, 0);
    });
    box.append(legend, select);
    return box;
  }));
}

function options(offset) {
  return { model: $("model").value || null, fusion: $("fusion").value || null, k: Number($("k").value), offset,
           filters: state.filters, collapse: $("collapse").checked };
}

async function request(query, offset, signal) {
  if (query.file) {
    const form = new FormData();
    const o = options(offset);
    form.append("image", query.file);
    for (const key of ["model", "fusion", "k", "offset", "collapse"]) if (o[key] !== null) form.append(key, String(o[key]));
    form.append("filters", JSON.stringify(o.filters));
    return api("/v1/search/image", { method: "POST", body: form, signal });
  }
  const body = { ...options(offset), ...(query.text ? { text: query.text } : { item_id: query.itemId }) };
  return api("/v1/search", { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify(body),
                             signal });
}

// Run a search and show its answer. Only the newest search renders: starting one aborts the one in flight,
// so a slow earlier answer (another filter, the previous query) can never replace a newer one.
async function run(query, offset) {
  state.inFlight?.abort();
  const controller = new AbortController();
  state.inFlight = controller;
  state.query = query;
  if (offset === 0) {  // a new first page: "more" must not page the previous query meanwhile
    state.offset = 0;
    $("more").hidden = true;
  }
  $("error").hidden = true;
  $("status").textContent = "Searching…";
  const chip = $("query-chip");
  chip.hidden = !!query.text;
  chip.textContent = query.file ? `Photo: ${query.file.name}` : query.itemId ? `More like ${query.itemId}` : "";
  try {
    const started = performance.now();
    const answer = await request(query, offset, controller.signal);
    if (controller.signal.aborted) return;
    const elapsed = performance.now() - started;
    if (offset === 0) $("results").replaceChildren();
    $("results").append(...answer.products.map((product) => render(product)));
    state.offset = offset + answer.products.length;
    $("more").hidden = !answer.has_more;
    $("status").textContent = `${state.offset} products · model ${answer.model} · version ${answer.model_version} · ` +
      `fusion ${answer.fusion} · ${answer.timings_ms.total.toFixed(0)} ms server, ${elapsed.toFixed(0)} ms in all`;
  } catch (error) {
    if (controller.signal.aborted) return;
    $("status").textContent = "";
    $("error").textContent = error.message;
    $("error").hidden = false;
  }
}

// One result card; `variantOf`: the collapsed result whose variant it is (then it has no score).
function render(product, variantOf) {
  const item = $("product-template").content.firstElementChild.cloneNode(true);
  item.dataset.itemId = product.item_id;
  const img = item.querySelector("img");
  img.src = `${product.thumbnail_url}?size=256`;
  img.alt = product.description || product.item_id;
  item.querySelector(".description").textContent = product.description || product.item_id;
  item.querySelector(".meta").textContent = variantOf ? `variant of ${variantOf}` :
    `score ${product.score.toFixed(3)} · matched ${product.matched}`;
  item.querySelector(".attributes").textContent = Object.values(product.attributes).join(" · ");
  item.querySelector(".like").addEventListener("click", () => {
    window.scrollTo(0, 0);
    run({ itemId: product.item_id }, 0);
  });
  if (variantOf) {
    item.classList.add("variant");
    item.dataset.variantOf = variantOf;
  } else if (product.variants) {
    const button = item.querySelector(".variants");
    const label = `+${product.variants} variant${product.variants === 1 ? "" : "s"}`;
    button.textContent = label;
    button.hidden = false;
    button.addEventListener("click", () => toggleVariants(item, button, label));
  }
  return item;
}

// Show the other products of a collapsed result's cluster right after it, or hide them again.
async function toggleVariants(item, button, label) {
  const shown = [...$("results").children].filter((card) => card.dataset.variantOf === item.dataset.itemId);
  if (shown.length) {
    shown.forEach((card) => card.remove());
    button.textContent = label;
    button.setAttribute("aria-expanded", "false");
    return;
  }
  try {
    const model = encodeURIComponent($("model").value);
    const { variants } = await api(`/v1/items/${encodeURIComponent(item.dataset.itemId)}/variants?model=${model}`);
    item.after(...variants.map((variant) => render(variant, item.dataset.itemId)));
    button.textContent = "Hide variants";
    button.setAttribute("aria-expanded", "true");
  } catch (error) {
    $("error").textContent = error.message;
    $("error").hidden = false;
  }
}

$("search-form").addEventListener("submit", (event) => {
  event.preventDefault();
  const text = $("query").value.trim();
  if (text) run({ text }, 0);
});
$("image-input").addEventListener("change", () => {
  const file = $("image-input").files[0];
  if (file) run({ file }, 0);
});
$("more").addEventListener("click", () => run(state.query, state.offset));
$("model").addEventListener("change", async () => { await loadFacets(); if (state.query) run(state.query, 0); });
for (const id of ["k", "fusion", "collapse"]) $(id).addEventListener("change", () => { if (state.query) run(state.query, 0); });

// Drag-and-drop a photo anywhere on the page.
let dragDepth = 0;
document.addEventListener("dragenter", (event) => { event.preventDefault(); dragDepth += 1; $("drop-zone").hidden = false; });
document.addEventListener("dragover", (event) => event.preventDefault());
document.addEventListener("dragleave", () => { dragDepth -= 1; if (dragDepth <= 0) { dragDepth = 0; $("drop-zone").hidden = true; } });
document.addEventListener("drop", (event) => {
  event.preventDefault();
  dragDepth = 0;
  $("drop-zone").hidden = true;
  const file = event.dataTransfer.files[0];
  if (file && file.type.startsWith("image/")) run({ file }, 0);
});

loadModels().catch((error) => { $("error").textContent = error.message; $("error").hidden = false; });
