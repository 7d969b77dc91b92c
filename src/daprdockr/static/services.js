// Services view: one row per service (keyed by name), 100 rows at a time with a filter.
import {byId, el, setText, syncChildren} from './dom.js';
import {Pager} from './pager.js';
import {statusSymbol, rolloutSymbol, label} from './states.js';

const CELLS = ['status', 'desired', 'running', 'healthy', 'failed', 'image', 'http-host', 'rollout'];

export function serviceHealthClass(s) {
  if (s.status === 'invalid') return 'bad';
  if (s.status === 'deleted') return 'muted';
  if (s.failed > 0) return 'bad';
  if (s.running < s.desired || s.healthy < s.running) return 'warn';
  return 'good';
}

export function rolloutText(r) {
  if (!r || !r.state) return '';
  let t = `${label(rolloutSymbol(r.state), r.state)}${r.version ? ` v${r.version}` : ''}`;
  if (r.reason) t += `: ${r.reason}`;
  return t;
}

function cellTexts(s) {
  let status = s.status === 'invalid' && s.invalid
    ? `${label(statusSymbol('invalid'), 'invalid')}: ${s.invalid}`
    : label(statusSymbol(s.status), s.status);
  if (s.status === 'ok') {
    if (s.failed > 0) status += ` · ✗ ${s.failed} failed`;
    else if (s.running < s.desired) status += ` · ⚠ ${s.desired - s.running} not running`;
    else if (s.healthy < s.running) status += ` · ⚠ ${s.running - s.healthy} not healthy`;
  }
  const version = s.version ? ` (version ${s.version})` : '';
  return {
    status,
    desired: s.desired,
    running: s.running,
    healthy: s.healthy,
    failed: s.failed,
    image: s.image,
    'http-host': s.http_host,
    rollout: (rolloutText(s.rollout) || '—') + version,
  };
}

export class ServicesView {
  constructor(model) {
    this.model = model;
    this.tbody = byId('services').tBodies[0];
    this.rows = new Map(); // name -> tr (only rows of the current window)
    this.names = [];       // filtered, sorted
    this.listed = new Set();
    this.filter = '';
    this.pager = new Pager({
      prev: byId('services-prev'), next: byId('services-next'), range: byId('services-range'),
      onChange: () => this.renderWindow(),
    });
    const input = byId('services-filter');
    input.addEventListener('input', () => {
      this.filter = input.value.trim().toLowerCase();
      this.pager.start = 0;
      this.renderAll();
    });
  }

  matches(s) {
    if (!this.filter) return true;
    const f = this.filter;
    return s.service.toLowerCase().includes(f) || String(s.image).toLowerCase().includes(f)
      || String(s.http_host).toLowerCase().includes(f) || s.status.includes(f);
  }

  renderAll() {
    const names = [];
    for (const s of this.model.services.values()) if (this.matches(s)) names.push(s.service);
    names.sort();
    this.names = names;
    this.listed = new Set(names);
    this.renderWindow();
  }

  renderWindow() {
    const [start, end] = this.pager.window(this.names.length);
    const keep = new Map();
    const rows = [];
    for (let i = start; i < end; i++) {
      const name = this.names[i];
      let tr = this.rows.get(name);
      if (!tr) tr = this.makeRow(name);
      this.fill(tr, this.model.services.get(name));
      keep.set(name, tr);
      rows.push(tr);
    }
    this.rows = keep;
    syncChildren(this.tbody, rows);
    byId('services-empty').hidden = this.names.length > 0;
  }

  update(delta) {
    if (delta.snapshot || delta.serviceSet) return this.renderAll();
    for (const name of delta.services) {
      const s = this.model.services.get(name);
      const tr = this.rows.get(name);
      if (!s) continue;
      if (this.listed.has(name) !== this.matches(s)) return this.renderAll(); // it entered or left the filter
      if (tr) this.fill(tr, s);
    }
    return undefined;
  }

  makeRow(name) {
    const link = el('a', {class: 'service-link', text: name, attrs: {href: `#/service/${name}`}});
    const tr = el('tr', {data: {service: name}}, el('th', {attrs: {scope: 'row'}}, link));
    tr.cells_ = {};
    for (const c of CELLS) {
      const td = el('td', {class: c});
      tr.cells_[c] = td;
      tr.appendChild(td);
    }
    tr.appendChild(el('td', {class: 'logs'},
      el('a', {text: 'logs', attrs: {href: `#/logs/${name}`, 'aria-label': `logs of ${name}`}})));
    return tr;
  }

  fill(tr, s) {
    const texts = cellTexts(s);
    for (const c of CELLS) setText(tr.cells_[c], texts[c]);
    const cls = serviceHealthClass(s);
    if (tr.dataset.health !== cls) tr.dataset.health = cls;
    if (tr.dataset.status !== s.status) tr.dataset.status = s.status;
  }
}
