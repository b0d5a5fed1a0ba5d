// The Export screen: a file (or a disk converted on the way) to a KVM host over SFTP. The host's key is
// checked first: a new host shows its fingerprint and asks to be trusted; a changed key is refused.

import { api } from "./api.js";
import { choosePath, openDialog } from "./dialog.js";
import { definitionList, folderOf, formatBytes, formatName, h, showMessage, t } from "./dom.js";

/// Sets up the screen; `onQueued(job)` shows a submitted job.
export function initExport({ onQueued }) {
  const form = document.getElementById("export-form");
  const source = document.getElementById("export-source");
  const sourceInfo = document.getElementById("export-source-info");
  const host = document.getElementById("export-host");
  const port = document.getElementById("export-port");
  const user = document.getElementById("export-user");
  const password = document.getElementById("export-password");
  const key = document.getElementById("export-key");
  const passphrase = document.getElementById("export-passphrase");
  const remotePath = document.getElementById("export-path");
  const overwrite = document.getElementById("export-overwrite");
  const message = document.getElementById("export-message");
  const submit = document.getElementById("export-submit");

  const choice = (name) => form.querySelector(`input[name=${name}]:checked`).value;

  function updateOptions() {
    document.getElementById("export-convert-options").hidden = choice("mode") !== "convert";
    const raw = choice("export_format") === "raw";
    for (const input of form.querySelectorAll("input[name=export_compression]")) input.disabled = raw;
    if (raw) form.querySelector("input[name=export_compression][value=none]").checked = true;
    document.getElementById("export-password-field").hidden = choice("auth") !== "password";
    document.getElementById("export-key-fields").hidden = choice("auth") !== "key";
  }

  async function describeSource(path, info) {
    sourceInfo.textContent = "";
    if (!path) return;
    try {
      const data = info || await api.inspect(path);
      if (source.value !== path) return;
      sourceInfo.textContent = t("convert.sourceIs", { format: formatName(data.format), size: formatBytes(data["virtual-size"]) });
      sourceInfo.className = "hint";
    } catch (error) {
      if (source.value !== path) return;
      sourceInfo.textContent = error.message;
      sourceInfo.className = "hint bad";
    }
  }

  /// The sftp:// URL of the destination (user and path percent-encoded, an IPv6 address in brackets).
  function destinationURL() {
    const hostName = host.value.trim();
    const authority = hostName.includes(":") ? `[${hostName}]` : hostName;
    const path = remotePath.value.trim().split("/").map(encodeURIComponent).join("/");
    return `sftp://${encodeURIComponent(user.value.trim())}@${authority}:${Number(port.value)}${path}`;
  }

  /// Checks the host's key; resolves true when the job may go ahead (known, or trusted now).
  async function checkHostKey(hostName, portNumber) {
    showMessage(message, t("export.checking", { host: hostName }), "info");
    const probe = await api.probeHost(hostName, portNumber);
    const values = { host: `${hostName}:${portNumber}`, file: probe["known-hosts-file"], name: probe["known-hosts-name"],
                     type: probe["key-type"], fingerprint: probe.fingerprint };
    if (probe.status === "known") {
      showMessage(message, null);
      return true;
    }
    if (probe.status === "changed" || probe.status === "revoked") {
      const text = probe.status === "changed" ? t("trust.changed", values) : t("trust.revoked", values);
      showMessage(message, h("div", { class: "refusal" }, h("strong", {}, t("trust.changedTitle")), h("p", {}, text),
                             h("p", { class: "mono small" }, t("trust.presented", values))), "error");
      return false;
    }
    showMessage(message, null);
    const typeShort = String(probe["key-type"]).replace(/^ssh-/, "").replace(/^ecdsa-sha2-nistp\d+$/, "ecdsa");
    const body = [
      h("p", {}, t("trust.text", { host: values.host, typeShort })),
      definitionList([[t("trust.keyType"), probe["key-type"]],
                      [t("trust.fingerprint"), h("code", { id: "trust-fingerprint" }, probe.fingerprint)]]),
      h("p", { class: "hint" }, t("trust.file", values)),
    ];
    const answer = await openDialog(t("trust.title"), body, [
      { label: t("common.cancel"), value: null },
      { label: t("trust.confirm"), value: true, primary: true, id: "trust-confirm" },
    ]);
    if (answer !== true) return false;
    await api.trustHost(hostName, portNumber, probe.fingerprint);
    return true;
  }

  async function submitJob(event) {
    event.preventDefault();
    showMessage(message, null);
    const path = source.value.trim();
    const hostName = host.value.trim();
    const portNumber = Number(port.value);
    const auth = choice("auth");
    if (!path) return fail(t("export.needSource"), source);
    if (!hostName) return fail(t("export.needHost"), host);
    if (!Number.isInteger(portNumber) || portNumber < 1 || portNumber > 65535) return fail(t("export.badPort"), port);
    if (!user.value.trim()) return fail(t("export.needUser"), user);
    if (!remotePath.value.trim().startsWith("/")) return fail(t("export.needPath"), remotePath);
    if (auth === "password" && !password.value) return fail(t("export.needPassword"), password);
    if (auth === "key" && !key.value.trim()) return fail(t("export.needKey"), key);

    const convert = choice("mode") === "convert";
    const job = { kind: convert ? "convert-and-export" : "export", source: path, destination: destinationURL() };
    if (convert) {
      job.output_format = choice("export_format");
      if (choice("export_compression") !== "none") {
        job.compress = true;
        job.compression_type = choice("export_compression");
      }
    }
    if (auth === "password") job.password = password.value;
    if (auth === "key") {
      job.identity = key.value.trim();
      if (passphrase.value) job.passphrase = passphrase.value;
    }
    if (auth === "agent") job.agent = true;
    if (overwrite.checked) job.force = true;

    submit.disabled = true;
    try {
      if (!(await checkHostKey(hostName, portNumber))) return;
      const created = await api.submit(job);
      password.value = "";
      passphrase.value = "";
      showMessage(message, t("export.queued"), "ok");
      onQueued(created);
    } catch (error) {
      fail(error.message, null);
    } finally {
      submit.disabled = false;
    }
  }

  function fail(text, field) {
    showMessage(message, text, "error");
    if (field) field.focus();
  }

  for (const input of form.querySelectorAll("input[type=radio]")) input.addEventListener("change", updateOptions);
  source.addEventListener("change", () => describeSource(source.value.trim()));
  document.getElementById("export-source-choose").addEventListener("click", async () => {
    const path = await choosePath("file", source.value ? folderOf(source.value) : null);
    if (path) {
      source.value = path;
      describeSource(path);
    }
  });
  document.getElementById("export-key-choose").addEventListener("click", async () => {
    const path = await choosePath("file", key.value ? folderOf(key.value) : null);
    if (path) key.value = path;
  });
  form.addEventListener("submit", submitJob);
  updateOptions();

  return {
    /// Starts from `path` (chosen on the Disks screen).
    use(path, info) {
      source.value = path;
      showMessage(message, null);
      describeSource(path, info);
    },
  };
}
