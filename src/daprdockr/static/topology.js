// Topology view: one card per node (keyed by node id) with a cell per instance, or counts per
// state (.summary) for a node with more than CELL_LIMIT instances. Only cards whose node or
// instances changed are touched, and inside a card only the cells whose instance changed.
import {byId, el, setText, replaceChildren, syncChildren, fmtTime} from './dom.js';
import {actions} from './api.js';
import {INSTANCE_STATES, instanceSymbol, healthSymbol, nodeSymbol, label} from './states.js';

export const CELL_LIMIT = 200;

function legendText() {
  const st = INSTANCE_STATES.map((s) => label(instanceSymbol(s), s)).join('  ');
  const h = ['healthy', 'unhealthy', 'starting'].map((s) => label(healthSymbol(s), s)).join('  ');
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
      this.renderSummary(card, id, insts);
    } else {
      this.renderCells(card, id, insts, full);
    }
  }

  renderSummary(card, id, insts) {
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
    card.mode_ = 'summary';
    if (!card.summary_) {
      card.summary_ = el('ul', {class: 'summary', attrs: {'aria-label': `instances on ${id} by state`}});
      card.expand_ = el('button', {class: 'expand', data: {node: id}, attrs: {type: 'button', 'aria-expanded': 'false'}});
    }
    replaceChildren(card.summary_, ...items);
    setText(card.expand_, `Show all ${insts.size.toLocaleString()} instances`);
    syncChildren(card.f_.body, [card.summary_, card.expand_]);
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
      card.grid_ = el('div', {class: 'cells', attrs: {role: 'list', 'aria-label': `instances on ${id}`}});
      card.none_ = el('p', {class: 'muted', text: 'no instances'});
      card.collapse_ = el('button', {class: 'expand', data: {node: id}, attrs: {type: 'button', 'aria-expanded': 'true'},
        text: 'Show counts per state'});
    }
    syncChildren(card.grid_, this.model.nodeInstances(id).map((i) => cells.get(i.key)));
    const parts = [card.grid_];
    if (!insts.size) parts.push(card.none_);
    if (this.expanded.has(id)) parts.push(card.collapse_);
    card.mode_ = 'cells';
    syncChildren(card.f_.body, parts);
  }

  makeCell(inst) {
    const cell = el('div', {class: 'instance', attrs: {role: 'listitem'}});
    cell.dataset.key = inst.key;
    cell.f_ = {
      svc: el('span', {class: 'svc'}),
      num: el('span', {class: 'num'}),
      sym: el('span', {class: 'sym', attrs: {'aria-hidden': 'true'}}),
      word: el('span', {class: 'word'}),
      health: el('span', {class: 'health'}),
      error: el('span', {class: 'error'}),
    };
    const f = cell.f_;
    cell.append(f.svc, ' ', f.num, ' ', f.sym, ' ', f.word, f.health, f.error);
    this.fillCell(cell, inst);
    return cell;
  }

  fillCell(cell, inst) {
    cell.inst_ = inst;
    const f = cell.f_;
    if (cell.dataset.state !== inst.state) {
      cell.dataset.state = inst.state;
      cell.className = `instance st-${inst.state}`;
    }
    cell.dataset.health = inst.health || '';
    setText(f.svc, inst.service);
    setText(f.num, `#${inst.number}`);
    setText(f.sym, instanceSymbol(inst.state));
    setText(f.word, inst.state);
    setText(f.health, inst.health ? ` ${label(healthSymbol(inst.health), inst.health)}` : '');
    setText(f.error, inst.error ? ` ${inst.error}` : '');
    cell.title = instanceTitle(inst);
  }
}
