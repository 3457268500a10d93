// spool's dashboard: plain JavaScript, no build step. It talks to the JSON API
// with a bearer token kept in sessionStorage, and stays live through job.watch
// event streams read with fetch() (EventSource cannot send a header): no polling.
'use strict';

const $ = (sel) => document.querySelector(sel);
const state = {
  token: sessionStorage.getItem('spool-token') || '',
  selected: null,       // id of the job shown
  jobs: new Map(),      // id -> listed job
  nextCursor: null,
  lastSeq: null,        // last stored event seen by the global stream
  detailAbort: null,
  log: { step: null, offset: 0, loading: false, pending: [] },
};

class APIError extends Error {
  constructor(status, body) {
    super((body && body.error && body.error.message) || ('HTTP ' + status));
    this.status = status;
    this.code = body && body.error && body.error.code;
  }
}

async function api(method, params) {
  const res = await fetch('api/v1/' + method, {
    method: 'POST',
    headers: { 'Authorization': 'Bearer ' + state.token, 'Content-Type': 'application/json' },
    body: JSON.stringify(params || {}),
  });
  const body = await res.json().catch(() => null);
  if (!res.ok) {
    if (res.status === 401) logout('The token was refused.');
    throw new APIError(res.status, body);
  }
  return body;
}

// sse reads an event stream from GET url, calling onEvent({id, event, data}) for
// each message; it returns when the stream ends.
async function sse(url, lastId, onEvent, signal) {
  const headers = { 'Authorization': 'Bearer ' + state.token };
  if (lastId != null) headers['Last-Event-ID'] = String(lastId);
  const res = await fetch(url, { headers, signal, cache: 'no-store' });
  if (!res.ok) {
    const body = await res.json().catch(() => null);
    if (res.status === 401) logout('The token was refused.');
    throw new APIError(res.status, body);
  }
  const reader = res.body.pipeThrough(new TextDecoderStream()).getReader();
  let buf = '';
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buf += value;
    let i;
    while ((i = buf.indexOf('\n\n')) >= 0) {
      const block = buf.slice(0, i);
      buf = buf.slice(i + 2);
      const msg = { id: null, event: 'message', data: '' };
      for (const line of block.split('\n')) {
        const c = line.indexOf(':');
        if (c <= 0) continue;
        const k = line.slice(0, c), v = line.slice(c + 1).replace(/^ /, '');
        if (k === 'id') msg.id = v;
        else if (k === 'event') msg.event = v;
        else if (k === 'data') msg.data += v;
      }
      onEvent(msg);
    }
  }
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const fmtTime = (t) => t ? new Date(t).toLocaleTimeString() : '';
function el(tag, attrs, ...kids) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === 'class') e.className = v; else if (k.startsWith('on')) e.addEventListener(k.slice(2), v); else e.setAttribute(k, v);
  }
  for (const k of kids) e.append(k == null ? '' : k);
  return e;
}
function percent(p) {
  if (!p) return null;
  if (p.percent != null) return p.percent;
  if (p.done != null && p.total) return 100 * p.done / p.total;
  return null;
}
function bar(p) {
  const pc = percent(p);
  const fill = el('div');
  fill.style.width = (pc == null ? 0 : Math.min(100, pc)) + '%';
  return el('div', { class: 'bar', title: p ? (p.message || '') : '' }, fill);
}

// ---- queues, jobs ----

async function loadInfo() {
  const info = await api('daemon.info');
  const c = info.counts || {};
  $('#info').textContent = `${info.version} · ${c.running || 0} running · ${c.queued || 0} queued · ${c.succeeded || 0} succeeded · ${c.failed || 0} failed · ${c.cancelled || 0} cancelled`;
  return info;
}

async function loadQueues() {
  const { queues } = await api('queue.list');
  const tb = $('#queues tbody');
  tb.replaceChildren(...queues.map((q) => el('tr', { 'data-queue': q.name },
    el('td', {}, q.name + (q.paused ? ' (paused)' : '')),
    el('td', {}, q.parallel == null ? '—' : String(q.parallel)),
    el('td', { class: 'queued' }, String(q.queued)),
    el('td', { class: 'running' }, String(q.running)),
    el('td', {}, el('button', { class: 'pause', onclick: () => api('queue.set', { name: q.name, paused: !q.paused }).then(refreshSoon) }, q.paused ? 'Resume' : 'Pause')),
  )));
}

function listParams() {
  const p = { limit: 50 };
  const st = $('#filter-state').value, q = $('#filter-queue').value.trim();
  if (st) p.state = [st];
  if (q) p.queue = q;
  return p;
}

async function loadJobs(more) {
  const p = listParams();
  if (more && state.nextCursor) p.cursor = state.nextCursor;
  const res = await api('job.list', p);
  if (!more) state.jobs.clear();
  for (const j of res.jobs) state.jobs.set(j.id, j);
  state.nextCursor = res.next_cursor;
  $('#more').hidden = !res.next_cursor;
  renderJobs();
}

function renderJobs() {
  const rows = [...state.jobs.values()].sort((a, b) => b.id - a.id).map((j) => {
    const tr = el('tr', { 'data-id': String(j.id), onclick: () => select(j.id) },
      el('td', {}, String(j.id)),
      el('td', {}, j.name || ''),
      el('td', {}, j.queue),
      el('td', {}, el('span', { class: 'state ' + j.state }, j.state)),
      el('td', { class: 'progress' }, bar(j.progress)),
      el('td', {}, fmtTime(j.submitted_at)));
    if (j.id === state.selected) tr.classList.add('selected');
    return tr;
  });
  $('#jobs tbody').replaceChildren(...rows);
}

// refreshSoon reloads what events changed, at most every 200 ms.
let refreshTimer = null;
function refreshSoon() {
  if (refreshTimer) return;
  refreshTimer = setTimeout(async () => {
    refreshTimer = null;
    try { await Promise.all([loadJobs(false), loadQueues(), loadInfo()]); } catch (e) { console.warn(e); }
  }, 200);
}

// follow keeps one stream of every event: stored ones reload the lists, progress
// moves the bars. It resumes where it stopped with Last-Event-ID.
async function follow() {
  for (;;) {
    try {
      if (state.lastSeq == null) state.lastSeq = (await loadInfo()).last_seq;
      $('#live').textContent = 'live'; $('#live').className = 'live on';
      await sse('api/v1/watch?heartbeat=1s', state.lastSeq, onGlobalEvent);
    } catch (e) {
      if (!state.token) return;
      if (e.code === 1007) state.lastSeq = null; // the log moved on: start from now
      console.warn('event stream', e);
    }
    $('#live').textContent = 'reconnecting'; $('#live').className = 'live off';
    if (!state.token) return;
    await sleep(1000);
  }
}

function onGlobalEvent(msg) {
  if (msg.event !== 'message') return;
  const ev = JSON.parse(msg.data);
  if (msg.id) state.lastSeq = Number(msg.id);
  if (ev.type === 'progress' || ev.type === 'heartbeat') {
    const j = state.jobs.get(ev.job);
    if (j && ev.progress) {
      j.progress = ev.progress;
      const cell = document.querySelector(`#jobs tr[data-id="${ev.job}"] td.progress`);
      if (cell) cell.replaceChildren(bar(ev.progress));
    }
    if (ev.job === state.selected) showLive(ev);
    return;
  }
  if (ev.seq) {
    refreshSoon();
    if (ev.job === state.selected) reloadJob();
  }
}

// ---- one job ----

async function select(id) {
  state.selected = id;
  renderJobs();
  $('#no-job').hidden = true;
  $('#job-detail').hidden = false;
  $('#log').textContent = '';
  $('#heartbeat').textContent = '';
  state.log = { step: null, offset: 0, loading: true, pending: [] };
  if (state.detailAbort) state.detailAbort.abort();
  const ctl = new AbortController();
  state.detailAbort = ctl;
  const job = await reloadJob();
  if (!job || state.selected !== id) return;
  // Output comes live from a watch of this job; the log read fills in what came before.
  sse(`api/v1/watch?jobs=${id}&output=true`, null, (msg) => {
    if (msg.event === 'watch') { loadLog(job.current_step); return; }
    const ev = JSON.parse(msg.data);
    if (ev.type === 'output') onOutput(ev);
    if (ev.type === 'done') { reloadJob().then((j) => j && loadLog(state.log.step == null ? j.current_step : state.log.step)); }
  }, ctl.signal).catch((e) => { if (e.name !== 'AbortError') console.warn(e); });
}

async function reloadJob() {
  const id = state.selected;
  if (id == null) return null;
  let j;
  try { j = await api('job.get', { id }); } catch (e) { $('#job-error').textContent = e.message; return null; }
  if (state.selected !== id) return null;
  $('#job-title').textContent = `#${j.id} ${j.name || ''}`;
  const s = $('#job-state'); s.textContent = j.state; s.className = 'state ' + j.state;
  $('#job-error').textContent = j.error || '';
  $('#cancel').disabled = ['succeeded', 'failed', 'cancelled'].includes(j.state);
  $('#retry').disabled = !$('#cancel').disabled;
  showProgress(j.progress);
  $('#steps tbody').replaceChildren(...j.steps.map((st, i) => el('tr', { 'data-step': String(i) },
    el('td', {}, String(i)), el('td', {}, st.name), el('td', {}, st.kind),
    el('td', {}, el('span', { class: 'state ' + st.state }, st.state)),
    el('td', {}, String(st.attempt)), el('td', {}, st.exit_code == null ? (st.signal || '') : String(st.exit_code)),
    el('td', { class: 'error' }, st.error || ''))));
  return j;
}

function showProgress(p) {
  const pc = percent(p);
  $('#progress-fill').style.width = (pc == null ? 0 : Math.min(100, pc)) + '%';
  $('#progress-text').textContent = p ? `${pc == null ? '' : Math.round(pc) + '% '}${p.message || ''}` : '';
}

function showLive(ev) {
  if (ev.progress) showProgress(ev.progress);
  if (ev.type === 'heartbeat') {
    $('#heartbeat').textContent = `♥ ${new Date(ev.time).toLocaleTimeString()} · ${ev.elapsed || ''} · ${ev.last_line || ''}`;
  }
}

const utf8 = new TextEncoder();

async function loadLog(step) {
  const id = state.selected;
  state.log.loading = true;
  if (state.log.step !== step) { state.log.step = step; state.log.offset = 0; $('#log').textContent = ''; }
  try {
    for (;;) {
      const r = await api('job.logs', { id, step, offset: state.log.offset, limit: 1 << 20 });
      if (state.selected !== id) return;
      appendLog(r.data, r.offset);
      if (r.data === '' || r.eof) break;
    }
  } catch (e) { console.warn(e); }
  $('#log-step').textContent = 'step ' + step;
  state.log.loading = false;
  const pending = state.log.pending; state.log.pending = [];
  for (const ev of pending) onOutput(ev);
}

function appendLog(text, next) {
  const pre = $('#log');
  const atEnd = pre.scrollTop + pre.clientHeight >= pre.scrollHeight - 4;
  pre.append(text);
  state.log.offset = next;
  if (atEnd) pre.scrollTop = pre.scrollHeight;
}

function onOutput(ev) {
  if (state.log.loading) { state.log.pending.push(ev); return; }
  if (ev.step !== state.log.step) { loadLog(ev.step); return; }
  const len = utf8.encode(ev.data).length;
  if (ev.offset + len <= state.log.offset) return;         // read already
  if (ev.offset === state.log.offset) { appendLog(ev.data, ev.offset + len); return; }
  loadLog(ev.step); // a gap (dropped live output): read it from the log
}

// ---- start ----

function logout(why) {
  state.token = '';
  sessionStorage.removeItem('spool-token');
  $('#app').hidden = true; $('#logout').hidden = true; $('#login').hidden = false;
  $('#login-error').textContent = why || '';
}

async function start() {
  $('#login').hidden = true; $('#app').hidden = false; $('#logout').hidden = false;
  await Promise.all([loadInfo(), loadQueues(), loadJobs(false)]);
  follow();
}

document.addEventListener('DOMContentLoaded', () => {
  $('#login-form').addEventListener('submit', async (e) => {
    e.preventDefault();
    state.token = $('#token').value.trim();
    try { await api('daemon.info'); } catch (err) { logout(err.message); return; }
    sessionStorage.setItem('spool-token', state.token);
    start();
  });
  $('#logout').addEventListener('click', () => logout());
  $('#filter-state').addEventListener('change', () => loadJobs(false));
  $('#filter-queue').addEventListener('input', () => loadJobs(false));
  $('#more').addEventListener('click', () => loadJobs(true));
  $('#cancel').addEventListener('click', async () => {
    try { await api('job.cancel', { id: state.selected, reason: 'cancelled from the dashboard' }); } catch (e) { $('#job-error').textContent = e.message; }
    reloadJob();
  });
  $('#retry').addEventListener('click', async () => {
    try { const j = await api('job.retry', { id: state.selected }); refreshSoon(); select(j.id); } catch (e) { $('#job-error').textContent = e.message; }
  });
  $('#submit-form').addEventListener('submit', async (e) => {
    e.preventDefault();
    const spec = { name: $('#submit-name').value.trim(), steps: [{ shell: { script: $('#submit-script').value } }] };
    const q = $('#submit-queue').value.trim();
    if (q) spec.queue = q;
    try {
      const j = await api('job.submit', { job: spec });
      $('#submit-error').textContent = '';
      state.jobs.set(j.id, j); renderJobs(); select(j.id);
    } catch (err) { $('#submit-error').textContent = err.message; }
  });
  if (state.token) start().catch((e) => logout(e.message)); else logout();
});
