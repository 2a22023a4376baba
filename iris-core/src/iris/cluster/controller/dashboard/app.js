// The Iris dashboard: plain JS over the controller's JSON API (/api/...), live by polling.
// Pages are hash routes (#/jobs, #/job/<id>, #/workers, #/scale-groups, #/endpoints); a poll
// re-renders the current page's data in place, and a job's log is appended from a cursor.
"use strict";

const POLL_MS = 1000;
const JOB_STATES = ["PENDING", "RUNNING", "SUCCEEDED", "FAILED", "KILLED", "WORKER_FAILED", "UNSCHEDULABLE"];
const TERMINAL = new Set(["SUCCEEDED", "FAILED", "KILLED", "WORKER_FAILED", "UNSCHEDULABLE"]);
const app = document.getElementById("app");

let route = null;   // {page, params, key}
let timer = null;
let generation = 0; // bumps on navigation: a poll of the previous page must not draw on this one
let log = null;     // {jobId, cursor, finished, count}
let taskPage = 1;   // the job page's page of tasks
const MAX_LOG_LINES_SHOWN = 20000; // older lines leave the page (the API still has them)

function esc(value) {
  return String(value === null || value === undefined ? "" : value)
    .replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;").replace(/"/g, "&quot;");
}

function badge(state) { return `<span class="state ${esc(state)}">${esc(state)}</span>`; }

function ago(t) {
  if (!t) return "";
  const s = Math.max(0, Date.now() / 1000 - t);
  if (s < 60) return `${Math.floor(s)}s ago`;
  if (s < 3600) return `${Math.floor(s / 60)}m ago`;
  if (s < 86400) return `${Math.floor(s / 3600)}h ago`;
  return `${Math.floor(s / 86400)}d ago`;
}

function duration(start, end) {
  if (!start) return "";
  const s = Math.max(0, (end || Date.now() / 1000) - start);
  return s < 60 ? `${s.toFixed(1)}s` : s < 3600 ? `${Math.floor(s / 60)}m${Math.floor(s % 60)}s` : `${(s / 3600).toFixed(1)}h`;
}

function clock(t) { return t ? new Date(t * 1000).toLocaleString() : ""; }

function bytes(n) {
  if (!n) return "0";
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) { n /= 1024; i++; }
  return `${n.toFixed(i ? 1 : 0)} ${units[i]}`;
}

function jobLink(id) { return `<a href="#/job/${encodeURIComponent(id)}">${esc(id)}</a>`; }

async function api(path, options) {
  const response = await fetch(path, Object.assign({ cache: "no-store", credentials: "same-origin" }, options || {}));
  let body = null;
  try { body = await response.json(); } catch (e) { body = { error: `${response.status} ${response.statusText}` }; }
  if (response.status === 401) { location.assign("/login"); } // the session ended: log in again
  if (!response.ok) throw new Error(body && body.error ? body.error : `${response.status}`);
  return body;
}

function problem(message) {
  const el = document.getElementById("problem");
  el.hidden = !message;
  el.textContent = message || "";
}

// --- routing ------------------------------------------------------------------------------

function parseRoute() {
  const hash = location.hash.replace(/^#\/?/, "");
  const [path, query] = hash.split("?");
  const params = new URLSearchParams(query || "");
  if (path.startsWith("job/")) return { page: "job", id: decodeURIComponent(path.slice(4)), params };
  const page = ["workers", "scale-groups", "endpoints"].includes(path) ? path : "jobs";
  return { page, params };
}

function navigate() {
  route = parseRoute();
  generation++;
  clearTimeout(timer);
  log = null;
  for (const a of document.querySelectorAll("nav a")) {
    a.classList.toggle("active", a.dataset.page === route.page || (route.page === "job" && a.dataset.page === "jobs"));
  }
  app.innerHTML = "";
  if (route.page === "jobs") setupJobs();
  if (route.page === "job") setupJob();
  poll();
}

async function poll() {
  const mine = generation;
  try {
    await Promise.all([PAGES[route.page](mine), health()]);
    if (mine === generation) problem("");
  } catch (e) {
    if (mine === generation) problem(e.message);
  }
  if (mine === generation) timer = setTimeout(poll, POLL_MS);
}

async function health() {
  const h = await api("/health");
  const jobs = Object.entries(h.jobs).map(([s, n]) => `${n} ${s.toLowerCase()}`).join(", ") || "no jobs";
  document.getElementById("health").textContent =
    `v${h.version} · up ${duration(Date.now() / 1000 - h.uptime_seconds)} · ${h.workers} worker(s) · ${jobs}`;
}

// --- jobs -----------------------------------------------------------------------------------

function setupJobs() {
  const p = route.params;
  app.innerHTML = `
    <form class="filters" id="filters">
      <select name="state" id="filter-state"><option value="">all states</option>
        ${JOB_STATES.map(s => `<option value="${s}" ${p.get("state") === s ? "selected" : ""}>${s}</option>`).join("")}</select>
      <input name="user" id="filter-user" placeholder="user" value="${esc(p.get("user") || "")}">
      <input name="prefix" id="filter-prefix" placeholder="job id prefix, e.g. /alice/" size="28" value="${esc(p.get("prefix") || "")}">
      <button type="submit">Filter</button>
      <span class="counts muted" id="job-counts"></span>
    </form>
    <table id="jobs"><thead><tr><th>Job</th><th>State</th><th>User</th><th>Submitted</th><th>Duration</th>
      <th>Tasks</th><th>Pending reason / error</th></tr></thead><tbody></tbody></table>
    <div class="pager"><button id="prev">‹ Newer</button><span id="page-info" class="muted"></span><button id="next">Older ›</button></div>`;
  const form = document.getElementById("filters");
  const go = (page) => {
    const q = new URLSearchParams();
    for (const name of ["state", "user", "prefix"]) if (form.elements[name].value) q.set(name, form.elements[name].value);
    if (page > 1) q.set("page", page);
    if (p.get("per_page")) q.set("per_page", p.get("per_page"));
    location.hash = `#/jobs${q.toString() ? "?" + q : ""}`;
  };
  form.addEventListener("submit", (e) => { e.preventDefault(); go(1); });
  form.elements.state.addEventListener("change", () => go(1));
  const page = Number(p.get("page") || 1);
  document.getElementById("prev").addEventListener("click", () => go(page - 1));
  document.getElementById("next").addEventListener("click", () => go(page + 1));
}

function tasksByState(counts) {
  return Object.entries(counts).map(([s, n]) => `<span class="state ${esc(s)}">${n} ${esc(s.toLowerCase())}</span>`).join(" ");
}

async function jobsPage(mine) {
  const started = performance.now();
  const q = new URLSearchParams();
  for (const name of ["state", "user", "prefix", "page", "per_page"]) if (route.params.get(name)) q.set(name, route.params.get(name));
  let data;
  try {
    data = await api(`/api/jobs?${q}`);
  } catch (e) {
    if (q.get("page") && e.message.startsWith("page:")) { // fewer jobs match now: back to the first page
      const keep = new URLSearchParams(route.params);
      keep.delete("page");
      if (mine === generation) location.hash = `#/jobs${keep.toString() ? "?" + keep : ""}`;
      return;
    }
    throw e;
  }
  if (mine !== generation) return;
  document.querySelector("#jobs tbody").innerHTML = data.jobs.map(j => `
    <tr data-job-id="${esc(j.job_id)}">
      <td>${jobLink(j.job_id)}</td><td class="state-cell">${badge(j.state)}</td><td>${esc(j.user)}</td>
      <td title="${esc(clock(j.submitted_at))}">${esc(ago(j.submitted_at))}</td>
      <td>${esc(duration(j.started_at, j.finished_at))}</td>
      <td>${tasksByState(j.tasks_by_state)}</td>
      <td class="reason">${esc(j.state === "PENDING" ? j.pending_reason : j.error)}</td>
    </tr>`).join("") || `<tr><td colspan="7" class="muted">No jobs match.</td></tr>`;
  document.getElementById("job-counts").textContent =
    Object.entries(data.counts).map(([s, n]) => `${n} ${s.toLowerCase()}`).join(" · ");
  document.getElementById("page-info").textContent = `page ${data.page} of ${data.pages} (${data.total} job${data.total === 1 ? "" : "s"})`;
  document.getElementById("prev").disabled = data.page <= 1;
  document.getElementById("next").disabled = data.page >= data.pages;
  // for benchmarks/dashboard.py: when the first table was on screen (ms since navigation), and
  // how long each poll (API + render) took
  const done = performance.now();
  window.irisTimings = window.irisTimings || { firstJobsTable: done, polls: [] };
  window.irisTimings.polls.push(done - started);
}

// --- one job --------------------------------------------------------------------------------

function setupJob() {
  app.innerHTML = `
    <div class="headline"><h1 id="job-id">${esc(route.id)}</h1><span id="job-state"></span>
      <button class="danger" id="kill" hidden>Kill job</button></div>
    <div id="job-body"></div>
    <h2>Log <span class="muted" id="log-status"></span></h2>
    <pre id="log"></pre>`;
  log = { jobId: route.id, cursor: "", finished: false, count: 0 };
  taskPage = 1;
  document.getElementById("kill").addEventListener("click", killJob);
  document.getElementById("job-body").addEventListener("click", (e) => {
    const step = e.target.dataset && e.target.dataset.taskStep;
    if (!step) return;
    taskPage = Math.max(1, taskPage + Number(step));
    clearTimeout(timer);
    poll();
  });
}

async function killJob() {
  const button = document.getElementById("kill");
  if (!window.confirm(`Kill ${route.id} and its children?`)) return;
  button.disabled = true;
  try {
    const result = await api("/api/kill", {
      method: "POST", headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ job_id: route.id, reason: "killed from the dashboard" }),
    });
    document.getElementById("job-state").innerHTML = badge(result.state);
  } catch (e) {
    problem(`kill failed: ${e.message}`);
    button.disabled = false;
  }
}

async function jobPage(mine) {
  let job;
  try {
    [job] = await Promise.all([api(`/api/job?id=${encodeURIComponent(route.id)}&task_page=${taskPage}`), readLog(mine)]);
  } catch (e) {
    if (taskPage > 1 && /task_page/.test(e.message)) { taskPage = 1; return; } // the job has fewer tasks now
    throw e;
  }
  if (mine !== generation) return;
  document.getElementById("job-state").innerHTML = badge(job.state);
  const kill = document.getElementById("kill");
  kill.hidden = TERMINAL.has(job.state) || job.may_kill === false; // only its owner (or an admin) kills it
  const attempts = [];
  for (const t of job.tasks) for (const a of t.attempts) attempts.push([t, a]);
  const facts = [
    ["User", esc(job.user)], ["Command", `<code>${esc(job.entrypoint)}</code>`],
    ["Submitted", `${esc(clock(job.submitted_at))} (${esc(ago(job.submitted_at))})`],
    ["Ran for", esc(duration(job.started_at, job.finished_at))],
    ["Resources", esc(`${job.resources.cpu} cpu, ${bytes(job.resources.memory)}`)],
  ];
  if (job.parent_job_id) facts.push(["Parent", jobLink(job.parent_job_id)]);
  if (TERMINAL.has(job.state)) facts.push(["Exit code", `<span id="job-exit-code">${esc(job.exit_code)}</span>`]);
  if (job.error) facts.push(["Error", `<span id="job-error">${esc(job.error)}</span>`]);
  document.getElementById("job-body").innerHTML = `
    <dl class="facts">${facts.map(([k, v]) => `<dt>${k}</dt><dd>${v}</dd>`).join("")}</dl>
    <h2>Tasks (${job.task_count}) <span class="counts">${tasksByState(job.tasks_by_state)}</span></h2>
    <table id="tasks"><thead><tr><th class="num">Task</th><th>State</th><th class="num">Exit code</th><th>Error / pending reason</th>
      <th class="num">Failures</th><th class="num">Preemptions</th><th class="num">Attempts</th></tr></thead><tbody>
      ${job.tasks.map(t => `<tr class="task" data-task="${t.index}"><td class="num">${t.index}</td><td>${badge(t.state)}</td>
        <td class="num exit-code">${esc(t.exit_code === null ? "" : t.exit_code)}</td>
        <td class="error">${esc(t.state === "PENDING" ? t.pending_reason : t.error)}</td>
        <td class="num">${t.failures}</td><td class="num">${t.preemptions}</td><td class="num">${t.attempts.length}</td></tr>`).join("")}
    </tbody></table>
    ${job.task_pages > 1 ? `<div class="pager"><button data-task-step="-1" ${job.task_page <= 1 ? "disabled" : ""}>‹ Previous tasks</button>
      <span class="muted">tasks ${(job.task_page - 1) * job.tasks_per_page}–${Math.min(job.task_count, job.task_page * job.tasks_per_page) - 1}
      (page ${job.task_page} of ${job.task_pages})</span>
      <button data-task-step="1" ${job.task_page >= job.task_pages ? "disabled" : ""}>Next tasks ›</button></div>` : ""}
    <h2>Attempts of these tasks (${attempts.length})</h2>
    <table id="attempts"><thead><tr><th class="num">Task</th><th class="num">Attempt</th><th>Worker</th><th>State</th>
      <th class="num">Exit code</th><th>OOM</th><th>Error</th><th>Started</th><th>Ran for</th></tr></thead><tbody>
      ${attempts.map(([t, a]) => `<tr class="attempt" data-task="${t.index}" data-attempt="${a.attempt_id}">
        <td class="num">${t.index}</td><td class="num">${a.attempt_id}</td><td>${esc(a.worker_id)}</td><td>${badge(a.state)}</td>
        <td class="num exit-code">${esc(a.exit_code === null ? "" : a.exit_code)}</td><td>${a.oom ? "OOM" : ""}</td>
        <td class="error">${esc(a.error)}</td><td>${esc(ago(a.started_at))}</td><td>${esc(duration(a.started_at, a.finished_at))}</td></tr>`).join("")
        || `<tr><td colspan="9" class="muted">No attempt yet.</td></tr>`}
    </tbody></table>
    ${job.children.length ? `<h2>Children (${job.children.length})</h2><ul id="children">${job.children.map(c => `<li>${jobLink(c)}</li>`).join("")}</ul>` : ""}`;
}

async function readLog(mine) {
  const state = log;
  if (!state || state.finished) return;
  for (let round = 0; round < 20; round++) { // catch up quickly on a long log, then wait for the next poll
    const q = new URLSearchParams({ job: state.jobId, cursor: state.cursor, children: "1", max_lines: "2000" });
    const data = await api(`/api/logs?${q}`);
    if (mine !== generation || log !== state) return;
    appendLog(data.lines, state);
    state.cursor = data.cursor;
    state.finished = data.finished;
    document.getElementById("log-status").textContent = `${state.count} line(s)${data.finished ? ", complete" : ", live"}`;
    if (data.lines.length < 2000 || data.finished) return;
  }
}

// Each line's stream: stdout lines as they are; the others tagged, and coloured by style.css.
const STREAMS = { stdout: "out", stderr: "err", env: "env" };

function appendLog(lines, state) {
  if (!lines.length) return;
  const el = document.getElementById("log");
  const atBottom = el.scrollTop + el.clientHeight >= el.scrollHeight - 4;
  const html = lines.map(l => {
    const origin = (l.job_id !== state.jobId ? `${l.job_id} ` : "") + `task ${l.task} attempt ${l.attempt}`;
    const stream = STREAMS[l.stream] ? l.stream : "stdout";
    const tag = stream === "stdout" ? "" : `<span class="stream">${STREAMS[stream]}</span> `;
    return `<span class="log-line ${stream}" data-task="${l.task}" data-attempt="${l.attempt}" data-stream="${stream}"><span class="origin">[${esc(origin)}]</span> ${tag}${esc(l.data)}</span>\n`;
  }).join("");
  el.insertAdjacentHTML("beforeend", html);
  state.count += lines.length;
  while (el.childElementCount > MAX_LOG_LINES_SHOWN) el.firstElementChild.remove();
  if (atBottom) el.scrollTop = el.scrollHeight;
}

// --- workers, scale groups, endpoints ---------------------------------------------------------

async function workersPage(mine) {
  const data = await api("/api/workers");
  if (mine !== generation) return;
  const live = data.workers.filter(w => !w.lost).length;
  app.innerHTML = `<h1>Workers <span class="muted">(${live} live, ${data.workers.length - live} lost)</span></h1>
    <table id="workers"><thead><tr><th>Worker</th><th>Slice</th><th>State</th><th class="num">CPU used / total</th><th class="num">CPU free</th>
      <th class="num">Memory used / total</th><th class="num">Memory free</th><th>Attempts</th><th>Last reconcile</th><th>Attributes</th></tr></thead><tbody>
    ${data.workers.map(w => `<tr data-worker-id="${esc(w.worker_id)}"><td>${esc(w.worker_id)}</td><td>${esc(w.slice_id)}</td>
      <td>${w.lost ? badge("lost") : badge("READY")}</td>
      <td class="num">${esc(w.used_cpu)} / ${esc(w.cpu)}</td><td class="num">${esc(w.free_cpu)}</td>
      <td class="num">${esc(bytes(w.used_memory))} / ${esc(bytes(w.memory_bytes))}</td><td class="num">${esc(bytes(w.free_memory))}</td>
      <td class="attempts">${w.attempts.map(a => `<div>${jobLink(a.task_id.slice(0, a.task_id.lastIndexOf("/")))}<span class="muted">/${esc(a.task_id.slice(a.task_id.lastIndexOf("/") + 1))} #${a.attempt_id}</span> ${badge(a.state)}</div>`).join("") || '<span class="muted">idle</span>'}</td>
      <td>${esc(ago(w.last_seen))}</td>
      <td>${Object.entries(w.attributes).map(([k, v]) => `<code>${esc(k)}=${esc(v)}</code>`).join(" ")}</td></tr>`).join("")
      || `<tr><td colspan="10" class="muted">No workers have checked in.</td></tr>`}
    </tbody></table>`;
}

function until(t) { return t ? `${Math.max(0, Math.round(t - Date.now() / 1000))}s more` : ""; }

async function scaleGroupsPage(mine) {
  const data = await api("/api/scale-groups");
  if (mine !== generation) return;
  if (!data.autoscaler) { app.innerHTML = `<h1>Scale groups</h1><p class="muted">This controller runs without an autoscaler.</p>`; return; }
  app.innerHTML = `<h1>Scale groups</h1>
    <table id="groups"><thead><tr><th>Group</th><th>State</th><th class="num">Slices (min–max)</th><th class="num">Demand (tasks)</th>
      <th>Backoff / quota hold</th><th>Last error</th><th>Detail</th></tr></thead><tbody>
    ${data.groups.map(g => `<tr data-group="${esc(g.name)}"><td>${esc(g.name)}</td><td>${badge(g.state)}</td>
      <td class="num">${g.slices.length} (${g.min_slices}–${g.max_slices})</td><td class="num">${g.demand}</td>
      <td>${g.quota_until ? "quota hold " + esc(until(g.quota_until)) : g.backoff_until ? "backoff " + esc(until(g.backoff_until)) : ""}</td>
      <td class="error">${esc(g.last_error)}</td><td class="error">${esc(g.detail)}</td></tr>`).join("")}
    </tbody></table>
    <h2>Slices</h2>
    <table id="slices"><thead><tr><th>Slice</th><th>Group</th><th>State</th><th class="num">VMs</th><th>Created</th><th>Idle since</th><th>Error</th></tr></thead><tbody>
    ${data.groups.flatMap(g => g.slices.map(s => `<tr data-slice="${esc(s.slice_id)}"><td>${esc(s.slice_id)}</td><td>${esc(g.name)}</td>
      <td>${badge(s.state)}${s.adopted ? ' <span class="muted">adopted</span>' : ""}</td><td class="num">${s.vms}</td>
      <td>${esc(ago(s.created_at))}</td><td>${esc(ago(s.idle_since))}</td><td class="error">${esc(s.error)}</td></tr>`)).join("")
      || `<tr><td colspan="7" class="muted">No slices.</td></tr>`}
    </tbody></table>`;
}

async function endpointsPage(mine) {
  const data = await api("/api/endpoints");
  if (mine !== generation) return;
  app.innerHTML = `<h1>Endpoints</h1>
    <table id="endpoints"><thead><tr><th>Name</th><th>Address</th><th>Job</th><th class="num">Task</th><th>Metadata</th></tr></thead><tbody>
    ${data.endpoints.map(e => `<tr><td>${esc(e.name)}</td><td><code>${esc(e.address)}</code></td><td>${jobLink(e.job_id)}</td>
      <td class="num">${e.task_index}</td><td>${Object.entries(e.metadata).map(([k, v]) => `<code>${esc(k)}=${esc(v)}</code>`).join(" ")}</td></tr>`).join("")
      || `<tr><td colspan="5" class="muted">No endpoints registered.</td></tr>`}
    </tbody></table>`;
}

const PAGES = { jobs: jobsPage, job: jobPage, workers: workersPage, "scale-groups": scaleGroupsPage, endpoints: endpointsPage };

window.addEventListener("hashchange", navigate);
navigate();
