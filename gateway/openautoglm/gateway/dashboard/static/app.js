/* Open-AutoGLM dashboard: one page over the gateway's public JSON API (/v1/...).
 *
 * - The API key lives in sessionStorage (this tab only) and travels only in the Authorization
 *   header: never in a URL, a cookie or the page. Live updates read WatchStudy's Server-Sent
 *   Events through fetch (EventSource cannot send a header).
 * - Everything a server or a user wrote (names, prompts, errors) is put in the page as text
 *   (textContent), never as HTML.
 * - Nothing polls faster than once per second: the study page follows its SSE stream; the lists
 *   of studies and trainers refresh every few seconds while they are shown.
 */
"use strict";

const KEY_STORAGE = "openautoglm.apiKey";
const STUDIES_REFRESH_MS = 5000;
const TRAINERS_REFRESH_MS = 2000;
const IMPORTANCE_MIN_INTERVAL_MS = 5000;
const RENDER_MIN_INTERVAL_MS = 100;
const TERMINAL_STATES = new Set(["STUDY_STATE_COMPLETED", "STUDY_STATE_FAILED", "STUDY_STATE_CANCELLED"]);
const TRIAL_STATUSES = ["QUEUED", "TRAINING", "EVALUATING", "SUCCEEDED", "FAILED", "PRUNED", "CANCELLED"];

let config = null;          // /dashboard/config.json
let leaveView = () => {};   // stops the current view's streams and timers

// ---- the API ---------------------------------------------------------------------------------

class ApiError extends Error {
  constructor(status, body) {
    const error = (body && body.error) || {};
    super(error.message || `HTTP ${status}`);
    this.status = status;
    this.code = error.status || "";
    this.field = error.field || "";
    this.line = error.line || 0;
    this.lines = (body && body.lines) || {};
  }
}

function apiKey() { return sessionStorage.getItem(KEY_STORAGE) || ""; }

function authHeaders(extra) {
  const headers = Object.assign({ Accept: "application/json" }, extra || {});
  const key = apiKey();
  if (key) headers.Authorization = "Bearer " + key;
  return headers;
}

async function api(path, options) {
  const opts = options || {};
  const init = { method: opts.method || "GET", headers: authHeaders(), signal: opts.signal };
  if (opts.json !== undefined) {
    init.headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(opts.json);
  } else if (opts.text !== undefined) {
    init.headers["Content-Type"] = "text/plain; charset=utf-8";
    init.body = opts.text;
  }
  const response = await fetch(path, init);
  const body = await response.json().catch(() => ({}));
  if (!response.ok) {
    const error = new ApiError(response.status, body);
    if (response.status === 401 && !opts.keepKey) signOut(error.message);
    throw error;
  }
  return body;
}

/* Follow a server-streaming method as Server-Sent Events through fetch. Calls onMessage for
 * each message; reconnects after a dropped connection (1 s, doubling to 10 s); returns when the
 * stream ends and `isFinished()` agrees (a watched study reached a terminal state), or `signal`
 * aborts. */
async function followStream(path, onMessage, signal, onState, isFinished) {
  let delay = 1000;
  while (!signal.aborted) {
    try {
      const response = await fetch(path, { headers: authHeaders({ Accept: "text/event-stream" }), signal });
      if (!response.ok) {
        const body = await response.json().catch(() => ({}));
        throw new ApiError(response.status, body);
      }
      onState("live");
      delay = 1000;
      const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
      let buffer = "";
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buffer += value;
        let end;
        while ((end = buffer.indexOf("\n\n")) >= 0) {
          const block = buffer.slice(0, end);
          buffer = buffer.slice(end + 2);
          let event = "message";
          const data = [];
          for (const line of block.split("\n")) {
            if (line.startsWith("event:")) event = line.slice(6).trim();
            else if (line.startsWith("data:")) data.push(line.slice(5).replace(/^ /, ""));
          }
          if (!data.length) continue; // a keep-alive comment
          const payload = JSON.parse(data.join("\n"));
          if (event === "error") throw new ApiError(payload.error ? payload.error.code : 500, payload);
          onMessage(payload);
        }
      }
      if (!isFinished || isFinished()) {
        onState("ended");
        return;
      }
      // It ended early (a proxy's idle timeout, a gateway restart): a drop, not the end.
      onState("reconnecting");
      await sleep(delay, signal);
      delay = Math.min(delay * 2, 10000);
    } catch (error) {
      if (signal.aborted) return;
      if (error instanceof ApiError && error.status >= 400 && error.status < 500) {
        if (error.status === 401) signOut(error.message);
        throw error;
      }
      onState("reconnecting");
      await sleep(delay, signal);
      delay = Math.min(delay * 2, 10000);
    }
  }
}

function sleep(ms, signal) {
  return new Promise((resolve) => {
    const timer = setTimeout(resolve, ms);
    if (signal) signal.addEventListener("abort", () => { clearTimeout(timer); resolve(); }, { once: true });
  });
}

// ---- small helpers ---------------------------------------------------------------------------

/* An element with attributes and children (strings become text nodes: never HTML). */
function h(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs || {})) {
    if (value === null || value === undefined || value === false) continue;
    if (name.startsWith("on")) node.addEventListener(name.slice(2), value);
    else if (name === "className") node.className = value;
    else node.setAttribute(name, value === true ? "" : String(value));
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

function announce(text) { document.getElementById("announcer").textContent = text; }
function num(value) { return value === undefined || value === null ? 0 : Number(value); }
function fmt(value, digits) {
  if (value === undefined || value === null || value === "") return "–";
  const n = Number(value);
  if (!Number.isFinite(n)) return String(value);
  const places = digits === undefined ? 4 : digits;
  if (Number.isInteger(n)) return n.toLocaleString("en");
  return Math.abs(n) >= 1000 ? n.toLocaleString("en", { maximumFractionDigits: Math.min(places, 1) }) : n.toFixed(places);
}
function shortName(enumName, prefix) { return (enumName || "").replace(prefix, "") || "UNSPECIFIED"; }
function studyState(study) { return shortName(study.state, "STUDY_STATE_"); }
function trialStatus(trial) { return shortName(trial.status, "TRIAL_STATUS_"); }
function paramValue(v) {
  if (!v) return null;
  if ("number" in v) return Number(v.number);
  if ("integer" in v) return Number(v.integer);
  if ("text" in v) return v.text;
  if ("flag" in v) return v.flag;
  return null;
}
/* A parameter value for reading: numbers to 4 significant digits. */
function showParam(v) {
  const value = paramValue(v);
  return typeof value === "number" && !Number.isInteger(value) ? Number(value.toPrecision(4)).toString() : String(value);
}
function maximizes(objective) { return !objective || objective.direction !== "DIRECTION_MINIMIZE"; }
function seconds(trial) {
  if (trial.actualSeconds) return Number(trial.actualSeconds);
  if (trial.createdAt && trial.finishedAt) return (Date.parse(trial.finishedAt) - Date.parse(trial.createdAt)) / 1000;
  return null;
}
function studyPath(id) { return "/v1/studies/" + encodeURIComponent(id); }
function badge(kind, name) { return h("span", { className: `badge ${kind}-${name}` }, name.toLowerCase()); }
function tableWrap(label, table) { return h("div", { className: "table-wrap", role: "region", "aria-label": label, tabindex: "0" }, table); }

/* Run `load` now and every `ms` while the tab is visible (until the view is left); its errors
 * show in `status`. Returns a function that runs it again now. */
function keepRefreshed(ms, controller, status, load) {
  async function refresh() {
    try {
      await load();
      status.replaceChildren();
    } catch (error) {
      if (!controller.signal.aborted) status.replaceChildren(h("p", { className: "alert" }, error.message));
    }
  }
  refresh();
  const timer = setInterval(() => { if (!document.hidden) refresh(); }, ms);
  leaveView = () => { controller.abort(); clearInterval(timer); };
  return refresh;
}

function signOut(reason) {
  sessionStorage.removeItem(KEY_STORAGE);
  const next = location.hash && !location.hash.startsWith("#/login") ? location.hash : "#/studies";
  sessionStorage.setItem("openautoglm.next", next);
  sessionStorage.setItem("openautoglm.signedOut", reason || "");
  if (location.hash !== "#/login") location.hash = "#/login";
  else route();
}

// ---- views -----------------------------------------------------------------------------------

function setView(title, navName, ...content) {
  const main = document.getElementById("main");
  main.replaceChildren(...content);
  document.title = `${title} · Open-AutoGLM`;
  for (const link of document.querySelectorAll("[data-nav]")) {
    if (link.dataset.nav === navName) link.setAttribute("aria-current", "page");
    else link.removeAttribute("aria-current");
  }
  document.getElementById("sign-out").hidden = !apiKey();
}

function loginView() {
  const reason = sessionStorage.getItem("openautoglm.signedOut");
  sessionStorage.removeItem("openautoglm.signedOut");
  const input = h("input", { id: "api-key", name: "api-key", type: "password", autocomplete: "off", required: true,
                             "aria-describedby": "api-key-help" });
  const message = h("div", { id: "login-error", role: "alert" });
  if (reason) message.append(h("p", { className: "alert" }, reason));
  const form = h("form", { className: "panel login", onsubmit: async (event) => {
    event.preventDefault();
    sessionStorage.setItem(KEY_STORAGE, input.value.trim());
    try {
      await api("/v1/studies?pageSize=1", { keepKey: true });
    } catch (error) {
      sessionStorage.removeItem(KEY_STORAGE);
      message.replaceChildren(h("p", { className: "alert" }, error.message));
      input.setAttribute("aria-invalid", "true");
      input.focus();
      return;
    }
    const next = sessionStorage.getItem("openautoglm.next") || "#/studies";
    sessionStorage.removeItem("openautoglm.next");
    location.hash = next;
  } },
    h("h1", {}, "Sign in"),
    h("label", { for: "api-key" }, "API key"),
    input,
    h("p", { id: "api-key-help", className: "note" },
      "The key `openautoglm up` wrote to <data dir>/api-key, or one from `openautoglm keys create`. ",
      "It stays in this browser tab (session storage) and is sent only in the Authorization header."),
    message,
    h("button", { type: "submit" }, "Sign in"));
  setView("Sign in", "", form);
  input.focus();
}

function studiesView() {
  const controller = new AbortController();
  const status = h("div", { role: "alert" });
  const body = h("tbody");
  const table = h("table", {},
    h("caption", {}, "Your tenant's studies, newest first"),
    h("thead", {}, h("tr", {},
      h("th", { scope: "col" }, "Name"), h("th", { scope: "col" }, "State"), h("th", { scope: "col" }, "Strategy"),
      h("th", { scope: "col" }, "Progress"), h("th", { scope: "col", className: "num" }, "Best"),
      h("th", { scope: "col", className: "hide-narrow" }, "Created"), h("th", { scope: "col" }, h("span", { className: "visually-hidden" }, "Actions")))),
    body);
  setView("Studies", "studies",
    h("div", { className: "toolbar" }, h("h1", {}, "Studies"), h("a", { className: "button", href: "#/new" }, "New study")),
    status, h("section", { className: "panel", "aria-label": "Studies" }, tableWrap("Studies table", table)));

  const refresh = keepRefreshed(STUDIES_REFRESH_MS, controller, status, async () => {
    const reply = await api("/v1/studies?pageSize=100", { signal: controller.signal });
    const rows = (reply.studies || []).map((study) => studyRow(study, status, () => refresh()));
    body.replaceChildren(...(rows.length ? rows : [h("tr", {}, h("td", { colspan: "7" }, "No studies yet: create one with New study."))]));
  });
}

function studyRow(study, status, refresh) {
  const spec = study.spec || {};
  const maxTrials = num((spec.budget || {}).maxTrials);
  const finished = num(study.finishedTrialCount);
  const state = studyState(study);
  const progress = maxTrials
    ? h("span", {}, h("progress", { max: String(maxTrials), value: String(Math.min(finished, maxTrials)), "aria-label": `${finished} of ${maxTrials} trials finished` }), ` ${finished}/${maxTrials}`)
    : `${finished} finished`;
  const cancel = TERMINAL_STATES.has(study.state) ? "" : h("button", { type: "button", className: "danger", "aria-label": `Cancel study ${spec.name || study.id}`,
    onclick: async (event) => {
      event.target.disabled = true;
      try {
        await api(studyPath(study.id) + ":cancel", { method: "POST", json: {} });
        announce(`Study ${spec.name || study.id} cancelled`);
        refresh();
      } catch (error) {
        status.replaceChildren(h("p", { className: "alert" }, `Cancel ${spec.name || study.id}: ${error.message}`));
        event.target.disabled = false;
      }
    } }, "Cancel");
  return h("tr", {},
    h("th", { scope: "row" }, h("a", { href: "#/studies/" + encodeURIComponent(study.id) }, spec.name || study.id)),
    h("td", {}, badge("state", state)),
    h("td", {}, spec.strategy || "tpe"),
    h("td", {}, progress),
    h("td", { className: "num" }, study.bestTrialId ? fmt(study.bestObjectiveValue) : "–"),
    h("td", { className: "hide-narrow" }, study.createdAt ? new Date(study.createdAt).toLocaleString() : ""),
    h("td", {}, cancel));
}

function newStudyView() {
  const textarea = h("textarea", { id: "spec-text", name: "spec", spellcheck: "false", autocapitalize: "off",
                                   "aria-describedby": "spec-help spec-error", "aria-label": "Study spec (YAML)" });
  textarea.value = sessionStorage.getItem("openautoglm.draft") || config.exampleSpec || "";
  const gutter = h("pre", { className: "gutter", "aria-hidden": "true" });
  const errorBox = h("div", { id: "spec-error", className: "field-error", role: "alert" });
  const create = h("button", { type: "submit" }, "Create study");
  let badLine = 0;

  function drawGutter() {
    const count = textarea.value.split("\n").length;
    const marks = [];
    for (let i = 1; i <= count; i++) marks.push(h("span", { className: i === badLine ? "bad" : null, "data-line": String(i) }, String(i)));
    gutter.replaceChildren(...marks);
    textarea.rows = Math.max(count + 1, 20);
  }
  function showError(field, line, message) {
    badLine = line || 0;
    drawGutter();
    textarea.setAttribute("aria-invalid", "true");
    errorBox.replaceChildren(h("p", { className: "alert" },
      h("span", { className: "where" }, line ? `line ${line}` : "spec"), field ? ` · ${field}: ` : ": ", message));
    if (line) {  // put the caret on the field's line
      const starts = textarea.value.split("\n").slice(0, line - 1).reduce((at, text) => at + text.length + 1, 0);
      textarea.setSelectionRange(starts, starts + (textarea.value.split("\n")[line - 1] || "").length);
    }
    textarea.focus();
  }
  function clearError() {
    badLine = 0;
    textarea.removeAttribute("aria-invalid");
    errorBox.replaceChildren();
    drawGutter();
  }
  /* CreateStudy names the field as "spec.a.b[0].c: message": find its line in the YAML. */
  function lineOf(field, lines) {
    let path = field.replace(/^spec\.?/, "");
    while (path) {
      if (lines[path]) return lines[path];
      const cut = Math.max(path.lastIndexOf("."), path.lastIndexOf("["));
      path = cut > 0 ? path.slice(0, cut) : "";
    }
    return 0;
  }

  textarea.addEventListener("input", () => { sessionStorage.setItem("openautoglm.draft", textarea.value); if (badLine) clearError(); else drawGutter(); });
  const form = h("form", { className: "panel", onsubmit: async (event) => {
    event.preventDefault();
    create.disabled = true;
    clearError();
    let checked;
    try {
      checked = await api("/dashboard/spec", { method: "POST", text: textarea.value });
    } catch (error) {
      create.disabled = false;
      return showError(error.field, error.line, error.message);
    }
    try {
      const reply = await api("/v1/studies", { method: "POST", json: { spec: checked.spec, requestId: crypto.randomUUID() } });
      sessionStorage.removeItem("openautoglm.draft");
      announce("Study created");
      location.hash = "#/studies/" + encodeURIComponent(reply.study.id);
    } catch (error) {
      create.disabled = false;
      const match = /^(spec[\w.[\]]*): (.*)$/s.exec(error.message);
      if (match) showError(match[1].replace(/^spec\.?/, ""), lineOf(match[1], checked.lines), match[2]);
      else showError("", 0, error.message);
    }
  } },
    h("h1", {}, "New study"),
    h("p", { id: "spec-help", className: "note" },
      "A study spec in YAML, as `openautoglm run` takes it. File paths must be absolute and inside the server's data roots. ",
      "The server checks it; an error is shown at its line."),
    h("div", { className: "editor" }, gutter, textarea),
    errorBox,
    h("p", {}, create));
  setView("New study", "new", form);
  drawGutter();
  leaveView = () => {};
}

function studyView(studyId) {
  const controller = new AbortController();
  const trials = new Map();
  let study = null;
  let models = [];
  let importance = null;
  let importanceAt = 0;
  let importanceSucceeded = -1;
  let renderTimer = null;
  let lastRender = 0;
  let lastRenderCost = 0;
  let sortKey = "number";
  let sortDescending = false;
  const charts = {};
  let chartsDrawnFor = null;  // what the charts show now: [succeeded trial ids, Pareto ids, importance]
  const rowCache = new Map();  // trial id -> {trial, isBest, row}
  const finishedSinceRender = new Set();  // for the User Timing marks (benchmarks/dashboard.py)
  let rendered = false;

  const live = h("span", { className: "note", "aria-live": "off" }, "connecting…");
  const problems = h("div", { role: "alert" });
  const heading = h("h1", {}, "Study");
  const summary = h("dl", { className: "summary" });
  const actions = h("div", { className: "toolbar" });
  const best = h("div");
  const finalReport = h("div");
  const chartBoxes = {
    objective: h("div", { className: "chart", id: "chart-objective", role: "img", "aria-label": "Objective per trial" }),
    parallel: h("div", { className: "chart", id: "chart-parallel", role: "img", "aria-label": "Hyper-parameters against the objective" }),
    pareto: h("div", { className: "chart", id: "chart-pareto", role: "img", "aria-label": "Pareto front" }),
    importance: h("div", { className: "chart", id: "chart-importance", role: "img", "aria-label": "Parameter importance" }),
  };
  const paretoPanel = h("section", { className: "panel", "aria-labelledby": "pareto-title", hidden: true },
    h("h2", { id: "pareto-title" }, "Pareto front"), chartBoxes.pareto);
  const filterText = h("input", { id: "trial-filter", type: "search", placeholder: "prompt, trainer, error…" });
  const filterStatus = h("select", { id: "trial-status" }, h("option", { value: "" }, "any"),
    ...TRIAL_STATUSES.map((s) => h("option", { value: s }, s.toLowerCase())));
  const trialHead = h("thead");
  const trialBody = h("tbody");
  const trialCaption = h("caption");
  const modelsBox = h("div");

  filterText.addEventListener("input", () => drawTrials());
  filterStatus.addEventListener("change", () => drawTrials());

  setView("Study", "studies",
    h("div", { className: "toolbar" }, heading, live),
    problems,
    h("section", { className: "panel", "aria-label": "Summary" }, summary, actions),
    h("div", { className: "grid" },
      h("section", { className: "panel", "aria-labelledby": "best-title" }, h("h2", { id: "best-title" }, "Best candidate"), best, finalReport),
      h("section", { className: "panel", "aria-labelledby": "objective-title" }, h("h2", { id: "objective-title" }, "Objective over trials"), chartBoxes.objective),
      h("section", { className: "panel", "aria-labelledby": "parallel-title" }, h("h2", { id: "parallel-title" }, "Parallel coordinates"), chartBoxes.parallel),
      h("section", { className: "panel", "aria-labelledby": "importance-title" }, h("h2", { id: "importance-title" }, "Parameter importance"), chartBoxes.importance),
      paretoPanel),
    h("section", { className: "panel", "aria-labelledby": "trials-title" },
      h("h2", { id: "trials-title" }, "Trials"),
      h("div", { className: "toolbar filters" },
        h("div", {}, h("label", { for: "trial-filter" }, "Filter"), filterText),
        h("div", {}, h("label", { for: "trial-status" }, "Status"), filterStatus)),
      tableWrap("Trials table", h("table", { id: "trials" }, trialCaption, trialHead, trialBody))),
    h("section", { className: "panel", "aria-labelledby": "models-title" }, h("h2", { id: "models-title" }, "Models"), modelsBox));

  const onResize = () => { for (const chart of Object.values(charts)) chart.resize(); };
  window.addEventListener("resize", onResize);
  leaveView = () => {
    controller.abort();
    clearTimeout(renderTimer);
    window.removeEventListener("resize", onResize);
    for (const chart of Object.values(charts)) chart.dispose();
  };

  function scheduleRender() {
    if (renderTimer) return;
    // At most one redraw per RENDER_MIN_INTERVAL_MS, and at least twice a redraw's own cost
    // between redraws: a large study's redraws take at most a third of the page's time.
    const gap = Math.max(RENDER_MIN_INTERVAL_MS, 2 * lastRenderCost);
    const wait = Math.max(0, gap - (Date.now() - lastRender));
    renderTimer = setTimeout(() => {
      renderTimer = null;
      lastRender = Date.now();
      const started = performance.now();
      render();
      lastRenderCost = performance.measure("openautoglm:render", { start: started }).duration;
    }, wait);
  }

  function onMessage(message) {
    if (message.change === "snapshot") { trials.clear(); rowCache.clear(); }
    study = message.study;
    for (const trial of study.trials || []) trials.set(trial.id, trial);
    for (const trial of message.changedTrials || []) {
      trials.set(trial.id, trial);
      if (trial.finishedAt && !finishedSinceRender.has(trial.id)) {
        finishedSinceRender.add(trial.id);
        performance.mark("openautoglm:trial-received", { detail: { id: trial.id } });
      }
    }
    scheduleRender();
    const succeeded = [...trials.values()].filter((t) => t.status === "TRIAL_STATUS_SUCCEEDED").length;
    if (succeeded !== importanceSucceeded && (Date.now() - importanceAt > IMPORTANCE_MIN_INTERVAL_MS || TERMINAL_STATES.has(study.state))) {
      importanceSucceeded = succeeded;
      importanceAt = Date.now();
      loadImportance();
    }
    if (message.change === "snapshot" || (message.change || "").startsWith("study.")) loadModels();
  }

  async function loadImportance() {
    try {
      importance = await api(studyPath(studyId) + ":importance", { signal: controller.signal });
      scheduleRender();
    } catch (error) {
      if (!controller.signal.aborted) importance = { error: error.message };
    }
  }

  async function loadModels() {
    try {
      const found = [];
      let token = "";
      for (let page = 0; page < 5; page++) {  // the registry, newest first, 100 a page
        const reply = await api(`/v1/models?pageSize=100${token ? "&pageToken=" + encodeURIComponent(token) : ""}`, { signal: controller.signal });
        found.push(...(reply.models || []).filter((m) => m.studyId === studyId));
        token = reply.nextPageToken || "";
        if (!token) break;
      }
      models = found;
      drawModels();
      if (found.some((m) => m.state === "MODEL_VERSION_STATE_REGISTERING")) {  // its files are being stored
        setTimeout(() => { if (!controller.signal.aborted) loadModels(); }, 2000);
      }
    } catch (error) {
      if (!controller.signal.aborted) modelsBox.replaceChildren(h("p", { className: "alert" }, error.message));
    }
  }

  function render() {
    if (!study) return;
    const spec = study.spec || {};
    const state = studyState(study);
    heading.replaceChildren(spec.name || study.id, " ", badge("state", state));
    document.title = `${spec.name || study.id} · Open-AutoGLM`;
    const all = [...trials.values()];
    const maxTrials = num((spec.budget || {}).maxTrials);
    const finished = all.filter((t) => ["SUCCEEDED", "FAILED", "PRUNED", "CANCELLED"].includes(trialStatus(t))).length;
    const bestTrial = trials.get(study.bestTrialId);
    const objective = spec.objective || {};
    const item = (term, attrs, ...value) => h("div", {}, h("dt", {}, term), h("dd", attrs, ...value));
    summary.replaceChildren(
      item("Study id", {}, study.id),
      item("Strategy", {}, spec.strategy || "tpe"),
      item("Trials", {}, `${finished} finished of ${maxTrials || "?"} (${all.length} started)`),
      item("Objective", {}, `${maximizes(objective) ? "maximize" : "minimize"} ${(objective.terms || []).map((t) => `${fmt(t.weight ?? 1, 2)}×${t.metric}`).join(" + ")}`),
      item("Best", { id: "best-objective" }, bestTrial ? `${fmt(bestTrial.objectiveValue)} (trial ${num(bestTrial.number)})` : "–"),
      item("Trace", {}, study.traceId
        ? h("a", { href: `${config.jaegerUrl}/trace/${encodeURIComponent(study.traceId)}`, target: "_blank", rel: "noopener noreferrer", id: "jaeger-link" }, "open in Jaeger")
        : "–"));
    if (study.error) problems.replaceChildren(h("p", { className: "alert" }, `Study error: ${study.error}`));
    drawActions();
    drawBest(bestTrial);
    drawTrials();
    drawCharts(all);
    // User Timing marks: when the page first showed the whole study, and when it showed each
    // trial that finished while it watched (benchmarks/dashboard.py reads them).
    if (!rendered) performance.mark("openautoglm:study-rendered", { detail: { trials: all.length } });
    rendered = true;
    for (const id of finishedSinceRender) performance.mark("openautoglm:trial-shown", { detail: { id } });
    finishedSinceRender.clear();
  }

  function drawActions() {
    const message = h("span", { role: "status" });
    const terminal = TERMINAL_STATES.has(study.state);
    const cancel = h("button", { type: "button", className: "danger", id: "cancel-study", disabled: terminal,
      "aria-describedby": "cancel-result", onclick: async () => {
        cancel.disabled = true;
        try {
          await api(studyPath(studyId) + ":cancel", { method: "POST", json: {} });
          announce("Study cancelled");
        } catch (error) {
          document.getElementById("cancel-result").replaceChildren(h("span", { className: "error-text" }, error.message));
          cancel.disabled = false;
        }
      } }, "Cancel study");
    message.id = "cancel-result";
    if (actions.dataset.state !== study.state) {  // keep a shown error while the state is the same
      actions.dataset.state = study.state;
      actions.replaceChildren(cancel, message);
    }
  }

  function drawBest(trial) {
    if (!trial) {
      best.replaceChildren(h("p", { className: "note" }, "No trial has succeeded yet."));
      return;
    }
    const candidate = trial.candidate || {};
    const hps = Object.entries(candidate.hyperparameters || {}).map(([k, v]) => `${k} = ${showParam(v)}`).join(", ");
    best.replaceChildren(
      h("p", {}, `Trial ${num(trial.number)} · objective `, h("strong", {}, fmt(trial.objectiveValue)),
        hps ? ` · ${hps}` : "", candidate.templateId ? ` · template ${candidate.templateId}` : ""),
      h("pre", { className: "prompt", id: "best-prompt" }, candidate.prompt || ""),
      h("p", { className: "note" }, Object.entries(trial.metrics || {}).map(([k, v]) => `${k} ${fmt(v)}`).join(" · ")));
    const final = study.final;
    if (final && (final.testObjective !== undefined || final.error)) {
      finalReport.replaceChildren(h("h3", {}, "Final report"), final.error
        ? h("p", { className: "error-text" }, final.error)
        : h("p", {}, `validation ${fmt(final.validationObjective)} · test ${fmt(final.testObjective)} on ${num(final.testExamples)} test examples` +
            (final.seeds ? ` · ${final.seeds} seeds` : "")));
    } else {
      finalReport.replaceChildren();
    }
  }

  const COLUMNS = [
    { key: "number", label: "#", num: true, value: (t) => num(t.number) },
    { key: "status", label: "Status", value: (t) => trialStatus(t) },
    { key: "objective", label: "Objective", num: true, value: (t) => (t.status === "TRIAL_STATUS_SUCCEEDED" ? Number(t.objectiveValue ?? 0) : null) },
    { key: "candidate", label: "Candidate", value: (t) => (t.candidate || {}).prompt || "" },
    { key: "metrics", label: "Metrics", value: (t) => Object.entries(t.metrics || {}).map(([k, v]) => `${k} ${fmt(v)}`).join(", ") },
    { key: "trainer", label: "Trainer", value: (t) => t.trainerId || t.assignedWorkerId || "" },
    { key: "attempt", label: "Attempt", num: true, value: (t) => num(t.attempt) },
    { key: "duration", label: "Duration (s)", num: true, value: (t) => seconds(t) },
    { key: "error", label: "Error", value: (t) => t.error || "" },
  ];

  function drawTrials() {
    trialHead.replaceChildren(h("tr", {}, ...COLUMNS.map((column) => {
      const sorted = sortKey === column.key;
      return h("th", { scope: "col", className: column.num ? "num" : null, "aria-sort": sorted ? (sortDescending ? "descending" : "ascending") : "none" },
        h("button", { type: "button", onclick: () => {
          sortDescending = sortKey === column.key ? !sortDescending : column.key === "objective";
          sortKey = column.key;
          drawTrials();
        } }, column.label, sorted ? (sortDescending ? " ▼" : " ▲") : ""));
    })));
    const words = filterText.value.trim().toLowerCase();
    const status = filterStatus.value;
    const column = COLUMNS.find((c) => c.key === sortKey);
    const shown = [...trials.values()].filter((t) => (!status || trialStatus(t) === status) &&
      (!words || COLUMNS.some((c) => String(c.value(t) ?? "").toLowerCase().includes(words))));
    shown.sort((a, b) => {
      const x = column.value(a), y = column.value(b);
      if (x === y) return num(a.number) - num(b.number);
      if (x === null) return 1;
      if (y === null) return -1;
      return (x < y ? -1 : 1) * (sortDescending ? -1 : 1);
    });
    trialCaption.textContent = `${shown.length} of ${trials.size} trials`;
    trialBody.replaceChildren(...shown.map(trialRow));
  }

  /* A trial's row, made again only when the trial (or whether it is the best) changed: a
   * redraw of a large study moves its rows rather than rebuilding them. */
  function trialRow(t) {
    const isBest = t.id === study.bestTrialId;
    const cached = rowCache.get(t.id);
    if (cached && cached.trial === t && cached.isBest === isBest) return cached.row;
    const candidate = t.candidate || {};
    const hps = Object.entries(candidate.hyperparameters || {}).map(([k, v]) => `${k}=${showParam(v)}`).join(" ");
    const row = h("tr", { className: isBest ? "best" : null, "data-trial": t.id },
      h("td", { className: "num" }, String(num(t.number))),
      h("td", {}, badge("status", trialStatus(t))),
      h("td", { className: "num" }, t.status === "TRIAL_STATUS_SUCCEEDED" ? fmt(t.objectiveValue) : "–"),
      h("td", {}, h("pre", { className: "prompt" }, candidate.prompt || ""), hps ? h("div", { className: "note" }, hps) : ""),
      h("td", {}, COLUMNS[4].value(t)),
      h("td", {}, COLUMNS[5].value(t)),
      h("td", { className: "num" }, String(num(t.attempt))),
      h("td", { className: "num" }, seconds(t) === null ? "–" : fmt(seconds(t), 1)),
      h("td", { className: "error-text" }, t.error || ""));
    rowCache.set(t.id, { trial: t, isBest, row });
    return row;
  }

  function chart(name) {
    if (!charts[name]) charts[name] = echarts.init(chartBoxes[name], null, { renderer: "canvas" });
    return charts[name];
  }

  function drawCharts(all) {
    const spec = study.spec || {};
    const maximize = maximizes(spec.objective);
    const done = all.filter((t) => t.status === "TRIAL_STATUS_SUCCEEDED" && !t.repeatOf)
      .sort((a, b) => num(a.number) - num(b.number));
    // The charts show succeeded trials only: most updates (a trial queued, training, its
    // progress) change none of them, and drawing four charts is most of a redraw's cost.
    const drawn = [done.map((t) => t.id).join(), (study.paretoTrialIds || []).join(), importance];
    if (chartsDrawnFor && drawn.every((part, i) => part === chartsDrawnFor[i])) return;
    chartsDrawnFor = drawn;
    // Objective per trial, with the running best.
    let running = null;
    const runningBest = done.map((t) => {
      const v = Number(t.objectiveValue ?? 0);
      running = running === null ? v : (maximize ? Math.max(running, v) : Math.min(running, v));
      return [num(t.number), running];
    });
    chartBoxes.objective.dataset.points = String(done.length);
    chartBoxes.objective.setAttribute("aria-label", `Objective of ${done.length} succeeded trials by trial number` +
      (runningBest.length ? `; best so far ${fmt(runningBest[runningBest.length - 1][1])}` : ""));
    chart("objective").setOption({
      animation: false,
      tooltip: { trigger: "item" },
      legend: { top: 0 },
      grid: { left: 56, right: 16, top: 36, bottom: 40 },
      xAxis: { type: "value", name: "trial", nameLocation: "middle", nameGap: 26, minInterval: 1 },
      yAxis: { type: "value", name: "objective", scale: true },
      series: [
        { name: "trial", type: "scatter", symbolSize: 8, data: done.map((t) => [num(t.number), Number(t.objectiveValue ?? 0)]) },
        { name: "running best", type: "line", step: "end", showSymbol: false, data: runningBest },
      ],
    }, true);
    // Parallel coordinates: each hyper-parameter and the prompt template, then the objective.
    const hyper = (spec.searchSpace || {}).hyperparameters || [];
    const dims = [];
    const templates = [...new Set(done.map((t) => (t.candidate || {}).templateId || ""))];
    if (templates.length > 1) dims.push({ name: "template", type: "category", data: templates, get: (t) => (t.candidate || {}).templateId || "" });
    for (const hp of hyper) {
      if (hp.choice) {
        const values = (hp.choice.values || []).map((v) => String(paramValue(v)));
        dims.push({ name: hp.name, type: "category", data: values, get: (t) => String(paramValue(((t.candidate || {}).hyperparameters || {})[hp.name])) });
      } else {
        dims.push({ name: hp.name, type: hp.logUniform ? "log" : "value", get: (t) => paramValue(((t.candidate || {}).hyperparameters || {})[hp.name]) });
      }
    }
    dims.push({ name: "objective", type: "value", get: (t) => Number(t.objectiveValue ?? 0) });
    chartBoxes.parallel.dataset.points = String(done.length);
    chart("parallel").setOption({
      animation: false,
      parallel: { left: 48, right: 72, top: 40, bottom: 30 },
      parallelAxis: dims.map((d, i) => Object.assign({ dim: i, name: d.name, type: d.type, scale: true }, d.data ? { data: d.data } : {})),
      visualMap: done.length ? { show: false, dimension: dims.length - 1, min: Math.min(...done.map((t) => Number(t.objectiveValue ?? 0))),
                                 max: Math.max(...done.map((t) => Number(t.objectiveValue ?? 0))), inRange: { color: ["#9db4e0", "#0b3d91"] } } : undefined,
      series: [{ type: "parallel", lineStyle: { width: 1.5, opacity: 0.7 }, data: done.map((t) => dims.map((d) => d.get(t))) }],
    }, true);
    // Pareto front: the primary objective against the first extra one.
    const extras = spec.extraObjectives || [];
    paretoPanel.hidden = extras.length === 0;
    if (extras.length) {
      const front = new Set(study.paretoTrialIds || []);
      const point = (t) => [Number(t.objectiveValue ?? 0), Number((t.extraObjectiveValues || [])[0] ?? 0), num(t.number)];
      const onFront = done.filter((t) => front.has(t.id)).map(point).sort((a, b) => a[0] - b[0]);
      const name = (o) => (o.terms || []).map((t) => t.metric).join("+") || "objective";
      chartBoxes.pareto.dataset.points = String(onFront.length);
      chart("pareto").setOption({
        animation: false,
        tooltip: { trigger: "item", formatter: (p) => `trial ${p.value[2]}: ${fmt(p.value[0])}, ${fmt(p.value[1])}` },
        legend: { top: 0 },
        grid: { left: 56, right: 16, top: 36, bottom: 44 },
        xAxis: { type: "value", name: `${name(spec.objective || {})} (${maximize ? "max" : "min"})`, nameLocation: "middle", nameGap: 28, scale: true },
        yAxis: { type: "value", name: `${name(extras[0])} (${maximizes(extras[0]) ? "max" : "min"})`, scale: true },
        series: [
          { name: "trials", type: "scatter", symbolSize: 7, itemStyle: { color: "#9aa3af" }, data: done.filter((t) => !front.has(t.id)).map(point) },
          { name: "Pareto front", type: "line", symbolSize: 10, itemStyle: { color: "#b3261e" }, data: onFront },
        ],
      }, true);
    }
    // Parameter importance (optuna's fANOVA, computed by the gateway).
    const found = (importance && importance.importances) || [];
    chartBoxes.importance.dataset.points = String(found.length);
    if (!found.length) {
      if (charts.importance) { charts.importance.dispose(); delete charts.importance; }
      chartBoxes.importance.replaceChildren(h("p", { className: "chart-empty" }, importance && importance.error
        ? importance.error : "Importance needs at least two succeeded trials that differ."));
    } else {
      if (!charts.importance) chartBoxes.importance.replaceChildren();
      chartBoxes.importance.setAttribute("aria-label", "Parameter importance: " + found.map((f) => `${f.name} ${fmt(f.importance ?? 0, 2)}`).join(", "));
      const ordered = [...found].reverse();
      chart("importance").setOption({
        animation: false,
        tooltip: { trigger: "item" },
        grid: { left: 110, right: 24, top: 16, bottom: 40 },
        xAxis: { type: "value", name: `importance (${importance.evaluator}, ${importance.trials} trials)`, nameLocation: "middle", nameGap: 26, max: 1 },
        yAxis: { type: "category", data: ordered.map((f) => f.name) },
        series: [{ type: "bar", itemStyle: { color: "#0b57d0" }, data: ordered.map((f) => Number(f.importance ?? 0)) }],
      }, true);
    }
  }

  function drawModels() {
    if (!models.length) {
      modelsBox.replaceChildren(h("p", { className: "note" }, "No model registered from this study yet (a completed study registers its best trial)."));
      return;
    }
    modelsBox.replaceChildren(tableWrap("Models table", h("table", {},
      h("thead", {}, h("tr", {}, ...["Model", "Version", "State", "Objective", "Aliases", "Deployed"].map((n) => h("th", { scope: "col" }, n)))),
      h("tbody", {}, ...models.map((m) => h("tr", {},
        h("td", {}, m.name), h("td", {}, String(num(m.version))), h("td", {}, shortName(m.state, "MODEL_VERSION_STATE_").toLowerCase()),
        h("td", {}, fmt(m.objectiveValue)), h("td", {}, (m.aliases || []).join(", ")),
        h("td", {}, m.deployment && m.deployment.state === "DEPLOYMENT_STATE_DEPLOYED" ? `on ${m.deployment.trainerId}` : "no")))))));
  }

  followStream(studyPath(studyId) + ":watch?changesOnly=true", onMessage, controller.signal, (state) => {
    live.textContent = state === "live" ? "live" : state === "ended" ? "finished: no more updates" : "reconnecting…";
  }, () => study !== null && TERMINAL_STATES.has(study.state)).catch((error) => {
    problems.replaceChildren(h("p", { className: "alert" }, error.message));
    live.textContent = "";
  });
}

function trainersView() {
  const controller = new AbortController();
  const status = h("div", { role: "alert" });
  const body = h("tbody");
  const updated = h("p", { className: "note", "aria-live": "off" });
  setView("Trainers", "trainers", h("h1", {}, "Trainers"), status,
    h("section", { className: "panel", "aria-label": "Live trainers" }, updated, tableWrap("Trainers table", h("table", { id: "trainers" },
      h("caption", {}, "Live trainers, from their heartbeats"),
      h("thead", {}, h("tr", {}, ...["Trainer", "Device", "Slots", "Busy", "Utilisation", "Memory per slot (MiB)", "Serving memory (MiB)", "Speed", "Tokens/s"]
        .map((n) => h("th", { scope: "col" }, n)))),
      body))));
  keepRefreshed(TRAINERS_REFRESH_MS, controller, status, async () => {
    const reply = await api("/v1/trainers", { signal: controller.signal });
    const trainers = reply.trainers || [];
    body.replaceChildren(...(trainers.length ? trainers.map((t) => {
      const use = Number(t.utilisation ?? 0);
      return h("tr", {},
        h("th", { scope: "row" }, t.id), h("td", {}, t.deviceKind || ""), h("td", { className: "num" }, String(num(t.slots))),
        h("td", { className: "num" }, String(num(t.busySlots))),
        h("td", {}, h("meter", { min: "0", max: "1", value: String(use), "aria-label": `${Math.round(use * 100)}% busy` }), ` ${Math.round(use * 100)}%`),
        h("td", { className: "num" }, fmt(num(t.memoryMb), 0)), h("td", { className: "num" }, fmt(num(t.servingMemoryMb), 0)),
        h("td", { className: "num" }, fmt(t.speed, 2)),
        h("td", {}, Object.entries(t.tokensPerSecond || {}).map(([k, v]) => `${k} ${fmt(v, 0)}`).join(", ")));
    }) : [h("tr", {}, h("td", { colspan: "9" }, "No trainer is live."))]));
    updated.textContent = `Updated ${new Date().toLocaleTimeString()}`;
  });
}

// ---- routing ---------------------------------------------------------------------------------

async function route() {
  leaveView();
  leaveView = () => {};
  if (!config) config = await fetch("/dashboard/config.json").then((r) => r.json());
  const hash = location.hash || "#/studies";
  if (!apiKey() && hash !== "#/login") {
    sessionStorage.setItem("openautoglm.next", hash);
    location.hash = "#/login";
    return;
  }
  const study = /^#\/studies\/(.+)$/.exec(hash);
  if (hash === "#/login") loginView();
  else if (study) studyView(decodeURIComponent(study[1]));
  else if (hash === "#/new") newStudyView();
  else if (hash === "#/trainers") trainersView();
  else studiesView();
  if (hash !== "#/login") document.getElementById("main").focus({ preventScroll: true });
}

document.getElementById("sign-out").addEventListener("click", () => {
  sessionStorage.removeItem(KEY_STORAGE);
  sessionStorage.removeItem("openautoglm.draft");
  location.hash = "#/login";
});
window.addEventListener("hashchange", route);
route();
