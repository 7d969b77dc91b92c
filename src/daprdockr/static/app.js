// DaprDockr dashboard: follows GET /v1/dashboard/stream into an in-memory model and renders the
// view of the hash route (#/services, #/topology, #/events, #/logs/<svc>[/<n>], #/service/<svc>).
// DOM updates are coalesced into one requestAnimationFrame and limited to what changed.
import {byId, setText} from './dom.js';
import {Model} from './model.js';
import {EventStream} from './sse.js';
import {authHeaders, getToken, setToken} from './api.js';
import {ServicesView} from './services.js';
import {TopologyView} from './topology.js';
import {DetailView} from './detail.js';
import {EventsView} from './events.js';
import {LogsView} from './logs.js';

const model = new Model();
const views = {
  services: new ServicesView(model),
  topology: new TopologyView(model),
  service: new DetailView(model),
  events: new EventsView(model),
  logs: new LogsView(model),
};
const stale = new Set(Object.keys(views)); // views to redraw in full when next shown
let route = {view: '', arg: '', arg2: ''};
let pending = null;
let frame = 0;
let firstRender = false;

function parseRoute(hash) {
  const parts = hash.replace(/^#\/?/, '').split('/').map((p) => { try { return decodeURIComponent(p); } catch (e) { return p; } });
  const view = parts[0] in views ? parts[0] : 'services';
  return {view, arg: parts[1] || '', arg2: parts[2] || ''};
}

function showRoute() {
  const prev = route.view;
  route = parseRoute(location.hash);
  for (const name of Object.keys(views)) byId(`view-${name}`).hidden = name !== route.view;
  for (const a of document.querySelectorAll('nav a[data-view]')) {
    if (a.dataset.view === route.view) a.setAttribute('aria-current', 'page');
    else a.removeAttribute('aria-current');
  }
  if (prev === 'logs' && route.view !== 'logs') views.logs.hide();
  document.title = `DaprDockr · ${route.view === 'service' ? route.arg : route.view}`;
  const v = views[route.view];
  if (route.view === 'service') {
    v.show(route.arg);
  } else if (route.view === 'logs') {
    v.show(route.arg, route.arg2);
    if (v.service) byId('nav-logs-href').setAttribute('href', `#/logs/${v.service}`);
  } else if (stale.has(route.view)) {
    v.renderAll();
  }
  stale.delete(route.view);
}

/** Queue a delta; one animation frame applies every delta queued since the last one. */
function schedule(delta) {
  pending = pending ? pending.merge(delta) : delta;
  if (!frame) frame = requestAnimationFrame(flush);
}

function flush() {
  frame = 0;
  const delta = pending;
  pending = null;
  if (!delta) return;
  const t0 = performance.now();
  for (const name of Object.keys(views)) {
    if (name === route.view) views[name].update(delta);
    else if (!delta.empty) stale.add(name);
  }
  const conn = byId('conn');
  conn.dataset.revision = String(model.revision);
  setText(byId('revision'), String(model.revision));
  setText(byId('agent-node'), model.node || '?');
  if (!firstRender && model.loaded) {
    firstRender = true;
    const ms = performance.now();
    document.documentElement.dataset.firstRenderMs = String(Math.round(ms));
    document.documentElement.dataset.firstRenderDrawMs = String(Math.round(ms - t0));
    performance.mark('daprdockr-first-render');
  }
}

function onMessage(msg) {
  let data;
  try {
    data = JSON.parse(msg.data);
  } catch (err) {
    console.warn('dashboard: bad JSON in a %s event', msg.event);
    return;
  }
  if (msg.event === 'snapshot') {
    schedule(model.applySnapshot(data));
    performance.mark('daprdockr-snapshot-applied');
  }
  else if (msg.event === 'change') schedule(model.applyChange(data));
}

function onState(state, detail) {
  const conn = byId('conn');
  const live = state === 'live';
  if (live && !performance.getEntriesByName('daprdockr-stream-open').length) performance.mark('daprdockr-stream-open');
  conn.className = live ? 'ok' : 'reconnecting';
  setText(conn, live ? 'live' : 'reconnecting…');
  conn.title = live ? 'following the agent\'s stream' : (detail || 'connecting');
  if (state !== 'connecting') setText(byId('stream-error'), live ? '' : detail);
}

const stream = new EventStream({url: '/v1/dashboard/stream', headers: authHeaders, onMessage, onState});

function setupToken() {
  const input = byId('token');
  input.value = getToken();
  const save = () => {
    const was = getToken();
    setToken(input.value.trim());
    if (was !== getToken()) stream.restart(); // a read-only stream may need it beyond loopback
  };
  input.addEventListener('change', save);
  byId('token-form').addEventListener('submit', (ev) => { ev.preventDefault(); save(); });
}

function main() {
  const logsLink = document.querySelector('nav a[data-view="logs"]');
  logsLink.id = 'nav-logs-href';
  setupToken();
  window.addEventListener('hashchange', showRoute);
  showRoute();
  stream.start();
}

main();
