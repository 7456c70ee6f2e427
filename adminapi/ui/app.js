// fastlb's dashboard: reads the admin API of the origin it was served from
// every two seconds, draws the pools, their backends and five minutes of
// requests/s and latency, and changes backends through the same API.
'use strict';

const REFRESH_MS = 2000;
const WINDOW_S = 300; // what GET /api/v1/stats keeps
const TOKEN_KEY = 'fastlb.token';

let token = sessionStorage.getItem(TOKEN_KEY) || '';
let since = 0; // Unix second of the newest sample held
let timer = 0;
let waitingForToken = false;
let fleet; // undefined until known; false when GET /api/v1/cluster answered 404
let pid = 0; // of the fastlb that answers; a new one may have joined a fleet
const series = new Map(); // pool -> {t, rps, p50, p99}
const latest = new Map(); // pool + '\n' + id -> last sample of the backend
const sections = new Map(); // pool -> its section's elements

const $ = (id) => document.getElementById(id);

function el(tag, attrs, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === 'class') e.className = v;
    else e.setAttribute(k, v);
  }
  e.append(...children);
  return e;
}

function svgEl(tag, attrs) {
  const e = document.createElementNS('http://www.w3.org/2000/svg', tag);
  for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, v);
  return e;
}

// Errors stay shown until dismissed or, for a failed refresh, until a
// refresh works again.
let errorFrom = '';
function showError(message, from) {
  $('error-text').textContent = message;
  $('error').hidden = false;
  errorFrom = from;
}
function clearError(from) {
  if (!from || errorFrom === from) $('error').hidden = true;
}

let noticeTimer = 0;
function notice(message) {
  $('notice').textContent = message;
  $('notice').hidden = false;
  clearTimeout(noticeTimer);
  noticeTimer = setTimeout(() => { $('notice').hidden = true; }, 4000);
}

class NeedToken extends Error {}

// api calls the admin API with the token, if one is held. It resolves to
// the decoded answer (null for 204, or for a 404 when allow404), and
// rejects with the API's own error message.
async function api(method, path, body, allow404) {
  const headers = {};
  if (token) headers.Authorization = 'Bearer ' + token;
  if (body !== undefined) headers['Content-Type'] = 'application/json';
  let resp;
  try {
    resp = await fetch(path, {
      method, headers, cache: 'no-store',
      body: body === undefined ? undefined : JSON.stringify(body),
    });
  } catch (e) {
    throw new Error(`cannot reach fastlb (${method} ${path}): ${e.message}`);
  }
  if (resp.status === 401) {
    askToken(token ? 'The token was refused: enter the admin token' : 'This fastlb needs its admin token');
    throw new NeedToken('token needed');
  }
  if (resp.status === 204 || (allow404 && resp.status === 404)) return null;
  const text = await resp.text();
  let data = null;
  try { data = JSON.parse(text); } catch (e) { /* not JSON: shown as text below */ }
  if (!resp.ok) {
    const why = data && typeof data.error === 'string' ? data.error : (text.trim() || resp.statusText);
    throw new Error(`${method} ${path}: ${resp.status} ${why}`);
  }
  if (data === null) throw new Error(`${method} ${path}: the answer is not JSON`);
  return data;
}

function askToken(label) {
  waitingForToken = true;
  clearTimeout(timer);
  $('token-label').textContent = label;
  $('token-form').hidden = false;
  $('token').focus();
}

$('token-form').addEventListener('submit', (ev) => {
  ev.preventDefault();
  token = $('token').value.trim();
  sessionStorage.setItem(TOKEN_KEY, token);
  $('token').value = '';
  $('token-form').hidden = true;
  waitingForToken = false;
  refresh();
});

$('error-close').addEventListener('click', () => clearError());

function backendPath(pool, id) {
  return `/api/v1/pools/${encodeURIComponent(pool)}/backends/${encodeURIComponent(id)}`;
}

async function change(pool, id, body, done) {
  try {
    await api('PATCH', backendPath(pool, id), body);
    clearError('action');
    notice(`${id}: ${done}`);
  } catch (e) {
    if (!(e instanceof NeedToken)) showError(e.message, 'action');
  }
  refresh();
}

function fmt(v, digits) {
  if (v === undefined || v === null) return '–';
  if (digits === undefined) return String(v);
  return Number(v).toFixed(digits);
}

function ago(t) {
  const s = Math.max(0, Math.round((Date.now() - Date.parse(t)) / 1000));
  return s < 60 ? `${s} s ago` : s < 3600 ? `${Math.round(s / 60)} min ago` : `${Math.round(s / 3600)} h ago`;
}

// The table's columns: header, class, and how a cell is filled.
const columns = [
  ['State', '', (b, td) => {
    td.textContent = b.state;
    td.className = b.state === 'active' ? '' : b.state;
    if (b.state === 'drain') td.textContent = b.drained ? 'drain (drained)' : 'drain';
  }],
  ['Health', '', (b, td) => {
    td.textContent = b.healthy ? 'up' : 'down';
    td.className = b.healthy ? 'up' : 'down';
    td.title = b.last_check ? `last check ${ago(b.last_check.at)}: ${b.last_check.ok ? 'ok' : 'failed'}` +
      (b.last_check.error ? ` (${b.last_check.error})` : '') : 'not checked yet';
  }],
  ['Weight', 'num', (b, td) => { td.textContent = String(b.weight); }],
  ['Effective', 'num', (b, td) => {
    td.textContent = fmt(b.effective_weight, 2);
    td.className = 'num' + (b.effective_weight < b.weight && b.state === 'active' && b.healthy ? ' ramping' : '');
  }],
  ['Ejected', '', (b, td) => {
    td.textContent = b.ejected_until ? `until ${new Date(b.ejected_until).toLocaleTimeString()}` : 'no';
    td.className = b.ejected_until ? 'ejected' : '';
  }],
  ['Active', 'num', (b, td) => { td.textContent = String(b.active_requests); }],
  ['Req/s', 'num', (b, td, s) => { td.textContent = s ? fmt(s.rps, 0) : '–'; }],
  ['p50 ms', 'num', (b, td, s) => { td.textContent = s && s.rps ? fmt(s.p50, 1) : '–'; }],
  ['p99 ms', 'num', (b, td, s) => { td.textContent = s && s.rps ? fmt(s.p99, 1) : '–'; }],
  ['5xx/s', 'num', (b, td, s) => { td.textContent = s ? fmt(s.errors, 0) : '–'; }],
  ['Failures', 'num', (b, td) => { td.textContent = String(b.failures_total); }],
];

function newRow(pool, b) {
  const tr = el('tr', { 'data-backend-id': b.id, 'data-pool': pool });
  tr.append(el('td', { class: 'name', 'data-label': 'Backend' },
    el('div', { class: 'id' }, b.id), el('div', { class: 'url' }, b.url)));
  tr.cells_ = columns.map(([label, cls]) => {
    const td = el('td', { class: cls, 'data-label': label });
    tr.append(td);
    return td;
  });
  const actions = el('div', { class: 'actions' });
  for (const [action, state, done] of [['drain', 'drain', 'draining'], ['maint', 'maint', 'in maintenance'], ['activate', 'active', 'active']]) {
    const btn = el('button', { type: 'button', 'data-action': action, 'aria-pressed': 'false' }, action);
    btn.addEventListener('click', () => change(pool, b.id, { state }, done));
    actions.append(btn);
  }
  const weight = el('input', {
    type: 'number', min: '0', max: '1000', step: '1', inputmode: 'numeric',
    'data-action': 'weight', 'aria-label': `weight of ${b.id}`, title: 'weight (Enter applies it)',
  });
  weight.value = String(b.weight);
  weight.addEventListener('keydown', (ev) => {
    if (ev.key !== 'Enter') return;
    ev.preventDefault();
    const w = Number(weight.value);
    if (weight.value.trim() === '' || !Number.isInteger(w)) {
      showError(`weight of ${b.id}: must be a whole number 0..1000, got "${weight.value}"`, 'action');
      return;
    }
    weight.dataset.dirty = '';
    change(pool, b.id, { weight: w }, `weight ${w}`);
  });
  weight.addEventListener('input', () => { weight.dataset.dirty = '1'; });
  actions.append(weight);
  tr.append(el('td', { class: 'actions-cell', 'data-label': 'Actions' }, actions));
  tr.weight_ = weight;
  tr.buttons_ = actions.querySelectorAll('button');
  return tr;
}

function updateRow(tr, pool, b) {
  const s = latest.get(pool + '\n' + b.id);
  columns.forEach(([, , fill], i) => fill(b, tr.cells_[i], s));
  tr.querySelector('.url').textContent = b.url;
  for (const btn of tr.buttons_) {
    const st = btn.dataset.action === 'activate' ? 'active' : btn.dataset.action;
    btn.setAttribute('aria-pressed', String(b.state === st));
  }
  // Keep what the operator is typing; show the weight in force otherwise.
  if (document.activeElement !== tr.weight_ && !tr.weight_.dataset.dirty) tr.weight_.value = String(b.weight);
}

function newSection(pool) {
  const chart = (kind, what) => svgEl('svg', {
    'data-chart': kind, 'data-pool': pool, viewBox: '0 0 300 100', preserveAspectRatio: 'none', role: 'img', 'aria-label': `${what} of ${pool}`,
  });
  const rps = chart('rps', 'requests per second');
  const lat = chart('latency', 'latency');
  const rpsMax = el('span', {}, '');
  const latMax = el('span', {}, '');
  const axis = () => el('div', { class: 'axis' }, el('span', {}, '5 min ago'), el('span', {}, 'now'));
  const head = el('h2', {}, pool);
  const sub = el('div', { class: 'sub' });
  const tbody = el('tbody');
  const thead = el('thead', {}, el('tr', {}, el('th', {}, 'Backend'), ...columns.map(([h]) => el('th', {}, h)), el('th', {}, 'Actions')));
  const section = el('section', { class: 'pool', 'data-pool': pool },
    head, sub,
    el('div', { class: 'charts' },
      el('figure', {}, el('figcaption', {}, el('span', { class: 'key rps' }, 'requests/s'), rpsMax), rps, axis()),
      el('figure', {}, el('figcaption', {}, el('span', { class: 'key p50' }, 'p50 ms'), el('span', { class: 'key p99' }, 'p99 ms'), latMax), lat, axis())),
    el('table', {}, thead, tbody));
  return { section, sub, tbody, rps, lat, rpsMax, latMax, rows: new Map() };
}

// niceMax rounds a chart's top up to 1, 2 or 5 times a power of ten.
function niceMax(v) {
  if (!(v > 0)) return 1;
  const p = Math.pow(10, Math.floor(Math.log10(v)));
  for (const m of [1, 2, 5, 10]) if (v <= m * p) return m * p;
  return 10 * p;
}

function draw(svg, now, lines, top) {
  svg.replaceChildren();
  for (const y of [25, 50, 75]) svg.append(svgEl('line', { class: 'grid', x1: 0, x2: 300, y1: y, y2: y }));
  for (const [cls, t, v] of lines) {
    const pts = [];
    for (let i = 0; i < t.length; i++) {
      const x = WINDOW_S - (now - t[i]);
      if (x < 0) continue;
      pts.push(`${x},${(100 - (v[i] / top) * 100).toFixed(1)}`);
    }
    svg.append(svgEl('polyline', { class: cls, points: pts.join(' ') }));
  }
}

function drawCharts(s, data, now) {
  const rpsTop = niceMax(Math.max(0, ...data.rps));
  const latTop = niceMax(Math.max(0, ...data.p99));
  draw(s.rps, now, [['rps', data.t, data.rps]], rpsTop);
  draw(s.lat, now, [['p50', data.t, data.p50], ['p99', data.t, data.p99]], latTop);
  s.rpsMax.textContent = `top ${rpsTop}`;
  s.latMax.textContent = `top ${latTop} ms`;
}

// addSamples keeps each pool's samples of the last five minutes and each
// backend's latest.
function addSamples(stats) {
  const present = new Set();
  for (const p of stats.pools) {
    let d = series.get(p.name);
    if (!d) { d = { t: [], rps: [], p50: [], p99: [] }; series.set(p.name, d); }
    const s = p.series;
    for (let i = 0; i < s.t.length; i++) {
      if (d.t.length && s.t[i] <= d.t[d.t.length - 1]) continue;
      d.t.push(s.t[i]); d.rps.push(s.rps[i]); d.p50.push(s.p50_ms[i]); d.p99.push(s.p99_ms[i]);
      since = Math.max(since, s.t[i]);
    }
    const cut = d.t.findIndex((t) => t > since - WINDOW_S);
    if (cut > 0) for (const k of ['t', 'rps', 'p50', 'p99']) d[k].splice(0, cut);
    for (const b of p.backends) {
      present.add(p.name + '\n' + b.id);
      const n = b.series.t.length;
      if (n) {
        const bs = b.series;
        latest.set(p.name + '\n' + b.id, { rps: bs.rps[n - 1], p50: bs.p50_ms[n - 1], p99: bs.p99_ms[n - 1], errors: bs.errors[n - 1] });
      }
    }
  }
  for (const k of latest.keys()) if (!present.has(k)) latest.delete(k); // removed backends
}

function render(pools, status) {
  $('meta').textContent = `${status.version} · pid ${status.pid} · up ${Math.round(status.uptime_seconds)} s · ${status.backends} backends, ${status.healthy} up`;
  const main = $('pools');
  const names = new Set(pools.map((p) => p.name));
  for (const [name, s] of sections) {
    if (!names.has(name)) { s.section.remove(); sections.delete(name); series.delete(name); }
  }
  pools.forEach((p, i) => {
    let s = sections.get(p.name);
    if (!s) { s = newSection(p.name); sections.set(p.name, s); }
    if (main.children[i] !== s.section) main.insertBefore(s.section, main.children[i] || null);
    s.sub.textContent = `${p.strategy}${p.sticky_mode && p.sticky_mode !== 'off' ? ', sticky by ' + p.sticky_mode : ''} · ${p.healthy} of ${p.backends.length} up, ${p.eligible} taking requests`;
    const ids = new Set(p.backends.map((b) => b.id));
    for (const [id, tr] of s.rows) {
      if (!ids.has(id)) { tr.remove(); s.rows.delete(id); }
    }
    p.backends.forEach((b, j) => {
      let tr = s.rows.get(b.id);
      if (!tr) { tr = newRow(p.name, b); s.rows.set(b.id, tr); }
      if (s.tbody.children[j] !== tr) s.tbody.insertBefore(tr, s.tbody.children[j] || null);
      updateRow(tr, p.name, b);
    });
    drawCharts(s, series.get(p.name) || { t: [], rps: [], p50: [], p99: [] }, since);
  });
}

function renderCluster(c) {
  $('cluster').hidden = !c;
  if (!c) return;
  $('cluster-self').textContent = `· this instance: ${c.name}, ${c.connected ? 'connected to etcd' : 'NOT connected to etcd'}`;
  $('cluster-self').className = c.connected ? '' : 'down';
  $('members').replaceChildren(...c.members.map((m) => el('tr', { 'data-member': m.name },
    el('td', { 'data-label': 'Member' }, m.name), el('td', { 'data-label': 'Version' }, m.version),
    el('td', { 'data-label': 'Admin API' }, m.address || '–'),
    el('td', { class: 'num', 'data-label': 'Applied revision' }, String(m.applied_revision)),
    el('td', { 'data-label': 'Seen' }, ago(m.updated_at)))));
}

// refresh reads everything the page shows, then again REFRESH_MS later;
// one runs at a time (a call while one runs makes it run again after).
let running = false;
let again = false;
async function refresh() {
  clearTimeout(timer);
  if (waitingForToken) return;
  if (running) { again = true; return; }
  running = true;
  const askCluster = fleet !== false;
  try {
    const [status, pools, stats, cluster] = await Promise.all([
      api('GET', '/api/v1/status'),
      api('GET', '/api/v1/pools'),
      api('GET', `/api/v1/stats?since=${since}&backends=last`),
      askCluster ? api('GET', '/api/v1/cluster', undefined, true) : null,
    ]);
    if (askCluster) fleet = cluster !== null;
    if (pid && status.pid !== pid) fleet = undefined; // another fastlb answers now: ask it
    pid = status.pid;
    addSamples(stats);
    render(pools, status);
    renderCluster(cluster);
    clearError('refresh');
    $('updated').textContent = `updated ${new Date().toLocaleTimeString()}`;
  } catch (e) {
    if (!(e instanceof NeedToken)) showError(e.message, 'refresh');
  } finally {
    running = false;
  }
  if (again) { again = false; refresh(); return; }
  if (!waitingForToken) timer = setTimeout(refresh, REFRESH_MS);
}

refresh();
