// The Jobs screen: every job from the service's job store (so the list survives a reload and a restart of the
// service), live progress from each running job's event stream, cancel, retry and resume.

import { api } from "./api.js";
import { askCredentials, confirmAction, showText } from "./dialog.js";
import {
  baseName, definitionList, formatBytes, formatBytesExact, formatDuration, formatTime, h, hasText, showMessage, t,
} from "./dom.js";

const pageSize = 25;
const finished = new Set(["succeeded", "failed", "cancelled", "interrupted"]);

/// Sets up the screen; `onActiveCount(n)` is told how many jobs are queued or running.
export function initJobs({ onActiveCount }) {
  const list = document.getElementById("job-list");
  const empty = document.getElementById("jobs-empty");
  const more = document.getElementById("jobs-more");
  const banner = document.getElementById("banner");
  const jobs = new Map();
  const streams = new Map();
  let oldest = null;
  let loadedCount = pageSize;
  let timer = null;

  async function refresh() {
    let answer;
    try {
      answer = await api.jobs(Math.min(500, loadedCount));
    } catch (error) {
      showMessage(banner, error.message);
      return;
    }
    if (banner.dataset.source === "jobs") showMessage(banner, null);
    for (const job of answer.jobs) update(job);
    oldest = answer.next_before;
    more.hidden = oldest === null;
    empty.hidden = jobs.size > 0;
    reportActive();
  }

  async function loadOlder() {
    if (oldest === null) return;
    try {
      const answer = await api.jobs(pageSize, oldest);
      loadedCount += answer.jobs.length;
      for (const job of answer.jobs) update(job);
      oldest = answer.next_before;
      more.hidden = oldest === null;
    } catch (error) {
      showMessage(banner, error.message);
    }
  }

  function reportActive() {
    let active = 0;
    for (const job of jobs.values()) if (!finished.has(job.state)) active += 1;
    onActiveCount(active);
  }

  /// Stores `job` and redraws its card (newest first). While a job only makes progress (same state), only its
  /// progress bar and line are redrawn: its buttons stay the same elements, so a click or the keyboard focus is
  /// never lost to a redraw.
  function update(job) {
    const known = jobs.get(job.id);
    if (known && known.revision > job.revision && known.state === job.state) return;
    jobs.set(job.id, job);
    const existing = list.querySelector(`li[data-job="${job.id}"]`);
    const progressOnly = existing && known && known.state === job.state && (job.state === "queued" || job.state === "running")
      && Boolean(known.resumable) === Boolean(job.resumable);
    if (progressOnly) {
      const shown = existing.querySelector(".progress");
      const fresh = renderProgress(job);
      if (shown) shown.replaceWith(fresh);
      else existing.append(fresh);
      openStream(job.id);
      return;
    }
    const card = renderCard(job, actions);
    if (existing) {
      // Keep the focus on the same button across redraws (keyboard users).
      const focused = existing.contains(document.activeElement) ? document.activeElement.dataset.action : null;
      existing.replaceWith(card);
      if (focused) card.querySelector(`[data-action="${focused}"]`)?.focus();
    } else {
      const after = [...list.children].find((item) => Number(item.dataset.number) < job.number);
      list.insertBefore(card, after || null);
    }
    if (finished.has(job.state)) closeStream(job.id);
    else openStream(job.id);
    empty.hidden = true;
  }

  function openStream(id) {
    if (streams.has(id) || typeof EventSource === "undefined") return;
    const source = new EventSource(api.eventsURL(id));
    streams.set(id, source);
    source.addEventListener("progress", (event) => {
      const job = jobs.get(id);
      if (!job) return;
      let progress;
      try {
        progress = JSON.parse(event.data);
      } catch {
        return;
      }
      delete progress.event;
      update({ ...job, state: "running", progress, revision: Number(event.lastEventId) || job.revision });
    });
    source.addEventListener("state", async () => {
      closeStream(id);
      try {
        update(await api.job(id));
      } catch (error) {
        showMessage(banner, error.message);
      }
      reportActive();
    });
    // A dropped stream reconnects by itself (with Last-Event-ID); the periodic refresh covers the gap.
  }

  function closeStream(id) {
    const source = streams.get(id);
    if (source) {
      source.close();
      streams.delete(id);
    }
  }

  const actions = {
    async cancel(job) {
      const sure = await confirmAction(t("jobs.cancelConfirmTitle"), t("jobs.cancelConfirmText"), t("jobs.cancelConfirm"),
                                       { danger: true, cancelLabel: t("jobs.keep") });
      if (!sure) return;
      await act(() => api.cancel(job.id));
    },
    async retry(job) {
      const credentials = await credentialsFor(job);
      if (credentials === null) return;
      await act(() => api.retry(job.id, credentials));
    },
    async resume(job) {
      const credentials = await credentialsFor(job);
      if (credentials === null) return;
      await act(() => api.resume(job.id, credentials));
    },
  };

  async function act(call) {
    try {
      update(await call());
      showMessage(banner, null);
    } catch (error) {
      showMessage(banner, error.message);
    }
    await refresh();
  }

  more.addEventListener("click", loadOlder);

  return {
    /// Loads the list and keeps it fresh every 2 s (event streams carry the progress in between).
    start() {
      refresh();
      if (!timer) timer = setInterval(refresh, 2000);
    },
    refresh,
    /// Shows `job` (just submitted) at the top and moves the focus to it.
    focus(job) {
      update(job);
      const card = list.querySelector(`li[data-job="${job.id}"]`);
      if (card) {
        card.scrollIntoView({ block: "nearest" });
        card.focus();
      }
    },
  };
}

/// A remote job's password (or key passphrase) is never stored: a retry or resume asks for it again.
async function credentialsFor(job) {
  const request = job.request || {};
  if (job.kind !== "export" && job.kind !== "convert-and-export") return {};
  if (request.agent) return {};
  return askCredentials(Boolean(request.identity));
}

function hostOf(url) {
  const match = /^sftp:\/\/(?:[^@/]*@)?([^/]+)/i.exec(String(url || ""));
  return match ? match[1] : String(url || "");
}

function summary(job) {
  const request = job.request || {};
  const key = `jobs.summary.${job.kind}`;
  const values = {
    source: baseName(request.source),
    format: String(request.output_format || "").toUpperCase(),
    host: hostOf(request.destination),
  };
  return hasText(key) ? t(key, values) : job.kind;
}

function renderCard(job, actions) {
  const request = job.request || {};
  const stateText = hasText(`jobs.state.${job.state}`) ? t(`jobs.state.${job.state}`) : job.state;
  const buttons = h("div", { class: "job-tools" });
  const card = h("li", { class: `job ${job.state}`, "data-job": job.id, "data-number": job.number, "data-state": job.state,
                         tabindex: "-1", "aria-labelledby": `job-title-${job.id}` },
    h("div", { class: "job-head" },
      h("h3", { id: `job-title-${job.id}` }, h("span", { class: "job-number" }, `#${job.number}`), " ", summary(job)),
      buttons),
    h("p", { class: "job-route" },
      h("span", { class: "muted" }, `${t("jobs.from")} `), h("span", { class: "path" }, request.source || ""),
      h("br"),
      h("span", { class: "muted" }, `${t("jobs.to")} `), h("span", { class: "path" }, request.destination || ""),
      h("br"),
      h("span", { class: "when small" }, job.started_at ? t("jobs.started", { time: formatTime(job.started_at) })
                                                       : t("jobs.created", { time: formatTime(job.created_at) }))));

  if (job.state === "queued" || job.state === "running" || job.state === "succeeded") card.append(renderProgress(job));
  if (job.state === "succeeded" && job.result) card.append(...renderResult(job));
  if (job.state === "failed" || job.state === "cancelled" || job.state === "interrupted") card.append(...renderProblem(job));

  if (!finished.has(job.state)) {
    buttons.append(h("button", { type: "button", class: "danger", "data-action": "cancel", onclick: () => actions.cancel(job) }, t("jobs.cancel")));
  }
  if (job.resumable && job.state !== "succeeded" && finished.has(job.state)) {
    buttons.append(h("button", { type: "button", class: "primary", "data-action": "resume", onclick: () => actions.resume(job) }, t("jobs.resume")));
  }
  if (job.state === "failed" || job.state === "cancelled" || job.state === "interrupted") {
    buttons.append(h("button", { type: "button", "data-action": "retry", onclick: () => actions.retry(job) }, t("jobs.retry")));
  }
  buttons.append(h("span", { class: `badge ${job.state}` }, stateText));
  return card;
}

function renderProgress(job) {
  const progress = job.progress || {};
  const done = job.state === "succeeded";
  const percent = done ? 100 : Math.max(0, Math.min(100, Number(progress.percent) || 0));
  const bar = h("progress", { max: "100", value: percent.toFixed(1), "aria-label": t("jobs.progressLabel", { number: job.number }),
                              class: "bar" });
  const parts = [];
  if (job.state === "queued") {
    parts.push(t("jobs.queuePosition"));
  } else if (done) {
    return h("div", { class: "progress" }, bar);
  } else {
    const phase = progress.phase && hasText(`jobs.phase.${progress.phase}`) ? t(`jobs.phase.${progress.phase}`) : null;
    const total = Number(progress.total) || 0;
    const processed = Number(progress.processed) || 0;
    let line = t("jobs.progress", { percent: `${percent.toFixed(percent >= 100 || percent === 0 ? 0 : 1)} %`,
                                    done: formatBytes(processed), total: formatBytes(total) });
    if (phase) line = `${phase}: ${line}`;
    parts.push(line);
    if (Number(progress["bytes-per-second"]) > 0) parts.push(t("jobs.rate", { rate: t("unit.rate", { size: formatBytes(Number(progress["bytes-per-second"])) }) }));
    if (typeof progress["eta-seconds"] === "number") parts.push(t("jobs.eta", { time: formatDuration(progress["eta-seconds"]) }));
  }
  return h("div", { class: "progress" }, bar, h("p", { class: "progress-text", "aria-live": "off" }, parts.join(" · ")));
}

function renderResult(job) {
  const result = job.result;
  const parts = [];
  const elapsed = typeof result["elapsed-seconds"] === "number" ? result["elapsed-seconds"]
    : (Date.parse(job.finished_at) - Date.parse(job.started_at)) / 1000;
  if (job.kind === "appliance") {
    parts.push(definitionList([
      [t("jobs.output"), h("span", { class: "path" }, result.output)],
      [t("jobs.duration"), formatDuration(elapsed)],
    ], { class: "facts result" }));
    parts.push(h("h4", {}, t("jobs.disks")), h("ul", { class: "disks" }, (result.disks || []).map((disk) => h("li", {},
      h("span", { class: "path" }, disk.path), ` — ${formatBytes(disk.size)}`,
      disk.sha256 ? h("div", { class: "mono small" }, `${t("jobs.sha256")} ${disk.sha256}`) : null))));
    if (result["domain-xml"]) {
      const path = result["domain-xml"];
      const view = async () => {
        let text = result["domain-xml-text"];
        if (!text) {
          try {
            const response = await fetch(api.contentURL(path, false), { credentials: "same-origin" });
            text = response.ok ? await response.text() : t("error.unexpected", { status: response.status });
          } catch {
            text = t("error.network");
          }
        }
        await showText(t("jobs.domainXMLTitle"), text, api.contentURL(path, true), t("jobs.domainXMLHint", { path }));
      };
      parts.push(h("p", { class: "domain" }, `${t("jobs.domainXML")}: `, h("span", { class: "path" }, path), " ",
        h("button", { type: "button", "data-action": "view-xml", onclick: view }, t("common.view")), " ",
        h("a", { href: api.contentURL(path, true), download: "", class: "button", "data-action": "download-xml" }, t("common.download"))));
    }
  } else {
    const remote = job.kind === "export" || job.kind === "convert-and-export";
    const verification = result.verification && hasText(`jobs.verification.${result.verification}`)
      ? t(`jobs.verification.${result.verification}`) : result.verification;
    parts.push(definitionList([
      [t("jobs.output"), h("span", { class: "path" }, result.output || result.destination || job.request.destination)],
      [t("jobs.size"), typeof result.size === "number" ? formatBytesExact(result.size) : null],
      [t("jobs.sha256"), result.sha256 ? h("span", { class: "mono", "data-field": "sha256" }, result.sha256) : null],
      [t("jobs.verification"), remote ? verification : null],
      [t("jobs.duration"), formatDuration(elapsed)],
    ], { class: "facts result" }));
    if (typeof result["resumed-from"] === "number") parts.push(h("p", { class: "hint" }, t("jobs.resumedFrom", { size: formatBytes(result["resumed-from"]) })));
  }
  if ((result.notes || []).length > 0) parts.push(h("h4", {}, t("jobs.notes")), h("ul", {}, result.notes.map((note) => h("li", {}, note))));
  return parts;
}

function renderProblem(job) {
  const parts = [];
  const error = job.error || {};
  if (job.state === "failed") {
    parts.push(h("div", { class: "message error job-error" },
      h("strong", {}, `${t("jobs.error")}: `), error.message || t("common.unknown"),
      error.file ? h("div", { class: "small" }, t("jobs.errorFile", { file: error.file })) : null,
      error.field ? h("div", { class: "small" }, t("jobs.errorField", { field: error.field })) : null));
  } else if (job.resumable) {
    // A stopped export keeps what it sent on the host (under a temporary name), for Resume.
    parts.push(h("p", { class: "message info" }, t(job.state === "cancelled" ? "jobs.cancelledResumable" : "jobs.interruptedResumable")));
  } else {
    parts.push(h("p", { class: "message info" }, t(job.state === "cancelled" ? "jobs.cancelled" : "jobs.interrupted")));
  }
  if (job.resumable && job.state === "failed") parts.push(h("p", { class: "hint" }, t("jobs.resumable")));
  return parts;
}
