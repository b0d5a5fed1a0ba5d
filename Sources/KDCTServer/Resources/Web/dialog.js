// The one modal dialog of the page (a native <dialog>: focus stays inside, Escape closes it), used for
// confirmations, the host key question, passwords, the domain XML and the file and folder chooser.

import { api } from "./api.js";
import { formatBytes, formatName, h, showMessage, t } from "./dom.js";

const dialog = () => document.getElementById("dialog");

/// Shows `body` under `title` with `buttons` ({label, value, primary, danger}); resolves with the value of the
/// button pressed, or null when the dialog is dismissed (Escape). `onOpen` runs once the dialog is shown.
export function openDialog(title, body, buttons, { wide = false, onOpen = null, read = null } = {}) {
  const element = dialog();
  return new Promise((resolve) => {
    const finish = (value) => {
      element.close();
      resolve(value);
    };
    const footer = h("div", { class: "actions" });
    for (const button of buttons) {
      if (button.href) {
        footer.append(h("a", { class: "button", href: button.href, download: "", id: button.id || null }, button.label));
        continue;
      }
      footer.append(h("button", {
        type: "button",
        class: button.primary ? "primary" : button.danger ? "danger" : null,
        id: button.id || null,
        onclick: () => {
          if (button.value === null || !read) return finish(button.value);
          const value = read(button.value);
          if (value !== undefined) finish(value);
        },
      }, button.label));
    }
    element.className = wide ? "wide" : "";
    element.replaceChildren(h("h2", { id: "dialog-title" }, title), h("div", { class: "dialog-body" }, body), footer);
    // Enter in a text or password field presses the primary button.
    element.onkeydown = (event) => {
      if (event.key === "Enter" && event.target.tagName === "INPUT") {
        event.preventDefault();
        element.querySelector(".actions button.primary")?.click();
      }
    };
    element.oncancel = (event) => {
      event.preventDefault();
      finish(null);
    };
    element.showModal();
    if (onOpen) onOpen(element);
    const primary = element.querySelector("input, button.primary") || element.querySelector("button");
    if (primary) primary.focus();
  });
}

/// Asks a yes/no question; resolves true when confirmed.
export async function confirmAction(title, text, confirmLabel, { danger = false, cancelLabel = t("common.cancel") } = {}) {
  const answer = await openDialog(title, h("p", {}, text), [
    { label: cancelLabel, value: null },
    { label: confirmLabel, value: true, primary: !danger, danger, id: "dialog-confirm" },
  ]);
  return answer === true;
}

/// Shows a text (the domain XML) with a download link.
export function showText(title, text, downloadURL, hint) {
  const body = [hint ? h("p", { class: "hint" }, hint) : null, h("pre", { class: "code", tabindex: "0" }, text)];
  const buttons = [{ label: t("common.close"), value: null }];
  if (downloadURL) buttons.push({ label: t("common.download"), href: downloadURL, id: "dialog-download" });
  return openDialog(title, body, buttons, { wide: true });
}

/// Chooses a file (`kind` "file") or a folder (`kind` "folder") inside the roots, starting in `start` (a
/// folder, or null for the roots). Resolves with the path, or null.
export function choosePath(kind, start) {
  const list = h("div", { class: "picker-list" });
  const location = h("p", { class: "picker-location" });
  const message = h("div", { role: "alert", hidden: true });
  let current = null;
  let listing = null;

  async function show(path, descend = false) {
    list.replaceChildren(h("p", { class: "muted" }, t("common.loading")));
    try {
      listing = await api.list(path);
    } catch (error) {
      if (path) return show(null, descend);
      showMessage(message, error.message);
      list.replaceChildren();
      return;
    }
    if (descend && !listing.path && listing.entries.length === 1) return show(listing.entries[0].path);
    showMessage(message, null);
    current = listing.path;
    location.textContent = current ? t("disks.location", { path: current }) : t("disks.atRoots");
    location.dataset.path = current || "";
    const rows = [];
    if (current) {
      rows.push(h("li", {}, h("button", { type: "button", class: "link up", onclick: () => show(listing.parent) },
                                (listing.parent ? t("common.up") : t("common.roots")))));
    }
    for (const entry of listing.entries) {
      if (entry.kind === "directory") {
        rows.push(h("li", {}, h("button", { type: "button", class: "link folder", "data-path": entry.path, onclick: () => show(entry.path) },
                                  entry.name)));
      } else if (kind === "file" && entry.kind === "file") {
        const detail = entry.format ? `${formatName(entry.format)}, ${formatBytes(entry["virtual-size"] ?? entry.size)}`
                                    : formatBytes(entry.size);
        rows.push(h("li", {}, h("button", { type: "button", class: "link file", "data-path": entry.path,
                                            onclick: () => pick(entry.path) },
                                  h("span", {}, entry.name), h("span", { class: "muted" }, ` — ${detail}`))));
      }
    }
    list.replaceChildren(h("ul", {}, rows));
    const first = list.querySelector("button");
    if (first) first.focus();
  }

  let pick = () => {};
  const buttons = [{ label: t("common.cancel"), value: null }];
  if (kind === "folder") buttons.push({ label: t("picker.useFolder"), value: "folder", primary: true, id: "picker-use-folder" });
  const title = kind === "folder" ? t("picker.folderTitle") : t("picker.fileTitle");
  const result = openDialog(title, [location, message, list], buttons, {
    wide: true,
    read: () => current || undefined,
    onOpen: (element) => {
      pick = (path) => {
        element.close();
        resolvePick(path);
      };
      show(start, true);
    },
  });
  let resolvePick;
  const picked = new Promise((resolve) => { resolvePick = resolve; });
  return Promise.race([result, picked]);
}

/// Asks for the password (or key passphrase) a resumed or retried remote job needs again.
export function askCredentials(usesKey) {
  const input = h("input", { id: "dialog-secret", type: "password", autocomplete: usesKey ? "off" : "current-password" });
  const label = h("label", { for: "dialog-secret" }, usesKey ? t("export.passphrase") : t("export.password"));
  return openDialog(t("jobs.credentialsTitle"), [h("p", {}, t("jobs.credentialsText")), h("div", { class: "field" }, label, input)], [
    { label: t("common.cancel"), value: null },
    { label: t("jobs.credentialsConfirm"), value: true, primary: true },
  ], { read: () => (usesKey ? (input.value ? { passphrase: input.value } : {}) : { password: input.value }) });
}

