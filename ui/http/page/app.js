/* AutoTrain supervisor: the browser page (served at /ui, see docs/browser.md for the data it reads).
 *
 * One snapshot (/api/snapshot), then the SSE stream (/api/stream) keeps a local model current. Rendering is
 * decoupled from the stream: a message only bumps version counters, and at most once per animation frame the
 * header and the visible view re-render, each view only when a version it reads changed. Every string comes
 * from the run and is untrusted: it only ever reaches the page through textContent or an attribute value.
 */
(function () {
  'use strict';

  // ---------------------------------------------------------------- constants
  const VIEWS = ['overview', 'teacher', 'trainer', 'events', 'config', 'eval', 'runs'];
  const PIPELINE = ['generate', 'validate', 'train', 'eval'];
  const ACTIVE = new Set(['starting', 'running', 'paused', 'stopping']);
  const COUNTERS = ['teacher_generated', 'teacher_failed', 'validated_ok', 'rejected_schema', 'rejected_secret',
    'rejected_dedup', 'test_pass', 'test_fail', 'train_step', 'eval_pass', 'eval_total'];
  const USAGE = ['requests_sent', 'input_tokens', 'output_tokens', 'rate_limits_hit', 'retries', 'estimated_cost_usd'];
  const COST = 'estimated_cost_usd';
  const MAX_EVENTS = 2000;        // events kept from the stream (older ones loaded on demand add to it)
  const MAX_EXTRA = 18000;        // at most this many more, loaded by hand
  const MAX_POINTS = 2000;        // per series
  const PAGE = 500;               // /api/events page size (the server's limit)
  const SILENCE_MS = 6000;        // nothing heard for this long: the stream is lost
  const RECONNECT_MS = 1000;
  const LIVE_MS = 500;            // a view redrawn for the stream at most this often (twice a second)
  const FLOOD_MS = 1000;          // … and a view that lists events, once a second under a flood
  const FLOOD = 100;              // events since the last draw that make a flood
  const SVG_NS = 'http://www.w3.org/2000/svg';
  const DASH = '—';

  // ---------------------------------------------------------------- model
  const model = {
    received: false,            // a snapshot arrived at least once
    control: false,
    link: {},
    state: {},
    items: [],                  // events, oldest first: {n, e} or a gap marker {gap: true, before, count}
    more: true,                 // the server may hold events older than ours
    extra: 0,                   // how many events were loaded by hand (they raise the cap)
    series: { trainer: [], usage: [], system: [] },
    lastMessageAt: 0,
    streamLost: false,
    netError: false,
    filter: { stage: 'all', level: 'all', text: '' },
    configFilter: '',
    runs: null, runsMsg: '', picked: [], compare: null, compareMsg: '',
    controlBusy: false,
    arrived: 0,                 // events received live, in all (tells a flood from a trickle)
  };
  // A version per kind of data; a view re-renders only when one it reads moved.
  const ver = { snap: 0, state: 0, link: 0, events: 0, series: 0, filter: 0, runs: 0, compare: 0, layout: 0 };
  // And one per state field, so a view that reads three fields skips the deltas that change none of them.
  const fieldVer = {};
  let view = 'overview';
  const rendered = {};
  let frame = 0;

  // ---------------------------------------------------------------- small helpers
  const $ = (id) => document.getElementById(id);
  const isObj = (x) => x !== null && typeof x === 'object' && !Array.isArray(x);
  const obj = (x) => (isObj(x) ? x : {});
  const arr = (x) => (Array.isArray(x) ? x : []);
  const num = (x) => (typeof x === 'number' && Number.isFinite(x) ? x : null);
  const str = (x) => (x === null || x === undefined ? '' : typeof x === 'string' ? x : JSON.stringify(x));
  const clip = (s, n) => (s.length > n ? s.slice(0, n - 1) + '…' : s);

  // Nodes are built with textContent only: no string from the run is ever parsed as HTML.
  function el(tag, cls, text) {
    const node = document.createElement(tag);
    if (cls) node.className = cls;
    if (text !== undefined && text !== null) node.textContent = String(text);
    return node;
  }
  function svgEl(tag, attrs, text) {
    const node = document.createElementNS(SVG_NS, tag);
    for (const k of Object.keys(attrs)) node.setAttribute(k, String(attrs[k]));
    if (text !== undefined) node.textContent = String(text);
    return node;
  }
  // Writing the same text again still costs a style recalc: only write what changed.
  function setText(node, text) {
    if (node.textContent !== String(text)) node.textContent = String(text);
  }
  function setAttr(node, name, value) {
    if (node.getAttribute(name) !== String(value)) node.setAttribute(name, String(value));
  }

  // ---------------------------------------------------------------- formatting
  // Each formatter shows a dash for a value that is missing, null or not a finite number.
  const orDash = (f) => (v, ...rest) => (num(v) === null ? DASH : f(v, ...rest));
  const fmtInt = orDash((x) => Math.round(x).toLocaleString('en-US'));
  const fmtNum = orDash((x, digits) => String(Number(x.toPrecision(digits || 4))));
  const fmtFixed = orDash((x, digits) => x.toFixed(digits));
  const fmtSigned = orDash((x, digits) => (x > 0 ? '+' : '') + x.toFixed(digits));
  const fmtLr = orDash((x) => x.toExponential(2));
  const fmtRate = orDash((x) => (x >= 100 ? Math.round(x).toLocaleString('en-US') : x.toFixed(1)));
  const fmtMb = orDash((x) => (x >= 1024 ? (x / 1024).toFixed(1) + ' GiB' : Math.round(x) + ' MiB'));
  const fmtPct = (part, whole) => (whole > 0 ? (100 * part / whole).toFixed(1) + '%' : '');
  const pad2 = (n) => String(n).padStart(2, '0');

  // A cost is "unknown" when null (a model without a price), which is not $0.
  function fmtCost(v) {
    return num(v) === null ? 'unknown' : '$' + v.toLocaleString('en-US', { minimumFractionDigits: 4, maximumFractionDigits: 4 });
  }
  function fmtDur(v) {
    if (num(v) === null || v < 0) return DASH;
    const t = Math.floor(v), h = Math.floor(t / 3600), m = Math.floor((t % 3600) / 60), s = t % 60;
    return h ? `${h}h ${pad2(m)}m ${pad2(s)}s` : m ? `${m}m ${pad2(s)}s` : `${s}s`;
  }
  // The adapter against the base task by task (eval's val_paired): "+3 / −1, p = 0.62".
  function fmtPaired(pair) {
    const p = obj(pair), gained = num(p.gained), lost = num(p.lost), pv = num(p.p);
    if (gained === null || lost === null || pv === null) return DASH;
    return `+${gained} / −${lost}, ${pv < 0.001 ? 'p < 0.001' : 'p = ' + Number(pv.toPrecision(2))}`;
  }

  function fmtCi(ci) {
    const c = arr(ci);
    return c.length === 2 && num(c[0]) !== null && num(c[1]) !== null ? `[${c[0].toFixed(2)}, ${c[1].toFixed(2)}]` : '';
  }
  // Timestamps are ISO 8601 UTC; shown as written (UTC) so they match the logs and the terminal views.
  function fmtTs(ts) {
    const s = str(ts);
    return s.length >= 19 ? s.slice(0, 10) + ' ' + s.slice(11, 19) : s || DASH;
  }
  function parseTs(ts) {
    const t = Date.parse(str(ts));
    return Number.isNaN(t) ? null : t;
  }
  function fmtAxis(v) {
    const a = Math.abs(v);
    if (a === 0) return '0';
    if (a >= 1e9) return +(v / 1e9).toPrecision(3) + 'G';
    if (a >= 1e6) return +(v / 1e6).toPrecision(3) + 'M';
    if (a >= 1e4) return +(v / 1e3).toPrecision(3) + 'k';
    if (a < 0.01) return v.toExponential(0);
    return String(+v.toPrecision(3));
  }
  function fmtClock(t) {
    const d = new Date(t * 1000);      // UTC, like every other time on the page
    return `${pad2(d.getUTCHours())}:${pad2(d.getUTCMinutes())}:${pad2(d.getUTCSeconds())}`;
  }

  // ---------------------------------------------------------------- rows kept by key
  // Rows of a keyed table are kept between renders (a checkbox keeps its state, a test keeps its element);
  // the body is only re-laid when the set or the order of rows changed.
  function syncRows(tbody, attr, entries, make, update) {
    const have = new Map();
    for (const tr of tbody.rows) have.set(tr.getAttribute(attr), tr);
    const rows = entries.map(([key, data]) => {
      let tr = have.get(key);
      if (!tr) {
        tr = make(key, data);
        tr.setAttribute(attr, key);
      }
      update(tr, data, key);
      return tr;
    });
    placeRows(tbody, rows);
  }

  function placeRows(tbody, rows) {
    const kids = tbody.children;
    // A live log's common case: new rows on top, the same rows below, the oldest falling off the end.
    const k = kids.length ? rows.indexOf(kids[0]) : -1;
    if (k > 0 && rows.length - k <= kids.length) {
      let same = true;
      for (let i = k; i < rows.length && same; i++) same = rows[i] === kids[i - k];
      if (same) {
        while (kids.length > rows.length - k) tbody.lastElementChild.remove();
        tbody.prepend(...rows.slice(0, k));
        return;
      }
    }
    if (rows.length !== kids.length || rows.some((r, i) => kids[i] !== r)) tbody.replaceChildren(...rows);
  }

  // A row of empty cells, one per class given ('' for none).
  function rowWith(classes) {
    const tr = el('tr');
    for (const c of classes) tr.append(el('td', c));
    return tr;
  }
  function cells(tr, values, from) {
    values.forEach((v, i) => setText(tr.cells[i + (from || 0)], v));
  }

  // ---------------------------------------------------------------- network
  // Every request goes through here: failures are caught and become a message, never a console error.
  async function request(url, init) {
    try {
      const res = await fetch(url, Object.assign({ credentials: 'same-origin', cache: 'no-store' }, init || {}));
      let data = null;
      try { data = await res.json(); } catch (_) { data = null; }
      if (!res.ok || (isObj(data) && data.ok === false)) {
        const error = isObj(data) && data.error ? str(data.error) : `HTTP ${res.status}`;
        return { ok: false, status: res.status, error: clip(error, 300) };
      }
      return { ok: true, data: obj(data) };
    } catch (_) {
      model.netError = true;
      bump('link');
      return { ok: false, status: 0, error: 'server unreachable' };
    }
  }

  // ---------------------------------------------------------------- model updates
  function bump(...kinds) {
    for (const k of kinds) ver[k] += 1;
    scheduleRender();
  }

  function numbered(events, first) {
    const start = Number.isInteger(first) ? first : null;
    return events.map((e, i) => ({ n: start === null ? null : start + i, e: obj(e) }));
  }

  function oldestNumber() {
    const it = model.items[0];
    if (!it) return null;
    return it.gap ? it.before - it.count : it.n;
  }

  function newestNumber() {
    for (let i = model.items.length - 1; i >= 0; i--) {
      const it = model.items[i];
      if (it.gap) return it.before - 1;
      if (it.n !== null) return it.n;
    }
    return null;
  }

  function capEvents() {
    const over = model.items.length - (MAX_EVENTS + model.extra);
    if (over > 0) model.items.splice(0, over);
    if (over > 0) model.more = true;
  }

  function applySnapshot(snap) {
    if (!isObj(snap)) return;
    model.received = true;
    model.control = snap.control === true;
    model.link = obj(snap.link);
    model.state = obj(snap.state);
    model.items = numbered(arr(snap.events), snap.first);
    model.extra = 0;
    const oldest = oldestNumber();
    model.more = oldest === null || oldest > 1;
    const series = obj(snap.series);
    for (const k of Object.keys(model.series)) model.series[k] = arr(series[k]).filter(Array.isArray).slice(-MAX_POINTS);
    bump('snap', 'state', 'link', 'events', 'series');
  }

  function applyDelta(d) {
    if (!isObj(d)) return;
    if (isObj(d.fields)) {
      // Top-level key replacement: a new object, so nothing holds a half-updated state.
      model.state = Object.assign({}, model.state, d.fields);
      for (const k of Object.keys(d.fields)) fieldVer[k] = (fieldVer[k] || 0) + 1;
      bump('state');
    }
    if (isObj(d.link)) model.link = d.link;
    if (isObj(d.link)) bump('link');
    if (typeof d.control === 'boolean') model.control = d.control;
    appendEvents(arr(d.events), d.first, d.left_out);
    appendSeries(obj(d.series));
  }

  function appendEvents(events, first, leftOut) {
    const gapHint = Number.isInteger(leftOut) && leftOut > 0 ? leftOut : 0;
    if (!events.length && !gapHint) return;
    const last = newestNumber();
    let start = Number.isInteger(first) ? first : last === null ? null : last + 1;
    let gap = gapHint;
    if (start !== null && last !== null) {
      // Trust the numbers over left_out: a duplicate (after EventSource's own reconnect) is dropped,
      // and any hole between what we hold and this delta becomes a marker.
      if (start <= last) events = events.slice(last + 1 - start);
      start = Math.max(start, last + 1);
      gap = start - last - 1;
    }
    if (gap > 0 && start !== null) model.items.push({ gap: true, before: start, count: gap });
    for (let i = 0; i < events.length; i++) model.items.push({ n: start === null ? null : start + i, e: obj(events[i]) });
    model.arrived += events.length;
    capEvents();
    bump('events');
  }

  function appendSeries(series) {
    let changed = false;
    for (const k of Object.keys(model.series)) {
      const add = arr(series[k]);
      if (!add.length) continue;
      const list = model.series[k];
      for (const p of add) if (Array.isArray(p)) list.push(p);
      if (list.length > MAX_POINTS) list.splice(0, list.length - MAX_POINTS);
      changed = true;
    }
    if (changed) bump('series');
  }

  // The events the stream left out (a burst): replace the marker with what the server still holds.
  // A marker for more than a page keeps what is still missing: the next click loads the page before it.
  async function loadGap(marker) {
    if (marker.loading) return;
    Object.assign(marker, { loading: true, error: '' });
    bump('events');
    const r = await request(`/api/events?before=${marker.before}&limit=${Math.min(PAGE, marker.count)}`);
    marker.loading = false;
    bump('events');
    const at = model.items.indexOf(marker);
    const from = marker.before - marker.count;
    const got = r.ok ? numbered(arr(r.data.events), r.data.first).filter((it) => it.n >= from && it.n < marker.before) : [];
    if (at < 0) return;                       // a snapshot replaced everything meanwhile
    if (!got.length) {
      marker.error = r.ok ? 'no longer held by the server' : r.error;
      return;
    }
    const rest = got[0].n - from;
    model.items.splice(at, 1, ...(rest > 0 ? [{ gap: true, before: got[0].n, count: rest }] : []), ...got);
    model.extra = Math.min(MAX_EXTRA, model.extra + got.length);
  }

  async function loadOlder() {
    const oldest = oldestNumber();
    if (oldest === null || oldest <= 1) return;
    $('events-older').disabled = true;
    setText($('events-older-msg'), 'loading…');
    const r = await request(`/api/events?before=${oldest}&limit=${PAGE}`);
    bump('events');
    if (!r.ok) return setText($('events-older-msg'), r.error);
    const now = oldestNumber();               // a snapshot may have come meanwhile
    const got = numbered(arr(r.data.events), r.data.first).filter((it) => it.n !== null && (now === null || it.n < now));
    model.items.unshift(...got);
    model.extra = Math.min(MAX_EXTRA, model.extra + got.length);
    model.more = r.data.more === true && got.length > 0;
    setText($('events-older-msg'), got.length ? `${fmtInt(got.length)} older events loaded` : 'no older events');
  }

  // ---------------------------------------------------------------- the stream
  let source = null;
  let reconnectTimer = 0;

  function connect() {
    reconnectTimer = 0;
    if (source) source.close();
    model.lastMessageAt = Date.now();          // the silence count starts with the attempt
    source = new EventSource('/api/stream');
    source.addEventListener('open', heard);
    source.addEventListener('snapshot', (m) => applySnapshot(heard(m)));
    source.addEventListener('delta', (m) => applyDelta(heard(m)));
    source.addEventListener('ping', heard);
    source.addEventListener('message', heard);
    source.addEventListener('error', streamLost);
  }

  // Anything from the stream proves it alive; returns the message's data, parsed (null when it is not JSON).
  function heard(message) {
    model.lastMessageAt = Date.now();
    if (model.streamLost || model.netError) bump('link');
    model.streamLost = model.netError = false;
    try { return JSON.parse(message.data); } catch (_) { return null; }
  }

  // A new EventSource after a gap sends no Last-Event-ID: the server starts it with a snapshot.
  function streamLost() {
    if (!model.streamLost) bump('link');
    model.streamLost = true;
    if (source) source.close();
    source = null;
    if (!reconnectTimer) reconnectTimer = setTimeout(connect, RECONNECT_MS);
  }

  function watchdog() {
    if (source && Date.now() - model.lastMessageAt > SILENCE_MS) streamLost();
    bump('link');                              // "last event N s ago" moves on
  }

  // ---------------------------------------------------------------- rendering
  function scheduleRender() {
    if (!frame) frame = requestAnimationFrame(render);
  }

  // What each view reads: a kind of data, or 'f:NAME' for one state field.
  const VIEW_RENDER = {
    overview: { deps: ['state', 'link', 'events'], fn: renderOverview },
    teacher: { deps: ['f:usage', 'f:teacher_endpoints', 'f:teacher_outage', 'series'], fn: renderTeacher },
    trainer: {
      deps: ['f:trainer', 'f:evals', 'f:current_stage', 'f:current_round', 'f:gpus', 'f:host', 'f:gpu_message',
        'f:external', 'series'],
      fn: renderTrainer,
    },
    events: { deps: ['events', 'filter', 'f:event_count'], fn: renderEvents, lists: true },
    config: { deps: ['f:config', 'filter'], fn: renderConfig },
    eval: { deps: ['f:evals', 'f:best_round', 'f:outcome'], fn: renderEval },
    runs: { deps: ['runs', 'compare', 'f:run_id'], fn: renderRuns },
  };

  function depVersion(k) {
    return k.startsWith('f:') ? ver.snap + ':' + (fieldVer[k.slice(2)] || 0) : ver[k];
  }

  let deferred = 0;
  const renderedAt = {};

  function render() {
    frame = 0;
    renderHeader();
    const r = VIEW_RENDER[view];
    const user = ver.filter + '/' + ver.layout;       // what the user did: never deferred
    const key = r.deps.map(depVersion).join('.') + '/' + user;
    if (rendered[view] === key) return;
    const last = renderedAt[view];
    // What the stream changed is drawn at most every LIVE_MS (the stream brings up to ten deltas a second),
    // as the terminal dashboard refreshes: the figures still follow within a second, at a fraction of the
    // layout and paint work. What the user does is drawn at once.
    // Under a flood (over FLOOD events since the last draw) a view that lists events is drawn once a second:
    // the rows pass too fast to read anyway, and each draw repaints most of the view.
    const flood = r.lists && last && model.arrived - last.arrived > FLOOD;
    const live = flood ? FLOOD_MS : LIVE_MS;
    const wait = last && last.user === user && rendered[view] ? live - (performance.now() - last.t) : 0;
    if (wait > 0) {
      if (!deferred) deferred = setTimeout(() => { deferred = 0; scheduleRender(); }, wait);
      return;
    }
    rendered[view] = key;
    renderedAt[view] = { t: performance.now(), user, arrived: model.arrived };
    const problem = $('view-' + view).querySelector('.view-error');
    try {
      r.fn();
      problem.hidden = true;
    } catch (err) {
      // A malformed field must not take the page down (nor log): say so in the view.
      problem.hidden = false;
      setText(problem, 'could not show this view: ' + (err && err.message ? err.message : String(err)));
    }
  }

  function connState() {
    const link = model.link;
    if (model.streamLost || model.netError) return ['lost', 'stream lost — reconnecting…'];
    if (!model.received) return ['connecting', 'connecting…'];
    if (link.health === 'down') return ['down', 'supervisor down: ' + (str(link.reason) || str(link.error) || 'not answering')];
    if (link.health === 'degraded') return ['live', 'degraded: ' + (str(link.reason) || 'unknown reason')];
    const last = parseTs(model.state.last_event_ts);
    if (last === null) return ['live', 'live'];
    const ago = Math.max(0, Math.round((Date.now() - last) / 1000));
    return ['live', `live · last event ${fmtDur(ago)} ago`];
  }

  function renderHeader() {
    const s = model.state;
    const [state, text] = connState();
    const conn = $('conn');
    setAttr(conn, 'data-state', state);
    conn.classList.toggle('degraded', model.link.health === 'degraded' && state === 'live');
    setText(conn, text);

    const status = str(s.status) || 'idle';
    setText($('status'), status);
    setAttr($('status'), 'data-status', status);
    setText($('run-id'), str(s.run_id) || 'no run');
    const cur = num(s.current_round), total = num(s.total_rounds);
    setText($('round'), total ? `${cur || 0} / ${total}` : cur ? `${cur} / ?` : DASH);
    setText($('hdr-stage'), str(s.current_stage) || DASH);
    setText($('hdr-cost'), COST in obj(s.usage) ? fmtCost(s.usage[COST]) : DASH);

    $('controls').hidden = !model.control;
    $('readonly').hidden = model.control;
    const busy = model.controlBusy;
    $('btn-pause').disabled = busy || status !== 'running';
    $('btn-resume').disabled = busy || status !== 'paused';
    $('btn-stop').disabled = busy || !ACTIVE.has(status);
  }

  // ---------------------------------------------------------------- 1 Overview
  function renderOverview() {
    const s = model.state;
    const stage = str(s.current_stage);
    const status = str(s.status);
    const at = PIPELINE.indexOf(stage);
    for (const li of $('timeline').children) {
      const i = PIPELINE.indexOf(li.dataset.stage);
      li.classList.toggle('done', status === 'completed' || (at >= 0 && i < at));
      li.classList.toggle('current', status !== 'completed' && i === at);
    }
    const cur = num(s.current_round) || 0, total = num(s.total_rounds) || 0;
    const evals = arr(s.evals).length;
    let fraction = 0;
    if (status === 'completed') fraction = 1;
    else if (total > 0) fraction = Math.min(1, (Math.max(0, cur - 1) + Math.max(0, at) / PIPELINE.length) / total);
    $('rounds-bar').firstElementChild.style.width = (fraction * 100).toFixed(1) + '%';
    setText($('rounds-text'), total ? `round ${cur} of ${total} · ${evals} evaluated · ${Math.round(fraction * 100)}%` : 'no run in progress');

    setText($('ov-stage'), stage || DASH);
    setText($('ov-started'), fmtTs(s.started_at));
    setText($('ov-updated'), fmtTs(s.updated_at));
    setText($('ov-events'), fmtInt(s.event_count));
    setText($('outcome'), str(s.outcome) || 'no round evaluated yet');
    setText($('best-adapter'), str(s.best_adapter) || DASH);

    renderTotals('counters', 'data-counter', COUNTERS, obj(s.counters), counterShare);
    renderTotals('usage', 'data-usage', USAGE, obj(s.usage), null);
    renderHealth(s);
    renderAgents(obj(s.agents));
    renderRecent();
  }

  function ordered(known, dict) {
    const extra = Object.keys(dict).filter((k) => !known.includes(k)).sort();
    return known.filter((k) => k in dict).concat(extra);
  }

  function counterShare(c, name) {
    const v = num(c[name]) || 0, g = num(c.teacher_generated) || 0;
    const tested = (num(c.test_pass) || 0) + (num(c.test_fail) || 0);
    if (name === 'teacher_failed') return fmtPct(v, g + v);
    if (name.startsWith('validated') || name.startsWith('rejected')) return fmtPct(v, g) && fmtPct(v, g) + ' of gen';
    if (name === 'test_pass' || name === 'test_fail') return fmtPct(v, tested) && fmtPct(v, tested) + ' of tests';
    if (name === 'eval_pass') return fmtPct(v, num(c.eval_total) || 0);
    return '';
  }

  // Counters and usage: a row per name, its value cell holding the raw number in data-value.
  function renderTotals(id, attr, known, totals, share) {
    syncRows($(id).tBodies[0], attr, ordered(known, totals).map((k) => [k, totals[k]]),
      (k) => { const tr = rowWith(share ? ['value', 'num muted'] : ['value']); tr.prepend(el('th', '', k)); return tr; },
      (tr, v, k) => {
        setAttr(tr.cells[1], 'data-value', num(v) === null ? '' : k === COST ? v : Math.round(v));
        setText(tr.cells[1], k === COST ? fmtCost(v) : fmtInt(v));
        if (share) setText(tr.cells[2], share(totals, k));
      });
  }

  function outageText(o) {
    const since = parseTs(o.since);
    const lasted = since === null ? '' : ` (${fmtDur((Date.now() - since) / 1000)})`;
    const parts = [`teacher unreachable since ${fmtTs(o.since)} UTC${lasted}`];
    if (num(o.retry_every_s) !== null) parts.push(`a probe every ${fmtNum(o.retry_every_s, 3)} s`);
    const next = parseTs(o.next_probe_at);
    if (next !== null) parts.push(`next in ${fmtDur(Math.max(0, (next - Date.now()) / 1000))}`);
    if (num(o.jobs_waiting)) parts.push(`${fmtInt(o.jobs_waiting)} requests waiting`);
    if (str(o.reason)) parts.push(clip(str(o.reason), 200));
    return parts.join(' · ');
  }

  function renderHealth(s) {
    const lines = [];
    const link = model.link;
    const health = str(link.health) || (model.received ? 'ok' : 'unknown');
    lines.push([health === 'ok' ? '' : health === 'down' ? 'err' : 'warn',
      `supervisor: ${health}` + (str(link.reason) ? ` — ${str(link.reason)}` : '')]);
    if (str(link.error) && str(link.error) !== str(link.reason)) lines.push(['warn', 'link: ' + str(link.error)]);
    if (str(s.problem)) lines.push(['err', 'problem: ' + str(s.problem)]);
    if (isObj(s.teacher_outage)) lines.push(['err', outageText(s.teacher_outage)]);
    if (str(s.error)) lines.push(['err', 'error: ' + str(s.error)]);
    if (str(s.http_error)) lines.push(['warn', 'HTTP server: ' + str(s.http_error)]);
    if (s.pause_requested === true) lines.push(['warn', 'pause requested']);
    if (s.stop_requested === true) lines.push(['warn', 'stop requested']);
    if (str(s.gpu_message)) lines.push(['warn', 'GPU: ' + str(s.gpu_message)]);
    const sig = JSON.stringify(lines);           // rebuilt only when a line changed, not four times a second
    if ($('health').dataset.sig === sig) return;
    $('health').dataset.sig = sig;
    $('health').replaceChildren(...lines.map(([cls, text]) => el('li', cls, clip(text, 600))));
  }

  function renderAgents(agents) {
    const entries = Object.keys(agents).sort().map((k) => [k, obj(agents[k])]);
    syncRows($('agents-table').tBodies[0], 'data-agent', entries,
      () => rowWith(['', '', '', 'num']),
      (tr, a, k) => cells(tr, [k, str(a.stage) || DASH, str(a.phase) || DASH, fmtInt(a.restarts)]));
    $('agents-empty').hidden = entries.length > 0;
  }

  const recentCache = new WeakMap();   // item -> its Overview row: the newest rows are built once each

  const recentDrawn = { t: 0, arrived: 0 };

  function renderRecent() {
    // Under a flood the newest rows change at every draw: once a second is enough (the counters above
    // still follow twice a second).
    const now = performance.now();
    if (model.arrived - recentDrawn.arrived > FLOOD && now - recentDrawn.t < FLOOD_MS) return;
    recentDrawn.t = now;
    recentDrawn.arrived = model.arrived;
    const rows = [];
    for (let i = model.items.length - 1; i >= 0 && rows.length < 8; i--) {
      const it = model.items[i];
      if (it.gap) continue;
      if (!recentCache.has(it)) recentCache.set(it, eventRow(it.e, 'recent'));
      rows.push(recentCache.get(it));
    }
    placeRows($('recent-events').tBodies[0], rows);
    $('recent-empty').hidden = rows.length > 0;
  }

  // ---------------------------------------------------------------- 2 Teacher
  function renderTeacher() {
    const s = model.state;
    const u = obj(s.usage);
    setText($('teacher-totals'), `run totals: ${fmtInt(u.requests_sent)} requests · ${fmtInt(u.input_tokens)} in / ` +
      `${fmtInt(u.output_tokens)} out tokens · ${fmtCost(u[COST])} · ${fmtInt(u.rate_limits_hit)} rate limits · ${fmtInt(u.retries)} retries`);
    const outage = $('teacher-outage');
    outage.hidden = !isObj(s.teacher_outage);
    if (isObj(s.teacher_outage)) setText(outage, outageText(s.teacher_outage));

    const eps = obj(s.teacher_endpoints);
    const entries = Object.keys(eps).sort().map((k) => [k, obj(eps[k])]);
    const secs = (v) => (num(v) === null ? DASH : num(v).toFixed(2) + ' s');
    syncRows($('teacher-table').tBodies[0], 'data-endpoint', entries,
      () => rowWith(['mono', 'num', 'num', 'num', 'num', 'num', 'num', 'num', 'num', 'num']),
      (tr, e, k) => {
        const eu = obj(e.usage);
        cells(tr, [k, fmtInt(eu.requests_sent), fmtInt(eu.input_tokens), fmtInt(eu.output_tokens), fmtCost(eu[COST]),
          fmtInt(e.errors), fmtInt(e.in_flight), secs(e.latency_p50_s), secs(e.latency_p95_s),
          num(e.out_for_s) ? fmtDur(e.out_for_s) : DASH]);
        tr.classList.toggle('out', num(e.out_for_s) > 0);   // left out of the pool
      });
    $('teacher-empty').hidden = entries.length > 0;

    const usage = model.series.usage;
    drawChart($('chart-tokens'), {
      series: [points(usage, 0, 1), points(usage, 0, 2)], xTime: true, tipFmt: fmtInt,
    });
    drawChart($('chart-cost'), { series: [points(usage, 0, 3)], xTime: true, yFmt: fmtCost });
  }

  // [x, y] pairs from rows of a series, skipping any with x or y unknown.
  function points(rows, xi, yi) {
    return rows.map((r) => [num(arr(r)[xi]), num(arr(r)[yi])]).filter((p) => p[0] !== null && p[1] !== null);
  }

  // ---------------------------------------------------------------- 3 Trainer
  function renderTrainer() {
    const s = model.state;
    let t = obj(s.trainer);
    // A new round's trainer reports nothing until its model is loaded: don't show the last round's gauges.
    const loading = str(s.current_stage) === 'train' && num(t.round) !== num(s.current_round);
    if (loading) t = {};
    const step = num(t.step) || 0, total = num(t.total) || 0;
    setText($('trainer-note'), loading ? 'loading the model…' : num(t.round) ? `round ${t.round}` : '');
    $('step-bar').firstElementChild.style.width = (total ? Math.min(100, 100 * step / total) : 0).toFixed(1) + '%';
    const ranks = arr(t.rank_peak_mb);
    const gauges = {
      'g-step': total ? `${fmtInt(step)} / ${fmtInt(total)}` : DASH, 'g-loss': fmtNum(t.loss, 4), 'g-lr': fmtLr(t.learning_rate),
      'g-grad': fmtNum(t.grad_norm, 3), 'g-tps': fmtRate(t.tokens_per_s), 'g-sps': fmtRate(t.samples_per_s),
      'g-eta': fmtDur(t.eta_s), 'g-mem': fmtMb(t.memory_mb),
      'g-rank': ranks.length ? ranks.map((v, i) => `r${i} ${fmtMb(v)}`).join(' · ') : DASH,
    };
    for (const id of Object.keys(gauges)) setText($(id), gauges[id]);

    renderLossChart(obj(s.trainer), arr(s.evals));
    const tr = model.series.trainer;
    drawChart($('chart-lr'), { series: [points(tr, 1, 3)], yFmt: fmtLr, xInt: true });
    drawChart($('chart-tps'), { series: [points(tr, 1, 4)], yFmt: fmtRate, xInt: true });
    const sys = model.series.system;
    drawChart($('chart-mem'), {
      series: [points(sys, 0, 4), points(sys, 0, 5)], xTime: true, yFmt: fmtMb, yZero: true,
      empty: str(s.gpu_message) || 'no GPU data',
    });
    renderSystem(s);
    renderExternal(obj(s.external));
  }

  function renderLossChart(trainer, evals) {
    const history = arr(trainer.loss_history).filter(Array.isArray);
    const starts = obj(trainer.round_starts);
    const marks = [];
    for (const k of Object.keys(starts)) {
      const x = num(starts[k]);
      if (x !== null) marks.push({ x, label: 'R' + k, cls: 'mark' });
    }
    // A round is evaluated after it trained: its mark goes at the round's last step (the next round's
    // start, or the curve's end for the latest round).
    const lastStep = history.length ? num(history[history.length - 1][0]) : null;
    for (const e of evals) {
      const round = num(obj(e).round);
      if (round === null || num(starts[String(round)]) === null) continue;
      const next = num(starts[String(round + 1)]);
      const x = next !== null ? next : lastStep;
      if (x === null) continue;
      const loss = num(obj(e.adapter).val_loss);
      marks.push({ x, label: loss === null ? 'eval' : 'val ' + fmtFixed(loss, 3), cls: 'evalmark', low: true });
    }
    const svg = $('chart-loss');
    drawChart(svg, { series: [history.map((p) => [num(p[0]), num(p[1])])], marks, xInt: true });
    setAttr(svg, 'data-points', history.length);   // one point per loss_history entry, as the contract says
  }

  function renderSystem(s) {
    const host = obj(s.host);
    setText($('host'), isObj(s.host)
      ? `host CPU ${fmtFixed(host.cpu_pct, 0)}% · RAM ${fmtMb(host.ram_used_mb)} / ${fmtMb(host.ram_total_mb)}`
      : 'host: not reported yet');
    const gpus = arr(s.gpus).map(obj);
    const msg = $('gpu-message');
    msg.hidden = gpus.length > 0 || !str(s.gpu_message);
    setText(msg, str(s.gpu_message));
    syncRows($('gpu-table').tBodies[0], 'data-gpu', gpus.map((g, i) => [String(num(g.index) ?? i), g]),
      () => rowWith(['', '', 'num', 'num', 'num', 'num']),
      (tr, g, k) => cells(tr, [k, str(g.name) || DASH, `${fmtMb(g.vram_used_mb)} / ${fmtMb(g.vram_total_mb)}`,
        num(g.util_pct) === null ? DASH : fmtFixed(g.util_pct, 0) + '%',
        num(g.temperature_c) === null ? DASH : fmtFixed(g.temperature_c, 0) + ' °C',
        num(g.power_w) === null ? DASH : fmtFixed(g.power_w, 0) + ' W']));
    $('gpu-table').hidden = gpus.length === 0;
  }

  function renderExternal(ext) {
    const entries = Object.keys(ext).sort().map((k) => [k, obj(ext[k])]);
    $('external-card').hidden = entries.length === 0;
    syncRows($('external-table').tBodies[0], 'data-source', entries,
      () => rowWith(['mono', 'num', 'num', 'num', 'num', 'num', 'num']),
      (tr, g, k) => cells(tr, [k, fmtInt(g.round), num(g.total) ? `${fmtInt(g.step)} / ${fmtInt(g.total)}` : fmtInt(g.step),
        fmtNum(g.loss, 4), fmtLr(g.learning_rate), fmtRate(g.tokens_per_s), fmtDur(g.eta_s)]));
  }

  // ---------------------------------------------------------------- 4 Events
  const rowCache = new WeakMap();      // item -> its <tr>: a re-render re-orders rows, it rarely builds them

  // cls 'event' for the Events view's rows (with data-stage and data-level), 'recent' for the Overview's.
  function eventRow(e, cls) {
    const tr = rowWith(['time', 'num', '', '', '', 'msg']);
    const level = str(e.level);
    tr.className = cls;
    tr.dataset.stage = str(e.stage);
    tr.dataset.level = level;
    const ts = str(e.ts);
    tr.cells[0].title = ts;
    const message = str(e.message) + (str(e.error) && str(e.error) !== str(e.message) ? ' — ' + str(e.error) : '');
    cells(tr, [ts.length >= 23 ? ts.slice(11, 23) : ts, str(e.round) || DASH, str(e.stage), '', str(e.event_type), clip(message, 1200)]);
    tr.cells[3].append(el('span', 'lvl lvl-' + level.replace(/[^a-z]/g, ''), level));
    tr.cells[5].title = clip(message, 1200);       // the log shows one line a row: the whole text on hover
    return tr;
  }

  // Kept while the marker's state is unchanged, so a click is never lost to a re-render.
  function gapRow(marker) {
    const sig = `${marker.count}/${!!marker.loading}/${marker.error || ''}`;
    if (marker.row && marker.sig === sig) return marker.row;
    const tr = el('tr', 'gap');
    marker.row = tr;
    marker.sig = sig;
    const td = el('td');
    const button = el('button', 'link', `${fmtInt(marker.count)} events not shown — load`);
    td.colSpan = 6;
    button.type = 'button';
    button.disabled = !!marker.loading;
    button.addEventListener('click', () => loadGap(marker));
    td.append(button, marker.loading ? ' loading…' : '', marker.error ? ` (${marker.error})` : '');
    tr.append(td);
    return tr;
  }

  function matches(it, f) {
    const e = it.e;
    if (f.stage !== 'all' && e.stage !== f.stage) return false;
    if (f.level !== 'all' && e.level !== f.level) return false;
    if (!f.text) return true;
    if (it.lc === undefined) it.lc = (str(e.message) + '\n' + str(e.event_type) + '\n' + str(e.error)).toLowerCase();
    return it.lc.includes(f.text);
  }

  // The log is virtual: every row is as high as the first one measured (one line, the full text in its tooltip), and only the rows
  // in sight (and OVERSCAN either side) are in the DOM, between two spacers. A render then touches about
  // forty rows however many events are held or arrive, which is what keeps a flood cheap to watch.
  // Scrolled down, the rows being read stay put while new ones arrive above them.
  const OVERSCAN = 12;
  const logView = { list: [], anchor: null, anchorAt: 0, rowH: 0, draws: 0 };

  function spacerRow(height) {
    const tr = el('tr', 'spacer');
    const td = el('td');
    td.colSpan = 6;
    tr.append(td);
    tr.style.height = height + 'px';
    return tr;
  }

  function renderEvents() {
    const f = model.filter;
    const list = [];
    let held = 0;
    for (let i = model.items.length - 1; i >= 0; i--) {
      const it = model.items[i];
      if (it.gap) {
        list.push(it);
        continue;
      }
      held += 1;
      if (matches(it, f)) list.push(it);
    }
    const matching = list.length - list.filter((it) => it.gap).length;
    const wrap = $('event-list').parentElement;
    const ROW_H = logView.rowH || 27;
    // Keep the row the reader is on where it is: new rows above it push the scroll down by as much.
    if (wrap.scrollTop > 0 && logView.anchor) {
      const now = list.indexOf(logView.anchor);
      if (now >= 0 && now !== logView.anchorAt) wrap.scrollTop += (now - logView.anchorAt) * ROW_H;
    }
    const top = Math.floor(wrap.scrollTop / ROW_H);
    const from = Math.max(0, top - OVERSCAN);
    const to = Math.min(list.length, top + Math.ceil((wrap.clientHeight || 600) / ROW_H) + OVERSCAN);
    logView.list = list;
    logView.anchor = wrap.scrollTop > 0 ? list[top] || null : null;
    logView.anchorAt = top;
    const rows = [spacerRow(from * ROW_H)];
    for (let i = from; i < to; i++) {
      const it = list[i];
      if (it.gap) {
        rows.push(gapRow(it));
        continue;
      }
      if (!rowCache.has(it)) rowCache.set(it, eventRow(it.e, 'event'));
      rows.push(rowCache.get(it));
    }
    rows.push(spacerRow((list.length - to) * ROW_H));
    $('event-list').tBodies[0].replaceChildren(...rows);
    if (!logView.rowH && to > from && !list[from].gap) {
      // Measured once (a forced layout): the CSS sets the height, the borders add what they add.
      logView.rowH = Math.round(rows[1].getBoundingClientRect().height) || 0;
    }
    setAttr($('event-list'), 'data-matching', matching);
    setAttr($('event-list'), 'data-draws', ++logView.draws);   // how many times the log was drawn (tests wait on it)
    const filtered = f.stage !== 'all' || f.level !== 'all' || f.text;
    setText($('event-note'), held === 0 ? 'no events yet'
      : `${filtered ? fmtInt(matching) + ' matching of ' : ''}${fmtInt(held)} events held` +
        ` · run total ${fmtInt(model.state.event_count)}`);
    const oldest = oldestNumber();
    $('events-older').disabled = !model.more || oldest === null || oldest <= 1;
  }

  // ---------------------------------------------------------------- 5 Configuration
  function configEntries(config) {
    // The contract is a list of {key, value, source}; a plain mapping is accepted too.
    if (Array.isArray(config)) return config.map(obj);
    return Object.keys(obj(config)).sort().map((k) => ({ key: k, value: config[k], source: '' }));
  }

  function renderConfig() {
    const all = configEntries(model.state.config);
    const q = model.configFilter;
    const shown = all.filter((c) => !q || [str(c.key), str(c.value), str(c.source)].join('\n').toLowerCase().includes(q));
    syncRows($('config-table').tBodies[0], 'data-key', shown.map((c) => [str(c.key), c]),
      () => rowWith(['mono', 'mono wrap', 'muted']),
      (tr, c, k) => cells(tr, [k, clip(str(c.value), 2000), str(c.source) || DASH]));
    setText($('config-count'), all.length ? (q ? `${shown.length} of ${all.length} keys.` : `${all.length} keys.`) : '');
    $('config-empty').hidden = all.length > 0;
  }

  // ---------------------------------------------------------------- 6 Eval
  function renderEval() {
    const s = model.state;
    const evals = arr(s.evals).map(obj).filter((e) => Number.isInteger(e.round));
    setText($('eval-outcome'), str(s.outcome) || 'no round evaluated yet');
    const best = num(s.best_round);
    syncRows($('eval-table').tBodies[0], 'data-round', evals.map((e) => [String(e.round), e]),
      () => rowWith(['num', 'num', 'num', 'num', 'num', 'num', 'num', 'num', 'num']),
      (tr, e) => {
        const b = obj(e.base), a = obj(e.adapter);
        const bp = num(b.val_pass_at_1), ap = num(a.val_pass_at_1);
        const ci = fmtCi(a.val_ci);
        const he = num(b.humaneval_pass_at_1) === null && num(a.humaneval_pass_at_1) === null ? DASH
          : `${fmtFixed(b.humaneval_pass_at_1, 2)} → ${fmtFixed(a.humaneval_pass_at_1, 2)} ${fmtCi(a.humaneval_ci)}`.trim();
        cells(tr, [e.round, fmtFixed(bp, 2), fmtFixed(ap, 2) + (ci ? ' ' + ci : ''),
          bp !== null && ap !== null ? fmtSigned(ap - bp, 2) : DASH, fmtPaired(a.val_paired),
          fmtInt(num(a.n_val) ?? b.n_val), fmtFixed(b.val_loss, 3), fmtFixed(a.val_loss, 3), he]);
        tr.classList.toggle('best', best !== null && e.round === best);
      });
    $('eval-empty').hidden = evals.length > 0;

    const adapterPass = [], bands = [], adapterLoss = [], baseLoss = [];
    let basePass = null;
    for (const e of evals) {
      const a = obj(e.adapter), b = obj(e.base);
      if (num(a.val_pass_at_1) !== null) adapterPass.push([e.round, a.val_pass_at_1]);
      const ci = arr(a.val_ci);
      if (num(ci[0]) !== null && num(ci[1]) !== null) bands.push({ x: e.round, lo: ci[0], hi: ci[1] });
      if (num(b.val_pass_at_1) !== null) basePass = b.val_pass_at_1;   // measured once: the latest holds
      if (num(a.val_loss) !== null) adapterLoss.push([e.round, a.val_loss]);
      if (num(b.val_loss) !== null) baseLoss.push([e.round, b.val_loss]);
    }
    drawChart($('chart-pass'), {
      series: [adapterPass], bands, hlines: basePass === null ? [] : [{ y: basePass, label: 'base' }],
      xInt: true, xPad: 0.5, xFmt: (x) => 'R' + x, yFmt: (v) => fmtFixed(v, 2), dots: true, yZero: true,
    });
    drawChart($('chart-valloss'), {
      series: [adapterLoss, baseLoss], xInt: true, xPad: 0.5, xFmt: (x) => 'R' + x, yFmt: (v) => fmtNum(v, 3), dots: true,
    });
  }

  // ---------------------------------------------------------------- 7 Runs
  async function loadRuns() {
    model.runsMsg = 'loading…';
    bump('runs');
    const r = await request('/api/runs');
    bump('runs');
    if (!r.ok) return (model.runsMsg = 'could not list the runs: ' + r.error);
    model.runs = arr(r.data.runs).map(obj).filter((x) => str(x.run_id));
    model.runsMsg = `${model.runs.length} run${model.runs.length === 1 ? '' : 's'}`;
    const ids = model.runs.map((x) => str(x.run_id));
    model.picked = model.picked.filter((id) => ids.includes(id));
  }

  function pick(runId, on) {
    model.picked = model.picked.filter((id) => id !== runId);
    if (on) model.picked.push(runId);
    if (model.picked.length > 2) model.picked.shift();   // the earliest pick gives way
    model.compare = null;
    model.compareMsg = model.picked.length === 2 ? 'loading…' : '';
    bump('runs', 'compare');
    if (model.picked.length === 2) loadCompare(model.picked[0], model.picked[1]);
  }

  async function loadCompare(a, b) {
    const r = await request(`/api/compare?a=${encodeURIComponent(a)}&b=${encodeURIComponent(b)}`);
    if (model.picked[0] !== a || model.picked[1] !== b) return;   // the picks changed meanwhile
    model.compare = r.ok ? r.data : null;
    model.compareMsg = r.ok ? '' : 'could not compare: ' + r.error;
    bump('compare');
  }

  function renderRuns() {
    setText($('runs-note'), model.runsMsg);
    const runs = model.runs || [];
    const current = str(model.state.run_id);
    syncRows($('runs-table').tBodies[0], 'data-run', runs.map((r) => [str(r.run_id), r]),
      (id) => {
        const tr = rowWith(['', 'mono', '', 'num', '', 'num', 'num', 'num', 'num']);
        const box = el('input');
        box.type = 'checkbox';
        box.className = 'pick';
        box.setAttribute('aria-label', 'compare ' + id);
        box.addEventListener('change', () => pick(id, box.checked));
        tr.cells[0].append(box);
        return tr;
      },
      (tr, r, id) => {
        cells(tr, [id, str(r.status) || DASH, `${fmtInt(r.rounds_done)} / ${fmtInt(r.total_rounds)}`, fmtTs(r.started_at),
          fmtDur(r.duration_s), fmtCost(r[COST]), fmtInt(r.best_round), fmtFixed(r.best_pass_at_1, 2)], 1);
        tr.cells[0].firstChild.checked = model.picked.includes(id);
        tr.classList.toggle('current', id === current);
        if (str(r.problem)) tr.title = str(r.problem);
      });
    renderCompare();
  }

  // A small table built whole: a head row, then rows whose first cell is their label.
  function table(node, head, rows) {
    const line = (values, first) => {
      const tr = el('tr');
      values.forEach((v, i) => tr.append(el(i === 0 ? first : 'td', '', v)));
      return tr;
    };
    const thead = el('thead'), tbody = el('tbody');
    thead.append(line(head, 'th'));
    tbody.append(...rows.map((r) => line(r, 'th')));
    node.replaceChildren(thead, tbody);
  }

  function compareCell(entry) {
    if (!isObj(entry)) return DASH;
    const b = obj(entry.base), a = obj(entry.adapter), d = obj(entry.delta);
    const ci = fmtCi(a.val_ci);
    return `pass@1 ${fmtFixed(b.val_pass_at_1, 2)} → ${fmtFixed(a.val_pass_at_1, 2)} (${fmtSigned(d.val_pass_at_1, 2)})` +
      (ci ? ' ' + ci : '') + ` · loss ${fmtFixed(b.val_loss, 3)} → ${fmtFixed(a.val_loss, 3)}`;
  }

  function renderCompare() {
    const box = $('compare');
    box.hidden = model.picked.length !== 2;
    if (box.hidden) return;
    setText($('compare-msg'), model.compareMsg);
    const c = model.compare;
    const parts = [$('compare-summary'), $('compare-config'), $('compare-rounds')];
    if (!isObj(c)) return parts.forEach((t) => t.replaceChildren());
    const [a, b] = arr(c.runs).map(obj).concat([{}, {}]);
    const ida = str(a.run_id) || model.picked[0], idb = str(b.run_id) || model.picked[1];
    const both = (f) => [f(a), f(b)];
    table(parts[0], ['', ida, idb], [
      ['status', ...both((r) => str(r.status) || DASH)],
      ['rounds done', ...both((r) => `${fmtInt(r.rounds_done)} / ${fmtInt(r.total_rounds)}`)],
      ['started', ...both((r) => fmtTs(r.started_at))],
      ['duration', ...both((r) => fmtDur(r.duration_s))],
      ['cost', ...both((r) => fmtCost(r[COST]))],
      ['best round', ...both((r) => fmtInt(r.best_round))],
      ['best pass@1', ...both((r) => fmtFixed(r.best_pass_at_1, 2))],
      ['best val loss', ...both((r) => fmtFixed(r.best_val_loss, 3))],
    ]);
    const diffs = obj(c.config_differences);
    const keys = Object.keys(diffs).sort();
    table(parts[1], ['key', ida, idb], keys.length
      ? keys.map((k) => [k, clip(str(arr(diffs[k])[0]) || DASH, 300), clip(str(arr(diffs[k])[1]) || DASH, 300)])
      : [['the same', '', '']]);
    const rounds = arr(c.rounds).map(obj);
    table(parts[2], ['round', ida, idb], rounds.length
      ? rounds.map((r) => ['round ' + str(r.round), compareCell(r[ida]), compareCell(r[idb])])
      : [['no round evaluated', '', '']]);
  }

  // ---------------------------------------------------------------- charts
  // A small SVG line chart: series of [x, y] (the first one's count goes to data-points), optional
  // vertical marks, error bars (bands) and horizontal lines. Redrawn whole: a few hundred nodes at most.
  const chartInfo = new WeakMap();

  function niceStep(span, count) {
    const raw = span / count, mag = Math.pow(10, Math.floor(Math.log10(raw))), n = raw / mag;
    return (n < 1.5 ? 1 : n < 3 ? 2 : n < 7 ? 5 : 10) * mag;
  }

  function timeStep(span) {
    const steps = [1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 10800, 21600, 43200, 86400];
    return steps.find((s) => span / s <= 5) || 86400 * Math.ceil(span / 86400 / 5);
  }

  function ticks(lo, hi, step) {
    const out = [];
    for (let v = Math.ceil(lo / step - 1e-9) * step; v <= hi + step * 1e-9 && out.length < 50; v += step) out.push(+v.toPrecision(12));
    return out;
  }

  function drawChart(svg, opt) {
    const series = opt.series.map((s) => s.filter((p) => num(p[0]) !== null && num(p[1]) !== null));
    const marks = opt.marks || [], bands = opt.bands || [], hlines = opt.hlines || [];
    const W = Math.max(160, Math.round(svg.getBoundingClientRect().width) || 600);
    const H = Math.max(100, Math.round(svg.getBoundingClientRect().height) || 200);
    const pad = { l: 56, r: 14, t: 16, b: 24 };
    svg.setAttribute('viewBox', `0 0 ${W} ${H}`);
    setAttr(svg, 'data-points', series[0].length);
    chartInfo.delete(svg);
    if (!series.some((s) => s.length)) {
      return svg.replaceChildren(svgEl('text', { x: W / 2, y: H / 2, 'text-anchor': 'middle', class: 'empty' }, clip(opt.empty || 'no data yet', 80)));
    }
    const kids = [];
    const xs = marks.map((m) => m.x).concat(bands.map((b) => b.x)), ys = hlines.map((h) => h.y);
    series.forEach((s) => s.forEach((p) => { xs.push(p[0]); ys.push(p[1]); }));
    bands.forEach((b) => ys.push(b.lo, b.hi));
    let x0 = Math.min(...xs), x1 = Math.max(...xs), y0 = Math.min(...ys), y1 = Math.max(...ys);
    if (opt.yZero) y0 = Math.min(0, y0);
    if (opt.xPad) { x0 -= opt.xPad; x1 += opt.xPad; }
    if (x1 === x0) { x0 -= 1; x1 += 1; }
    if (y1 === y0) { const d = Math.abs(y0) * 0.1 || 1; y0 -= d; y1 += d; }
    const ystep = niceStep(y1 - y0, 4);
    y0 = Math.floor(y0 / ystep + 1e-9) * ystep;
    y1 = Math.ceil(y1 / ystep - 1e-9) * ystep;
    const sx = (x) => pad.l + (x - x0) / (x1 - x0) * (W - pad.l - pad.r);
    const sy = (y) => H - pad.b - (y - y0) / (y1 - y0) * (H - pad.t - pad.b);
    const yFmt = opt.yFmt || fmtAxis;
    for (const v of ticks(y0, y1, ystep)) {
      kids.push(svgEl('line', { x1: pad.l, x2: W - pad.r, y1: sy(v), y2: sy(v), class: 'gridline' }));
      kids.push(svgEl('text', { x: pad.l - 6, y: sy(v) + 4, 'text-anchor': 'end' }, yFmt(v)));
    }
    let xstep = opt.xTime ? timeStep(x1 - x0) : niceStep(x1 - x0, Math.max(2, Math.floor(W / 110)));
    if (opt.xInt) xstep = Math.max(1, Math.round(xstep));
    const xFmt = opt.xFmt || (opt.xTime ? fmtClock : fmtAxis);
    for (const v of ticks(x0, x1, xstep)) {
      kids.push(svgEl('line', { x1: sx(v), x2: sx(v), y1: H - pad.b, y2: H - pad.b + 4, class: 'axis' }));
      kids.push(svgEl('text', { x: sx(v), y: H - 6, 'text-anchor': 'middle' }, xFmt(v)));
    }
    kids.push(svgEl('line', { x1: pad.l, x2: W - pad.r, y1: H - pad.b, y2: H - pad.b, class: 'axis' }));
    for (const m of marks) {
      const x = sx(m.x);
      kids.push(svgEl('line', { x1: x, x2: x, y1: pad.t, y2: H - pad.b, class: m.cls || 'mark' }));
      // A label near the right edge reads leftwards from its line, so it is never cut off.
      const right = x > W - pad.r - 80;
      kids.push(svgEl('text', { x: right ? x - 3 : x + 3, y: m.low ? pad.t + 22 : pad.t + 8, class: m.cls || 'mark',
        'text-anchor': right ? 'end' : 'start' }, clip(m.label, 24)));
    }
    for (const h of hlines) {
      kids.push(svgEl('line', { x1: pad.l, x2: W - pad.r, y1: sy(h.y), y2: sy(h.y), class: 'hline' }));
      kids.push(svgEl('text', { x: W - pad.r, y: sy(h.y) - 4, 'text-anchor': 'end' }, `${h.label} ${yFmt(h.y)}`));
    }
    for (const b of bands) {
      const x = sx(b.x), lo = sy(b.lo), hi = sy(b.hi);
      kids.push(svgEl('path', { d: `M${x - 5} ${lo}H${x + 5}M${x} ${lo}V${hi}M${x - 5} ${hi}H${x + 5}`, class: 'band' }));
    }
    series.forEach((s, i) => {
      if (!s.length) return;
      const cls = 's' + (i + 1);
      kids.push(svgEl('polyline', { points: s.map((p) => sx(p[0]).toFixed(1) + ',' + sy(p[1]).toFixed(1)).join(' '), class: 'line ' + cls }));
      if (opt.dots || s.length === 1) s.forEach((p) => kids.push(svgEl('circle', { cx: sx(p[0]), cy: sy(p[1]), r: 3, class: cls })));
    });
    svg.replaceChildren(...kids);
    chartInfo.set(svg, { series, sx, sy, W, H, pad, xFmt, yFmt: opt.tipFmt || yFmt });
  }

  // Hover: a cursor on the nearest point of the first series, with its values.
  function chartHover(ev) {
    const svg = ev.currentTarget;
    const info = chartInfo.get(svg);
    const old = svg.querySelector('.tip-layer');
    if (old) old.remove();
    if (!info || ev.type === 'mouseleave') return;
    const s = info.series[0];
    if (!s.length) return;
    const mx = ev.clientX - svg.getBoundingClientRect().left;
    let best = 0;
    for (let i = 1; i < s.length; i++) if (Math.abs(info.sx(s[i][0]) - mx) < Math.abs(info.sx(s[best][0]) - mx)) best = i;
    const [x, y] = s[best];
    const px = info.sx(x), py = info.sy(y);
    const extra = info.series.slice(1).map((t) => t.find((p) => p[0] === x)).filter(Boolean).map((p) => info.yFmt(p[1]));
    const label = `${info.xFmt(x)}: ${[info.yFmt(y)].concat(extra).join(' / ')}`;
    const g = svgEl('g', { class: 'tip-layer' });
    g.append(svgEl('line', { x1: px, x2: px, y1: info.pad.t, y2: info.H - info.pad.b, class: 'cursor' }),
      svgEl('circle', { cx: px, cy: py, r: 4, class: 's1' }));
    const w = label.length * 6.4 + 12;
    const tx = Math.min(Math.max(px + 8, info.pad.l), info.W - w - 2);
    const tip = svgEl('g', { class: 'tip' });
    tip.append(svgEl('rect', { x: tx, y: info.pad.t, width: w, height: 20, rx: 4 }), svgEl('text', { x: tx + 6, y: info.pad.t + 14 }, label));
    g.append(tip);
    svg.append(g);
  }

  // ---------------------------------------------------------------- views and input
  function showView(name) {
    if (!VIEWS.includes(name)) name = 'overview';
    view = name;
    for (const v of VIEWS) {
      $('view-' + v).hidden = v !== name;
      $('tab-' + v).setAttribute('aria-selected', String(v === name));
    }
    rendered[name] = null;           // sizes may have changed while hidden
    if (name === 'runs') loadRuns();
    scheduleRender();
  }

  function viewFromHash() {
    showView(decodeURIComponent(location.hash.replace(/^#/, '')) || 'overview');
  }

  function go(name) {
    if (location.hash === '#' + name) showView(name);
    else location.hash = name;
  }

  // 1–7 pick a view, except while typing in a field.
  function onKey(ev) {
    const t = ev.target;
    if (ev.ctrlKey || ev.metaKey || ev.altKey || (t && (t.isContentEditable || /^(INPUT|SELECT|TEXTAREA)$/.test(t.tagName)))) return;
    const i = ev.key.length === 1 ? '1234567'.indexOf(ev.key) : -1;
    if (i >= 0) ev.preventDefault();
    if (i >= 0) go(VIEWS[i]);
  }

  async function control(name) {
    if (name === 'stop' && !window.confirm('Stop the run at its next stage boundary?')) return;
    const msg = $('control-msg');
    model.controlBusy = true;
    msg.classList.remove('error');
    setText(msg, name + '…');
    bump('state');
    const r = await request('/api/control/' + name, { method: 'POST' });
    model.controlBusy = false;
    msg.classList.toggle('error', !r.ok);
    setText(msg, r.ok ? { pause: 'paused', resume: 'resumed', stop: 'stopping' }[name] : r.error);
    bump('state');
  }

  function init() {
    for (const v of VIEWS) $('tab-' + v).addEventListener('click', () => go(v));
    window.addEventListener('hashchange', viewFromHash);
    document.addEventListener('keydown', onKey);
    window.addEventListener('resize', () => bump('layout'));
    // The log draws the rows in sight: a scroll brings others (a layout change, drawn at once).
    $('event-list').parentElement.addEventListener('scroll', () => bump('layout'), { passive: true });
    const filter = () => {
      const text = $('event-filter-text').value.trim().toLowerCase();
      model.filter = { stage: $('event-filter-stage').value, level: $('event-filter-level').value, text };
      model.configFilter = $('config-filter').value.trim().toLowerCase();
      bump('filter');
    };
    for (const id of ['event-filter-stage', 'event-filter-level', 'event-filter-text', 'config-filter']) {
      $(id).addEventListener('input', filter);
      $(id).addEventListener('change', filter);
    }
    $('events-older').addEventListener('click', loadOlder);
    $('runs-refresh').addEventListener('click', loadRuns);
    for (const name of ['pause', 'resume', 'stop']) $('btn-' + name).addEventListener('click', () => control(name));
    for (const svg of document.querySelectorAll('svg.chart')) for (const t of ['mousemove', 'mouseleave']) svg.addEventListener(t, chartHover);
    viewFromHash();
    setInterval(watchdog, 1000);
    request('/api/snapshot').then((r) => {
      if (r.ok && !model.received) applySnapshot(r.data);
      connect();
    });
  }

  if (document.readyState === 'loading') document.addEventListener('DOMContentLoaded', init);
  else init();
})();
