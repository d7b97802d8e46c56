// shmcam status page of a node, or of the cluster when the coordinator serves it (then with a
// servers panel and a node column). Polls the REST API (the same endpoints `shmcam top`
// reads), so the page holds no state the server does not have. Every text from the server goes
// through textContent, never innerHTML. Paths are relative: the page works behind a prefix.
"use strict";

const TABLE_PERIOD = 1000;    // ms between instance table refreshes, and preview images
const LOG_PERIOD = 2000;
const LISTS_PERIOD = 15000;   // saved camera and pipeline names change rarely
const TIMEOUT = 5000;         // a poll without an answer by then counts as disconnected
const STOP_TIMEOUT = 20000;   // the supervisor waits up to 5 s for an instance, then kills it
const START_TIMEOUT = 70000;  // an instance has 60 s to become ready
const PREVIEW_MAX_WIDTH = 800;
const ARM_TIME = 4000;        // a Stop button stays armed (waiting for the confirming click)
const TOKEN_KEY = "shmcam.token";

const $ = (id) => document.getElementById(id);

// --- talking to the supervisor ----------------------------------------------------------------

class HttpError extends Error {
  constructor(status, message) { super(message); this.status = status; }
}
class Disconnected extends Error {}

async function call(method, path, timeout = TIMEOUT) {
  const controller = new AbortController();
  const timer = setTimeout(() => controller.abort(), timeout);
  const headers = {};
  const token = sessionStorage.getItem(TOKEN_KEY);
  if (method !== "GET" && token) headers.Authorization = `Bearer ${token}`;
  let response;
  try {
    response = await fetch(path, {method, headers, cache: "no-store", signal: controller.signal});
  } catch (error) {
    throw new Disconnected(error.name === "AbortError"
      ? `no answer within ${timeout / 1000} s` : "the connection was refused or lost");
  } finally {
    clearTimeout(timer);
  }
  if (!response.ok) throw new HttpError(response.status, await errorText(response));
  return response;
}

async function errorText(response) {
  try {
    return (await response.json()).status || `HTTP ${response.status}`;
  } catch {
    return `HTTP ${response.status} ${response.statusText}`;
  }
}

async function getJson(path) {
  return (await call("GET", path)).json();
}

const enc = encodeURIComponent;

/** Runs `task` every `period` ms after the previous run ended, never twice at once;
 * `now()` runs it at once (or right after the current run). */
class Poller {
  constructor(period, task) {
    Object.assign(this, {period, task, timer: null, running: false, again: false});
  }
  async now() {
    if (this.running) { this.again = true; return; }
    clearTimeout(this.timer);
    this.running = true;
    try { await this.task(); } catch (error) { console.error(error); }
    this.running = false;
    if (this.again) { this.again = false; this.now(); return; }
    this.timer = setTimeout(() => this.now(), this.period);
  }
}

// --- connection state and messages ------------------------------------------------------------

let lostSince = null;

function disconnected(reason) {
  lostSince = lostSince || new Date();
  const banner = $("banner");
  banner.textContent = `Disconnected from the supervisor at ${location.host} since ` +
    `${lostSince.toLocaleTimeString()}: ${reason}. Retrying; the figures below are stale.`;
  banner.hidden = false;
  document.body.classList.add("stale");
}

function reconnected() {
  if (lostSince === null) return;
  lostSince = null;
  $("banner").hidden = true;
  document.body.classList.remove("stale");
  loadNode();
  lists.now();
}

function say(text, kind = "ok") {
  const message = $("message");
  message.textContent = text;
  message.className = kind;
  message.hidden = false;
}

/** An action's failure, with what to do about a refused token. */
function sayFailure(action, error) {
  let text = `${action} failed: ${error.message}`;
  if (error instanceof HttpError && (error.status === 401 || error.status === 403)) {
    text = `${action} refused (HTTP ${error.status}): ` + (sessionStorage.getItem(TOKEN_KEY)
      ? "the token given is not the node's token. Correct it in the Token field."
      : "this node needs its token. Enter it in the Token field at the top.");
    $("token").focus();
  }
  say(text, "error");
}

// --- node header and token --------------------------------------------------------------------

async function loadNode() {
  try {
    const node = await getJson("web/node");
    $("node-name").textContent = node.node;
    $("node-version").textContent = node.version;
    document.title = `shmcam ${node.node}`;
    $("token-form").hidden = !node.token_required;
    document.body.classList.toggle("cluster", Boolean(node.cluster));
    $("servers-panel").hidden = !node.cluster;
    showTokenState();
  } catch (error) {
    if (error instanceof Disconnected) disconnected(error.message);
  }
}

function showTokenState() {
  $("token-state").textContent = sessionStorage.getItem(TOKEN_KEY)
    ? "token set for this tab" : "no token: stop and start are refused";
}

/** The field's token is kept for this tab on Use, Enter, or leaving the field. */
function setUpToken() {
  $("token").value = sessionStorage.getItem(TOKEN_KEY) || "";
  const keep = () => {
    const token = $("token").value.trim();
    if (token) sessionStorage.setItem(TOKEN_KEY, token);
    else sessionStorage.removeItem(TOKEN_KEY);
    showTokenState();
  };
  $("token").addEventListener("change", keep);
  $("token-form").addEventListener("submit", (event) => {
    event.preventDefault();
    keep();
  });
  $("token-forget").addEventListener("click", () => {
    sessionStorage.removeItem(TOKEN_KEY);
    $("token").value = "";
    showTokenState();
  });
}

function renderNode(info, count) {
  $("node-cpu").textContent = `${info.cpu.toFixed(0)} %`;
  $("node-memory").textContent = `${info.memory_percent.toFixed(0)} %`;
  $("node-instances").textContent = count;
  $("node-updated").textContent = new Date().toLocaleTimeString();
}

// --- instance table ---------------------------------------------------------------------------

const fixed = (digits) => (value) => value == null ? "–" : value.toFixed(digits);
const plain = (value) => value == null ? "–" : String(value);
const megabytes = (bytes) => bytes == null ? "–" : `${(bytes / 2 ** 20).toFixed(1)} MB`;

const COLUMNS = [  // row key, format, numeric
  ["name", plain, false], ["node", plain, false], ["kind", plain, false],
  ["state", plain, false],
  ["pid", plain, true], ["cpu", fixed(1), true], ["memory", megabytes, true],
  ["fps_in", fixed(1), true], ["fps_out", fixed(1), true], ["dropped", plain, true],
  ["errors", plain, true], ["processing", plain, true], ["clients", plain, true],
  ["stream", plain, false],
];

/** One table row per instance of an info answer (`/api/v1/<root>/info`). */
function toRows(kind, info) {
  return Object.entries(info.active_instances).map(([id, instance]) => {
    const s = instance.statistics;
    return {
      key: `${kind}:${id}`, id, kind, name: id, camera: instance.camera_name,
      node: instance.node,
      state: stateText(instance), pid: s.pid, cpu: s.cpu, memory: s.memory,
      fps_in: s.fps_in, fps_out: s.fps_out, dropped: s.dropped, errors: s.errors,
      processing: `${fixed(1)(s.processing_ms_p50)} / ${fixed(1)(s.processing_ms_p99)}`,
      clients: s.clients, stream: instance.stream_ipc || instance.stream_address,
      lastError: instance.last_error,
    };
  });
}

function stateText(instance) {
  const parts = [instance.state];
  parts.push(instance.permanent ? "permanent" : instance.shared ? "shared" : "on demand");
  const restarts = instance.statistics.restarts;
  if (restarts) parts.push(`${restarts} restart${restarts > 1 ? "s" : ""}`);
  return parts.join(", ");
}

const tableRows = new Map();   // key -> {tr, row}

async function refreshInstances() {
  let cameras, pipelines;
  try {
    [cameras, pipelines] = await Promise.all(
      [getJson("api/v1/cam/info"), getJson("api/v1/pipeline/info")]);
  } catch (error) {
    if (error instanceof Disconnected) disconnected(error.message);
    else say(`Reading the instances failed: ${error.message}`, "error");
    return;
  }
  reconnected();
  const rows = [...toRows("camera", cameras.info), ...toRows("pipeline", pipelines.info)];
  renderNode(cameras.info, rows.length);
  if (cameras.info.nodes) renderServers(cameras.info.nodes, rows);
  renderTable(rows);
  updateLogSources(rows);
  if (preview.key) loadPreview();   // not awaited: a slow image must not hold the table up
  document.body.dataset.refreshes = Number(document.body.dataset.refreshes || 0) + 1;
}

function renderTable(rows) {
  const tbody = $("instances").tBodies[0];
  const seen = new Set();
  for (const row of rows) {
    seen.add(row.key);
    let entry = tableRows.get(row.key);
    if (!entry) {
      entry = {tr: newRow(row.key)};
      tableRows.set(row.key, entry);
    }
    entry.row = row;
    fillRow(entry.tr, row);
    tbody.appendChild(entry.tr);   // keeps the server's order: cameras, then pipelines
  }
  for (const [key, entry] of tableRows) {
    if (!seen.has(key)) {
      entry.tr.remove();
      tableRows.delete(key);
      if (preview.key === key) pausePreview(`${entry.row.name} is no longer running`);
    }
  }
  $("no-instances").hidden = rows.length > 0;
}

function newRow(key) {
  const tr = document.createElement("tr");
  tr.dataset.key = key;
  for (const [column, , numeric] of COLUMNS) {
    const td = tr.insertCell();
    td.dataset.col = column;
    if (numeric) td.className = "num";
    if (column === "node") td.classList.add("cluster-only");
  }
  const actions = tr.insertCell();
  actions.className = "actions";
  for (const [label, handler] of [["Preview", openPreview], ["Log", showLogOf],
                                  ["Stop", stopClicked]]) {
    const button = document.createElement("button");
    button.type = "button";
    button.textContent = label;
    button.className = label.toLowerCase();
    button.addEventListener("click", () => handler(tableRows.get(key).row, button));
    actions.appendChild(button);
  }
  return tr;
}

function fillRow(tr, row) {
  COLUMNS.forEach(([column, format], index) => {
    const text = format(row[column]);
    const td = tr.cells[index];
    if (td.textContent !== text) td.textContent = text;
  });
  tr.querySelector('[data-col="state"]').title = row.lastError ? `last error: ${row.lastError}`
    : "";
  tr.querySelector('[data-col="dropped"]').classList.toggle("warn", row.dropped > 0);
  tr.querySelector('[data-col="errors"]').classList.toggle("bad", row.errors > 0);
  tr.classList.toggle("previewed", preview.key === row.key);
}

// --- servers (the cluster page) ---------------------------------------------------------------

const rate = (bytes) => bytes == null ? "–" : `${(bytes / 1e6).toFixed(1)} MB/s`;

function renderServers(nodes, rows) {
  const tbody = $("servers").tBodies[0];
  tbody.replaceChildren(...Object.entries(nodes).map(([name, node]) => {
    const tr = document.createElement("tr");
    tr.dataset.node = name;
    const count = rows.filter((row) => row.node === name).length;
    const cells = [name, node.up ? (node.enabled ? "up" : "up, disabled") : `down: ${node.error}`,
                   node.version, fixed(0)(node.cpu), fixed(0)(node.memory_percent),
                   rate(node.rx), rate(node.tx), String(count), node.url];
    cells.forEach((text, index) => {
      const td = tr.insertCell();
      td.textContent = text ?? "–";
      if (index >= 3 && index <= 7) td.className = "num";
    });
    tr.cells[1].classList.toggle("bad", !node.up);
    const actions = tr.insertCell();
    actions.className = "actions";
    for (const [label, handler] of [["Log", () => showServerLog(name)],
                                    ["Stop all", (button) => stopServerClicked(name, button)]]) {
      const button = document.createElement("button");
      button.type = "button";
      button.textContent = label;
      button.className = label === "Log" ? "log" : "stop";
      button.addEventListener("click", () => handler(button));
      actions.appendChild(button);
    }
    return tr;
  }));
}

function stopServerClicked(name, button) {
  if (!button.classList.contains("armed")) {
    button.classList.add("armed");
    button.textContent = "Confirm stop all";
    button.disarm = setTimeout(() => {
      button.classList.remove("armed");
      button.textContent = "Stop all";
    }, ARM_TIME);
    return;
  }
  clearTimeout(button.disarm);
  stopServer(name);
}

async function stopServer(name) {
  const action = `Stopping every instance on ${name}`;
  say(`${action}…`, "busy");
  try {
    await call("DELETE", `api/v1/proxy/server/${enc(name)}`, STOP_TIMEOUT);
    say(`every instance on ${name} stopped`);
  } catch (error) {
    sayFailure(action, error);
  }
  table.now();
}

function showServerLog(name) {
  const select = $("log-source");
  const value = `server:${name}`;
  if (![...select.options].some((o) => o.value === value)) select.add(new Option(`server ${name}`, value));
  select.value = value;
  logs.now();
}

// --- stop and start ---------------------------------------------------------------------------

function stopClicked(row, button) {
  if (!button.classList.contains("armed")) {   // first click arms, the second one stops
    button.classList.add("armed");
    button.textContent = "Confirm stop";
    button.disarm = setTimeout(() => disarm(button), ARM_TIME);
    return;
  }
  disarm(button);
  stopInstance(row);
}

function disarm(button) {
  clearTimeout(button.disarm);
  button.classList.remove("armed");
  button.textContent = "Stop";
}

async function stopInstance(row) {
  const root = row.kind === "camera" ? "cam" : "pipeline";
  const action = `Stopping ${row.kind} ${row.name}`;
  const previewed = previewShows(row) ? tableRows.get(preview.key).row : null;
  if (previewed) pausePreview(`${row.kind} ${row.name} is stopping`);
  say(`${action}…`, "busy");
  try {
    await call("DELETE", `api/v1/${root}/${enc(row.id)}`, STOP_TIMEOUT);
    say(`${row.kind} ${row.name} stopped`);
  } catch (error) {
    sayFailure(action, error);
    if (previewed && tableRows.has(previewed.key)) openPreview(previewed);
  }
  table.now();
}

async function startInstance(kind) {
  const name = $(`start-${kind}`).value;
  if (!name) return;
  const action = `Starting ${kind} ${name}`;
  say(`${action}…`, "busy");
  try {
    const answer = await (kind === "camera"
      ? call("GET", `api/v1/cam/${enc(name)}`, START_TIMEOUT)
      : call("POST", `api/v1/pipeline/${enc(name)}?instance_id=${enc(name)}`, START_TIMEOUT));
    say(`${kind} ${name} running, stream ${(await answer.json()).stream}`);
  } catch (error) {
    sayFailure(action, error);
  }
  table.now();
}

async function refreshLists() {
  try {
    const [cameras, pipelines] = await Promise.all([getJson("api/v1/cam"),
                                                    getJson("api/v1/pipeline")]);
    fillSelect("camera", cameras.cameras, "no camera configs");
    fillSelect("pipeline", pipelines.pipelines, "no saved pipelines");
  } catch (error) {
    if (!(error instanceof Disconnected)) say(`Reading the configs failed: ${error.message}`,
                                              "error");
  }
}

function fillSelect(kind, names, empty) {
  const select = $(`start-${kind}`);
  const chosen = select.value;
  select.replaceChildren(...(names.length ? names : [""]).map((name) => {
    const option = new Option(name || `(${empty})`, name);
    option.selected = name === chosen;
    return option;
  }));
  select.disabled = names.length === 0;
  $(`start-${kind}-button`).disabled = names.length === 0;
}

// --- preview ----------------------------------------------------------------------------------

// A pipeline's preview is its output image, which the pipeline copies a few times a second
// into a preview ring of its own (the supervisor never decodes its stream). The camera image
// route starts a camera that is not running, so an image is only asked for while the latest
// table refresh shows the previewed instance running, never while the node is out of reach,
// and not once its Stop was clicked.
const preview = {key: null, camera: null, route: null, width: null, url: null, loading: false};

/** Whether stopping `row` takes the previewed image away. */
function previewShows(row) {
  return preview.key !== null &&
    (preview.key === row.key || (row.kind === "camera" && preview.camera === row.id));
}

function openPreview(row) {
  const camera = row.kind === "camera";
  Object.assign(preview, {key: row.key, camera: camera ? row.id : row.camera, width: null,
                          route: camera ? `api/v1/cam/${enc(row.id)}`
                            : `api/v1/pipeline/instance/${enc(row.id)}`});
  $("preview-title").textContent = camera ? `of camera ${row.name}`
    : `of pipeline ${row.name}: its output image`;
  $("preview-status").textContent = "loading…";
  $("preview-status").className = "";
  $("preview-panel").hidden = false;
  for (const [key, entry] of tableRows) entry.tr.classList.toggle("previewed", key === row.key);
  loadPreview();
}

function pausePreview(reason) {
  $("preview-status").textContent = `${reason}: preview stopped`;
  $("preview-status").className = "error";
  preview.key = null;
}

function closePreview() {
  preview.key = null;
  $("preview-panel").hidden = true;
  for (const entry of tableRows.values()) entry.tr.classList.remove("previewed");
}

/** Load the previewed instance's newest image, unless one is still on its way. */
async function loadPreview() {
  if (preview.loading || lostSince !== null) return;
  preview.loading = true;
  try {
    await loadImage();
  } finally {
    preview.loading = false;
  }
}

/** Every step-th pixel makes an image at most PREVIEW_MAX_WIDTH wide. */
const stepFor = (width) => Math.max(1, Math.ceil(width / PREVIEW_MAX_WIDTH));

async function loadImage() {
  const {key, route} = preview;
  const colormap = $("preview-colormap").value;
  let blob, width, step;
  try {
    // the size first: a whole 2560x2160 frame costs the node ~0.3 s to encode, 1:4 far less
    width = preview.width ?? (await getJson(`${route}/geometry`)).geometry[0];
    step = stepFor(width);
    const path = `${route}/image?scale=${1 / step}` +
      `&colormap=${enc(colormap)}&t=${Date.now()}`;   // t: no cache on the way may answer
    blob = await (await call("GET", path)).blob();
  } catch (error) {
    if (preview.key === key) {
      $("preview-status").textContent = `no image: ${error.message}`;
      $("preview-status").className = "error";
    }
    return;
  }
  if (preview.key !== key) return;   // another preview was chosen meanwhile
  const url = URL.createObjectURL(blob);
  const img = $("preview-img");
  img.src = url;
  try {
    await img.decode();
  } catch {
    URL.revokeObjectURL(url);
    return;
  }
  if (preview.url) URL.revokeObjectURL(preview.url);
  preview.url = url;
  if (preview.key !== key) return;
  // an image that changed its size is measured again for the next one
  preview.width = img.naturalWidth === Math.ceil(width / step) ? width : null;
  $("preview-status").textContent = `${width} px wide, shown 1:${step}, ` +
    `at ${new Date().toLocaleTimeString()}`;
  $("preview-status").className = "";
}

// --- log --------------------------------------------------------------------------------------

async function refreshLog() {
  const source = $("log-source").value;
  let lines;
  try {
    const path = !source ? "api/v1/logs"
      : source.startsWith("server:")
        ? `api/v1/proxy/server/logs/${enc(source.slice("server:".length))}`
        : `api/v1/logs/instance/${enc(source)}`;
    const data = await getJson(path);
    // CamServer's entries: [time, logger, level, message]
    lines = data.logs.map(([time, name, level, message]) =>
      ({text: `${time} ${level} ${name}: ${message}`, level}));
  } catch (error) {
    if (error instanceof Disconnected) return;   // the banner says so already
    lines = [{text: `cannot read this log: ${error.message}`, level: "ERROR"}];
  }
  renderLog(lines);
}

function renderLog(lines) {
  const box = $("log");
  const last = lines.length ? lines[lines.length - 1].text : "";
  if (box.dataset.count === String(lines.length) && box.dataset.last === last) return;
  box.dataset.count = lines.length;
  box.dataset.last = last;
  box.replaceChildren(...lines.map(({text, level}) => {
    const line = document.createElement("div");
    line.textContent = text;
    if (level) line.className = `level-${level.toLowerCase()}`;
    return line;
  }));
  if ($("log-follow").checked) box.scrollTop = box.scrollHeight;
}

function updateLogSources(rows) {
  const select = $("log-source");
  const chosen = select.value;
  const ids = new Set(rows.map((row) => row.id));
  if (chosen && !chosen.startsWith("server:")) ids.add(chosen);   // a stopped one's stays
  if (chosen.startsWith("server:")) return;   // a server's log: the list is left alone
  const wanted = ["", ...[...ids].sort()];
  if ([...select.options].map((o) => o.value).join("\n") === wanted.join("\n")) return;
  select.replaceChildren(...wanted.map((id) => new Option(id || "the server", id)));
  select.value = chosen;
}

function showLogOf(row) {
  updateLogSources([...tableRows.values()].map((entry) => entry.row));
  $("log-source").value = row.id;
  logs.now();
}

// --- start ------------------------------------------------------------------------------------

const table = new Poller(TABLE_PERIOD, refreshInstances);
const logs = new Poller(LOG_PERIOD, refreshLog);
const lists = new Poller(LISTS_PERIOD, refreshLists);

document.addEventListener("DOMContentLoaded", () => {
  setUpToken();
  $("start-camera-button").addEventListener("click", () => startInstance("camera"));
  $("start-pipeline-button").addEventListener("click", () => startInstance("pipeline"));
  $("preview-close").addEventListener("click", closePreview);
  $("preview-colormap").addEventListener("change", () => preview.key && loadPreview());
  $("log-source").addEventListener("change", () => logs.now());
  loadNode();
  for (const poller of [table, logs, lists]) poller.now();
});
