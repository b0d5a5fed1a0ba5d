// Placeholder page of kdct-native serve: shows the service's roots and its jobs, refreshed every 2 s.
// The graphical interface replaces it (issue 14); it talks to the same API with the same cookie.

const api = (path) => fetch(`/api/v1${path}`, { credentials: "same-origin", headers: { Accept: "application/json" } });

function text(value) {
  return document.createTextNode(value == null ? "" : String(value));
}

function showStatus(status) {
  const list = document.getElementById("status");
  list.replaceChildren();
  const rows = [
    ["Service", status.service],
    ["Folders", status.roots.join(", ")],
    ["Jobs running", `${status.jobs.running} of ${status.jobs.workers}`],
    ["Jobs waiting", status.jobs.waiting],
  ];
  for (const [name, value] of rows) {
    const term = document.createElement("dt");
    term.append(text(name));
    const detail = document.createElement("dd");
    detail.append(text(value));
    list.append(term, detail);
  }
}

function showJobs(jobs) {
  const body = document.querySelector("#jobs tbody");
  body.replaceChildren();
  for (const job of jobs) {
    const row = document.createElement("tr");
    const percent = job.progress && typeof job.progress.percent === "number" ? `${job.progress.percent.toFixed(1)} %` : "";
    for (const value of [job.kind, job.request.source, job.state, percent]) {
      const cell = document.createElement("td");
      cell.append(text(value));
      row.append(cell);
    }
    body.append(row);
  }
}

async function refresh() {
  const status = await api("/status");
  const signedIn = status.ok;
  document.getElementById("signed-in").hidden = !signedIn;
  document.getElementById("signed-out").hidden = signedIn;
  if (!signedIn) return;
  showStatus(await status.json());
  const jobs = await api("/jobs?limit=20");
  if (jobs.ok) showJobs((await jobs.json()).jobs);
}

refresh();
setInterval(refresh, 2000);
