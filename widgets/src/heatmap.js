// Activation heatmap: tokens coloured by one feature; hover a token for its top features; a canvas grid of the
// strongest features over all tokens. Clicking any feature name selects it (trait `feature`).

import { backdrop, f32, featureLabel, featureName, fmt, h, heat, i32, onBackdrop, setTrait, shade, u8, viewModel }
  from "./lib/common.js";
import { checkbox, layerPicker, numberInput, statusLine } from "./lib/controls.js";

function render({ model: host, el }) {
  const model = viewModel(host);  // every listener and timer of this view, removed by the cleanup returned
  const root = h("div", { class: "qs-widget qs-heatmap" });
  const featureInput = numberInput(model, "feature", { class: "qs-feature-input", min: "0", title: "feature id" },
    { enter: true });
  const skipFirst = checkbox(model, "skip_first", { class: "qs-skip-first" });
  const skipSpecial = checkbox(model, "skip_special", { class: "qs-skip-special" });
  const legend = h("span", { class: "qs-legend" });
  const texts = h("div", { class: "qs-texts" });
  const tooltip = h("div", { class: "qs-tooltip", style: "display:none" });
  const gridLabels = h("div", { class: "qs-grid-labels" });
  const canvas = h("canvas", { class: "qs-grid" });
  const gridTokens = h("div", { class: "qs-grid-tokens" });  // the columns' tokens, under the grid
  const gridInfo = h("div", { class: "qs-grid-info" });
  root.append(
    h("div", { class: "qs-toolbar" },
      h("label", {}, "layer ", layerPicker(model)),
      h("label", {}, "feature ", featureInput),
      h("label", {}, skipFirst, " skip first token"),
      h("label", {}, skipSpecial, " skip special tokens"),
      legend),
    statusLine(model), texts,
    h("div", { class: "qs-grid-title", text: "strongest features (rows) × tokens (columns) — click a name to select" }),
    h("div", { class: "qs-grid-wrap" }, gridLabels, h("div", { class: "qs-grid-scroll" }, canvas, gridTokens)),
    gridInfo, tooltip);
  el.append(root);

  let spans = [];

  function renderTokens() {
    const start = performance.now();
    const counted = u8(model.get("counted"));
    const frag = document.createDocumentFragment();
    spans = [];
    const notes = model.get("token_notes") || [];
    let i = 0;
    for (const [t, toks] of model.get("tokens").entries()) {
      const line = h("div", { class: "qs-text", "data-text": String(t) });
      for (const [p, tok] of toks.entries()) {
        // a character split over byte tokens is whole on its first token; the others stay as thin cells
        let cls = counted[i] ? "qs-tok" : "qs-tok qs-skipped";
        if (tok === "") cls += " qs-tok-cont";
        const span = h("span", { class: cls, "data-i": String(i) });
        const note = (notes[t] || [])[p];
        if (note) span.title = note;
        span.textContent = tok;
        line.append(span);
        spans.push(span);
        i += 1;
      }
      frag.append(line);
    }
    texts.replaceChildren(frag);
    colour();
    renderGrid();
    el.dataset.renderMs = fmt(performance.now() - start, 1);
    el.dataset.tokens = String(spans.length);
  }

  function colour() {
    const values = f32(model.get("values"));
    const vmax = model.get("vmax");
    const base = backdrop(texts);
    for (let i = 0; i < spans.length; i++) {
      const v = values[i] || 0;
      shade(spans[i], v, vmax, base);
      spans[i].dataset.act = v > 0 ? fmt(v, 3) : "0";
    }
    const f = model.get("feature");
    legend.replaceChildren(
      h("span", { class: "qs-legend-name", "data-feature": String(f) },
        ...featureLabel(model.get("layer"), f, model.get("names"), false)),
      h("span", { class: "qs-legend-bar" }),
      h("span", { class: "qs-legend-max", text: `0 … ${fmt(vmax)}` }));
    for (const label of gridLabels.children) label.classList.toggle("qs-selected", Number(label.dataset.feature) === f);
    el.dataset.feature = String(f);
  }

  function renderGrid() {
    const features = model.get("grid_features");
    const grid = f32(model.get("grid"));
    const n = spans.length;
    const cell = Math.max(2, Math.min(14, Math.floor(1100 / Math.max(n, 1))));
    const rowH = 16;
    canvas.width = Math.max(1, n * cell);
    canvas.height = Math.max(1, features.length * rowH);
    canvas.dataset.cell = String(cell);
    const ctx = canvas.getContext("2d");
    ctx.clearRect(0, 0, canvas.width, canvas.height);
    gridLabels.replaceChildren();
    // each column's token under it (every `step`-th where columns are narrower than a line of text)
    const step = Math.max(1, Math.ceil(11 / cell));
    gridTokens.style.width = `${canvas.width}px`;
    const labels = [];
    for (let i = 0; i < n; i += step) {
      const text = spans[i].textContent;
      labels.push(h("span", { class: "qs-grid-token", "data-i": String(i), title: `token ${i}: ${JSON.stringify(text)}`,
        style: `left:${i * cell}px;width:${Math.min(step * cell, 14)}px`, text: text.trim() || "·" }));
    }
    gridTokens.replaceChildren(...labels);
    features.forEach((f, r) => {
      let vmax = 0;
      for (let i = 0; i < n; i++) vmax = Math.max(vmax, grid[r * n + i]);
      for (let i = 0; i < n; i++) {
        const v = grid[r * n + i];
        if (v > 0) {
          ctx.fillStyle = heat(v, vmax);
          ctx.fillRect(i * cell, r * rowH, cell, rowH - 1);
        }
      }
      gridLabels.append(h("button", {
        class: "qs-feature qs-grid-label", "data-feature": String(f), style: `height:${rowH}px`,
        title: featureName(model.get("layer"), f, model.get("names")), onclick: () => setTrait(model, "feature", f) },
        ...featureLabel(model.get("layer"), f, model.get("names"), false)));
    });
  }

  canvas.addEventListener("mousemove", (event) => {
    const cell = Number(canvas.dataset.cell);
    const i = Math.floor(event.offsetX / cell);
    const r = Math.floor(event.offsetY / 16);
    const features = model.get("grid_features");
    if (i < spans.length && r < features.length) {
      const v = f32(model.get("grid"))[r * spans.length + i];
      gridInfo.textContent = `token ${i} ${JSON.stringify(spans[i].textContent)} · ` +
        `${featureName(model.get("layer"), features[r], model.get("names"), false)} = ${fmt(v)}`;
    }
  });

  texts.addEventListener("mouseover", (event) => {
    const span = event.target.closest(".qs-tok");
    if (!span) return;
    const i = Number(span.dataset.i);
    const k = model.get("n_top");
    const values = f32(model.get("top_values"));
    const indices = i32(model.get("top_indices"));
    const found = [];
    for (let j = 0; j < k; j++) {
      const v = values[i * k + j];
      if (v > 0) found.push([indices[i * k + j], v]);
    }
    found.sort((x, y) => y[1] - x[1]);  // strongest first (the kernel ranks them by rarity too)
    const rows = found.map(([f, v]) => h("div", { class: "qs-feature qs-tip-row", "data-feature": String(f),
      onclick: () => setTrait(model, "feature", f) },
      h("span", { class: "qs-tip-name" }, ...featureLabel(model.get("layer"), f, model.get("names"), false)),
      h("span", { class: "qs-num", text: fmt(v) })));
    tooltip.replaceChildren(
      h("div", { class: "qs-tip-head", text: `token ${i}: ${JSON.stringify(span.textContent)}` +
        (span.title ? ` (${span.title})` : "") }),
      ...(rows.length ? rows : [h("div", { class: "qs-muted", text: span.classList.contains("qs-skipped") ? "skipped" : "no feature fires" })]));
    tooltip.style.display = "block";
    const box = root.getBoundingClientRect();
    const at = span.getBoundingClientRect();
    tooltip.style.left = `${at.left - box.left}px`;
    tooltip.style.top = `${at.bottom - box.top + 4}px`;
  });
  root.addEventListener("mouseleave", () => { tooltip.style.display = "none"; });

  model.on("change:tokens", renderTokens);
  model.on("change:values", colour);
  model.on("change:vmax", colour);
  model.on("change:grid", renderGrid);
  model.on("change:names", () => { renderGrid(); colour(); });
  onBackdrop(model, el, colour);
  renderTokens();
  return model.dispose;
}

export default { render };
