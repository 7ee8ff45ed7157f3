// Steering panel: prompt, layer, positions, one slider per feature; baseline and steered side by side.
// Sliders debounce while dragging and send at once on release; while the kernel is busy only the latest
// value waits (no queue of stale generations).

import { featureLabel, featureName, fmt, h, pct, setTrait, viewModel } from "./lib/common.js";
import { checkbox, layerPicker, numberInput, statusLine, textInput } from "./lib/controls.js";

function render({ model: host, el }) {
  const model = viewModel(host);  // every listener and timer of this view, removed by the cleanup returned
  const root = h("div", { class: "qs-widget qs-steer" });
  // Enter sends the prompt at once (Shift+Enter: a new line)
  const prompt = textInput(model, "prompt", "textarea", { class: "qs-prompt", rows: "2", style: "width:100%",
    title: "Enter regenerates; Shift+Enter adds a line" }, { enter: true });
  const positions = h("select", { class: "qs-positions" },
    h("option", { value: "all", text: "prompt + generated" }),
    h("option", { value: "prompt", text: "prompt only" }),
    h("option", { value: "generated", text: "generated only" }));
  const maxTokens = numberInput(model, "max_new_tokens", { class: "qs-max-tokens", min: "1", max: "512", style: "width:5em" },
    { enter: true });
  // generation controls: greedy at temperature 0; the library's repetition penalty shown as the default
  const temperature = numberInput(model, "temperature", { class: "qs-temperature", min: "0", max: "5", step: "0.1",
    style: "width:4.5em", title: "0 = greedy; above 0 samples (with the seed)" }, { enter: true });
  const topP = numberInput(model, "top_p", { class: "qs-top-p", min: "0.01", max: "1", step: "0.05", style: "width:4.5em",
    title: "nucleus sampling: the smallest set of tokens with this much probability (used when temperature > 0)" },
  { enter: true });
  const seed = numberInput(model, "seed", { class: "qs-seed", min: "0", step: "1", style: "width:5em",
    title: "random seed of the sampling: baseline and steered text draw the same numbers" }, { enter: true });
  const penalty = numberInput(model, "repetition_penalty", { class: "qs-repetition-penalty", min: "0.1", max: "10",
    step: "0.05", style: "width:4.5em" }, { enter: true });
  const penaltyDefault = h("span", { class: "qs-muted qs-penalty-default" });
  const chat = checkbox(model, "chat", { class: "qs-chat", title: "wrap the prompt in the model's chat template" });
  const addInput = h("input", { type: "number", class: "qs-add-input", min: "0", placeholder: "feature id", style: "width:7em" });
  const addButton = h("button", { class: "qs-add", text: "add" });
  const search = h("input", { type: "search", class: "qs-search", placeholder: "search labels / top tokens" });
  const results = h("div", { class: "qs-search-results" });
  const sliders = h("div", { class: "qs-sliders" });
  const baseline = h("div", { class: "qs-output qs-baseline" });
  const steered = h("div", { class: "qs-output qs-steered" });
  const timing = h("span", { class: "qs-muted qs-timing" });
  const madeBy = h("span", { class: "qs-made-by" });
  const sweep = h("table", { class: "qs-table qs-sweep" });
  const nextTable = h("table", { class: "qs-table qs-next" });
  root.append(
    h("div", { class: "qs-section" }, h("h4", { text: "prompt" }), prompt),
    h("div", { class: "qs-toolbar" },
      h("label", {}, "layer ", layerPicker(model)), h("label", {}, "steer ", positions), h("label", {}, "tokens ", maxTokens),
      h("span", {}, addInput, addButton), search),
    h("div", { class: "qs-toolbar qs-generation" },
      h("label", {}, "temperature ", temperature), h("label", {}, "top-p ", topP), h("label", {}, "seed ", seed),
      h("label", {}, "repetition penalty ", penalty, penaltyDefault), h("label", {}, chat, " chat template")),
    results, statusLine(model), sliders,
    h("div", { class: "qs-columns" },
      h("div", {}, h("h4", { text: "baseline" }), baseline),
      h("div", {}, h("h4", {}, "steered ", madeBy, " ", timing), steered)),
    nextTable, sweep);
  el.append(root);

  const syncDefault = () => {
    const d = model.get("default_repetition_penalty");
    penaltyDefault.textContent = ` (default ${fmt(d, 2)})`;
    penaltyDefault.title = "the library's default repetition penalty (1 = none)";
  };
  model.on("change:default_repetition_penalty", syncDefault);
  syncDefault();
  const sampled = () => {  // top-p and seed only matter when sampling
    const on = model.get("temperature") > 0;
    topP.disabled = !on;
    seed.disabled = !on;
  };
  model.on("change:temperature", sampled);
  sampled();
  positions.addEventListener("change", () => setTrait(model, "positions", positions.value));
  const syncPositions = () => { positions.value = model.get("positions"); };
  model.on("change:positions", syncPositions);
  syncPositions();
  const add = () => { if (addInput.value !== "") model.send({ event: "add", feature: Number(addInput.value) }); };
  addButton.addEventListener("click", add);
  addInput.addEventListener("keydown", (e) => { if (e.key === "Enter") add(); });
  let searchTimer = null;
  search.addEventListener("input", () => {
    model.cancel(searchTimer);
    searchTimer = model.later(() => model.send({ event: "search", query: search.value }), 250);
  });

  // --- sending alphas: debounce while dragging, immediate on release, coalesce while busy
  let pending = null;
  let timer = null;
  function sendFeatures(rows) {
    model.cancel(timer);
    if (model.get("busy")) { pending = rows; return; }
    pending = null;
    el.dataset.sentAt = String(performance.now());
    setTrait(model, "features", rows);
  }
  model.on("change:busy", () => { if (!model.get("busy") && pending) sendFeatures(pending); });
  // the slider snaps to 0 within 3% of its range either side of the centre (0 = not steering)
  const snap = (v) => (Math.abs(v) <= 0.03 * model.get("alpha_max") ? 0 : v);
  function withAlpha(index, alpha) {
    return model.get("features").map((row, i) => (i === index ? { ...row, alpha } : row));
  }

  // a slider added after the panel was drawn ("steer with it", add, a search result) is scrolled into view and
  // highlighted for a moment: it may be far below where the user clicked. The rows are drawn anew on every change
  // (the new feature's name arrives just after it), so what is new is remembered by key, not on the element.
  const NEW_MS = 2500;
  let drawn = null;
  const fresh = new Map();  // "layer/feature" -> when it appeared
  function renderSliders() {
    const top = model.get("alpha_max");
    const keys = model.get("features").map((row) => `${row.layer}/${row.feature}`);
    const now = performance.now();
    const added = drawn ? keys.filter((k) => !drawn.has(k)) : [];
    drawn = new Set(keys);
    for (const k of added) {
      fresh.set(k, now);
      model.later(() => {  // the light goes out on whatever row shows the feature by then
        fresh.delete(k);
        for (const row of sliders.querySelectorAll(".qs-slider-row.qs-new")) {
          if (!fresh.has(`${row.dataset.layer}/${row.dataset.feature}`)) row.classList.remove("qs-new");
        }
      }, NEW_MS);
    }
    for (const k of fresh.keys()) if (!drawn.has(k)) fresh.delete(k);
    sliders.replaceChildren(...model.get("features").map((row, index) => {
      const value = h("span", { class: "qs-num qs-alpha-value", text: fmt(row.alpha, 1) });
      const slider = h("input", { type: "range", class: "qs-slider", min: String(-top), max: String(top), step: "0.5",
        value: String(row.alpha), "data-feature": String(row.feature) });
      const current = () => { const v = snap(Number(slider.value)); slider.value = String(v); return v; };
      slider.addEventListener("input", () => {
        value.textContent = fmt(current(), 1);
        markStale();
        model.cancel(timer);
        timer = model.later(() => sendFeatures(withAlpha(index, current())), 200);
      });
      slider.addEventListener("change", () => sendFeatures(withAlpha(index, current())));
      const reset = h("button", { class: "qs-reset", text: "0", title: "reset to 0 (no steering)", onclick: () => {
        slider.value = "0"; value.textContent = fmt(0, 1); markStale(); sendFeatures(withAlpha(index, 0)); } });
      return h("div", { class: "qs-slider-row", "data-feature": String(row.feature), "data-layer": String(row.layer) },
        h("span", { class: "qs-slider-name", title: featureName(row.layer, row.feature, model.get("names")) },
          ...featureLabel(row.layer, row.feature, model.get("names"))), slider, value, reset,
        h("button", { class: "qs-sweep-button", text: "sweep", onclick: () => model.send({ event: "sweep", index }) }),
        h("button", { class: "qs-remove", text: "×", title: "remove", onclick: () => model.send({ event: "remove", index }) }));
    }));
    if (!model.get("features").length) sliders.append(h("div", { class: "qs-muted", text: "no features yet: add one by id or search" }));
    for (const row of sliders.querySelectorAll(".qs-slider-row")) {
      const k = `${row.dataset.layer}/${row.dataset.feature}`;
      if (!fresh.has(k)) continue;
      row.classList.add("qs-new");
      // scrolled to when it appears; a redraw while it is lit keeps it in view (the rows above may have changed)
      row.scrollIntoView({ block: "center", behavior: added.includes(k) ? "smooth" : "auto" });
    }
  }

  // every result says which alphas made it; while the sliders say otherwise the box is marked as waiting
  const key = (rows) => rows.filter((r) => r.alpha).map((r) => `${r.layer}:${r.feature}=${Number(r.alpha)}`).join(",");
  function slidersKey() {
    const rows = model.get("features").map((row) => ({ ...row }));
    sliders.querySelectorAll(".qs-slider").forEach((s, i) => { if (rows[i]) rows[i].alpha = Number(s.value); });
    return key(rows);
  }
  function markStale() {
    const stale = model.get("generations") > 0 && slidersKey() !== key(model.get("steered_for"));
    steered.classList.toggle("qs-stale", stale);
    steered.title = stale ? "regenerating for the sliders' values…" : "";
  }
  function describe(rows) {
    const on = rows.filter((r) => r.alpha);
    return on.length ? "at " + on.map((r) => `L${r.layer} f${r.feature} ${r.alpha > 0 ? "+" : ""}${fmt(r.alpha, 1)}`).join(", ")
      : "(all sliders at 0: the baseline)";
  }
  const placeholder = (text) => h("span", { class: "qs-muted qs-placeholder", text });
  function renderOutputs() {
    const differs = model.get("differs");
    const generated = model.get("generations") > 0;
    baseline.replaceChildren(...(generated ? model.get("baseline_tokens").map((t) => h("span", { class: "qs-gen-tok", text: t }))
      : [placeholder("generating…")]));
    steered.replaceChildren(...(generated ? model.get("steered_tokens").map((t, i) =>
      h("span", { class: differs[i] ? "qs-gen-tok qs-diff" : "qs-gen-tok", text: t })) : [placeholder("generating…")]));
    madeBy.textContent = generated ? describe(model.get("steered_for")) : "";
    timing.textContent = generated ? `(${fmt(model.get("generation_ms"), 0)} ms in the kernel)` : "";
    markStale();
    el.dataset.generations = String(model.get("generations"));
    el.dataset.renderedAt = String(performance.now());
  }

  function renderSweep() {
    const rows = model.get("sweep_rows");
    sweep.replaceChildren(...(rows.length ? [h("tr", {}, h("th", { text: "alpha" }), h("th", { text: "steered text" }))] : []),
      ...rows.map((r) => h("tr", {}, h("td", { class: "qs-num", text: fmt(r.alpha, 1) }),
        h("td", { class: r.same ? "qs-context qs-muted" : "qs-context", text: r.text }))));
  }

  function renderNext() {
    const rows = model.get("next_tokens");
    const inBaseline = new Set(rows.map((r) => r.baseline_token));
    nextTable.replaceChildren(...(rows.length ? [
      h("caption", { class: "qs-muted", text: "next token after the prompt" }),
      h("tr", {}, h("th", { text: "#" }), h("th", { text: "baseline" }), h("th", { text: "p" }),
        h("th", { text: "steered" }), h("th", { text: "p" }))] : []),
      ...rows.map((r) => h("tr", {}, h("td", { class: "qs-num", text: String(r.rank) }),
        h("td", { class: "qs-next-tok", text: JSON.stringify(r.baseline_token) }), h("td", { class: "qs-num", text: pct(r.baseline_p) }),
        h("td", { class: inBaseline.has(r.steered_token) ? "qs-next-tok" : "qs-next-tok qs-diff",
          title: inBaseline.has(r.steered_token) ? "" : "not among the baseline's top tokens", text: JSON.stringify(r.steered_token) }),
        h("td", { class: "qs-num", text: pct(r.steered_p) }))));
  }

  function renderResults() {
    const layer = model.get("layer");
    results.replaceChildren(...model.get("search_results").map((r) => h("button", { class: "qs-feature qs-result",
      "data-feature": String(r.feature), title: `${r.match}: ${r.top_tokens.map((t) => JSON.stringify(t)).join(" ")}`,
      onclick: () => model.send({ event: "add", feature: r.feature }) },
      ...featureLabel(layer, r.feature, model.get("names"), false))));
  }

  model.on("change:features", renderSliders);
  model.on("change:names", () => { renderSliders(); renderResults(); });
  model.on("change:alpha_max", renderSliders);
  model.on("change:generations", renderOutputs);
  model.on("change:features", markStale);
  model.on("change:sweep_rows", renderSweep);
  model.on("change:next_tokens", renderNext);
  model.on("change:search_results", renderResults);
  renderSliders(); renderOutputs(); renderNext(); renderSweep(); renderResults();
  return model.dispose;
}

export default { render };
