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
  const cleanups = [];
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
    /** Run `callback` when the view goes (an observer's disconnect). */
    onDispose(callback) {
      cleanups.push(callback);
    },
    dispose() {
      for (const callback of cleanups.splice(0)) callback();
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

// Text on a shaded background stays readable in light and dark themes: the shade is composited over the page's
// own background, and the text gets black or white, whichever contrasts more (WCAG relative luminance).
function channel(c) {
  const v = c / 255;
  return v <= 0.03928 ? v / 12.92 : ((v + 0.055) / 1.055) ** 2.4;
}
export function luminance([r, g, b]) {
  return 0.2126 * channel(r) + 0.7152 * channel(g) + 0.0722 * channel(b);
}
export function contrast(a, b) {
  const [x, y] = [luminance(a), luminance(b)].sort((p, q) => q - p);
  return (x + 0.05) / (y + 0.05);
}
/** The first opaque background behind `node` as [r, g, b] (white when none is set). */
export function backdrop(node) {
  for (let at = node; at && at.nodeType === 1; at = at.parentElement) {
    const m = getComputedStyle(at).backgroundColor.match(/[\d.]+/g);
    if (m && (m.length < 4 || Number(m[3]) > 0.5)) return m.slice(0, 3).map(Number);
  }
  return [255, 255, 255];
}
/** Black or white, whichever reads better on `rgb` shaded with alpha `a` over `base`. */
export function inkOn(rgb, a, base) {
  const mixed = rgb.map((c, i) => a * c + (1 - a) * base[i]);
  return contrast(mixed, [0, 0, 0]) >= contrast(mixed, [255, 255, 255]) ? "#000" : "#fff";
}
/** Call `callback` once the view is in the page and whenever the notebook's theme changes (light <-> dark):
 * what depends on the backdrop (`shade`'s text colour) is redone. */
export function onBackdrop(model, el, callback) {
  const observer = new MutationObserver(() => callback());
  observer.observe(document.body, { attributes: true, attributeFilter: ["data-jp-theme-light", "data-jp-theme-name"] });
  model.onDispose(() => observer.disconnect());
  const wait = () => { if (el.isConnected) callback(); else model.later(wait, 50); };
  model.later(wait, 0);
}

/** Shade `node` by `value` on the heat scale, with readable text (`base`: the backdrop, from `backdrop`). */
export function shade(node, value, vmax, base) {
  const a = heatAlpha(value, vmax);
  node.style.background = a > 0 ? heat(value, vmax) : "";
  node.style.color = a > 0.25 ? inkOn(HEAT, a, base) : "";
}
/** The same for the signed scale (attribution). */
export function shadeSigned(node, value, vmax, base) {
  const a = heatAlpha(Math.abs(value), vmax);
  node.style.background = a > 0 ? signedHeat(value, vmax) : "";
  node.style.color = a > 0.25 ? inkOn(value >= 0 ? HEAT : AWAY, a, base) : "";
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
