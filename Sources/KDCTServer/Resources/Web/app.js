// The KDCT-native web app: four screens (Disks, Convert, Export, Jobs) over the service's HTTP API, chosen by
// the address's #fragment so the browser's back button and reloads keep the screen.

import { api, onUnauthorized } from "./api.js";
import { initConvert } from "./convert.js";
import { initDisks } from "./disks.js";
import { showMessage, t, translatePage } from "./dom.js";
import { initExport } from "./export.js";
import { initJobs } from "./jobs.js";

const screens = ["disks", "convert", "export", "jobs"];

function currentScreen() {
  const name = location.hash.replace(/^#/, "");
  return screens.includes(name) ? name : "disks";
}

function showScreen(name, { focus = false } = {}) {
  for (const screen of screens) {
    document.getElementById(`screen-${screen}`).hidden = screen !== name;
    const link = document.getElementById(`nav-${screen}`);
    if (screen === name) link.setAttribute("aria-current", "page");
    else link.removeAttribute("aria-current");
  }
  document.title = `${t(`nav.${name}`)} — ${t("app.title")}`;
  if (focus) document.getElementById(`${name}-heading`).focus();
}

function signedOut() {
  for (const screen of screens) document.getElementById(`screen-${screen}`).hidden = true;
  document.getElementById("nav").hidden = true;
  document.getElementById("footer").hidden = true;
  document.getElementById("signed-out").hidden = false;
}

async function start() {
  translatePage();
  const banner = document.getElementById("banner");
  onUnauthorized(signedOut);
  let status;
  try {
    status = await api.status();
  } catch (error) {
    if (error.status === 401) return signedOut();
    showMessage(banner, error.message);
    return;
  }
  document.getElementById("nav").hidden = false;
  document.getElementById("footer").hidden = false;
  document.getElementById("footer-roots").textContent = t("app.roots", { roots: status.roots.join(", ") });
  for (const screen of screens) document.getElementById(`${screen}-heading`).setAttribute("tabindex", "-1");

  const jobs = initJobs({
    onActiveCount: (count) => {
      document.getElementById("nav-jobs").textContent = count > 0 ? t("nav.jobsActive", { count }) : t("nav.jobs");
    },
  });
  const onQueued = (job) => {
    location.hash = "#jobs";
    jobs.focus(job);
  };
  const convert = initConvert({ onQueued });
  const exporter = initExport({ onQueued });
  const disks = initDisks({
    convert: (path, info, parents) => {
      convert.use(path, info, parents);
      location.hash = "#convert";
    },
    export: (path, info) => {
      exporter.use(path, info);
      location.hash = "#export";
    },
  });

  window.addEventListener("hashchange", () => {
    showScreen(currentScreen(), { focus: true });
    if (currentScreen() === "jobs") jobs.refresh();
    if (currentScreen() === "disks") disks.refresh();
  });
  showScreen(currentScreen());
  disks.show();
  jobs.start();
}

start();
