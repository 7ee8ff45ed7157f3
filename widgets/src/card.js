// Feature card: contexts, histogram (SVG from altair), logit table, label and note (saved on change).

import { fmt, h, heat, pct, viewModel } from "./lib/common.js";
import { layerPicker, numberInput, statusLine, textInput } from "./lib/controls.js";

function render({ model: host, el }) {
  const model = viewModel(host);  // every listener and timer of this view, removed by the cleanup returned
  const root = h("div", { class: "qs-widget qs-card" });
  const featureInput = numberInput(model, "feature", { class: "qs-feature-input", min: "0" }, { enter: true });
  const title = h("span", { class: "qs-card-title" });
  const label = textInput(model, "label", "input", { class: "qs-label", placeholder: "label (saved)" }, { enter: true });
  const note = textInput(model, "note", "textarea", { class: "qs-note", rows: "2", placeholder: "note (saved)",
    style: "width:100%" });
  const stats = h("div", { class: "qs-stats" });
  const contexts = h("table", { class: "qs-table qs-contexts" });
  const histogram = h("div", { class: "qs-histogram" });
  const logits = h("div", { class: "qs-logits qs-columns" });
  const steer = h("button", { class: "qs-send-steer", text: "steer with it →",
    onclick: () => model.send({ event: "steer" }) });
  root.append(
    h("div", { class: "qs-toolbar" }, title, h("label", {}, "layer ", layerPicker(model)),
      h("label", {}, "feature ", featureInput), steer),
    statusLine(model),
    h("div", { class: "qs-toolbar" }, label), note, stats,
    h("div", { class: "qs-columns" },
      h("div", { class: "qs-section" }, h("h4", { text: "top activating contexts" }), contexts),
      h("div", { class: "qs-section" }, h("h4", { text: "activations" }), histogram,
        h("h4", { text: "logits: W_dec[:, f] · W_U" }), logits)));
  el.append(root);

  function show() {
    // the title names what the body shows (stats arrive with the content), never a refused request
    const s = model.get("stats");
    const shown = s.feature === undefined ? [model.get("layer"), model.get("feature")] : [s.layer, s.feature];
    title.textContent = `L${shown[0]} · f${shown[1]}`;
    el.dataset.feature = String(shown[1]);
    el.dataset.layer = String(shown[0]);
    stats.textContent = s.tokens === undefined ? "" :
      `fires on ${pct(s.firing_rate, 2)} of ${s.tokens} reference tokens · max ${fmt(s.max_activation)}` +
      ` · mean ${fmt(s.mean_activation)} · decoder norm ${fmt(s.decoder_norm)}`;
    const rows = model.get("contexts");
    const vmax = rows.length ? rows[0].activation : 1;
    contexts.replaceChildren(...(rows.length ? rows.map((c) => h("tr", { class: "qs-context-row" },
      h("td", { class: "qs-num", text: fmt(c.activation) }),
      h("td", { class: "qs-context" }, c.left.join(""),
        h("span", { class: "qs-focus", style: `background:${heat(c.activation, vmax)}`, text: c.token,
          title: c.boundary || "" }), c.right.join(""))))
      : [h("tr", {}, h("td", { class: "qs-muted", text: "never fires on the reference corpus" }))]));
    histogram.innerHTML = model.get("histogram_svg");
    const side = (name) => h("table", { class: "qs-table" },
      h("tr", {}, h("th", { text: name === "top" ? "promotes" : "suppresses" }), h("th", { text: "logit" })),
      ...model.get("logits").filter((r) => r.side === name).map((r) =>
        h("tr", {}, h("td", { class: "qs-context", text: JSON.stringify(r.token) }), h("td", { class: "qs-num", text: fmt(r.logit) }))));
    logits.replaceChildren(side("top"), side("bottom"));
  }
  for (const name of ["layer", "feature", "stats", "contexts", "logits", "histogram_svg"]) {
    model.on(`change:${name}`, show);
  }
  show();
  return model.dispose;
}

export default { render };
