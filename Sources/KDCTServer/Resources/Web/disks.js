// The Disks screen: browse the roots, choose an image or appliance, read what it is in plain words.

import { api } from "./api.js";
import { choosePath } from "./dialog.js";
import {
  baseName, definitionList, folderOf, formatBytes, formatBytesExact, formatName, h, hasText, showMessage, t,
} from "./dom.js";

const remembered = "kdct.disks.folder";

/// Sets up the screen; `actions.convert(path, info)` and `actions.export(path, info)` open the other screens.
export function initDisks(actions) {
  const browser = document.getElementById("disk-browser");
  const details = document.getElementById("disk-details");
  let selected = null;

  /// Lists `path` (null: the roots; `descend`: straight into the only root when there is one).
  async function openFolder(path, descend = false) {
    const message = h("div", { role: "alert", hidden: true });
    let listing;
    try {
      listing = await api.list(path);
    } catch (error) {
      if (path) {
        sessionStorage.removeItem(remembered);
        return openFolder(null, descend);
      }
      browser.replaceChildren(message);
      showMessage(message, error.message);
      return;
    }
    if (descend && !listing.path && listing.entries.length === 1) return openFolder(listing.entries[0].path);
    if (listing.path) sessionStorage.setItem(remembered, listing.path);
    else sessionStorage.removeItem(remembered);
    browser.replaceChildren(...renderListing(listing, openFolder, select), message);
    markSelected();
  }

  /// Shows what `entry` is, opened with `parents` (the parent images the user chose, as the CLI's --parent).
  async function select(entry, parents = []) {
    selected = entry.path;
    markSelected();
    details.replaceChildren(h("h3", {}, entry.name), h("p", { class: "muted" }, t("common.loading")));
    try {
      const info = await api.inspect(entry.path, parents);
      if (selected !== entry.path) return;
      const chooseParent = async () => {
        const parent = await choosePath("file", folderOf(entry.path));
        if (parent) select(entry, [...parents, parent]);
      };
      details.replaceChildren(...renderInfo(entry, info, { ...actions, chooseParent }, parents));
    } catch (error) {
      if (selected !== entry.path) return;
      const message = h("div", { role: "alert" });
      showMessage(message, error.message);
      details.replaceChildren(h("h3", {}, entry.name), message);
    }
  }

  function markSelected() {
    for (const row of browser.querySelectorAll("tr[data-path]")) {
      const on = row.dataset.path === selected;
      row.classList.toggle("selected", on);
      const button = row.querySelector("button");
      if (on) button.setAttribute("aria-current", "true");
      else button.removeAttribute("aria-current");
    }
  }

  return {
    show: () => openFolder(sessionStorage.getItem(remembered), true),
    refresh: () => openFolder(sessionStorage.getItem(remembered), true),
  };
}

function renderListing(listing, openFolder, select) {
  const heading = h("h3", {}, t("disks.folder"));
  const location = h("p", { class: "location", "data-path": listing.path || "" },
                     listing.path ? t("disks.location", { path: listing.path }) : t("disks.atRoots"));
  if (typeof listing.free === "number") location.append(h("span", { class: "muted" }, ` · ${t("disks.freeSpace", { size: formatBytes(listing.free) })}`));
  const body = h("tbody");
  if (listing.path) {
    body.append(h("tr", {}, h("td", { colspan: 4 },
      h("button", { type: "button", class: "link up", onclick: () => openFolder(listing.parent) },
        listing.parent ? t("common.up") : t("common.roots")))));
  }
  for (const entry of listing.entries) {
    if (entry.kind === "directory") {
      const free = typeof entry.free === "number" ? t("disks.freeSpace", { size: formatBytes(entry.free) }) : "";
      body.append(h("tr", { "data-folder": entry.path },
        h("td", {}, h("button", { type: "button", class: "link folder", "data-path": entry.path, onclick: () => openFolder(entry.path) }, entry.name)),
        h("td", {}, t("disks.folderKind")), h("td", { class: "num" }), h("td", { class: "num" }, free)));
    } else if (entry.kind === "file") {
      const image = Boolean(entry.format);
      const name = image
        ? h("button", { type: "button", class: "link file", onclick: () => select(entry) }, entry.name)
        : h("span", { class: "muted" }, entry.name);
      body.append(h("tr", { "data-path": image ? entry.path : null, class: image ? null : "other" },
        h("td", {}, name),
        h("td", {}, image ? formatName(entry.format) : h("span", { class: "muted" }, t("disks.notImage"))),
        h("td", { class: "num" }, typeof entry["virtual-size"] === "number" ? formatBytes(entry["virtual-size"]) : ""),
        h("td", { class: "num" }, formatBytes(entry["allocated-size"] ?? entry.size))));
    } else if (entry.kind === "symlink") {
      body.append(h("tr", { class: "other" }, h("td", {}, h("span", { class: "muted" }, entry.name)),
        h("td", { colspan: 3 }, h("span", { class: "muted" }, t("disks.outside")))));
    }
  }
  const table = h("table", { class: "files" },
    h("thead", {}, h("tr", {},
      h("th", { scope: "col" }, t("disks.col.name")), h("th", { scope: "col" }, t("disks.col.format")),
      h("th", { scope: "col", class: "num" }, t("disks.col.virtual")), h("th", { scope: "col", class: "num" }, t("disks.col.file")))),
    body);
  const parts = [heading, location, h("div", { class: "table-scroll" }, table)];
  if (listing.entries.length === 0) parts.push(h("p", { class: "muted" }, t("disks.empty")));
  if (listing.truncated) parts.push(h("p", { class: "hint" }, t("disks.truncated")));
  return parts;
}

/// The details of an inspected file.
export function renderInfo(entry, info, actions, parents = []) {
  const parts = [h("h3", {}, entry.name)];
  if (info.appliance) {
    parts.push(...renderAppliance(info));
    parts.push(h("div", { class: "actions" },
      h("button", { type: "button", class: "primary", id: "disk-convert", onclick: () => actions.convert(entry.path, info) }, t("disks.convertAppliance"))));
    return parts;
  }
  parts.push(definitionList([
    [t("info.file"), info.filename],
    [t("info.format"), formatName(info.format)],
    [t("info.subformat"), info.subformat],
    [t("info.producer"), producerText(info.producer)],
    [t("info.virtualSize"), formatBytesExact(info["virtual-size"])],
    [t("info.actualSize"), typeof info["actual-size"] === "number" ? formatBytesExact(info["actual-size"]) : null],
    [t("info.clusterSize"), typeof info["cluster-size"] === "number" ? formatBytes(info["cluster-size"]) : null],
    [t("info.dirty"), info["dirty-flag"] ? t("common.no") : t("common.yes")],
    [t("info.backing"), info["backing-filename"]],
  ], { id: "disk-facts" }));

  parts.push(h("h4", {}, t("info.warnings")));
  // The image's notes come as warnings with code "note" too: they are listed once, under Notes.
  const warnings = (info.warnings || []).filter((warning) => warning.code !== "note");
  // A parent that could not be opened. A VDI snapshot finds its parent by UUID, so the user may name the file
  // (the CLI's --parent); the other formats name the parent's file, which must then be where they say.
  const missingParent = (warning) => warning.field === "parent" || warning.field === "backing-file";
  const parentHelp = () => (info.format === "vdi"
    ? h("div", { class: "hint" }, t("info.parentHint"), " ",
        h("button", { type: "button", id: "disk-choose-parent", onclick: actions.chooseParent }, t("info.chooseParent")))
    : h("div", { class: "hint" }, t("info.parentPlaceHint")));
  parts.push(warnings.length === 0 ? h("p", { class: "muted" }, t("info.noWarnings"))
    : h("ul", { class: "warnings", id: "disk-warnings" }, warnings.map((warning) => h("li", {},
      warning.code === "dirty" ? t("info.warning.dirty") : warning.message,
      missingParent(warning) ? parentHelp() : null))));
  if (parents.length > 0) parts.push(h("p", { class: "hint" }, t("info.parentsChosen", { paths: parents.join(", ") })));

  if ((info.notes || []).length > 0) {
    parts.push(h("h4", {}, t("info.notes")), h("ul", {}, info.notes.map((note) => h("li", {}, note))));
  }

  const chain = info.chain || [];
  if (chain.length > 1) {
    parts.push(h("h4", {}, t("info.chain")), h("ol", { class: "chain" }, chain.map((layer) => h("li", {},
      h("strong", {}, baseName(layer.filename)), ` — ${formatName(layer.format)}`,
      layer.producer ? `, ${producerText(layer.producer)}` : "", `, ${formatBytes(layer["virtual-size"])}`,
      h("div", { class: "muted path" }, layer.filename)))));
  }

  const references = info.references || [];
  if (references.length > 0) {
    parts.push(h("h4", {}, t("info.references")), h("ul", { class: "references" }, references.map((reference) => {
      const kind = hasText(`info.ref.kind.${reference.kind}`) ? t(`info.ref.kind.${reference.kind}`) : reference.kind;
      let verdict;
      if (reference.allowed && reference.exists !== false) verdict = h("span", { class: "ok" }, t("info.ref.used"));
      else if (reference.exists === false) verdict = h("span", { class: "bad" }, t("info.ref.missing", { reason: reference.reason || "" }));
      else verdict = h("span", { class: "bad" }, t("info.ref.notUsed", { reason: reference.reason || "" }));
      const where = reference["resolved-path"] ? h("div", { class: "muted path" }, t("info.ref.resolved", { path: reference["resolved-path"] })) : null;
      return h("li", {}, `${kind}: `, h("strong", {}, reference.name), " — ", verdict, where);
    })));
  }

  const specific = info["format-specific"] && info["format-specific"].data;
  if (specific && typeof specific === "object" && Object.keys(specific).length > 0) {
    parts.push(h("details", {}, h("summary", {}, t("info.details")), renderValue(specific)));
  }

  parts.push(h("div", { class: "actions" },
    h("button", { type: "button", class: "primary", id: "disk-convert", onclick: () => actions.convert(entry.path, info, parents) }, t("disks.convertThis")),
    h("button", { type: "button", id: "disk-export", onclick: () => actions.export(entry.path, info) }, t("disks.exportThis"))));
  return parts;
}

function renderAppliance(info) {
  const os = info["operating-system"] || {};
  const cpus = info["cores-per-socket"] ? t("vm.cpusWithCores", { cpus: info.cpus, cores: info["cores-per-socket"] }) : String(info.cpus);
  const firmware = info["secure-boot"] ? t("vm.secureBoot")
    : hasText(`vm.firmware.${info.firmware}`) ? t(`vm.firmware.${info.firmware}`) : info.firmware;
  const parts = [
    h("h4", {}, t("vm.heading")),
    definitionList([
      [t("info.file"), info.filename],
      [t("info.format"), formatName(info.format)],
      [t("vm.name"), info.name],
      [t("vm.os"), os.name],
      [t("vm.cpus"), cpus],
      [t("vm.memory"), formatBytes(info.memory)],
      [t("vm.firmware"), firmware],
      [t("vm.producer"), info.producer],
      [t("vm.manifest"), info.manifest ? t("vm.manifest.present", { file: info.manifest.file }) : t("vm.manifest.absent")],
    ], { id: "vm-facts" }),
    h("h4", {}, t("vm.disks")),
    h("div", { class: "table-scroll" }, h("table", { class: "plain", id: "vm-disks" },
      h("thead", {}, h("tr", {}, ...["vm.disk.id", "vm.disk.file", "vm.disk.capacity", "vm.disk.fileSize", "vm.disk.controller"]
        .map((key) => h("th", { scope: "col" }, t(key))))),
      h("tbody", {}, (info.disks || []).map((disk) => h("tr", {},
        h("td", {}, disk.id),
        h("td", {}, disk.blank ? t("vm.disk.blank") : disk.file),
        h("td", {}, typeof disk.capacity === "number" ? formatBytes(disk.capacity) : String(disk.capacity ?? "")),
        h("td", {}, typeof disk["file-size"] === "number" ? formatBytes(disk["file-size"]) : ""),
        h("td", {}, disk.controller ? [disk.controller.bus, disk.controller.model].filter(Boolean).join(" ") : "")))))),
    h("h4", {}, t("vm.nics")),
  ];
  const nics = info.nics || [];
  parts.push(nics.length === 0 ? h("p", { class: "muted" }, t("vm.noNics"))
    : h("div", { class: "table-scroll" }, h("table", { class: "plain", id: "vm-nics" },
      h("thead", {}, h("tr", {}, ...["vm.nic.name", "vm.nic.type", "vm.nic.network", "vm.nic.mac"].map((key) => h("th", { scope: "col" }, t(key))))),
      h("tbody", {}, nics.map((nic) => h("tr", {},
        h("td", {}, nic.name || nic.id), h("td", {}, nic.type || ""), h("td", {}, nic.network || ""), h("td", {}, nic.mac || "")))))));
  if ((info.notes || []).length > 0) parts.push(h("h4", {}, t("info.notes")), h("ul", {}, info.notes.map((note) => h("li", {}, note))));
  return parts;
}

/// A format-specific value as nested lists: `lazy-refcounts` reads "Lazy refcounts", true reads "yes".
function renderValue(value, key = "") {
  if (Array.isArray(value)) {
    return h("ol", { class: "values" }, value.map((item) => h("li", {}, renderValue(item, key))));
  }
  if (value && typeof value === "object") {
    const list = h("dl", { class: "facts nested" });
    for (const [key, item] of Object.entries(value)) list.append(h("dt", {}, words(key)), h("dd", {}, renderValue(item, key)));
    return list;
  }
  if (typeof value === "boolean") return value ? t("common.yes") : t("common.no");
  if (typeof value === "number" && /size|length|capacity/.test(key)) return formatBytesExact(value);
  return String(value);
}

/// A producer as written in the image, without the decoration some writers add (VDI's `<<< ... >>>`).
function producerText(text) {
  return text ? String(text).replace(/^<<<\s*/, "").replace(/\s*>>>$/, "") : text;
}

function words(key) {
  const text = String(key).replace(/[-_]/g, " ");
  return text.charAt(0).toUpperCase() + text.slice(1);
}
