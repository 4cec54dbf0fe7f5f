// wsgate dashboard: polls /metrics and the management API once a second
// with the bearer key the user typed (kept in sessionStorage only), and
// draws the last two minutes on hand-drawn canvas charts.
'use strict';

(() => {
  const $ = (id) => document.getElementById(id);
  const KEY_STORE = 'wsgate.mgmtKey';
  const POLL_MS = 1000;
  const HISTORY_S = 120;          // the charts' widest window
  const MIN_WINDOW_S = 30;         // ... and narrowest, right after sign-in
  const LATENCY_WINDOW_S = 5;
  const MAX_ROWS = 200;

  let stage = null;
  let key = null;
  let pollTimer = 0;
  let polling = false;
  let prev = null;                 // previous scrape: { t, msg, client, exec, integ }
  const bucketHistory = [];        // [{ t, buckets: Map(le -> count) }]
  let lastConnections = [];
  let configLoaded = false;

  // ---------- formatting ----------

  function fmtNum(v, digits) {
    if (v == null || !isFinite(v)) return '–';
    if (Math.abs(v) >= 1e6) return (v / 1e6).toFixed(1) + 'M';
    if (Math.abs(v) >= 1e4) return (v / 1e3).toFixed(1) + 'k';
    return v.toFixed(digits == null ? (Number.isInteger(v) ? 0 : 1) : digits);
  }
  function fmtRate(v) { return v == null ? '–' : fmtNum(v, v < 10 && v !== 0 ? 1 : 0); }
  function fmtMs(v) {
    if (v == null || !isFinite(v)) return '–';
    if (v === 0) return '0 ms';
    if (v < 1) return v.toFixed(2) + ' ms';
    if (v < 100) return v.toFixed(1) + ' ms';
    return Math.round(v) + ' ms';
  }
  function fmtBytes(v) {
    if (v == null || !isFinite(v)) return '–';
    if (v < 1024) return Math.round(v) + ' B';
    if (v < 1024 * 1024) return +(v / 1024).toFixed(1) + ' KiB';
    return +(v / 1024 / 1024).toFixed(1) + ' MiB';
  }
  function fmtTime(iso) {
    const d = new Date(iso);
    return isNaN(d) ? String(iso) : d.toLocaleTimeString();
  }

  // ---------- charts (canvas, no library) ----------

  function cssVar(name) {
    return getComputedStyle(document.documentElement).getPropertyValue(name).trim() || '#888';
  }

  // A line chart of the last HISTORY_S seconds. series: [{ color: '--series-1' }]
  class Chart {
    constructor(canvas, nseries, fmt, minMax, nice) {
      this.canvas = canvas;
      this.nice = nice || niceCeil;
      this.nseries = nseries;
      this.fmt = fmt;
      this.minMax = minMax;   // the y axis never shrinks below this
      this.points = [];       // [{ t, v: [..] }]
    }

    push(t, values) {
      this.points.push({ t, v: values });
      while (this.points.length && this.points[0].t < t - HISTORY_S * 1000) this.points.shift();
    }

    draw(now) {
      const c = this.canvas;
      const dpr = window.devicePixelRatio || 1;
      const w = c.clientWidth, h = c.clientHeight;
      if (!w || !h) return;
      if (c.width !== Math.round(w * dpr) || c.height !== Math.round(h * dpr)) {
        c.width = Math.round(w * dpr);
        c.height = Math.round(h * dpr);
      }
      const g = c.getContext('2d');
      g.setTransform(dpr, 0, 0, dpr, 0, 0);
      g.clearRect(0, 0, w, h);

      const padL = 52, padR = 8, padT = 8, padB = 18;
      const pw = w - padL - padR, ph = h - padT - padB;
      let max = this.minMax;
      for (const p of this.points)
        for (const v of p.v) if (v != null && isFinite(v) && v > max) max = v;
      // four grid steps of a round size
      const step = this.nice(max / 4);
      max = step * 4;

      const text = cssVar('--chart-text');
      const grid = cssVar('--chart-grid');
      g.font = '11px system-ui, sans-serif';
      g.lineWidth = 1;
      g.textBaseline = 'middle';
      for (let i = 0; i <= 4; i++) {
        const y = padT + ph - (ph * i) / 4;
        g.strokeStyle = grid;
        g.beginPath();
        g.moveTo(padL, Math.round(y) + 0.5);
        g.lineTo(padL + pw, Math.round(y) + 0.5);
        g.stroke();
        g.fillStyle = text;
        g.textAlign = 'right';
        g.fillText(this.fmt((max * i) / 4), padL - 6, y);
      }
      g.textAlign = 'left';
      g.textBaseline = 'alphabetic';
      // The window grows from MIN_WINDOW_S to HISTORY_S as history builds up.
      const first = this.points.length ? this.points[0].t : now;
      const span = Math.min(HISTORY_S, Math.max(MIN_WINDOW_S, Math.ceil((now - first) / 10000) * 10)) * 1000;
      g.fillText(span >= 120000 ? '−2 min' : '−' + span / 1000 + ' s', padL, h - 4);
      g.textAlign = 'right';
      g.fillText('now', padL + pw, h - 4);

      const x0 = now - span;
      const xOf = (t) => padL + (Math.max(0, t - x0) / span) * pw;
      const yOf = (v) => padT + ph - (Math.min(v, max) / max) * ph;
      const colors = ['--series-1', '--series-2', '--series-3', '--series-4'];
      for (let s = 0; s < this.nseries; s++) {
        g.strokeStyle = cssVar(colors[s]);
        g.lineWidth = 2;
        g.lineJoin = 'round';
        g.beginPath();
        let pen = false;
        for (const p of this.points) {
          const v = p.v[s];
          if (v == null || !isFinite(v)) { pen = false; continue; }
          const x = xOf(p.t), y = yOf(v);
          if (pen) g.lineTo(x, y); else g.moveTo(x, y);
          pen = true;
        }
        g.stroke();
        // the latest point, so a single sample is visible too
        const last = this.points[this.points.length - 1];
        if (last && last.v[s] != null && isFinite(last.v[s])) {
          g.fillStyle = cssVar(colors[s]);
          g.beginPath();
          g.arc(xOf(last.t), yOf(last.v[s]), 2.5, 0, Math.PI * 2);
          g.fill();
        }
      }
    }
  }

  function niceCeil(v) {
    if (!(v > 0)) return 1;
    const p = Math.pow(10, Math.floor(Math.log10(v)));
    for (const m of [1, 2, 2.5, 5, 10]) if (v <= m * p) return m * p;
    return 10 * p;
  }

  // Byte axes step in powers of two (4 KiB, 8 KiB, ...).
  function niceBytes(v) {
    return v > 1 ? Math.pow(2, Math.ceil(Math.log2(v))) : 1;
  }

  // Axis labels: short, no float noise (0.25, not 0.3 or 0.25000001).
  function tick(v) {
    return Math.abs(v) >= 1e4 ? fmtNum(v) : String(+v.toFixed(2));
  }

  const charts = {};
  function makeCharts() {
    charts.conn = new Chart($('c-conn'), 1, tick, 4);
    charts.msg = new Chart($('c-msg'), 1, tick, 4);
    charts.err = new Chart($('c-err'), 3, tick, 1);
    charts.lat = new Chart($('c-lat'), 2, (v) => fmtMs(v), 1);
    charts.store = new Chart($('c-store'), 1, (v) => fmtMs(v), 1);
    charts.queue = new Chart($('c-queue'), 1, (v) => fmtBytes(v), 4096, niceBytes);
  }

  // ---------- Prometheus text ----------

  // Returns Map(name -> [{ labels, value }]).
  function parseMetrics(text) {
    const out = new Map();
    const lineRe = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?\s+(\S+)/;
    const labelRe = /([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"/g;
    for (const line of text.split('\n')) {
      if (!line || line[0] === '#') continue;
      const m = lineRe.exec(line);
      if (!m) continue;
      const labels = {};
      if (m[2]) for (const l of m[2].matchAll(labelRe)) labels[l[1]] = l[2];
      const value = m[3] === '+Inf' ? Infinity : m[3] === '-Inf' ? -Infinity : Number(m[3]);
      if (!out.has(m[1])) out.set(m[1], []);
      out.get(m[1]).push({ labels, value });
    }
    return out;
  }

  function sum(metrics, name) {
    const s = metrics.get(name);
    if (!s) return null;
    return s.reduce((a, x) => a + (isFinite(x.value) ? x.value : 0), 0);
  }

  // Cumulative bucket counts summed over every route: Map(le -> count).
  function buckets(metrics, name) {
    const m = new Map();
    for (const s of metrics.get(name + '_bucket') || []) {
      const le = s.labels.le === '+Inf' ? Infinity : Number(s.labels.le);
      m.set(le, (m.get(le) || 0) + s.value);
    }
    return m;
  }

  // The q-quantile of the observations between two bucket snapshots, by
  // linear interpolation inside the bucket (as PromQL's histogram_quantile).
  function quantile(q, now, then) {
    const les = [...now.keys()].sort((a, b) => a - b);
    const counts = les.map((le) => (now.get(le) || 0) - ((then && then.get(le)) || 0));
    const total = counts[counts.length - 1];
    if (!(total > 0)) return null;
    const rank = q * total;
    for (let i = 0; i < les.length; i++) {
      if (counts[i] >= rank) {
        if (les[i] === Infinity) return i > 0 ? les[i - 1] : null;
        const lo = i > 0 ? les[i - 1] : 0;
        const cLo = i > 0 ? counts[i - 1] : 0;
        const inBucket = counts[i] - cLo;
        return inBucket > 0 ? lo + ((les[i] - lo) * (rank - cLo)) / inBucket : les[i];
      }
    }
    return null;
  }

  // ---------- the management API ----------

  class AuthError extends Error {}

  async function api(path, opts) {
    const r = await fetch(path, Object.assign({
      headers: { Authorization: 'Bearer ' + key },
      cache: 'no-store',
    }, opts || {}));
    if (r.status === 403 || r.status === 401) throw new AuthError('The bearer key was refused');
    if (!r.ok && r.status !== 204) throw new Error(path + ': HTTP ' + r.status);
    return r;
  }

  async function poll() {
    if (polling || !key) return;
    polling = true;
    const started = Date.now();
    try {
      const base = '/' + encodeURIComponent(stage);
      const [mr, rr, cr, nr] = await Promise.all([
        api('/metrics'),
        api(base + '/@rooms'),
        api(base + '/@connections'),
        api(base + '/@nodes'),
      ]);
      const [mtext, rooms, conns, nodes] =
        await Promise.all([mr.text(), rr.json(), cr.json(), nr.json()]);
      if (!configLoaded) await loadConfig();
      update(parseMetrics(mtext), rooms.rooms || [], conns.connections || []);
      renderNodes(nodes);
      setStatus('Live · updated ' + new Date().toLocaleTimeString(), 'online');
    } catch (e) {
      if (e instanceof AuthError) {
        signOut(e.message);
        polling = false;
        return;
      }
      setStatus('Cannot reach the server: ' + e.message, 'offline');
    }
    polling = false;
    if (key) pollTimer = setTimeout(poll, Math.max(0, POLL_MS - (Date.now() - started)));
  }

  async function loadConfig() {
    const r = await api('/' + encodeURIComponent(stage) + '/@config');
    const j = await r.json();
    renderConfig(j.variables || {});
    configLoaded = true;
  }

  function update(m, rooms, conns) {
    const t = Date.now();
    const cur = {
      t,
      msg: sum(m, 'wsgate_message_count_total'),
      client: sum(m, 'wsgate_client_error_total'),
      exec: sum(m, 'wsgate_execution_error_total'),
      integ: sum(m, 'wsgate_integration_error_total'),
    };
    const rate = (k) => {
      if (!prev || cur[k] == null || prev[k] == null) return null;
      const dt = (cur.t - prev.t) / 1000;
      return dt > 0 && cur[k] >= prev[k] ? (cur[k] - prev[k]) / dt : null;
    };
    const msgRate = rate('msg');
    const errRates = [rate('client'), rate('exec'), rate('integ')];
    prev = cur;

    const b = buckets(m, 'wsgate_integration_latency_seconds');
    bucketHistory.push({ t, buckets: b });
    while (bucketHistory.length > 1 && bucketHistory[0].t < t - LATENCY_WINDOW_S * 1000) bucketHistory.shift();
    const then = bucketHistory.length > 1 ? bucketHistory[0].buckets : null;
    const p50 = then ? quantile(0.5, b, then) : null;
    const p99 = then ? quantile(0.99, b, then) : null;

    const connections = sum(m, 'wsgate_connections');
    const storeLat = sum(m, 'wsgate_store_batch_latency_seconds');
    const queued = sum(m, 'wsgate_queued_bytes');

    charts.conn.push(t, [connections]);
    charts.msg.push(t, [msgRate]);
    charts.err.push(t, errRates);
    charts.lat.push(t, [p50 == null ? null : p50 * 1000, p99 == null ? null : p99 * 1000]);
    charts.store.push(t, [storeLat == null ? null : storeLat * 1000]);
    charts.queue.push(t, [queued]);
    for (const c of Object.values(charts)) c.draw(t);

    $('v-conn').textContent = fmtNum(connections, 0);
    $('v-msg').textContent = fmtRate(msgRate);
    const errTotal = errRates.every((x) => x == null) ? null : errRates.reduce((a, x) => a + (x || 0), 0);
    $('v-err').textContent = fmtRate(errTotal);
    $('v-lat').textContent = p50 == null ? 'idle' : fmtMs(p50 * 1000) + ' / ' + fmtMs(p99 * 1000);
    $('v-store').textContent = fmtMs(storeLat == null ? null : storeLat * 1000);
    $('v-queue').textContent = fmtBytes(queued);
    $('c-conn').setAttribute('aria-label', 'Connections: ' + fmtNum(connections, 0) + ' now');
    $('c-msg').setAttribute('aria-label', 'Messages per second: ' + fmtRate(msgRate) + ' now');

    lastConnections = conns;
    renderRooms(rooms, conns);
    renderConnections();
  }

  // ---------- tables ----------

  const rendered = {};   // table id -> last rendered key, to keep focus stable

  function cell(tr, text, cls) {
    const td = document.createElement('td');
    if (cls) td.className = cls;
    td.textContent = text;
    tr.appendChild(td);
    return td;
  }

  // Every node serving the API (GET @nodes): one row each, this one marked.
  function renderNodes(j) {
    const nodes = (j && j.nodes) || [];
    const rows = nodes.slice(0, MAX_ROWS).map((n) => [
      n.nodeId + (n.self ? ' (this node)' : ''), n.workers, n.connections, n.rooms,
      n.heartbeatAgeMs == null ? '–' : (n.self && j.engine === 'local' ? 'this process'
        : fmtMs(n.heartbeatAgeMs) + ' ago'),
    ]);
    $('nodes-count').textContent = String(nodes.length);
    // heartbeat ages change every poll: compare the rest to keep focus stable
    const k = JSON.stringify(rows.map((r) => r.slice(0, 4)));
    const body = $('nodes-body');
    if (rendered.nodes !== k) {
      rendered.nodes = k;
      body.replaceChildren();
      for (const r of rows) {
        const tr = document.createElement('tr');
        cell(tr, r[0]);
        cell(tr, String(r[1]), 'num');
        cell(tr, String(r[2]), 'num');
        cell(tr, String(r[3]), 'num');
        cell(tr, r[4], 'num');
        body.appendChild(tr);
      }
    } else {
      rows.forEach((r, i) => { body.children[i].lastChild.textContent = r[4]; });
    }
    $('nodes-note').textContent = j && j.engine === 'redis'
      ? 'Other nodes as read from Redis about once a second; this node exact.'
      : 'Local engine: one node.';
  }

  function renderRooms(rooms, conns) {
    const members = new Map();
    for (const c of conns) {
      if (!c.roomId) continue;
      if (!members.has(c.roomId)) members.set(c.roomId, new Map());
      const who = members.get(c.roomId);
      who.set(c.userId, c.username || c.userId);
    }
    const rows = rooms.slice(0, MAX_ROWS).map((r) => {
      const who = members.get(r.roomId) || new Map();
      const names = [...who.entries()].map(([id, n]) => (n === id ? id : n + ' (' + id + ')')).sort();
      return [r.roomId, r.activeUsers, names.join(', ')];
    });
    $('rooms-count').textContent = String(rooms.length);
    const k = JSON.stringify(rows);
    if (rendered.rooms === k) return;
    rendered.rooms = k;
    const body = $('rooms-body');
    body.replaceChildren();
    for (const [id, n, names] of rows) {
      const tr = document.createElement('tr');
      cell(tr, '#' + id);
      cell(tr, String(n), 'num');
      cell(tr, names || '—');
      body.appendChild(tr);
    }
    if (!rows.length) {
      const tr = document.createElement('tr');
      cell(tr, 'No rooms with members.').colSpan = 3;
      body.appendChild(tr);
    }
    const note = $('rooms-note');
    note.hidden = rooms.length <= MAX_ROWS;
    note.textContent = 'Showing ' + MAX_ROWS + ' of ' + rooms.length + ' rooms.';
  }

  function renderConnections() {
    const f = $('filter').value.trim().toLowerCase();
    const all = lastConnections;
    const match = f
      ? all.filter((c) => (c.userId || '').toLowerCase().includes(f) || (c.username || '').toLowerCase().includes(f))
      : all;
    match.sort((a, b) => (a.userId < b.userId ? -1 : a.userId > b.userId ? 1 : 0));
    const rows = match.slice(0, MAX_ROWS);
    $('conns-count').textContent = String(all.length);
    const k = f + '\u0000' + JSON.stringify(rows.map((c) => [c.connectionId, c.userId, c.username, c.roomId]));
    if (rendered.conns === k) return;
    rendered.conns = k;
    const body = $('conns-body');
    const hadFocus = body.contains(document.activeElement) ? document.activeElement.dataset.id : null;
    body.replaceChildren();
    for (const c of rows) {
      const tr = document.createElement('tr');
      tr.dataset.user = c.userId;
      cell(tr, c.username && c.username !== c.userId ? c.username + ' (' + c.userId + ')' : c.userId);
      cell(tr, c.roomId ? '#' + c.roomId : '—');
      cell(tr, fmtTime(c.connectedAt));
      const idCell = document.createElement('td');
      const code = document.createElement('code');
      code.textContent = c.connectionId;
      idCell.appendChild(code);
      tr.appendChild(idCell);
      const act = document.createElement('td');
      const b = document.createElement('button');
      b.type = 'button';
      b.className = 'danger small';
      b.textContent = 'Disconnect';
      b.dataset.id = c.connectionId;
      b.setAttribute('aria-label', 'Disconnect ' + c.userId + ' (' + c.connectionId + ')');
      b.addEventListener('click', () => disconnectConn(c.connectionId, c.userId));
      act.appendChild(b);
      tr.appendChild(act);
      body.appendChild(tr);
      if (hadFocus === c.connectionId) b.focus();
    }
    if (!rows.length) {
      const tr = document.createElement('tr');
      cell(tr, f ? 'No connection matches “' + f + '”.' : 'No connections.').colSpan = 5;
      body.appendChild(tr);
    }
    const note = $('conns-note');
    if (match.length > rows.length) note.textContent = 'Showing ' + rows.length + ' of ' + match.length + '.';
    else if (f) note.textContent = match.length + ' of ' + all.length + ' connections match.';
    else note.textContent = '';
  }

  async function disconnectConn(id, user) {
    try {
      await api('/' + encodeURIComponent(stage) + '/@connections/' + encodeURIComponent(id), { method: 'DELETE' });
      $('conns-note').textContent = 'Disconnected ' + user + ' (' + id + ').';
    } catch (e) {
      if (e instanceof AuthError) return signOut(e.message);
      $('conns-note').textContent = 'Could not disconnect ' + id + ': ' + e.message;
    }
  }

  function renderConfig(vars) {
    const body = $('config-body');
    body.replaceChildren();
    for (const [name, value] of Object.entries(vars)) {
      const tr = document.createElement('tr');
      const th = document.createElement('th');
      th.scope = 'row';
      const code = document.createElement('code');
      code.textContent = name;
      th.appendChild(code);
      tr.appendChild(th);
      let text;
      if (Array.isArray(value)) text = value.join(', ') || '[]';
      else if (value && typeof value === 'object')
        text = Object.entries(value).map(([k, v]) => k + ' = ' + v).join(', ') || '{}';
      else text = value === '' ? '""' : String(value);
      const td = cell(tr, text);
      if (value === '********') td.className = 'secret';
      body.appendChild(tr);
    }
    if (vars.api_name) $('api-name').textContent = vars.api_name + ' · ' + (vars.stage_name || stage);
    if (vars.api_description) $('api-desc').textContent = vars.api_description;
  }

  // ---------- sign in / out ----------

  function setStatus(text, kind) {
    const s = $('status');
    s.textContent = text;
    s.className = 'status' + (kind ? ' ' + kind : '');
  }

  function signIn(k) {
    key = k;
    try { sessionStorage.setItem(KEY_STORE, k); } catch (e) { /* storage off: keep in memory */ }
    $('login').hidden = true;
    $('board').hidden = false;
    $('logout').hidden = false;
    $('login-error').hidden = true;
    setStatus('Connecting…', 'connecting');
    poll();
  }

  function signOut(message) {
    key = null;
    clearTimeout(pollTimer);
    configLoaded = false;
    prev = null;
    bucketHistory.length = 0;
    try { sessionStorage.removeItem(KEY_STORE); } catch (e) { /* ignore */ }
    $('board').hidden = true;
    $('logout').hidden = true;
    $('login').hidden = false;
    $('key').value = '';
    const err = $('login-error');
    err.hidden = !message;
    err.textContent = message || '';
    setStatus('Signed out', '');
    $('key').focus();
  }

  async function init() {
    makeCharts();
    $('login-form').addEventListener('submit', (ev) => {
      ev.preventDefault();
      const k = $('key').value.trim();
      if (k) signIn(k);
    });
    $('logout').addEventListener('click', () => signOut(''));
    $('filter-form').addEventListener('submit', (ev) => ev.preventDefault());
    $('filter').addEventListener('input', renderConnections);
    window.addEventListener('resize', () => {
      for (const c of Object.values(charts)) c.draw(Date.now());
    });
    try {
      const r = await fetch('/web-config.json', { cache: 'no-store' });
      stage = (await r.json()).stage;
    } catch (e) {
      setStatus('Could not load the server configuration: ' + e.message, 'offline');
      return;
    }
    let saved = null;
    try { saved = sessionStorage.getItem(KEY_STORE); } catch (e) { /* ignore */ }
    if (saved) signIn(saved);
    else $('key').focus();
  }

  init();
})();
