// Controls bound to one trait each: they send the user's edits and follow the kernel's values. Every widget
// builds its layer picker, number fields, text boxes and checkboxes from these (no copies in the components).
// `model` is the view's `viewModel(host)` (common.js): the listeners added here go when the view's cleanup runs.

import { h, setTrait } from "./common.js";

/** The error line and busy marker every widget shows; put it near the top. */
export function statusLine(model) {
  const box = h("div", { class: "qs-status" });
  const sync = () => {
    const error = model.get("error");
    box.textContent = error || (model.get("busy") ? "working…" : "");
    box.className = "qs-status" + (error ? " qs-error" : model.get("busy") ? " qs-busy" : "");
  };
  model.on("change:error", sync);
  model.on("change:busy", sync);
  sync();
  return box;
}

/** The layer `<select>`: options 0..model[count]-1, bound to the int trait `trait`. */
export function layerPicker(model, { trait = "layer", count = "n_layers", title = "layer" } = {}) {
  const select = h("select", { class: "qs-layer", title });
  const sync = () => {
    const n = model.get(count);
    if (select.options.length !== n) {
      select.replaceChildren(...Array.from({ length: n }, (_, i) => h("option", { value: String(i), text: String(i) })));
    }
    select.value = String(model.get(trait));
  };
  select.addEventListener("change", () => setTrait(model, trait, Number(select.value)));
  model.on(`change:${trait}`, sync);
  model.on(`change:${count}`, sync);
  sync();
  return select;
}

/** A number `<input>` bound to an int / float trait; `enter` also sends on Enter (not only on change). */
export function numberInput(model, trait, attrs = {}, { enter = false } = {}) {
  const input = h("input", { type: "number", ...attrs });
  const send = () => setTrait(model, trait, Number(input.value));
  input.addEventListener("change", send);
  if (enter) input.addEventListener("keydown", (e) => { if (e.key === "Enter") send(); });
  const sync = () => { input.value = String(model.get(trait)); };
  model.on(`change:${trait}`, sync);
  sync();
  return input;
}

/** A text `<input>` / `<textarea>` bound to a string trait. While the user types in it, kernel values do not
 * overwrite it. `enter` also sends on Enter (in a textarea Shift+Enter still adds a line). */
export function textInput(model, trait, tag = "input", attrs = {}, { enter = false } = {}) {
  const box = h(tag, tag === "input" ? { type: "text", ...attrs } : attrs);
  const send = () => setTrait(model, trait, box.value);
  box.addEventListener("change", send);
  if (enter) {
    box.addEventListener("keydown", (e) => {
      if (e.key !== "Enter" || e.shiftKey || e.isComposing) return;
      if (tag === "textarea") e.preventDefault();
      send();
    });
  }
  const sync = () => { if (document.activeElement !== box) box.value = model.get(trait); };
  model.on(`change:${trait}`, sync);
  sync();
  return box;
}

/** A checkbox bound to a bool trait. */
export function checkbox(model, trait, attrs = {}) {
  const box = h("input", { type: "checkbox", ...attrs });
  box.addEventListener("change", () => setTrait(model, trait, box.checked));
  const sync = () => { box.checked = model.get(trait); };
  model.on(`change:${trait}`, sync);
  sync();
  return box;
}
