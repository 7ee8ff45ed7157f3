// Seed classifier: seeds in, per-layer deltas (SVG from altair), chosen features, held-out metrics, export.

import { featureLabel, featureName, fmt, h, setTrait, viewModel } from "./lib/common.js";
import { numberInput, statusLine, textInput } from "./lib/controls.js";

/** A number with its sign always shown: +0.42, −1.30 (weights are signed in `rules_`). */
function signed(value, digits) {
  return `${value > 0 ? "+" : value < 0 ? "−" : ""}${fmt(Math.abs(value), digits)}`;
}

function render({ model: host, el }) {
  const model = viewModel(host);  // every listener and timer of this view, removed by the cleanup returned
  const root = h("div", { class: "qs-widget qs-classifier" });
  const area = (name, placeholder) => textInput(model, name, "textarea", { class: `qs-seeds qs-${name}`, placeholder });
  const pos = area("positives", "positive seeds, one per line");
  const neg = area("negatives", "negative seeds, one per line");
  const held = area("heldout", "held-out texts: '+ text' or '- text' per line");
  const topK = numberInput(model, "top_k", { class: "qs-top-k", min: "1", max: "32", style: "width:4em" });
  // the statistic is a menu of what the classifier takes (a free-text box let "median" through to an error)
  const statistic = h("select", { class: "qs-statistic", title: "what is compared with each feature's threshold" },
    ...[["mean", "mean activation over the text"], ["rate", "share of the text's tokens where it fires"],
      ["any", "fires anywhere (the report's OR rule)"], ["auto", "pick the best of the three"]].map(([value, tip]) =>
      h("option", { value, text: value, title: tip })));
  statistic.addEventListener("change", () => setTrait(model, "statistic", statistic.value));
  const syncStatistic = () => { statistic.value = model.get("statistic"); };
  model.on("change:statistic", syncStatistic);
  syncStatistic();
  const nLayers = numberInput(model, "n_layers", { class: "qs-n-layers", min: "1", style: "width:4em" });
  const path = textInput(model, "path", "input", { class: "qs-path", style: "width:16em" });
  const button = (text, event) => h("button", { class: `qs-${event}`, text, onclick: () => model.send({ event }) });
  const chart = h("div", { class: "qs-delta-chart" });
  const chosen = h("table", { class: "qs-table qs-chosen" });
  const metrics = h("table", { class: "qs-table qs-metrics" });
  const predictions = h("table", { class: "qs-table qs-predictions" });
  const message = h("div", { class: "qs-muted qs-message" });
  root.append(
    h("div", { class: "qs-columns" },
      h("div", {}, h("h4", { text: "positive seeds" }), pos),
      h("div", {}, h("h4", { text: "negative seeds" }), neg),
      h("div", {}, h("h4", { text: "held out" }), held)),
    h("div", { class: "qs-toolbar" }, h("label", {}, "statistic ", statistic),
      h("label", { title: "features kept per layer, ranked by how well each separates the seeds" }, "features per layer ", topK),
      h("label", { title: "how many layers the rule combines (the best by top-1 delta first; 1 = the single best layer)" },
        "layers combined ", nLayers),
      button("fit", "fit"), path, button("export", "export"), button("load", "load")),
    statusLine(model), message,
    h("div", { class: "qs-columns" },
      h("div", {}, h("h4", { text: "top-1 delta per layer" }), chart),
      h("div", {}, h("h4", { text: "chosen features, each with its threshold" }), chosen, h("h4", { text: "held-out metrics" }), metrics)),
    h("div", { class: "qs-section" }, h("h4", { text: "held-out predictions (score, text, the features that decided)" }), predictions));
  el.append(root);

  function show() {
    chart.innerHTML = model.get("chart_svg");
    message.textContent = model.get("message");
    // a text leans positive when the feature's statistic is above (direction 1) or at most (-1) its threshold;
    // the weight says how much its margin counts in the sum that decides (0 for the report's OR rule)
    chosen.replaceChildren(h("tr", {}, ...["layer", "feature", "statistic", "positive if", "weight", "mean on +", "mean on −"].map((t) => h("th", { text: t }))),
      ...model.get("chosen").map((r) => h("tr", { class: "qs-chosen-row", "data-layer": String(r.layer),
        "data-feature": String(r.feature) }, h("td", { text: String(r.layer) }),
        h("td", { class: "qs-chosen-feature", title: featureName(r.layer, r.feature, model.get("names")) },
          ...featureLabel(r.layer, r.feature, model.get("names"), false)), h("td", { text: r.statistic }),
        h("td", { class: "qs-num qs-threshold", text: `${r.direction > 0 ? ">" : "≤"} ${fmt(r.threshold, 3)}` }),
        h("td", { class: "qs-num qs-weight", text: signed(r.weight ?? 0, 2) }),
        h("td", { class: "qs-num", text: fmt(r.pos_mean, 3) }), h("td", { class: "qs-num", text: fmt(r.neg_mean, 3) }))));
    const rows = model.get("metrics");
    metrics.replaceChildren(...(rows.length ? [h("tr", {}, ...["method", "precision", "recall", "F1", "accuracy"].map((t) => h("th", { text: t })))] : []),
      ...rows.map((r) => h("tr", { class: "qs-metric-row", "data-method": r.method }, h("td", { text: r.method }),
        ...["precision", "recall", "f1", "accuracy"].map((k) => h("td", { class: `qs-num qs-${k}`, text: fmt(r[k]) })))));
    predictions.replaceChildren(...model.get("predictions").map((p) => h("tr",
      { class: p.predicted === p.label ? "qs-pred" : "qs-pred qs-wrong" },
      h("td", { text: p.label ? "+" : "−" }), h("td", { text: p.predicted ? "predicted +" : "predicted −" }),
      h("td", { class: "qs-num qs-score", text: signed(p.score, 2) }), h("td", { class: "qs-context", text: p.text }),
      // the three features that weigh most in this decision, each with its signed margin
      h("td", { class: "qs-why", title: "features with the largest part in this decision (clf.explain(text) lists all)" },
        ...(p.why_features ? p.why_features.map((w) => h("span", { class: "qs-why-item", "data-feature": String(w.feature),
          "data-layer": String(w.layer) }, ...featureLabel(w.layer, w.feature, model.get("names")),
          h("span", { class: "qs-num", text: ` ${signed(w.margin, 2)}` })))
          : [p.why ?? ""])))));
  }
  for (const name of ["chart_svg", "chosen", "metrics", "predictions", "message", "names"]) model.on(`change:${name}`, show);
  show();
  return model.dispose;
}

export default { render };
