// Activation heatmap: tokens coloured by one feature; hover a token for its top features; a canvas grid of the
// strongest features over all tokens. Clicking any feature name selects it (trait `feature`).

function renderHeatmap({ model, el }) {
  const root = h("div", { class: "qs-widget qs-heatmap" });
  const layerSelect = h("select", { class: "qs-layer", title: "layer" });
  const featureInput = h("input", { class: "qs-feature-input", type: "number", min: "0", title: "feature id" });
  const skipFirst = h("input", { type: "checkbox", class: "qs-skip-first" });
  const skipSpecial = h("input", { type: "checkbox", class: "qs-skip-special" });
  const legend = h("span", { class: "qs-legend" });
  const texts = h("div", { class: "qs-texts" });
  const tooltip = h("div", { class: "qs-tooltip", style: "display:none" });
  const gridLabels = h("div", { class: "qs-grid-labels" });
  const canvas = h("canvas", { class: "qs-grid" });
  const gridInfo = h("div", { class: "qs-grid-info" });
  root.append(
    h("div", { class: "qs-toolbar" },
      h("label", {}, "layer ", layerSelect),
      h("label", {}, "feature ", featureInput),
      h("label", {}, skipFirst, " skip first token"),
      h("label", {}, skipSpecial, " skip special tokens"),
      legend),
    statusLine(model), texts,
    h("div", { class: "qs-grid-title", text: "strongest features (rows) × tokens (columns) — click a name to select" }),
    h("div", { class: "qs-grid-wrap" }, gridLabels, h("div", { class: "qs-grid-scroll" }, canvas)),
    gridInfo, tooltip);
  el.append(root);

  let spans = [];

  layerSelect.addEventListener("change", () => setTrait(model, "layer", Number(layerSelect.value)));
  featureInput.addEventListener("change", () => setTrait(model, "feature", Number(featureInput.value)));
  featureInput.addEventListener("keydown", (e) => { if (e.key === "Enter") setTrait(model, "feature", Number(featureInput.value)); });
  skipFirst.addEventListener("change", () => setTrait(model, "skip_first", skipFirst.checked));
  skipSpecial.addEventListener("change", () => setTrait(model, "skip_special", skipSpecial.checked));

  function syncControls() {
    const n = model.get("n_layers");
    if (layerSelect.options.length !== n) {
      layerSelect.replaceChildren(...Array.from({ length: n }, (_, i) => h("option", { value: String(i), text: String(i) })));
    }
    layerSelect.value = String(model.get("layer"));
    featureInput.value = String(model.get("feature"));
    skipFirst.checked = model.get("skip_first");
    skipSpecial.checked = model.get("skip_special");
  }

  function renderTokens() {
    const start = performance.now();
    const counted = u8(model.get("counted"));
    const frag = document.createDocumentFragment();
    spans = [];
    let i = 0;
    for (const [t, toks] of model.get("tokens").entries()) {
      const line = h("div", { class: "qs-text", "data-text": String(t) });
      for (const tok of toks) {
        const span = h("span", { class: counted[i] ? "qs-tok" : "qs-tok qs-skipped", "data-i": String(i) });
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
    el.dataset.renderMs = (performance.now() - start).toFixed(1);
    el.dataset.tokens = String(spans.length);
  }

  function colour() {
    const values = f32(model.get("values"));
    const vmax = model.get("vmax");
    for (let i = 0; i < spans.length; i++) {
      const v = values[i] || 0;
      spans[i].style.background = heat(v, vmax);
      spans[i].dataset.act = v > 0 ? v.toFixed(3) : "0";
    }
    const f = model.get("feature");
    legend.replaceChildren(
      h("span", { class: "qs-legend-name", text: featureName(f, model.get("labels")) }),
      h("span", { class: "qs-legend-bar" }),
      h("span", { class: "qs-legend-max", text: `0 … ${fmt(vmax)}` }));
    featureInput.value = String(f);
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
        text: featureName(f, model.get("labels")), onclick: () => setTrait(model, "feature", f) }));
    });
  }

  canvas.addEventListener("mousemove", (event) => {
    const cell = Number(canvas.dataset.cell);
    const i = Math.floor(event.offsetX / cell);
    const r = Math.floor(event.offsetY / 16);
    const features = model.get("grid_features");
    if (i < spans.length && r < features.length) {
      const v = f32(model.get("grid"))[r * spans.length + i];
      gridInfo.textContent = `token ${i} ${JSON.stringify(spans[i].textContent)} · f${features[r]} = ${fmt(v)}`;
    }
  });

  texts.addEventListener("mouseover", (event) => {
    const span = event.target.closest(".qs-tok");
    if (!span) return;
    const i = Number(span.dataset.i);
    const k = model.get("n_top");
    const values = f32(model.get("top_values"));
    const indices = i32(model.get("top_indices"));
    const rows = [];
    for (let j = 0; j < k; j++) {
      const v = values[i * k + j];
      if (v > 0) {
        const f = indices[i * k + j];
        rows.push(h("div", { class: "qs-feature qs-tip-row", "data-feature": String(f),
          onclick: () => setTrait(model, "feature", f) },
          h("span", { text: featureName(f, model.get("labels")) }), h("span", { class: "qs-num", text: fmt(v) })));
      }
    }
    tooltip.replaceChildren(
      h("div", { class: "qs-tip-head", text: `token ${i}: ${JSON.stringify(span.textContent)}` }),
      ...(rows.length ? rows : [h("div", { class: "qs-muted", text: span.classList.contains("qs-skipped") ? "skipped" : "no feature fires" })]));
    tooltip.style.display = "block";
    const box = root.getBoundingClientRect();
    const at = span.getBoundingClientRect();
    tooltip.style.left = `${at.left - box.left}px`;
    tooltip.style.top = `${at.bottom - box.top + 4}px`;
  });
  root.addEventListener("mouseleave", () => { tooltip.style.display = "none"; });

  model.on("change:tokens", () => { syncControls(); renderTokens(); });
  model.on("change:values", colour);
  model.on("change:vmax", colour);
  model.on("change:grid", renderGrid);
  model.on("change:labels", () => { renderGrid(); colour(); });
  for (const name of ["layer", "n_layers", "skip_first", "skip_special"]) model.on(`change:${name}`, syncControls);
  syncControls();
  renderTokens();
}

export default { render: renderHeatmap };
