// Topology view: one card per node (keyed by node id) with a cell per instance, or counts per
// state (.summary) for a node with more than CELL_LIMIT instances. Only cards whose node or
// instances changed are touched, and inside a card only the cells whose instance changed.
import {byId, el, setText, replaceChildren, syncChildren, fmtTime} from './dom.js';
import {actions} from './api.js';
import {INSTANCE_STATES, instanceSymbol, healthSymbol, nodeSymbol, label} from './states.js';

export const CELL_LIMIT = 200;
// Beyond this many instances in the cluster, a card draws its cells only once it scrolls near
// the viewport (counts per state until then): creating 10 000 cells at once costs ~0.5 s.
export const EAGER_LIMIT = 2000;

function legendText() {
  const st = INSTANCE_STATES.map((s) => label(instanceSymbol(s), s)).join('  ');
  const h = ['healthy', 'unhealthy', 'starting'].map((s) => label(healthSymbol(s), s)).join('  ');
  // (a cell reads e.g. "#3 ✓ running ♥"; its tooltip has the address, ports and error)
  return `States: ${st}.  Health: ${h}.  Nodes beyond ${CELL_LIMIT} instances show counts per state.`;
}

function instanceTitle(i) {
  const ports = Object.entries(i.ports || {}).map(([k, v]) => `${k}→${v}`).join(', ');
  return [`${i.service} #${i.number}`, `state ${i.state}`, i.health ? `health ${i.health}` : '',
    i.address ? `address ${i.address}` : '', ports ? `ports ${ports}` : '', i.error ? `error: ${i.error}` : '']
    .filter(Boolean).join('\n');
}

export class TopologyView {
  constructor(model) {
    this.model = model;
    this.root = byId('topology');
    this.cards = new Map();     // node id -> card element
    this.expanded = new Set();  // nodes beyond CELL_LIMIT the user asked to see as cells
    this.empty = el('p', {class: 'muted', text: 'No nodes.'});
    setText(byId('topology-legend'), legendText());
    this.root.addEventListener('click', (ev) => this.onClick(ev));
    this.io = new IntersectionObserver((entries) => this.onIntersect(entries), {rootMargin: '200px 0px'});
  }

  onIntersect(entries) {
    for (const e of entries) {
      const card = e.target;
      const was = card.visible_;
      card.visible_ = e.isIntersecting;
      if (e.isIntersecting && !was && card.mode_ === 'pending') this.syncNode(card.dataset.node, true);
    }
  }

  lazy() {
    return this.model.instances.size > EAGER_LIMIT;
  }

  onClick(ev) {
    const b = ev.target.closest('button');
    if (!b || !this.root.contains(b)) return;
    const node = b.dataset.node;
    if (b.classList.contains('drain')) actions.drain(node);
    else if (b.classList.contains('undrain')) actions.undrain(node);
    else if (b.classList.contains('expand')) {
      if (this.expanded.has(node)) this.expanded.delete(node);
      else this.expanded.add(node);
      this.syncNode(node, true);
    }
  }

  renderAll() {
    const ids = this.model.nodeIds();
    const keep = new Map();
    for (const id of ids) {
      let card = this.cards.get(id);
      if (!card) card = this.makeCard(id);
      keep.set(id, card);
    }
    for (const [id, card] of this.cards) if (!keep.has(id)) this.io.unobserve(card);
    this.cards = keep;
    syncChildren(this.root, ids.length ? Array.from(keep.values()) : [this.empty]);
    for (const id of ids) this.syncNode(id, true);
  }

  update(delta) {
    if (delta.snapshot || delta.nodeSet) return this.renderAll();
    for (const id of delta.nodes) {
      if (!this.cards.has(id) || (!this.model.nodes.has(id) && !this.model.byNode.has(id))) return this.renderAll();
    }
    for (const id of delta.nodes) this.syncNode(id, false);
    return undefined;
  }

  makeCard(id) {
    const card = el('section', {class: 'node', data: {node: id}, attrs: {'aria-label': `node ${id}`}});
    const f = {};
    const field = (name, title) => {
      f[name] = el('dd', {class: name});
      return [el('dt', {text: title}), f[name]];
    };
    f.state = el('span', {class: 'node-state'});
    f.runtime = el('span', {class: 'runtime'});
    card.appendChild(el('header', null, el('h3', {text: id}), f.state, f.runtime));
    card.appendChild(el('dl', {class: 'node-info'},
      ...field('address', 'address'), ...field('capacity', 'capacity'), ...field('count', 'instances'),
      ...field('lease', 'lease'), ...field('dns', 'DNS'), ...field('http', 'HTTP'), ...field('api', 'API'),
      ...field('age', 'started')));
    card.appendChild(el('div', {class: 'node-actions'},
      el('button', {class: 'drain', text: 'Drain', data: {node: id}, attrs: {type: 'button', 'aria-label': `drain node ${id}`}}),
      el('button', {class: 'undrain', text: 'Undrain', data: {node: id}, attrs: {type: 'button', 'aria-label': `undrain node ${id}`}})));
    f.body = el('div', {class: 'node-body'});
    card.appendChild(f.body);
    card.f_ = f;
    card.cells_ = new Map(); // key -> cell
    card.mode_ = '';
    card.visible_ = false;
    this.io.observe(card);
    return card;
  }

  syncNode(id, full) {
    const card = this.cards.get(id);
    if (!card) return;
    const f = card.f_;
    const n = this.model.nodes.get(id);
    const insts = this.model.byNode.get(id) || new Map();
    const state = n ? n.state : 'gone';
    if (card.dataset.state !== state) card.dataset.state = state;
    setText(f.state, n ? label(nodeSymbol(n.state), n.state) : '✗ no node record');
    const hollow = n && n.runtime === 'hollow';
    card.classList.toggle('hollow', Boolean(hollow));
    card.dataset.runtime = n ? n.runtime : '';
    setText(f.runtime, n ? (hollow ? '◇ hollow (no containers)' : n.runtime) : '');
    setText(f.address, n ? n.address : '');
    setText(f.capacity, n ? (n.capacity ? String(n.capacity) : 'unlimited') : '');
    setText(f.count, n && n.instances !== insts.size ? `${insts.size} (record: ${n.instances})` : String(insts.size));
    setText(f.lease, n ? label(n.lease === 'alive' ? '✓' : '✗', n.lease || 'unknown') : '✗ gone');
    setText(f.dns, n ? n.dns : '');
    setText(f.http, n ? n.http : '');
    setText(f.api, n ? n.api : '');
    setText(f.age, n ? fmtTime(n.started_at) : '');

    const summary = insts.size > CELL_LIMIT && !this.expanded.has(id);
    if (summary) {
      this.renderSummary(card, id, insts, false);
    } else if (!card.visible_ && card.mode_ !== 'cells' && this.lazy()) {
      this.renderSummary(card, id, insts, true);
    } else {
      this.renderCells(card, id, insts, full);
    }
  }

  /** Counts per state: .summary (beyond CELL_LIMIT), or .pending until the card is near the viewport. */
  renderSummary(card, id, insts, pending) {
    const counts = new Map();
    let unhealthy = 0;
    for (const i of insts.values()) {
      counts.set(i.state, (counts.get(i.state) || 0) + 1);
      if (i.health === 'unhealthy') unhealthy++;
    }
    const items = [];
    for (const s of [...INSTANCE_STATES, ...Array.from(counts.keys()).filter((k) => !INSTANCE_STATES.includes(k))]) {
      const c = counts.get(s);
      if (!c) continue;
      items.push(el('li', {class: `st-${s}`, data: {state: s, count: c}, text: `${label(instanceSymbol(s), s)} ${c}`}));
    }
    if (unhealthy) {
      items.push(el('li', {class: 'h-unhealthy', data: {health: 'unhealthy', count: unhealthy},
        text: `${label(healthSymbol('unhealthy'), 'unhealthy')} ${unhealthy}`}));
    }
    card.cells_.clear();
    card.mode_ = pending ? 'pending' : 'summary';
    if (!card.summary_) {
      card.summary_ = el('ul', {attrs: {'aria-label': `instances on ${id} by state`}});
      card.expand_ = el('button', {class: 'expand', data: {node: id}, attrs: {type: 'button', 'aria-expanded': 'false'}});
    }
    card.summary_.className = pending ? 'pending' : 'summary';
    replaceChildren(card.summary_, ...items);
    setText(card.expand_, `Show all ${insts.size.toLocaleString()} instances`);
    syncChildren(card.f_.body, pending ? [card.summary_] : [card.summary_, card.expand_]);
  }

  renderCells(card, id, insts, full) {
    const cells = card.cells_;
    let membership = full || card.mode_ !== 'cells' || cells.size !== insts.size;
    for (const [key, inst] of insts) {
      const cell = cells.get(key);
      if (!cell) {
        membership = true;
        cells.set(key, this.makeCell(inst));
      } else if (cell.inst_ !== inst) {
        this.fillCell(cell, inst);
      }
    }
    if (!membership) return;
    for (const key of Array.from(cells.keys())) if (!insts.has(key)) cells.delete(key);
    if (!card.grid_) {
      card.grid_ = el('div', {class: 'cells', attrs: {'aria-label': `instances on ${id}`}});
      card.none_ = el('p', {class: 'muted', text: 'no instances'});
      card.collapse_ = el('button', {class: 'expand', data: {node: id}, attrs: {type: 'button', 'aria-expanded': 'true'},
        text: 'Show counts per state'});
    }
    // cells grouped by service (the service named once per group), in (service, number) order
    const groups = card.groups_ || (card.groups_ = new Map());
    const order = [];
    let cur = null;
    let members = [];
    const close = () => { if (cur) syncChildren(cur.cells_, members); };
    for (const inst of this.model.nodeInstances(id)) {
      if (!cur || cur.dataset.service !== inst.service) {
        close();
        cur = groups.get(inst.service);
        if (!cur) {
          cur = el('div', {class: 'svc-group', data: {service: inst.service}, attrs: {role: 'group', 'aria-label': `${inst.service} on ${id}`}},
            el('a', {class: 'svc-name', text: inst.service, attrs: {href: `#/service/${inst.service}`}}));
          cur.cells_ = el('div', {class: 'svc-cells'});
          cur.appendChild(cur.cells_);
          groups.set(inst.service, cur);
        }
        order.push(cur);
        members = [];
      }
      members.push(cells.get(inst.key));
    }
    close();
    for (const [name, g] of Array.from(groups)) if (!order.includes(g)) groups.delete(name);
    syncChildren(card.grid_, order);
    const parts = [card.grid_];
    if (!insts.size) parts.push(card.none_);
    if (this.expanded.has(id)) parts.push(card.collapse_);
    card.mode_ = 'cells';
    syncChildren(card.f_.body, parts);
  }

  makeCell(inst) {
    const cell = el('div', {class: 'instance'});
    cell.dataset.key = inst.key;
    this.fillCell(cell, inst);
    return cell;
  }

  /** One text node ("#3 ✓ running ♥") and, for an error, a .error span: 10 000 cells stay cheap. */
  fillCell(cell, inst) {
    cell.inst_ = inst;
    if (cell.dataset.state !== inst.state) {
      cell.dataset.state = inst.state;
      cell.className = `instance st-${inst.state}`;
    }
    if ((cell.dataset.health || '') !== (inst.health || '')) cell.dataset.health = inst.health || '';
    // healthy is the usual case: its symbol alone (the legend names it); other health in words
    const health = !inst.health ? '' : inst.health === 'healthy' ? ` ${healthSymbol('healthy')}`
      : ` ${label(healthSymbol(inst.health), inst.health)}`;
    const text = `#${inst.number} ${label(instanceSymbol(inst.state), inst.state)}${health}`;
    if (inst.error) {
      replaceChildren(cell, text, el('span', {class: 'error', text: ` ${inst.error}`}));
    } else if (cell.textContent !== text) {
      cell.textContent = text;
    }
    cell.title = instanceTitle(inst);
  }
}
