// Service detail view: the service's row, its instances (100 at a time), spec JSON, history and
// rollout (GET /v1/services/<g>/<s>, fetched again when the service's version changes), its events.
import {byId, el, setText, replaceChildren, syncChildren, fmtTime, fmtAge} from './dom.js';
import {actions, getJson, servicePath} from './api.js';
import {Pager} from './pager.js';
import {instanceSymbol, healthSymbol, label, statusSymbol} from './states.js';
import {rolloutText, serviceHealthClass} from './services.js';
import {eventItem} from './events.js';

const DETAIL_EVENTS = 50;

export class DetailView {
  constructor(model) {
    this.model = model;
    this.root = byId('detail');
    this.name = '';
    this.fetched = null;      // signature of the service when its spec was fetched
    this.controller = null;
    this.rows = new Map();    // key -> tr of the current window
    this.tbody = byId('detail-instances').tBodies[0];
    this.pager = new Pager({
      prev: byId('detail-prev'), next: byId('detail-next'), range: byId('detail-range'),
      onChange: () => this.renderInstances(),
    });
    byId('scale-button').addEventListener('click', () => this.scale());
    byId('scale-input').addEventListener('keydown', (ev) => { if (ev.key === 'Enter') this.scale(); });
    byId('rollback-button').addEventListener('click', () => {
      const v = byId('rollback-to').value.trim();
      actions.rollback(this.name, v ? Number(v) : 0);
    });
    this.tbody.addEventListener('click', (ev) => {
      const b = ev.target.closest('button.restart');
      if (b) actions.restart(this.name, Number(b.dataset.number));
    });
  }

  scale() {
    const raw = byId('scale-input').value.trim();
    const n = Number(raw);
    if (raw === '' || !Number.isInteger(n) || n < 0) {
      const st = byId('action-status');
      st.dataset.state = 'error';
      setText(st, `instances must be a whole number ≥ 0, not "${raw}"`);
      return;
    }
    actions.scale(this.name, n);
  }

  show(name) {
    if (name !== this.name) {
      this.name = name;
      this.fetched = null;
      this.pager.start = 0;
      this.rows.clear();
      const svc = this.model.services.get(name);
      byId('scale-input').value = svc ? String(svc.desired) : '';
      byId('rollback-to').value = '';
      setText(byId('detail-spec'), '');
      replaceChildren(byId('detail-history'));
      setText(byId('detail-rollout'), '');
    }
    this.root.dataset.service = name;
    setText(byId('detail-name'), name);
    byId('detail-logs').setAttribute('href', `#/logs/${name}`);
    this.renderAll();
  }

  renderAll() {
    if (!this.name) return;
    this.renderSummary();
    this.renderInstances();
    this.renderEvents();
    this.maybeFetch();
  }

  update(delta) {
    if (!this.name) return;
    if (delta.snapshot) return this.renderAll();
    if (delta.services.has(this.name)) {
      this.renderSummary();
      this.maybeFetch();
    }
    if (delta.instServices.has(this.name)) this.renderInstances();
    if (delta.events.some((e) => e.service === this.name)) this.renderEvents();
    return undefined;
  }

  renderSummary() {
    const s = this.model.services.get(this.name);
    const p = byId('detail-summary');
    if (!s) {
      setText(p, this.model.loaded ? `✗ no service ${this.name} in the cluster` : 'loading…');
      p.dataset.health = 'bad';
      return;
    }
    let status = label(statusSymbol(s.status), s.status);
    if (s.invalid) status += `: ${s.invalid}`;
    const parts = [status, `desired ${s.desired}`, `running ${s.running}`, `healthy ${s.healthy}`,
      `failed ${s.failed}`, `paused ${s.paused}`, `image ${s.image}`];
    if (s.http_host) parts.push(`host ${s.http_host}`);
    if (s.version) parts.push(`version ${s.version}`);
    const r = rolloutText(s.rollout);
    if (r) parts.push(`rollout ${r}`);
    setText(p, parts.join(' · '));
    p.dataset.health = serviceHealthClass(s);
  }

  renderInstances() {
    const list = this.model.serviceInstances(this.name);
    const [start, end] = this.pager.window(list.length);
    const keep = new Map();
    const rows = [];
    for (let i = start; i < end; i++) {
      const inst = list[i];
      let tr = this.rows.get(inst.key);
      if (!tr) tr = this.makeRow(inst);
      if (tr.inst_ !== inst) this.fillRow(tr, inst);
      keep.set(inst.key, tr);
      rows.push(tr);
    }
    this.rows = keep;
    syncChildren(this.tbody, rows);
  }

  makeRow(inst) {
    const tr = el('tr', {data: {key: inst.key, number: inst.number}});
    tr.f_ = {};
    for (const c of ['number', 'state', 'health', 'node', 'address', 'ports', 'since', 'error']) {
      tr.f_[c] = el('td', {class: c});
      tr.appendChild(tr.f_[c]);
    }
    tr.appendChild(el('td', {class: 'actions'},
      el('button', {class: 'restart', text: 'Restart', data: {number: inst.number},
        attrs: {type: 'button', 'aria-label': `restart ${inst.service} instance ${inst.number}`}}),
      ' ',
      el('a', {text: 'logs', attrs: {href: `#/logs/${inst.service}/${inst.number}`,
        'aria-label': `logs of ${inst.service} instance ${inst.number}`}})));
    return tr;
  }

  fillRow(tr, inst) {
    tr.inst_ = inst;
    const f = tr.f_;
    tr.dataset.state = inst.state;
    tr.className = `st-${inst.state}`;
    setText(f.number, `#${inst.number}`);
    setText(f.state, label(instanceSymbol(inst.state), inst.state));
    setText(f.health, inst.health ? label(healthSymbol(inst.health), inst.health) : '—');
    setText(f.node, inst.node);
    setText(f.address, inst.address);
    setText(f.ports, Object.entries(inst.ports || {}).map(([k, v]) => `${k}→${v}`).join(', '));
    setText(f.since, fmtAge(inst.since));
    f.since.title = fmtTime(inst.since);
    setText(f.error, inst.error || '');
  }

  renderEvents() {
    const items = [];
    const evs = this.model.events;
    for (let i = evs.length - 1; i >= 0 && items.length < DETAIL_EVENTS; i--) {
      if (evs[i].service === this.name) items.push(eventItem(evs[i]));
    }
    if (!items.length) items.push(el('li', {class: 'muted', text: 'no recent events'}));
    replaceChildren(byId('detail-events'), ...items);
  }

  maybeFetch() {
    const s = this.model.services.get(this.name);
    const sig = s ? `${s.version}|${s.status}|${s.invalid}|${JSON.stringify(s.rollout)}` : 'none';
    if (sig === this.fetched) return;
    this.fetched = sig;
    this.fetchSpec();
  }

  async fetchSpec() {
    if (this.controller) this.controller.abort();
    const controller = new AbortController();
    this.controller = controller;
    const name = this.name;
    const errorBox = byId('detail-error');
    try {
      const d = await getJson(`/v1/services/${servicePath(name)}`, controller.signal);
      if (name !== this.name) return;
      setText(errorBox, '');
      setText(byId('detail-spec'), d.spec ? JSON.stringify(d.spec, null, 2) : (d.invalid ? `invalid: ${d.invalid}` : 'no spec'));
      const r = d.rollout;
      setText(byId('detail-rollout'), r ? (rolloutText(r) || 'no rollout') : 'no rollout');
      const items = (d.history || []).slice().sort((a, b) => b.version - a.version).map((h) => el('li',
        {data: {version: h.version}},
        el('strong', {text: `version ${h.version}`}), ` · ${fmtTime(h.at)}`, h.cause ? ` · ${h.cause}` : '',
        el('details', null, el('summary', {text: 'spec'}), el('pre', {text: JSON.stringify(h.spec, null, 2)}))));
      if (!items.length) items.push(el('li', {class: 'muted', text: 'no history'}));
      replaceChildren(byId('detail-history'), ...items);
    } catch (err) {
      if (controller.signal.aborted || name !== this.name) return;
      this.fetched = null; // try again on the next change
      setText(errorBox, `spec: ${err && err.message || err}`);
    }
  }
}
