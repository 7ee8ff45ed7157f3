// SteerBench: a steer's evidence. Verdict and gates, the conditions x metrics table with 95% intervals, concept
// against fluency over alpha (SVG drawn in the kernel by altair), before / after completions on the same prompts.

import { featureName, fmt, h, setTrait, viewModel } from "./lib/common.js";
import { statusLine } from "./lib/controls.js";

// This component's rules, scoped under .qs-steerbench (the shared stylesheet is qscope.css).
const STYLE = `
.qs-steerbench .qs-sb-head { display: flex; flex-wrap: wrap; gap: 10px; align-items: baseline; margin-bottom: 4px; }
.qs-steerbench .qs-sb-title { font-weight: 600; font-size: 14px; }
.qs-steerbench .qs-verdict { padding: 1px 8px; border-radius: 10px; font-weight: 600; color: #fff; }
.qs-steerbench .qs-verdict-validated { background: #1a7f37; }
.qs-steerbench .qs-verdict-benchmarked { background: #9a6700; }
.qs-steerbench .qs-verdict-failed { background: #cf222e; }
.qs-steerbench .qs-sb-table td.qs-num { text-align: right; }
.qs-steerbench .qs-sb-table .qs-sb-ci { display: block; font-size: 10px; color: var(--jp-ui-font-color2, #666); }
.qs-steerbench .qs-sb-table tr.qs-sb-steered { background: rgba(255, 102, 0, 0.12); }
.qs-steerbench .qs-sb-table tr.qs-sb-control td:first-child { font-style: italic; }
.qs-steerbench .qs-sb-gates td.qs-sb-pass { color: #1a7f37; font-weight: 600; }
.qs-steerbench .qs-sb-gates td.qs-sb-fail { color: #cf222e; font-weight: 600; }
.qs-steerbench .qs-sb-chart svg { max-width: 100%; height: auto; }
.qs-steerbench .qs-sb-controls { margin-top: 6px; font-size: 12px; }
.qs-steerbench .qs-sb-examples td { vertical-align: top; white-space: pre-wrap; max-width: 28em;
  font-family: var(--jp-code-font-family, monospace), var(--qs-cjk), monospace; }
.qs-steerbench .qs-sb-examples td.qs-sb-prompt { font-family: inherit; font-weight: 600; }
`;

const CONTROLS = ["zero strength", "random feature"];

/** A metric's number: `digits` decimals, fewer for large values (a perplexity of 47074, not 47074.364). */
function num(value, digits) {
  const size = Math.abs(value);
  if (size >= 1000) return Math.round(value).toLocaleString("en-US");
  return fmt(value, size >= 100 ? Math.min(digits, 1) : digits);
}

/** `mean` over its interval `[lo, hi]`; "–" where the metric has no value (an empty completion). */
function cell(row, key, digits) {
  const mean = row[key];
  const lo = row[`${key}_lo`];
  const hi = row[`${key}_hi`];
  if (mean === null || mean === undefined) return h("td", { class: "qs-num", text: "–" });
  const ci = lo === null || hi === null ? "" : `[${num(lo, digits)}, ${num(hi, digits)}]`;
  return h("td", { class: "qs-num", "data-metric": key, "data-mean": String(mean), "data-lo": String(lo),
    "data-hi": String(hi) }, num(mean, digits), h("span", { class: "qs-sb-ci", text: ci }));
}

function render({ model: host, el }) {
  const model = viewModel(host);  // every listener and timer of this view, removed by the cleanup returned
  const root = h("div", { class: "qs-widget qs-steerbench" }, h("style", { text: STYLE }));
  const head = h("div", { class: "qs-sb-head" });
  const summary = h("div", { class: "qs-muted qs-sb-summary" });
  const table = h("table", { class: "qs-table qs-sb-table" });
  const gates = h("table", { class: "qs-table qs-sb-gates" });
  const controls = h("div", { class: "qs-muted qs-sb-controls" });
  const chart = h("div", { class: "qs-sb-chart" });
  const chartNote = h("div", { class: "qs-muted qs-sb-chart-note" });
  const examples = h("table", { class: "qs-table qs-sb-examples" });
  const picker = (trait) => {
    const select = h("select", { class: `qs-sb-${trait}`, title: `the ${trait} column of the examples` });
    select.addEventListener("change", () => setTrait(model, trait, select.value));
    return select;
  };
  const before = picker("before");
  const after = picker("after");
  root.append(head, summary, statusLine(model),
    h("div", { class: "qs-section" }, h("h4", { text: "conditions × metrics (mean, 95% interval over prompts)" }), table),
    h("div", { class: "qs-columns" },
      h("div", { class: "qs-section" }, h("h4", { text: "gates" }), gates, controls),
      h("div", { class: "qs-section" }, chart, chartNote)),
    h("div", { class: "qs-section" },
      h("div", { class: "qs-toolbar" }, h("h4", { text: "before / after" }), h("label", {}, "before ", before),
        h("label", {}, "after ", after)),
      examples));
  el.append(root);

  function showHead() {
    const verdict = model.get("verdict");
    const status = model.get("status");
    const names = model.get("names");
    const features = model.get("steer_features");
    head.replaceChildren(...[
      h("span", { class: "qs-sb-title", text: model.get("title") }),
      h("span", { class: `qs-verdict qs-verdict-${verdict}`, text: verdict }),
      status && status !== verdict ? h("span", { class: "qs-muted qs-sb-status", text: `recipe status: ${status}` }) : null,
      h("span", { class: "qs-sb-steers", text: model.get("steers").join("; ") }),
      ...features.map((f) => h("span", { class: "qs-muted qs-sb-feature", text: featureName(f.layer, f.feature, names) })),
    ].filter((node) => node !== null));
    summary.replaceChildren(
      h("div", { class: "qs-sb-reason", text: model.get("reason") }),
      h("div", { text: `concept: ${model.get("concept")}` }),
      h("div", { class: "qs-sb-settings", text: [model.get("settings"), model.get("cost")].filter(Boolean).join("; ") }));
  }

  function showTable() {
    const metrics = model.get("metrics");
    table.replaceChildren(
      h("tr", {}, h("th", { text: "condition" }), h("th", { text: "n" }),
        ...metrics.map((m) => h("th", { text: m.label + (m.better === "up" ? " ↑" : m.better === "down" ? " ↓" : "") }))),
      ...model.get("rows").map((r) => h("tr", {
        class: "qs-sb-row" + (r.condition === "steering-only" ? " qs-sb-steered" : "") +
          (CONTROLS.includes(r.condition) ? " qs-sb-control" : ""),
        "data-condition": r.condition },
      h("td", { text: r.condition }), h("td", { class: "qs-num", text: String(r.n) }),
      ...metrics.map((m) => cell(r, m.key, m.digits)))));
  }

  function showGates() {
    gates.replaceChildren(
      h("tr", {}, ...["gate", "outcome", "numbers"].map((t) => h("th", { text: t }))),
      ...model.get("gates").map((g) => h("tr", { class: "qs-sb-gate", "data-gate": g.gate, title: g.rule },
        h("td", { text: g.gate }),
        h("td", { class: g.passed === true ? "qs-sb-pass" : g.passed === false ? "qs-sb-fail" : "", text: g.outcome }),
        h("td", { class: "qs-muted", text: g.value }))));
    controls.textContent = model.get("controls");
  }

  function showChart() {
    chart.innerHTML = model.get("chart_svg");  // drawn by vl-convert in the kernel
    chartNote.textContent = model.get("chart_kind") === "sweep"
      ? "the autopilot's sweep on dev prompts: each path is one feature in order of strength, from the unsteered ◆"
      : "no sweep given: each condition of the bench at (perplexity, concept)";
  }

  function showExamples() {
    const conditions = model.get("conditions");
    for (const [select, trait] of [[before, "before"], [after, "after"]]) {
      if (select.options.length !== conditions.length) {
        select.replaceChildren(...conditions.map((c) => h("option", { value: c, text: c })));
      }
      select.value = model.get(trait);
    }
    const a = model.get("before");
    const b = model.get("after");
    examples.replaceChildren(
      h("tr", {}, h("th", { text: "prompt" }), h("th", { class: "qs-sb-before-head", text: a }),
        h("th", { class: "qs-sb-after-head", text: b })),
      ...model.get("examples").map((ex) => h("tr", { class: "qs-sb-example" },
        h("td", { class: "qs-sb-prompt", text: ex.prompt }),
        h("td", { class: "qs-sb-before", text: ex.texts[a] ?? "" }),
        h("td", { class: "qs-sb-after", text: ex.texts[b] ?? "" }))));
  }

  for (const name of ["title", "verdict", "status", "reason", "steers", "steer_features", "names", "concept", "settings", "cost"]) {
    model.on(`change:${name}`, showHead);
  }
  model.on("change:rows", showTable);
  model.on("change:metrics", showTable);
  model.on("change:gates", showGates);
  model.on("change:controls", showGates);
  model.on("change:chart_svg", showChart);
  model.on("change:chart_kind", showChart);
  for (const name of ["examples", "conditions", "before", "after"]) model.on(`change:${name}`, showExamples);
  showHead(); showTable(); showGates(); showChart(); showExamples();
  return model.dispose;
}

export default { render };
