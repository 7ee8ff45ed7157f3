// Shared helpers, prepended to every qscope-lab widget module (see qscope_lab/widgets/_base.py).

function h(tag, attrs = {}, ...children) {
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

// Binary traits arrive as DataView; views share the buffer (no copy).
function f32(view) {
  return view && view.byteLength ? new Float32Array(view.buffer, view.byteOffset, view.byteLength / 4) : new Float32Array(0);
}
function i32(view) {
  return view && view.byteLength ? new Int32Array(view.buffer, view.byteOffset, view.byteLength / 4) : new Int32Array(0);
}
function u8(view) {
  return view && view.byteLength ? new Uint8Array(view.buffer, view.byteOffset, view.byteLength) : new Uint8Array(0);
}

// One colour scale for every activation view: white at 0, full orange at vmax (linear alpha).
const HEAT = [255, 102, 0];
function heatAlpha(value, vmax) {
  if (!(value > 0) || !(vmax > 0)) return 0;
  return Math.min(1, value / vmax);
}
function heat(value, vmax) {
  const a = heatAlpha(value, vmax);
  return a > 0 ? `rgba(${HEAT[0]}, ${HEAT[1]}, ${HEAT[2]}, ${a.toFixed(3)})` : "";
}

function fmt(value, digits = 2) {
  return Number(value).toFixed(digits);
}

// The error line and busy marker every widget shows; returns the element to put first.
function statusLine(model) {
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

function featureName(feature, labels) {
  const label = labels && labels[String(feature)];
  return label ? `f${feature} · ${label}` : `f${feature}`;
}

function setTrait(model, name, value) {
  model.set(name, value);
  model.save_changes();
}
