// Logs view: follows GET /v1/logs/<g>/<s>?follow=1&tail=200 (the merged log of every instance,
// lines "[n] text"), or one instance's log, with fetch() + ReadableStream. Lines go in as text.
import {byId, el, setText, replaceChildren} from './dom.js';
import {authHeaders, servicePath} from './api.js';
import {errorText} from './sse.js';

const MAX_LINES = 5000;
const TAIL = 200;

export class LogsView {
  constructor(model) {
    this.model = model;
    this.out = byId('logs-output');
    this.follow = byId('logs-follow');
    this.serviceSel = byId('logs-service');
    this.instanceSel = byId('logs-instance');
    this.status = byId('logs-status');
    this.service = '';
    this.number = '';
    this.controller = null;
    this.note = '';
    this.timer = null;
    this.pending = [];
    this.frame = 0;
    this.lines = 0;
    this.numbersSig = '';
    this.serviceSig = '';
    this.serviceSel.addEventListener('change', () => { location.hash = `#/logs/${this.serviceSel.value}`; });
    this.instanceSel.addEventListener('change', () => {
      const n = this.instanceSel.value;
      location.hash = `#/logs/${this.service}${n ? `/${n}` : ''}`;
    });
    this.follow.addEventListener('change', () => {
      if (this.follow.checked) this.start();
      else this.stopStream('paused (follow off)');
    });
    byId('logs-clear').addEventListener('click', () => { replaceChildren(this.out); this.lines = 0; });
  }

  /** Show the view for service (and optionally one instance number). */
  show(service, number) {
    if (!service) service = this.service || this.firstService();
    const changed = service !== this.service || (number || '') !== this.number || !this.controller;
    this.service = service;
    this.number = number || '';
    this.renderSelectors();
    if (changed && this.service) this.start();
    if (!this.service) setText(this.status, this.model.loaded ? 'no services' : 'loading…');
  }

  hide() {
    this.stopStream('');
  }

  firstService() {
    const names = Array.from(this.model.services.keys()).sort();
    return names[0] || '';
  }

  renderAll() {
    if (!this.service) return this.show('', '');
    this.renderSelectors();
    return undefined;
  }

  update(delta) {
    if (delta.snapshot || delta.serviceSet || delta.instServices.has(this.service)) this.renderAll();
  }

  renderSelectors() {
    const names = Array.from(this.model.services.keys()).sort();
    if (this.service && !this.model.services.has(this.service)) names.unshift(this.service);
    const sig = names.join('\n');
    if (sig !== this.serviceSig) {
      this.serviceSig = sig;
      replaceChildren(this.serviceSel, ...names.map((n) => el('option', {text: n, attrs: {value: n}})));
    }
    this.serviceSel.value = this.service;
    const numbers = this.model.serviceInstances(this.service).map((i) => String(i.number));
    if (this.number && !numbers.includes(this.number)) numbers.push(this.number);
    const nsig = `${this.service}|${numbers.join(',')}`;
    if (nsig !== this.numbersSig) {
      this.numbersSig = nsig;
      replaceChildren(this.instanceSel, el('option', {text: 'all (merged)', attrs: {value: ''}}),
        ...numbers.map((n) => el('option', {text: `#${n}`, attrs: {value: n}})));
    }
    this.instanceSel.value = this.number;
  }

  stopStream(text) {
    clearTimeout(this.timer);
    if (this.controller) this.controller.abort();
    this.controller = null;
    if (text !== undefined) setText(this.status, text);
  }

  start(tail = TAIL, clear = true) {
    this.stopStream();
    if (clear) { replaceChildren(this.out); this.lines = 0; this.pending = []; }
    if (!this.service) return;
    const follow = this.follow.checked ? 1 : 0;
    const base = `/v1/logs/${servicePath(this.service)}`;
    if (this.number) this.read(`${base}/${this.number}?tail=${tail}&follow=${follow}`, `[${this.number}] `, null, base, tail);
    else this.read(`${base}?tail=${tail}&follow=${follow}`, '', null, base, tail);
  }

  /** Stream url into the output; prefix is added to each line, keep filters lines ("[n] "). */
  async read(url, prefix, keep, base, tail) {
    const controller = new AbortController();
    this.controller = controller;
    if (!keep) this.note = '';
    const what = `${this.service}${this.number ? ` #${this.number}` : ' (every instance)'}${this.note}`;
    setText(this.status, `loading ${what}…`);
    let ended = 'log stream ended';
    try {
      const resp = await fetch(url, {headers: {Accept: 'text/plain', ...authHeaders()}, cache: 'no-store',
        signal: controller.signal});
      if (resp.status === 409 && this.number && !keep) {
        // another node runs it: show it from the merged log (which fetches it from its owner)
        const text = await resp.text();
        if (this.controller !== controller) return;
        const follow = this.follow.checked ? 1 : 0;
        this.note = ` (${errorText(text)}: fetched through this agent)`;
        this.read(`${base}?instance=${this.number}&tail=${tail}&follow=${follow}`, '', `[${this.number}] `, base, tail);
        return;
      }
      if (!resp.ok || !resp.body) {
        const text = await resp.text();
        ended = `${resp.status}: ${errorText(text) || resp.statusText}`;
        this.pushLine(`[daprdockr] ${ended}`);
        return;
      }
      setText(this.status, this.follow.checked ? `following ${what}` : `last ${tail} lines of ${what}`);
      const reader = resp.body.pipeThrough(new TextDecoderStream()).getReader();
      let rest = '';
      for (;;) {
        const {value, done} = await reader.read();
        if (done) break;
        const parts = (rest + value).split('\n');
        rest = parts.pop();
        for (const line of parts) if (!keep || line.startsWith(keep)) this.pushLine(prefix + line);
      }
      if (rest && (!keep || rest.startsWith(keep))) this.pushLine(prefix + rest);
    } catch (err) {
      if (controller.signal.aborted) return;
      ended = `log stream error: ${err && err.message || err}`;
    }
    if (this.controller !== controller) return;
    this.controller = null;
    const retry = ended === 'log stream ended' || ended.startsWith('log stream error');
    if (!this.follow.checked && ended === 'log stream ended') {
      setText(this.status, `last ${tail} lines of ${what} (follow off)`);
    } else if (this.follow.checked && retry) {
      setText(this.status, `${ended}; reconnecting…`);
      this.timer = setTimeout(() => { if (this.follow.checked) this.start(0, false); }, 2000);
    } else {
      setText(this.status, ended);
    }
  }

  pushLine(line) {
    this.pending.push(line);
    if (this.pending.length > 2 * MAX_LINES) this.pending.splice(0, this.pending.length - MAX_LINES);
    if (!this.frame) this.frame = requestAnimationFrame(() => this.flush());
  }

  flush() {
    this.frame = 0;
    const lines = this.pending;
    this.pending = [];
    if (!lines.length) return;
    const atBottom = this.out.scrollHeight - this.out.scrollTop - this.out.clientHeight < 40;
    const frag = document.createDocumentFragment();
    for (const l of lines.slice(-MAX_LINES)) frag.appendChild(document.createTextNode(`${l}\n`));
    this.out.appendChild(frag);
    this.lines += Math.min(lines.length, MAX_LINES);
    while (this.lines > MAX_LINES && this.out.firstChild) {
      this.out.firstChild.remove();
      this.lines--;
    }
    if (this.follow.checked && atBottom) this.out.scrollTop = this.out.scrollHeight;
  }
}
