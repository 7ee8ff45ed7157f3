// Compare: two texts, per-layer features ranked by firing-rate difference; a row click colours both texts.

function renderCompare({ model, el }) {
  const root = h("div", { class: "qs-widget qs-compare" });
  const a = h("textarea", { class: "qs-text-a", rows: "2", style: "width:100%" });
  const b = h("textarea", { class: "qs-text-b", rows: "2", style: "width:100%" });
  const skipFirst = h("input", { type: "checkbox", class: "qs-skip-first" });
  const skipShared = h("input", { type: "checkbox", class: "qs-skip-shared" });
  const table = h("table", { class: "qs-table qs-compare-table" });
  const textsBox = h("div", { class: "qs-texts qs-compare-texts" });
  const caption = h("div", { class: "qs-muted qs-compare-caption" });
  root.append(
    h("div", { class: "qs-columns" }, h("div", {}, h("h4", { text: "text A" }), a), h("div", {}, h("h4", { text: "text B" }), b)),
    h("div", { class: "qs-toolbar" }, h("label", {}, skipFirst, " skip first token"), h("label", {}, skipShared, " skip shared prefix")),
    statusLine(model),
    h("div", { class: "qs-columns" }, h("div", {}, table), h("div", {}, caption, textsBox)));
  el.append(root);
  a.addEventListener("change", () => setTrait(model, "text_a", a.value));
  b.addEventListener("change", () => setTrait(model, "text_b", b.value));
  skipFirst.addEventListener("change", () => setTrait(model, "skip_first", skipFirst.checked));
  skipShared.addEventListener("change", () => setTrait(model, "skip_shared_prefix", skipShared.checked));

  function renderTable() {
    const sel = model.get("selected");
    table.replaceChildren(
      h("tr", {}, ...["layer", "feature", "rate A", "rate B", "A − B"].map((t) => h("th", { text: t }))),
      ...model.get("rows").map((r) => h("tr", {
        class: "qs-clickable qs-compare-row" + (r.layer === sel.layer && r.feature === sel.feature ? " qs-selected" : ""),
        "data-layer": String(r.layer), "data-feature": String(r.feature),
        onclick: () => setTrait(model, "selected", { layer: r.layer, feature: r.feature }) },
        h("td", { text: String(r.layer) }), h("td", { text: `f${r.feature}` }),
        h("td", { class: "qs-num", text: fmt(r.rate_a) }), h("td", { class: "qs-num", text: fmt(r.rate_b) }),
        h("td", { class: "qs-num", text: fmt(r.diff) }))));
  }
  function renderTexts() {
    const values = f32(model.get("values"));
    const vmax = model.get("vmax");
    const shared = model.get("shared");
    const sel = model.get("selected");
    caption.textContent = `L${sel.layer} f${sel.feature} · colour 0 … ${fmt(vmax)}`;
    let i = 0;
    textsBox.replaceChildren(...model.get("tokens").map((toks, t) => h("div", { class: "qs-text", "data-text": String(t) },
      h("b", { text: t === 0 ? "A: " : "B: " }),
      ...toks.map((tok, p) => {
        const span = h("span", { class: p < shared ? "qs-tok qs-skipped" : "qs-tok", text: tok, "data-act": fmt(values[i] || 0, 3) });
        span.style.background = heat(values[i] || 0, vmax);
        i += 1;
        return span;
      }))));
    renderTable();
  }
  function syncInputs() {
    if (document.activeElement !== a) a.value = model.get("text_a");
    if (document.activeElement !== b) b.value = model.get("text_b");
    skipFirst.checked = model.get("skip_first");
    skipShared.checked = model.get("skip_shared_prefix");
  }
  model.on("change:rows", renderTable);
  model.on("change:selected", renderTable);
  model.on("change:values", renderTexts);
  model.on("change:tokens", renderTexts);
  for (const name of ["text_a", "text_b", "skip_first", "skip_shared_prefix"]) model.on(`change:${name}`, syncInputs);
  syncInputs(); renderTable(); renderTexts();
}

export default { render: renderCompare };
