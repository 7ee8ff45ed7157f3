// Shared helpers of every qscope-lab widget: DOM building, a view's listeners and cleanup, binary traits, the colour scale, number formats.
// Imported by the components in ../ and bundled into each dist/<component>.js by ../../build.mjs.

/** `h("div", { class, style, text, onclick, ...attributes }, ...children)`: one DOM element. */
export function h(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (key === "class") node.className = value;
    else if (key === "style") node.style.cssText = value;
    else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else if (key === "text") node.textContent = value;
    else node.setAttribute(key, value);
  }
  for (const child of children.flat()) {
    if (child !== null && child !== undefined) node.append(child);
  }
  return node;
}

/** The model as one view of a widget uses it, and that view's cleanup. It has the model's `get`, `set`,
 * `save_changes`, `send`, `on` and `off`, and remembers every listener added with `on` and every timer started
 * with `later`; `dispose()` removes each listener from the model (`model.off(name, callback)`) and clears each
 * timer. `render` builds everything on it and returns `dispose`: anywidget calls that function when the view is
 * removed, so a removed view neither redraws on a model change nor sends anything later.
 *
 *     function render({ model: host, el }) {
 *       const model = viewModel(host);
 *       ...                                  // model.on(...), controls, model.later(...)
 *       return model.dispose;
 *     }
 */
export function viewModel(model) {
  const listeners = [];
  const timers = new Set();
  const view = {
    get: (name) => model.get(name),
    set: (name, value) => model.set(name, value),
    save_changes: () => model.save_changes(),
    send: (...args) => model.send(...args),
    widget_manager: model.widget_manager,
    on(name, callback) {
      model.on(name, callback);
      listeners.push([name, callback]);
    },
    off(name, callback) {
      model.off(name, callback);
      const i = listeners.findIndex(([n, c]) => n === name && c === callback);
      if (i >= 0) listeners.splice(i, 1);
    },
    /** `setTimeout(callback, ms)` that `dispose` clears; returns the id for `cancel`. */
    later(callback, ms) {
      const id = setTimeout(() => { timers.delete(id); callback(); }, ms);
      timers.add(id);
      return id;
    },
    cancel(id) {
      clearTimeout(id);
      timers.delete(id);
    },
    dispose() {
      for (const [name, callback] of listeners.splice(0)) model.off(name, callback);
      for (const id of timers) clearTimeout(id);
      timers.clear();
    },
  };
  return view;
}

/** Set a trait from the front-end and send it to the kernel. */
export function setTrait(model, name, value) {
  model.set(name, value);
  model.save_changes();
}

// Binary traits arrive as DataView; views share the buffer (no copy).
export function f32(view) {
  return view && view.byteLength ? new Float32Array(view.buffer, view.byteOffset, view.byteLength / 4) : new Float32Array(0);
}
export function i32(view) {
  return view && view.byteLength ? new Int32Array(view.buffer, view.byteOffset, view.byteLength / 4) : new Int32Array(0);
}
export function u8(view) {
  return view && view.byteLength ? new Uint8Array(view.buffer, view.byteOffset, view.byteLength) : new Uint8Array(0);
}

// One colour scale for every activation view: white at 0, full orange at vmax (linear alpha).
const HEAT = [255, 102, 0];
export function heatAlpha(value, vmax) {
  if (!(value > 0) || !(vmax > 0)) return 0;
  return Math.min(1, value / vmax);
}
export function heat(value, vmax) {
  const a = heatAlpha(value, vmax);
  return a > 0 ? `rgba(${HEAT[0]}, ${HEAT[1]}, ${HEAT[2]}, ${a.toFixed(3)})` : "";
}

// Signed views (attribution): orange towards the target, blue away from it, alpha |value| / vmax.
const AWAY = [59, 125, 216];
export function signedHeat(value, vmax) {
  const a = heatAlpha(Math.abs(value), vmax);
  const c = value >= 0 ? HEAT : AWAY;
  return a > 0 ? `rgba(${c[0]}, ${c[1]}, ${c[2]}, ${a.toFixed(3)})` : "";
}

/** The one number format: fixed `digits` decimals. */
export function fmt(value, digits = 2) {
  return Number(value).toFixed(digits);
}

/** A fraction as a percentage: `pct(0.1234) === "12.3%"`. */
export function pct(fraction, digits = 1) {
  return `${fmt(100 * fraction, digits)}%`;
}

/** A feature's display name from a widget's `names` trait (`{"layer/feature": name}`: the user's label, else its
 * best explanation, else its top tokens); "" when it has only its id. */
export function nameOf(names, layer, feature) {
  return (names && names[`${layer}/${feature}`]) || "";
}

/** `L2 f12 · name` as one string (`f12 · name` with `withLayer` false; the id alone when it has no name). */
export function featureName(layer, feature, names, withLayer = true) {
  const id = withLayer ? `L${layer} f${feature}` : `f${feature}`;
  const name = nameOf(names, layer, feature);
  return name ? `${id} · ${name}` : id;
}

/** The id and, beside it, the name (`span.qs-name`, cut with … where narrow; the whole name on hover): the
 * children of a button or cell that shows a feature. */
export function featureLabel(layer, feature, names, withLayer = true) {
  const name = nameOf(names, layer, feature);
  return [h("span", { class: "qs-fid", text: withLayer ? `L${layer} f${feature}` : `f${feature}` }),
    name ? h("span", { class: "qs-name", text: name, title: name }) : null];
}
