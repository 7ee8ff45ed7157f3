// Compare: two texts, per-layer features ranked by firing-rate difference; a row click colours both texts.

import { backdrop, f32, featureLabel, featureName, fmt, h, onBackdrop, setTrait, shade, viewModel } from "./lib/common.js";
import { checkbox, statusLine, textInput } from "./lib/controls.js";

function render({ model: host, el }) {
  const model = viewModel(host);  // every listener and timer of this view, removed by the cleanup returned
  const root = h("div", { class: "qs-widget qs-compare" });
  const a = textInput(model, "text_a", "textarea", { class: "qs-text-a", rows: "2", style: "width:100%" });
  const b = textInput(model, "text_b", "textarea", { class: "qs-text-b", rows: "2", style: "width:100%" });
  const skipFirst = checkbox(model, "skip_first", { class: "qs-skip-first" });
  const skipShared = checkbox(model, "skip_shared_prefix", { class: "qs-skip-shared" });
  const table = h("table", { class: "qs-table qs-compare-table" });
  const textsBox = h("div", { class: "qs-texts qs-compare-texts" });
  const caption = h("div", { class: "qs-muted qs-compare-caption" });
  root.append(
    h("div", { class: "qs-columns" }, h("div", {}, h("h4", { text: "text A" }), a), h("div", {}, h("h4", { text: "text B" }), b)),
    h("div", { class: "qs-toolbar" }, h("label", {}, skipFirst, " skip first token"), h("label", {}, skipShared, " skip shared prefix")),
    statusLine(model),
    h("div", { class: "qs-columns" }, h("div", {}, table), h("div", {}, caption, textsBox)));
  el.append(root);

  function renderTable() {
    const sel = model.get("selected");
    table.replaceChildren(
      h("tr", {}, ...["layer", "feature", "rate A", "rate B", "A − B"].map((t) => h("th", { text: t }))),
      ...model.get("rows").map((r) => h("tr", {
        class: "qs-clickable qs-compare-row" + (r.layer === sel.layer && r.feature === sel.feature ? " qs-selected" : ""),
        "data-layer": String(r.layer), "data-feature": String(r.feature),
        onclick: () => setTrait(model, "selected", { layer: r.layer, feature: r.feature }) },
        h("td", { text: String(r.layer) }),
        h("td", { class: "qs-compare-feature" }, ...featureLabel(r.layer, r.feature, model.get("names"), false)),
        h("td", { class: "qs-num", text: fmt(r.rate_a) }), h("td", { class: "qs-num", text: fmt(r.rate_b) }),
        h("td", { class: "qs-num", text: fmt(r.diff) }))));
  }
  function renderTexts() {
    const values = f32(model.get("values"));
    const vmax = model.get("vmax");
    const shared = model.get("shared");
    const sel = model.get("selected");
    caption.textContent = `${featureName(sel.layer, sel.feature, model.get("names"))} · colour 0 … ${fmt(vmax)}`;
    let i = 0;
    const base = backdrop(textsBox);
    textsBox.replaceChildren(...model.get("tokens").map((toks, t) => h("div", { class: "qs-text", "data-text": String(t) },
      h("b", { text: t === 0 ? "A: " : "B: " }),
      ...toks.map((tok, p) => {
        const span = h("span", { class: p < shared ? "qs-tok qs-skipped" : "qs-tok", text: tok, "data-act": fmt(values[i] || 0, 3) });
        shade(span, values[i] || 0, vmax, base);
        i += 1;
        return span;
      }))));
    renderTable();
  }
  model.on("change:rows", renderTable);
  model.on("change:names", renderTexts);
  model.on("change:selected", renderTable);
  model.on("change:values", renderTexts);
  model.on("change:tokens", renderTexts);
  renderTable(); renderTexts();
  onBackdrop(model, el, renderTexts);
  return model.dispose;
}

export default { render };
