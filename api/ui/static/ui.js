// kd-service pages: live progress over Server-Sent Events, no library. The server renders every page;
// this script only updates what the streams report and, when a job ends, swaps in the server's fresh
// rendering of the parts that changed (fetch + DOMParser: no reload, no client-side templates).
"use strict";
(() => {
  const TERMINAL = new Set(["succeeded", "failed", "cancelled", "deleted"]);
  const sources = [];

  // The same wording as api/ui/views.py eta_text.
  function etaText(seconds) {
    if (seconds === null || seconds === undefined || seconds < 0) return "";
    const s = Math.round(seconds);
    if (s < 60) return `about ${s} s left`;
    const minutes = Math.floor(s / 60);
    if (minutes < 60) return `about ${minutes} min ${s % 60} s left`;
    return `about ${Math.floor(minutes / 60)} h ${minutes % 60} min left`;
  }

  // Times arrive in UTC (<time datetime>); show them in the reader's time zone, the UTC text as the title.
  function localTime(element) {
    const moment = new Date(element.dateTime);
    if (Number.isNaN(moment.getTime())) return;
    const pad = (n) => String(n).padStart(2, "0");
    const clock = `${pad(moment.getHours())}:${pad(moment.getMinutes())}:${pad(moment.getSeconds())}`;
    const minutes = -moment.getTimezoneOffset();
    const zone = minutes === 0 ? "UTC"
      : `UTC${minutes > 0 ? "+" : "-"}${pad(Math.floor(Math.abs(minutes) / 60))}:${pad(Math.abs(minutes) % 60)}`;
    element.title = `${element.dateTime.slice(0, 19).replace("T", " ")} UTC`;
    element.textContent = "clock" in element.dataset ? clock
      : `${moment.getFullYear()}-${pad(moment.getMonth() + 1)}-${pad(moment.getDate())} ${clock} ${zone}`;
  }

  function localTimes(root) {
    root.querySelectorAll("time[datetime]").forEach(localTime);
  }

  function field(root, name) {
    return root.querySelector(`[data-field="${name}"]`);
  }

  function showState(root, state, phase) {
    const badge = field(root, "state");
    if (badge && state) {
      badge.textContent = state;
      badge.className = `state state-${state}`;
    }
    const phaseCell = field(root, "phase");
    if (phaseCell && phase !== undefined) phaseCell.textContent = phase || (root.tagName === "TR" ? "" : "-");
    if (state) root.dataset.state = state;
  }

  function showProgress(root, state, progress) {
    const bar = root.querySelector("[data-progress] progress");
    if (!bar || !progress || progress.fraction === null || progress.fraction === undefined) return;
    const percent = `${Math.round(100 * progress.fraction)}%`;
    bar.value = progress.fraction;
    bar.textContent = percent;
    field(root, "percent").textContent = percent;
    const live = state === "running" || state === "cancelling";
    field(root, "eta").textContent = live ? etaText(progress.eta_seconds) : "";
    const epoch = field(root, "epoch");
    const seed = progress.seed === null || progress.seed === undefined ? "" : `seed ${progress.seed}, `;
    if (epoch) epoch.textContent = progress.epochs ? `${seed}epoch ${progress.epoch} of ${progress.epochs}` : "";
  }

  async function freshPage() {
    const response = await fetch(window.location.href, { cache: "no-store", headers: { Accept: "text/html" } });
    if (!response.ok) return null;
    return new DOMParser().parseFromString(await response.text(), "text/html");
  }

  function swapIn(doc, ids) {
    for (const id of ids) {
      const fresh = doc.getElementById(id);
      const current = document.getElementById(id);
      if (fresh && current) {
        const copy = document.importNode(fresh, true);
        localTimes(copy);
        current.replaceWith(copy);
      }
    }
    bindConfirms(document);
  }

  function open(url) {
    const source = new EventSource(url);
    sources.push(source);
    return source;
  }

  function watchJob(section) {
    const source = open(section.dataset.stream);
    const log = document.getElementById("job-log");
    let current = section;
    let latest = 0;  // a slower, older fetch must not overwrite a newer one
    const onProgress = (event) => {
      const data = JSON.parse(event.data);
      showState(current, data.state, data.phase);
      showProgress(current, data.state, data.progress);
    };
    // A new state also changes the times, attempts, buttons and history: take the server's rendering of
    // them; once the job has ended, its results and downloads too.
    const onState = async (event) => {
      const data = JSON.parse(event.data);
      showState(current, data.state, data.phase);
      const ended = TERMINAL.has(data.state);
      if (ended) source.close();
      const mine = ++latest;
      const doc = await freshPage();
      if (!doc || mine !== latest) return;
      swapIn(doc, ended ? ["job-status", "job-actions", "job-results", "job-history"]
                        : ["job-status", "job-actions", "job-history"]);
      current = document.getElementById("job-status");
    };
    source.addEventListener("state", onState);
    source.addEventListener("progress", onProgress);
    source.addEventListener("log", (event) => {
      const data = JSON.parse(event.data);
      const item = document.createElement("li");
      item.className = `log-${data.level}`;
      const time = document.createElement("time");
      time.dateTime = data.at;
      time.dataset.clock = "";
      localTime(time);
      item.append(time, ` ${data.message}`);
      log.append(item);
      document.getElementById("log-empty")?.remove();
      log.scrollTop = log.scrollHeight;
    });
  }

  function watchList(table) {
    const source = open(table.dataset.stream);
    const onEvent = async (event) => {
      const data = JSON.parse(event.data);
      const row = document.getElementById(`job-${data.job}`);
      if (!row) return;
      showState(row, data.state, data.phase);
      if (data.progress) showProgress(row, data.state, data.progress);
      if (TERMINAL.has(data.state) && data.state !== "deleted") {
        const doc = await freshPage();  // the row's finished time, headline and compare box
        if (doc) swapIn(doc, [row.id]);
      }
    };
    source.addEventListener("state", onEvent);
    source.addEventListener("progress", onEvent);
    source.addEventListener("end", () => source.close());
  }

  function bindConfirms(root) {
    for (const form of root.querySelectorAll("form[data-confirm]:not([data-bound])")) {
      form.dataset.bound = "1";
      form.addEventListener("submit", (event) => {
        if (!window.confirm(form.dataset.confirm)) event.preventDefault();
      });
    }
  }

  // A file over the server's upload limit is refused here, before the browser sends any of it.
  function bindSizeLimits(root) {
    for (const input of root.querySelectorAll("input[type=file][data-max-bytes]")) {
      input.addEventListener("change", () => {
        const file = input.files[0];
        const tooLarge = file && file.size > Number(input.dataset.maxBytes);
        input.setCustomValidity(tooLarge ? `${file.name} is larger than the upload limit of ${input.dataset.maxText}.` : "");
        input.reportValidity();
      });
    }
  }

  document.addEventListener("DOMContentLoaded", () => {
    localTimes(document);
    bindConfirms(document);
    bindSizeLimits(document);
    const status = document.querySelector("#job-status[data-stream]");
    if (status) watchJob(status);
    const table = document.querySelector("table.jobs[data-stream]");
    if (table) watchList(table);
    document.getElementById("error-summary")?.focus();
  });
  // Leaving the page ends its streams first (the server stops polling for them at once).
  window.addEventListener("pagehide", () => sources.forEach((source) => source.close()));
})();
