// Events view: the newest events first, at most 500, new ones added without redrawing the rest.
import {byId, el, setText, replaceChildren, fmtTime} from './dom.js';
import {eventSymbol, label} from './states.js';
import {EVENTS_MAX} from './model.js';

const BAD = new Set(['failed', 'node-left', 'deleted']);
const WARN = new Set(['moved', 'rollback', 'drain', 'paused', 'stopped']);

export function eventItem(e) {
  const who = e.service ? `${e.service}${e.instance ? ` #${e.instance}` : ''}` : '';
  const tone = BAD.has(e.kind) ? 'bad' : WARN.has(e.kind) ? 'warn' : 'good';
  const li = el('li', {class: `event ${tone}`, data: {kind: e.kind, seq: e.seq}},
    el('time', {text: fmtTime(e.at), attrs: {datetime: new Date((e.at || 0) * 1000).toISOString()}}),
    ' ',
    el('span', {class: 'kind', text: label(eventSymbol(e.kind), e.kind)}),
    who ? ' ' : '', who ? (e.service ? el('a', {class: 'who', text: who, attrs: {href: `#/service/${e.service}`}}) : '') : '',
    e.node ? ' ' : '', e.node ? el('span', {class: 'node', text: `on ${e.node}`}) : '',
    e.text ? ' ' : '', e.text ? el('span', {class: 'text', text: e.text}) : '',
    e.error ? ' ' : '', e.error ? el('span', {class: 'error', text: e.error}) : '');
  li.search_ = `${e.kind} ${who} ${e.node} ${e.text} ${e.error}`.toLowerCase();
  return li;
}

export class EventsView {
  constructor(model) {
    this.model = model;
    this.list = byId('events');
    this.filter = '';
    const input = byId('events-filter');
    input.addEventListener('input', () => {
      this.filter = input.value.trim().toLowerCase();
      this.renderAll();
    });
  }

  matches(li) {
    return !this.filter || li.search_.includes(this.filter);
  }

  renderAll() {
    const items = [];
    const evs = this.model.events;
    for (let i = evs.length - 1; i >= 0; i--) {
      const li = eventItem(evs[i]);
      if (this.matches(li)) items.push(li);
    }
    replaceChildren(this.list, ...items);
    this.count();
  }

  update(delta) {
    if (delta.snapshot) return this.renderAll();
    if (!delta.events.length) return undefined;
    const frag = document.createDocumentFragment();
    for (let i = delta.events.length - 1; i >= 0; i--) {
      const li = eventItem(delta.events[i]);
      if (this.matches(li)) frag.appendChild(li);
    }
    this.list.insertBefore(frag, this.list.firstChild);
    while (this.list.childElementCount > EVENTS_MAX) this.list.lastElementChild.remove();
    this.count();
    return undefined;
  }

  count() {
    const shown = this.list.childElementCount;
    setText(byId('events-count'), `${shown} of the last ${this.model.events.length} events (newest first, at most ${EVENTS_MAX})`);
  }
}
