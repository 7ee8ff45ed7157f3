// Feature card: contexts, histogram (SVG from altair), logit table, label and note (saved on change).

function renderCard({ model, el }) {
  const root = h("div", { class: "qs-widget qs-card" });
  const layerSelect = h("select", { class: "qs-layer" });
  const featureInput = h("input", { class: "qs-feature-input", type: "number", min: "0" });
  const title = h("span", { class: "qs-card-title" });
  const label = h("input", { class: "qs-label", type: "text", placeholder: "label (saved)" });
  const note = h("textarea", { class: "qs-note", rows: "2", placeholder: "note (saved)", style: "width:100%" });
  const stats = h("div", { class: "qs-stats" });
  const contexts = h("table", { class: "qs-table qs-contexts" });
  const histogram = h("div", { class: "qs-histogram" });
  const logits = h("div", { class: "qs-logits qs-columns" });
  const steer = h("button", { class: "qs-send-steer", text: "steer with it →",
    onclick: () => model.send({ event: "steer" }) });
  root.append(
    h("div", { class: "qs-toolbar" }, title, h("label", {}, "layer ", layerSelect), h("label", {}, "feature ", featureInput), steer),
    statusLine(model),
    h("div", { class: "qs-toolbar" }, label), note, stats,
    h("div", { class: "qs-columns" },
      h("div", { class: "qs-section" }, h("h4", { text: "top activating contexts" }), contexts),
      h("div", { class: "qs-section" }, h("h4", { text: "activations" }), histogram,
        h("h4", { text: "logits: W_dec[:, f] · W_U" }), logits)));
  el.append(root);

  layerSelect.addEventListener("change", () => setTrait(model, "layer", Number(layerSelect.value)));
  featureInput.addEventListener("change", () => setTrait(model, "feature", Number(featureInput.value)));
  featureInput.addEventListener("keydown", (e) => { if (e.key === "Enter") setTrait(model, "feature", Number(featureInput.value)); });
  label.addEventListener("change", () => setTrait(model, "label", label.value));
  label.addEventListener("keydown", (e) => { if (e.key === "Enter") setTrait(model, "label", label.value); });
  note.addEventListener("change", () => setTrait(model, "note", note.value));

  function render() {
    const n = model.get("n_layers");
    if (layerSelect.options.length !== n) {
      layerSelect.replaceChildren(...Array.from({ length: n }, (_, i) => h("option", { value: String(i), text: String(i) })));
    }
    layerSelect.value = String(model.get("layer"));
    featureInput.value = String(model.get("feature"));
    title.textContent = `L${model.get("layer")} · f${model.get("feature")}`;
    el.dataset.feature = String(model.get("feature"));
    el.dataset.layer = String(model.get("layer"));
    if (document.activeElement !== label) label.value = model.get("label");
    if (document.activeElement !== note) note.value = model.get("note");
    const s = model.get("stats");
    stats.textContent = s.tokens === undefined ? "" :
      `fires on ${(100 * s.firing_rate).toFixed(2)}% of ${s.tokens} reference tokens · max ${fmt(s.max_activation)}` +
      ` · mean ${fmt(s.mean_activation)} · decoder norm ${fmt(s.decoder_norm)}`;
    const rows = model.get("contexts");
    const vmax = rows.length ? rows[0].activation : 1;
    contexts.replaceChildren(...(rows.length ? rows.map((c) => h("tr", { class: "qs-context-row" },
      h("td", { class: "qs-num", text: fmt(c.activation) }),
      h("td", { class: "qs-context" }, c.left.join(""),
        h("span", { class: "qs-focus", style: `background:${heat(c.activation, vmax)}`, text: c.token }), c.right.join(""))))
      : [h("tr", {}, h("td", { class: "qs-muted", text: "never fires on the reference corpus" }))]));
    histogram.innerHTML = model.get("histogram_svg");
    const side = (name) => h("table", { class: "qs-table" },
      h("tr", {}, h("th", { text: name === "top" ? "promotes" : "suppresses" }), h("th", { text: "logit" })),
      ...model.get("logits").filter((r) => r.side === name).map((r) =>
        h("tr", {}, h("td", { class: "qs-context", text: JSON.stringify(r.token) }), h("td", { class: "qs-num", text: fmt(r.logit) }))));
    logits.replaceChildren(side("top"), side("bottom"));
  }
  for (const name of ["layer", "feature", "label", "note", "stats", "contexts", "logits", "histogram_svg", "n_layers"]) {
    model.on(`change:${name}`, render);
  }
  render();
}

export default { render: renderCard };
