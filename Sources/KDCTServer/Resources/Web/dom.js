// Small helpers shared by the screens: translated text, element building, sizes and durations in words.
// Everything reaches the page as text nodes, never parsed as HTML, so a file name can never become markup.

import { strings } from "./strings.js";

/// The text of `key` with `{name}` placeholders replaced from `values`.
export function t(key, values = {}) {
  const template = strings[key];
  if (template === undefined) {
    console.warn(`missing string ${key}`);
    return key;
  }
  return template.replace(/\{(\w+)\}/g, (whole, name) => (name in values ? String(values[name]) : whole));
}

/// True when `key` has a text.
export function hasText(key) {
  return Object.prototype.hasOwnProperty.call(strings, key);
}

/// An element: `h("button", { class: "primary", onclick: f }, "Text", child)`. Attributes named on* become
/// listeners; `false`/null attributes are left out; children may be strings, nodes, arrays or null.
export function h(tag, attributes = {}, ...children) {
  const element = document.createElement(tag);
  for (const [name, value] of Object.entries(attributes)) {
    if (value === false || value === null || value === undefined) continue;
    if (name.startsWith("on") && typeof value === "function") {
      element.addEventListener(name.slice(2), value);
    } else if (name === "dataset") {
      Object.assign(element.dataset, value);
    } else if (value === true) {
      element.setAttribute(name, "");
    } else {
      element.setAttribute(name, String(value));
    }
  }
  append(element, children);
  return element;
}

function append(element, children) {
  for (const child of children) {
    if (child === null || child === undefined || child === false) continue;
    if (Array.isArray(child)) append(element, child);
    else element.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
}

/// Fills every element with `data-t` (its text), `data-t-label` (aria-label), `data-t-placeholder` and
/// `data-t-title` from the strings.
export function translatePage(root = document) {
  for (const element of root.querySelectorAll("[data-t]")) element.textContent = t(element.dataset.t);
  for (const element of root.querySelectorAll("[data-t-label]")) element.setAttribute("aria-label", t(element.dataset.tLabel));
  for (const element of root.querySelectorAll("[data-t-placeholder]")) element.setAttribute("placeholder", t(element.dataset.tPlaceholder));
  for (const element of root.querySelectorAll("[data-t-title]")) element.setAttribute("title", t(element.dataset.tTitle));
}

/// `1.5 GiB`-style size (binary units, as qemu-img prints them).
export function formatBytes(value) {
  if (typeof value !== "number" || !Number.isFinite(value)) return t("common.unknown");
  if (value < 1024) return t("unit.B", { n: value });
  const units = ["KiB", "MiB", "GiB", "TiB"];
  let scaled = value;
  let unit = "B";
  for (const next of units) {
    if (scaled < 1024) break;
    scaled /= 1024;
    unit = next;
  }
  const digits = scaled >= 100 ? 0 : scaled >= 10 ? 1 : 2;
  return t(`unit.${unit}`, { n: scaled.toFixed(digits) });
}

/// A size with its exact byte count: `2.00 MiB (2,098,688 bytes)`.
export function formatBytesExact(value) {
  if (typeof value !== "number") return t("common.unknown");
  return value < 1024 ? formatBytes(value) : `${formatBytes(value)} (${t("unit.bytes", { n: value.toLocaleString("en") })})`;
}

/// `12 s`, `3 min 4 s`, `1 h 2 min`.
export function formatDuration(seconds) {
  if (typeof seconds !== "number" || !Number.isFinite(seconds) || seconds < 0) return t("common.unknown");
  if (seconds < 60) return t("unit.seconds", { n: seconds < 10 ? seconds.toFixed(1) : Math.round(seconds) });
  const whole = Math.round(seconds);
  if (whole < 3600) return t("unit.minutes", { m: Math.floor(whole / 60), s: whole % 60 });
  return t("unit.hours", { h: Math.floor(whole / 3600), m: Math.floor((whole % 3600) / 60) });
}

/// A date in the reader's locale.
export function formatTime(text) {
  const date = new Date(text);
  return Number.isNaN(date.getTime()) ? text : date.toLocaleString();
}

/// The last component of a path.
export function baseName(path) {
  const trimmed = String(path || "").replace(/\/+$/, "");
  return trimmed.slice(trimmed.lastIndexOf("/") + 1) || trimmed;
}

/// The folder of a path.
export function folderOf(path) {
  const text = String(path || "");
  const slash = text.lastIndexOf("/");
  return slash <= 0 ? "/" : text.slice(0, slash);
}

/// `folder/name`.
export function joinPath(folder, name) {
  return folder.endsWith("/") ? folder + name : `${folder}/${name}`;
}

/// A format name in words (`vmdk` -> `VMDK (VMware)`).
export function formatName(format) {
  return hasText(`format.${format}`) ? t(`format.${format}`) : String(format || t("common.unknown"));
}

/// A `<dl>` of label/value pairs (pairs whose value is null are left out).
export function definitionList(pairs, attributes = {}) {
  const list = h("dl", { class: "facts", ...attributes });
  for (const [label, value] of pairs) {
    if (value === null || value === undefined || value === "") continue;
    list.append(h("dt", {}, label), h("dd", {}, value));
  }
  return list;
}

/// Shows `message` (a string or node) in the live region `region`, with `kind` "error", "info" or "ok".
export function showMessage(region, message, kind = "error") {
  region.replaceChildren();
  if (!message) {
    region.hidden = true;
    return;
  }
  region.hidden = false;
  region.className = `message ${kind}`;
  region.append(message instanceof Node ? message : document.createTextNode(message));
}
