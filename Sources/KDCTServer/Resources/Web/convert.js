// The Convert screen: a disk (or an OVA/OVF appliance) to RAW or QCOW2 in a folder inside the roots, with the
// space it needs against the space free there, and a question before anything is replaced.

import { api } from "./api.js";
import { choosePath, confirmAction } from "./dialog.js";
import { baseName, folderOf, formatBytes, formatName, joinPath, showMessage, t } from "./dom.js";

/// Sets up the screen; `onQueued(job)` shows a submitted job.
export function initConvert({ onQueued }) {
  const form = document.getElementById("convert-form");
  const source = document.getElementById("convert-source");
  const sourceInfo = document.getElementById("convert-source-info");
  const folder = document.getElementById("convert-folder");
  const name = document.getElementById("convert-name");
  const nameLabel = document.getElementById("convert-name-label");
  const applianceHint = document.getElementById("convert-appliance-hint");
  const checksum = document.getElementById("convert-checksum");
  const space = document.getElementById("convert-space");
  const message = document.getElementById("convert-message");
  const compressionHint = document.getElementById("convert-compression-hint");
  const submit = document.getElementById("convert-submit");
  let described = null;     // { path, appliance, format, virtualSize } of the chosen source
  let parents = [];         // parent images chosen on the Disks screen (the CLI's --parent)
  let nameEdited = false;
  let measureTicket = 0;

  const outputFormat = () => form.querySelector("input[name=output_format]:checked").value;
  const compression = () => form.querySelector("input[name=compression]:checked").value;

  function suggestName() {
    if (!described || nameEdited) return;
    const base = baseName(described.path).replace(/\.[^.]*$/, "") || "disk";
    name.value = described.appliance ? base : `${base}.${outputFormat()}`;
  }

  function updateOptions() {
    const raw = outputFormat() === "raw";
    for (const input of form.querySelectorAll("input[name=compression]")) input.disabled = raw;
    if (raw) form.querySelector("input[name=compression][value=none]").checked = true;
    compressionHint.hidden = !raw;
    const appliance = Boolean(described && described.appliance);
    nameLabel.textContent = appliance ? t("convert.folderName") : t("convert.fileName");
    applianceHint.hidden = !appliance;
    checksum.closest(".field").hidden = appliance;
  }

  async function describeSource(path, info) {
    described = null;
    sourceInfo.textContent = "";
    if (!path) return updateOptions();
    try {
      const data = info || await api.inspect(path, parents);
      if (source.value !== path) return;
      described = {
        path,
        appliance: Boolean(data.appliance),
        format: data.format,
        virtualSize: data.appliance ? (data.disks || []).reduce((sum, disk) => sum + (Number(disk.capacity) || 0), 0)
                                    : data["virtual-size"],
      };
      sourceInfo.textContent = t("convert.sourceIs", { format: formatName(data.format), size: formatBytes(described.virtualSize) });
      sourceInfo.className = "hint";
      if (!folder.value) folder.value = folderOf(path);
    } catch (error) {
      if (source.value !== path) return;
      sourceInfo.textContent = error.message;
      sourceInfo.className = "hint bad";
    }
    updateOptions();
    suggestName();
    measure();
  }

  async function measure() {
    const ticket = ++measureTicket;
    if (!described || !folder.value.trim()) {
      space.textContent = t("convert.spaceUnknown");
      space.className = "space muted";
      return;
    }
    space.textContent = t("convert.spaceMeasuring");
    space.className = "space muted";
    try {
      const body = { path: described.path, output_format: outputFormat(), destination: folder.value.trim() };
      if (parents.length > 0) body.parents = parents;
      const answer = await api.measure(body);
      if (ticket !== measureTicket) return;
      const values = { required: formatBytes(answer.required), free: formatBytes(answer.free), folder: answer["destination-folder"] };
      let text;
      if (typeof answer.free !== "number") text = t("convert.spaceNoFree", values);
      else text = answer.fits ? t("convert.spaceFits", values) : t("convert.spaceTooSmall", values);
      if (compression() !== "none") text += ` ${t("convert.spaceCompressed")}`;
      space.textContent = text;
      space.className = `space ${answer.fits === false ? "bad" : "ok"}`;
    } catch (error) {
      if (ticket !== measureTicket) return;
      space.textContent = error.message;
      space.className = "space bad";
    }
  }

  async function submitJob(event) {
    event.preventDefault();
    showMessage(message, null);
    const path = source.value.trim();
    const folderPath = folder.value.trim();
    const outputName = name.value.trim();
    if (!path) return fail(t("convert.needSource"), source);
    if (!folderPath) return fail(t("convert.needFolder"), folder);
    if (!outputName || outputName.includes("/") || outputName === "." || outputName === "..") return fail(t("convert.needName"), name);
    if (!described || described.path !== path) await describeSource(path);
    if (!described) return fail(sourceInfo.textContent || t("convert.needSource"), source);
    const destination = joinPath(folderPath, outputName);

    // Ask before replacing anything that is already there.
    let force = false;
    try {
      const listing = await api.list(folderPath);
      if (listing.entries.some((entry) => entry.name === outputName)) {
        const text = described.appliance ? t("convert.overwriteFolderText", { path: destination })
                                         : t("convert.overwriteText", { path: destination });
        if (!(await confirmAction(t("convert.overwriteTitle"), text, t("convert.overwriteConfirm"), { danger: true }))) return;
        force = true;
      }
    } catch (error) {
      return fail(error.message, folder);
    }

    const job = { kind: described.appliance ? "appliance" : "convert", source: path, destination, output_format: outputFormat() };
    if (compression() !== "none") {
      job.compress = true;
      job.compression_type = compression();
    }
    if (!described.appliance && checksum.checked) job.checksum = true;
    if (!described.appliance && parents.length > 0) job.parents = parents;
    if (force) job.force = true;
    submit.disabled = true;
    try {
      const created = await api.submit(job);
      showMessage(message, t("convert.queued"), "ok");
      onQueued(created);
    } catch (error) {
      fail(error.message, error.field === "destination" ? name : null);
    } finally {
      submit.disabled = false;
    }
  }

  function fail(text, field) {
    showMessage(message, text, "error");
    if (field) field.focus();
  }

  source.addEventListener("change", () => {
    parents = [];
    describeSource(source.value.trim());
  });
  folder.addEventListener("change", measure);
  name.addEventListener("input", () => { nameEdited = name.value.trim() !== ""; });
  for (const input of form.querySelectorAll("input[name=output_format], input[name=compression]")) {
    input.addEventListener("change", () => {
      updateOptions();
      suggestName();
      measure();
    });
  }
  document.getElementById("convert-source-choose").addEventListener("click", async () => {
    const path = await choosePath("file", source.value ? folderOf(source.value) : null);
    if (path) {
      source.value = path;
      nameEdited = false;
      parents = [];
      describeSource(path);
    }
  });
  document.getElementById("convert-folder-choose").addEventListener("click", async () => {
    const path = await choosePath("folder", folder.value || (source.value ? folderOf(source.value) : null));
    if (path) {
      folder.value = path;
      measure();
    }
  });
  form.addEventListener("submit", submitJob);
  updateOptions();
  measure();

  return {
    /// Starts from `path` (chosen on the Disks screen, with `chosenParents`), with what inspect said about it.
    use(path, info, chosenParents = []) {
      parents = chosenParents;
      source.value = path;
      folder.value = folderOf(path);
      nameEdited = false;
      showMessage(message, null);
      describeSource(path, info);
    },
  };
}

