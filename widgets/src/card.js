// Feature card: name and explanation (with its score) at the top, contexts with every token shaded by the
// feature's activation, histogram (SVG from altair), logit table, similar features by decoder cosine, a box to
// test the feature on your own text, label and note (saved on change).

import { backdrop, f32, featureLabel, fmt, h, nameOf, onBackdrop, setTrait, shade, viewModel } from "./lib/common.js";
import { layerPicker, numberInput, statusLine, textInput } from "./lib/controls.js";

/** An integer with thousands separators, the way the charts print them: 148,767. */
const count = (n) => Number(n).toLocaleString("en-US");

/** Tokens as spans, each shaded by its value on the scale 0 … vmax (the value in its title), text readable on
 * the shade over `base` (the backdrop). */
function shaded(tokens, values, vmax, base, cls = "qs-ctx-tok") {
  return tokens.map((t, i) => {
    const v = Number(values[i] || 0);
    const span = h("span", { class: cls, "data-act": fmt(v, 3), title: `activation ${fmt(v, 3)}`, text: t });
    shade(span, v, vmax, base);
    return span;
  });
}

function render({ model: host, el }) {
  const model = viewModel(host);  // every listener and timer of this view, removed by the cleanup returned
  const root = h("div", { class: "qs-widget qs-card" });
  const featureInput = numberInput(model, "feature", { class: "qs-feature-input", min: "0" }, { enter: true });
  const title = h("span", { class: "qs-card-title" });
  const name = h("div", { class: "qs-card-name" });
  const explanation = h("div", { class: "qs-explanation" });
  const label = textInput(model, "label", "input", { class: "qs-label", placeholder: "label (saved)" }, { enter: true });
  const note = textInput(model, "note", "textarea", { class: "qs-note", rows: "2", placeholder: "note (saved)",
    style: "width:100%" });
  const stats = h("div", { class: "qs-stats" });
  const contexts = h("table", { class: "qs-table qs-contexts" });
  const histogram = h("div", { class: "qs-histogram" });
  const logits = h("div", { class: "qs-logits qs-columns" });
  const similar = h("div", { class: "qs-similar" });
  const testBox = textInput(model, "test_text", "input", { class: "qs-test-input",
    placeholder: "type your own text and press Enter", style: "width:100%" }, { enter: true });
  const testOut = h("div", { class: "qs-test-tokens qs-context" });
  const steer = h("button", { class: "qs-send-steer", text: "steer with it →",
    onclick: () => model.send({ event: "steer" }) });
  root.append(
    h("div", { class: "qs-toolbar" }, title, h("label", {}, "layer ", layerPicker(model)),
      h("label", {}, "feature ", featureInput), steer),
    statusLine(model), name, explanation,
    h("div", { class: "qs-toolbar" }, label), note, stats,
    h("div", { class: "qs-columns" },
      h("div", { class: "qs-section" }, h("h4", { text: "top activating contexts" }), contexts,
        h("h4", { text: "test your own text" }), testBox, testOut),
      h("div", { class: "qs-section" }, h("h4", { text: "activations" }), histogram,
        h("h4", { text: "logits: W_dec[:, f] · W_U" }), logits,
        h("h4", { text: "similar features (decoder cosine)" }), similar)));
  el.append(root);

  function shown() {
    // the title names what the body shows (stats arrive with the content), never a refused request
    const s = model.get("stats");
    return s.feature === undefined ? [model.get("layer"), model.get("feature")] : [s.layer, s.feature];
  }

  function renderName() {
    const [layer, feature] = shown();
    const text = nameOf(model.get("names"), layer, feature);
    name.replaceChildren(...(text ? [h("span", { class: "qs-name", text, title: text })] : []));
    const e = model.get("explanation");
    explanation.replaceChildren(...(e && e.text ? [
      h("span", { class: "qs-explanation-text", text: e.text }),
      h("span", { class: "qs-muted qs-explanation-score",
        text: ` · ${e.explainer}${e.score === null || e.score === undefined ? "" : ` score ${fmt(e.score)}`}` +
          (e.stored ? "" : " (computed now, not stored)") })] : []));
    similar.replaceChildren(...model.get("similar").map((r) => h("button", {
      class: "qs-feature qs-similar-row", "data-feature": String(r.feature), "data-layer": String(r.layer),
      title: "open it in this card", onclick: () => setTrait(model, "feature", r.feature) },
      ...featureLabel(r.layer, r.feature, model.get("names"), false),
      h("span", { class: "qs-num qs-muted", text: ` ${fmt(r.cosine)}` }))));
  }

  function show() {
    const s = model.get("stats");
    const [layer, feature] = shown();
    title.textContent = `L${layer} · f${feature}`;
    el.dataset.feature = String(feature);
    el.dataset.layer = String(layer);
    stats.textContent = s.tokens === undefined ? "" :
      `fires on ${fmt(100 * s.firing_rate, 2)}% of ${count(s.tokens)} reference tokens · max ${fmt(s.max_activation)}` +
      ` · mean ${fmt(s.mean_activation)} · decoder norm ${fmt(s.decoder_norm)}`;
    const rows = model.get("contexts");
    const vmax = rows.length ? rows[0].activation : 1;
    const base = backdrop(contexts);
    const focus = (c) => {
      const span = h("span", { class: "qs-focus", text: c.token, "data-act": fmt(c.activation, 3),
        title: c.boundary || `activation ${fmt(c.activation, 3)}` });
      shade(span, c.activation, vmax, base);
      return span;
    };
    contexts.replaceChildren(...(rows.length ? rows.map((c) => h("tr", { class: "qs-context-row" },
      h("td", { class: "qs-num", text: fmt(c.activation) }),
      h("td", { class: "qs-context" }, ...shaded(c.left, c.left_values || [], vmax, base), focus(c),
        ...shaded(c.right, c.right_values || [], vmax, base))))
      : [h("tr", {}, h("td", { class: "qs-muted", text: "never fires on the reference corpus" }))]));
    histogram.innerHTML = model.get("histogram_svg");
    const side = (which) => h("table", { class: "qs-table" },
      h("tr", {}, h("th", { text: which === "top" ? "promotes" : "suppresses" }), h("th", { text: "logit" })),
      ...model.get("logits").filter((r) => r.side === which).map((r) =>
        h("tr", {}, h("td", { class: "qs-context", text: JSON.stringify(r.token) }), h("td", { class: "qs-num", text: fmt(r.logit) }))));
    logits.replaceChildren(side("top"), side("bottom"));
    renderName();
    renderTest();
  }

  function renderTest() {
    const values = f32(model.get("test_values"));
    const s = model.get("stats");
    // the same scale as the contexts: the feature's strongest activation on the corpus (or this text's, if higher)
    const vmax = Math.max(s.max_activation || 0, ...Array.from(values), 1e-9);
    testOut.replaceChildren(...shaded(model.get("test_tokens"), values, vmax, backdrop(testOut), "qs-test-tok"));
    el.dataset.testMax = fmt(Math.max(0, ...Array.from(values)), 3);
  }

  for (const n of ["layer", "feature", "stats", "contexts", "logits", "histogram_svg"]) model.on(`change:${n}`, show);
  for (const n of ["names", "explanation", "similar"]) model.on(`change:${n}`, renderName);
  for (const n of ["test_tokens", "test_values"]) model.on(`change:${n}`, renderTest);
  show();
  onBackdrop(model, el, show);
  return model.dispose;
}

export default { render };
