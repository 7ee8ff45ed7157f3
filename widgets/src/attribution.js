// Attribution panel: the prompt's tokens coloured by their total attribution to the target, the features ranked
// with signed bars; a click on a feature selects it (the kernel opens its card), "ablate" / "steer" re-run the
// prompt and show the target's new probability beside the old one.

import { backdrop, f32, featureLabel, featureName, fmt, h, onBackdrop, pct, shadeSigned, signedHeat, viewModel }
  from "./lib/common.js";
import { layerPicker, statusLine, textInput } from "./lib/controls.js";

/** A probability readable at any size: 12.3% down to 0.1%, then 4.2e-6. */
function prob(p) {
  return p >= 0.001 ? pct(p) : Number(p).toExponential(1);
}

function render({ model: host, el }) {
  const model = viewModel(host);  // every listener and timer of this view, removed by the cleanup returned
  const root = h("div", { class: "qs-widget qs-attr" });
  const prompt = textInput(model, "prompt", "textarea", { class: "qs-prompt", rows: "2", style: "width:100%" });
  const target = textInput(model, "target", "input", { class: "qs-attr-target", placeholder: "top token",
    style: "width:8em" }, { enter: true });
  const summary = h("div", { class: "qs-attr-summary" });
  const tokens = h("div", { class: "qs-attr-tokens qs-context" });
  const bars = h("div", { class: "qs-attr-features" });
  root.append(
    h("div", { class: "qs-section" }, h("h4", { text: "prompt" }), prompt),
    h("div", { class: "qs-toolbar" }, h("label", {}, "target ", target), h("label", {}, "layer ", layerPicker(model))),
    statusLine(model), summary, tokens,
    h("div", { class: "qs-section" }, h("h4", { text: "features by attribution (click a name for its card)" }), bars));
  el.append(root);

  function renderSummary() {
    const shown = JSON.stringify(model.get("target_token"));
    const it = model.get("intervention");
    const parts = [h("span", { text: `p(${shown}) = ` }), h("b", { class: "qs-attr-p", text: prob(model.get("probability")) })];
    if (it && it.action) {
      const what = it.action === "ablate" ? "ablated" : `steered ${fmt(it.value, 1)}`;
      parts.push(h("span", { text: " → " }), h("b", { class: "qs-attr-new-p", text: prob(it.new_probability) }),
        h("span", { class: "qs-muted", text: ` with ${featureName(it.layer, it.feature, model.get("names"))} ${what}` }));
    }
    parts.push(h("span", { class: "qs-muted", text: ` · error-term share ${pct(model.get("error_share"))}` }));
    summary.replaceChildren(...parts);
    el.dataset.runs = String(model.get("runs"));
  }

  function renderTokens() {
    const values = f32(model.get("token_attr"));
    const vmax = Math.max(1e-9, ...Array.from(values, Math.abs));
    const base = backdrop(tokens);
    tokens.replaceChildren(...model.get("tokens").map((t, i) => {
      const span = h("span", { class: "qs-attr-tok", "data-attr": String(values[i]),
        title: `attribution ${fmt(values[i], 4)}`, text: t });
      shadeSigned(span, values[i], vmax, base);
      return span;
    }));
  }

  function renderFeatures() {
    const rows = model.get("features");
    const vmax = Math.max(1e-9, ...rows.map((r) => Math.abs(r.attribution)));
    bars.replaceChildren(...rows.map((r) => {
      const width = (50 * Math.abs(r.attribution)) / vmax;
      const bar = h("div", { class: "qs-attr-bar", style: `width:${fmt(width, 1)}%;${r.attribution >= 0 ?
        "left:50%" : `left:${fmt(50 - width, 1)}%`};background:${signedHeat(r.attribution >= 0 ? 1 : -1, 1)}` });
      const send = (event) => () => model.send({ event, layer: r.layer, feature: r.feature });
      return h("div", { class: "qs-attr-row", "data-feature": String(r.feature), "data-layer": String(r.layer) },
        h("button", { class: "qs-feature qs-attr-name", title: featureName(r.layer, r.feature, model.get("names")),
          onclick: send("select") }, ...featureLabel(r.layer, r.feature, model.get("names"))),
        h("div", { class: "qs-attr-track" }, bar),
        h("span", { class: "qs-num", text: fmt(r.attribution, 3) }),
        h("button", { class: "qs-attr-ablate", text: "ablate", onclick: send("ablate") }),
        h("button", { class: "qs-attr-steer", text: "steer", onclick: send("steer") }));
    }));
  }

  model.on("change:intervention", renderSummary);
  model.on("change:names", () => { renderSummary(); renderFeatures(); });
  model.on("change:runs", () => { renderSummary(); renderTokens(); renderFeatures(); });
  renderSummary(); renderTokens(); renderFeatures();
  onBackdrop(model, el, renderTokens);
  return model.dispose;
}

export default { render };
