// agentmux dashboard: history from GET {base}history, live updates from the
// SSE stream at {base}feed (one FeedUpdate JSON per event; schema in
// gateway/src/analytics/feed.rs). When the admin listener has a token, the
// browser holds a session cookie from the login page (same origin, HttpOnly):
// fetches and the EventSource carry it by themselves. No token is ever put
// in a URL.
'use strict';

(function () {
  const params = new URLSearchParams(location.search);
  const path = location.pathname.replace(/index\.html$/, '');
  const base = path.endsWith('/') ? path : path + '/';
  const HOUR_POINTS = 3600;

  const state = {
    window: ['1h', '24h', '7d'].includes(params.get('window')) ? params.get('window') : '1h',
    scope: params.get('scope') || 'global',
    history: null,
    charts: {},
    pools: {},
    lastT: 0,
    source: null,
    refresh: null,
  };

  const $ = (id) => document.getElementById(id);
  const el = (tag, cls, text) => {
    const e = document.createElement(tag);
    if (cls) e.className = cls;
    if (text !== undefined) e.textContent = text;
    return e;
  };

  function authFetch(url) {
    return fetch(url, { credentials: 'same-origin' });
  }

  function setStatus(text, bad) {
    const s = $('status');
    s.textContent = text;
    s.classList.toggle('bad', !!bad);
  }

  // ---- formatting -------------------------------------------------------

  const fmt = {
    num(v, d) {
      if (v === null || v === undefined || Number.isNaN(v)) return '–';
      const a = Math.abs(v);
      if (a >= 1e6) return (v / 1e6).toFixed(1) + 'M';
      if (a >= 1e4) return (v / 1e3).toFixed(1) + 'k';
      return v.toFixed(d === undefined ? (a < 10 && a !== Math.round(a) ? 1 : 0) : d);
    },
    pct(v) { return v === null || v === undefined ? '–' : (v * 100).toFixed(v < 0.01 && v > 0 ? 2 : 1) + '%'; },
    ms(v) { return v === null || v === undefined ? '–' : (v < 10 ? v.toFixed(1) : v.toFixed(0)) + ' ms'; },
    ago(unix) {
      const s = Math.max(0, Math.round(Date.now() / 1000 - unix));
      if (s < 90) return s + ' s ago';
      if (s < 5400) return Math.round(s / 60) + ' min ago';
      return Math.round(s / 3600) + ' h ago';
    },
  };

  // ---- charts -----------------------------------------------------------

  const COLORS = ['#2563eb', '#16a34a', '#dc2626', '#9333ea', '#ea580c', '#0891b2', '#64748b', '#ca8a04'];

  // Main charts: which history columns they draw.
  const MAIN = {
    sessions: { el: 'chart-sessions', series: [['sessions', 'sessions']] },
    traffic: { el: 'chart-traffic', series: [['msg_rate', 'messages/s'], ['req_rate', 'requests+sessions/s'], ['limited_rate', 'rate-limited/s']] },
    latency: { el: 'chart-latency', series: [['p50', 'p50'], ['p95', 'p95'], ['p99', 'p99'], ['relay_p99', 'relay p99'], ['acquire_p95', 'acquire p95']] },
    errors: { el: 'chart-errors', series: [['error_rate', 'error rate %']], scale: 100 },
  };
  const POOL_STATES = ['initializing', 'ready', 'active', 'idle', 'unhealthy', 'recycling', 'failed'];

  function chartWidth(node) {
    return Math.max(280, Math.floor(node.getBoundingClientRect().width) - 4);
  }

  // seriesOpts[i] adds options to the i-th drawn series (e.g. its scale).
  function makeChart(node, labels, data, extra, seriesOpts) {
    node.textContent = '';
    const series = [{}].concat(labels.map((label, i) => Object.assign({
      label, stroke: COLORS[i % COLORS.length], width: 1.5, spanGaps: false, points: { show: false },
    }, (seriesOpts || {})[i] || {})));
    const opts = Object.assign({
      width: chartWidth(node), height: 190, series,
      axes: [{}, { size: 56 }], legend: { live: true }, cursor: { drag: { x: false, y: false } },
    }, extra || {});
    return new uPlot(opts, data, node);
  }

  function mainData(def, cols) {
    const k = def.scale || 1;
    return [cols.t].concat(def.series.map(([f]) => (cols[f] || []).map((v) => (v === null ? null : v * k))));
  }

  function drawMain() {
    const cols = state.history.series;
    for (const [name, def] of Object.entries(MAIN)) {
      const node = $(def.el);
      state.charts[name] = makeChart(node, def.series.map((s) => s[1]), mainData(def, cols));
    }
  }

  function poolData(p) {
    return [p.t].concat(POOL_STATES.map((s) => p.states[s]), [p.waiters, p.circuit]);
  }

  function drawPools() {
    const box = $('pool-charts');
    box.textContent = '';
    state.pools = {};
    for (const p of state.history.pools) {
      const fig = el('figure');
      fig.appendChild(el('figcaption', null, p.scope + ' — connections by state, waiters, circuit'));
      const node = el('div', 'chart');
      fig.appendChild(node);
      box.appendChild(fig);
      const labels = POOL_STATES.concat(['waiters', 'circuit']);
      const circuit = { scale: 'circuit', paths: uPlot.paths.stepped({ align: 1 }), dash: [4, 3] };
      const chart = makeChart(node, labels, poolData(p), {
        scales: { circuit: { range: [0, 3] } },
        axes: [{}, { size: 56 }, { scale: 'circuit', side: 1, size: 70, grid: { show: false },
          splits: () => [1, 2, 3], values: (u, ticks) => ticks.map((v) => ['', 'closed', 'half-open', 'open'][v] || '') }],
      }, { [labels.length - 1]: circuit });
      state.pools[p.scope] = { chart, data: poolData(p) };
    }
  }

  // Appends (or replaces) the newest second of the 1 h window.
  function appendPoint(u) {
    if (!state.history || state.window !== '1h') return;
    const now = u.scopes.find((s) => s.scope === state.scope);
    if (!now) return;
    const cols = state.history.series;
    const p = now.point;
    const last = cols.t.length ? cols.t[cols.t.length - 1] : null;
    const same = last === p.t;
    if (last !== null && p.t < last) return;
    if (last !== null && p.t > last + 2) {
      // Missed seconds (a reconnect): break the lines instead of joining
      // across the gap.
      for (const f of Object.keys(cols)) cols[f].push(f === 't' ? last + 1 : null);
    }
    for (const f of Object.keys(cols)) {
      if (same) cols[f][cols[f].length - 1] = p[f]; else cols[f].push(p[f]);
      if (cols[f].length > HOUR_POINTS) cols[f].shift();
    }
    for (const [name, def] of Object.entries(MAIN)) {
      if (state.charts[name]) state.charts[name].setData(mainData(def, cols));
    }
    for (const s of u.scopes) {
      const pc = state.pools[s.scope];
      if (!pc || !s.pool) continue;
      const d = pc.data;
      const row = [p.t].concat(POOL_STATES.map((k) => s.pool.states[k]), [s.pool.waiters, circuitCode(s.circuit)]);
      const last = d[0].length - 1;
      const replace = last >= 0 && d[0][last] === p.t;
      row.forEach((v, i) => {
        if (replace) d[i][last] = v; else d[i].push(v);
        if (d[i].length > HOUR_POINTS) d[i].shift();
      });
      pc.chart.setData(d);
    }
  }

  function circuitCode(c) {
    return { closed: 1, half_open: 2, open: 3 }[c] || 0;
  }

  // ---- panels -----------------------------------------------------------

  function tile(label, value, cls) {
    const t = el('div', 'tile' + (cls ? ' ' + cls : ''));
    t.appendChild(el('div', 'label', label));
    t.appendChild(el('div', 'value', value));
    return t;
  }

  function renderTiles(u) {
    const s = u.scopes.find((x) => x.scope === state.scope) || u.scopes[0];
    const box = $('tiles');
    box.textContent = '';
    if (!s) return;
    const p = s.point;
    const d = s.derived;
    const err = p.error_rate;
    box.append(
      tile('sessions', fmt.num(p.sessions)),
      tile('messages/s', fmt.num(p.msg_rate)),
      tile('requests/s', fmt.num(p.req_rate)),
      tile('error rate', fmt.pct(err), err !== null && err >= 0.01 ? 'warn' : ''),
      tile('latency p99', fmt.ms(p.p99)),
      tile('acquire p95', fmt.ms(p.acquire_p95)),
      tile('efficiency', fmt.pct(d.efficiency)),
      tile('overhead', fmt.pct(d.overhead), d.overhead !== null && d.overhead >= 0.2 ? 'warn' : ''),
      tile('cost / task', d.cost_per_task === null ? '–' : d.cost_per_task.toPrecision(3)),
      tile('tasks (' + Math.round(d.secs / 60) + ' min)', fmt.num(d.tasks)),
    );
  }

  function alertRow(a, when) {
    const tr = el('tr', 'sev-' + a.severity);
    tr.appendChild(el('td', null)).appendChild(el('span', 'badge ' + a.severity, a.severity));
    tr.append(el('td', null, a.kind.replace(/_/g, ' ') + (a.reopened ? ' ×' + (a.reopened + 1) : '')),
      el('td', null, a.scope), el('td', 'msg', a.message), el('td', null, fmt.ago(when)));
    return tr;
  }

  function renderAlerts(u) {
    const body = $('alerts').tBodies[0];
    body.textContent = '';
    for (const a of u.alerts.active) body.appendChild(alertRow(a, a.started));
    if (!u.alerts.active.length) {
      const tr = el('tr');
      const td = el('td', 'quiet', 'No open alerts.');
      td.colSpan = 5;
      tr.appendChild(td);
      body.appendChild(tr);
    }
    $('alert-count').textContent = u.alerts.active.length ? '(' + u.alerts.active.length + ' open)' : '';
    const recent = $('recent').tBodies[0];
    recent.textContent = '';
    for (const a of u.alerts.recent) recent.appendChild(alertRow(a, a.cleared));
  }

  function renderRecs(u) {
    const ul = $('recommendations');
    ul.textContent = '';
    for (const r of u.recommendations) {
      const li = el('li');
      li.append(el('span', 'rec-kind', r.kind.replace(/_/g, ' ')), el('span', 'msg', r.message),
        el('span', 'since', 'since ' + fmt.ago(r.since)));
      ul.appendChild(li);
    }
    if (!u.recommendations.length) ul.appendChild(el('li', 'quiet', 'Nothing to change.'));
  }

  function renderPools(u) {
    const body = $('pools').tBodies[0];
    body.textContent = '';
    const targets = Object.fromEntries((u.pool_targets || []).map((t) => ['cluster:' + t.cluster, t]));
    for (const s of u.scopes.filter((x) => x.pool || x.circuit)) {
      const p = s.pool || { states: {}, waiters: 0 };
      const st = p.states;
      const open = POOL_STATES.filter((k) => k !== 'failed').reduce((a, k) => a + (st[k] || 0), 0);
      const tr = el('tr');
      const c = s.circuit || 'none';
      tr.appendChild(el('td', null, s.scope));
      tr.appendChild(el('td', null)).appendChild(el('span', 'badge circuit-' + c, c.replace('_', '-')));
      const target = targets[s.scope];
      [open, st.active, (st.ready || 0) + (st.idle || 0), st.initializing, st.unhealthy, st.failed, p.waiters]
        .forEach((v) => tr.appendChild(el('td', 'n', fmt.num(v || 0))));
      tr.appendChild(el('td', 'n', s.pool ? p.min + '–' + p.max : '–'));
      tr.appendChild(el('td', 'n', target ? target.total + ' (' + target.per_endpoint + '/endpoint)' : (p.target || '–')));
      if (p.waiters > 0) tr.classList.add('sev-warning');
      body.appendChild(tr);
    }
  }

  function renderScopes(u) {
    const sel = $('scope');
    const names = u.scopes.map((s) => s.scope);
    const have = Array.from(sel.options).map((o) => o.value);
    if (names.join() === have.join()) return;
    sel.textContent = '';
    for (const n of names) sel.appendChild(el('option', null, n)).value = n;
    sel.value = names.includes(state.scope) ? state.scope : 'global';
  }

  function onUpdate(u) {
    if (u.v !== 1) { setStatus('feed schema v' + u.v + ' not understood', true); return; }
    renderScopes(u);
    renderTiles(u);
    renderAlerts(u);
    renderRecs(u);
    renderPools(u);
    appendPoint(u);
    state.lastT = u.t;
    setStatus('live · ' + new Date(u.t * 1000).toLocaleTimeString());
  }

  // ---- data -------------------------------------------------------------

  async function loadHistory() {
    const url = base + 'history?window=' + state.window + '&scope=' + encodeURIComponent(state.scope);
    const r = await authFetch(url);
    if (r.status === 401 || r.status === 403) { setStatus('not logged in: reload the page to log in', true); return; }
    if (!r.ok) { setStatus('history: HTTP ' + r.status, true); return; }
    state.history = await r.json();
    drawMain();
    drawPools();
  }

  function connect() {
    if (state.source) state.source.close();
    const es = new EventSource(base + 'feed');
    es.onmessage = (e) => {
      try { onUpdate(JSON.parse(e.data)); } catch (err) { setStatus('bad update: ' + err.message, true); }
    };
    es.onerror = () => {
      // A refused stream (401, 404) is closed for good; a dropped one is
      // retried by the browser.
      if (es.readyState === EventSource.CLOSED) setStatus('feed refused: reload the page to log in again', true);
      else setStatus('feed lost — reconnecting…', true);
    };
    state.source = es;
  }

  function selectWindow(w) {
    state.window = w;
    for (const b of document.querySelectorAll('#windows button')) b.classList.toggle('on', b.dataset.window === w);
    clearInterval(state.refresh);
    // Coarse windows move once a minute; the live feed only extends 1 h.
    if (w !== '1h') state.refresh = setInterval(loadHistory, 60000);
    loadHistory();
  }

  function resize() {
    for (const c of Object.values(state.charts)) c.setSize({ width: chartWidth(c.root.parentNode), height: 190 });
    for (const p of Object.values(state.pools)) p.chart.setSize({ width: chartWidth(p.chart.root.parentNode), height: 190 });
  }

  function start() {
    document.querySelector('footer a').href = base + 'uPlot.LICENSE';
    for (const b of document.querySelectorAll('#windows button')) b.onclick = () => selectWindow(b.dataset.window);
    $('scope').onchange = (e) => { state.scope = e.target.value; loadHistory(); };
    let pending = null;
    window.addEventListener('resize', () => { clearTimeout(pending); pending = setTimeout(resize, 150); });
    selectWindow(state.window);
    connect();
  }

  start();
})();
