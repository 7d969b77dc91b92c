// Server-Sent Events over fetch() + ReadableStream (EventSource cannot send Authorization):
// parses `event`, `id`, `data`, `retry` and comments, reconnects by itself with Last-Event-ID
// after an error or the end of the stream (retry, backing off to 5 s).

/**
 * Incremental SSE parser: feed() text chunks, it calls onEvent({event, id, data}) per message.
 * As in the HTML spec, `id` persists until changed and counts only once its block ends (a blank
 * line); a block with an id and no data calls onId(id) alone. A cut-off block is never counted.
 */
export class SseParser {
  constructor({onEvent, onRetry, onComment, onId}) {
    this.onEvent = onEvent;
    this.onId = onId || (() => {});
    this.idBuffer = null;   // the id field's value, persisting across messages
    this.lastId = null;     // committed at the end of a block
    this.onRetry = onRetry || (() => {});
    this.onComment = onComment || (() => {});
    this.pending = [];      // pieces of the unfinished line (a 1.5 MB snapshot arrives in many chunks)
    this.skipLF = false;    // the previous chunk ended in \r: a leading \n belongs to it
    this.seen = false;      // a line arrived: the server speaks SSE
    this.reset();
  }

  reset() {
    this.event = '';
    this.data = [];
  }

  feed(chunk) {
    let start = 0;
    if (this.skipLF && chunk.startsWith('\n')) start = 1;
    this.skipLF = false;
    const n = chunk.length;
    let i = start;
    while (i < n) {
      const c = chunk.charCodeAt(i);
      if (c === 10 || c === 13) {
        this.pending.push(chunk.slice(start, i));
        const line = this.pending.length === 1 ? this.pending[0] : this.pending.join('');
        this.pending = [];
        this.line(line);
        if (c === 13) {
          if (i + 1 < n) {
            if (chunk.charCodeAt(i + 1) === 10) i += 1;
          } else {
            this.skipLF = true;
          }
        }
        start = i + 1;
      }
      i += 1;
    }
    if (start < n) this.pending.push(chunk.slice(start));
  }

  line(line) {
    this.seen = true;
    if (line === '') {
      const idChanged = this.idBuffer !== this.lastId;
      this.lastId = this.idBuffer;
      if (this.data.length) {
        this.onEvent({event: this.event || 'message', id: this.lastId, data: this.data.join('\n')});
      } else if (idChanged) {
        this.onId(this.lastId);
      }
      this.reset();
      return;
    }
    if (line.charCodeAt(0) === 58) { // ':'
      this.onComment(line.slice(1).trim());
      return;
    }
    const colon = line.indexOf(':');
    const field = colon < 0 ? line : line.slice(0, colon);
    let value = colon < 0 ? '' : line.slice(colon + 1);
    if (value.charCodeAt(0) === 32) value = value.slice(1);
    if (field === 'data') this.data.push(value);
    else if (field === 'event') this.event = value;
    else if (field === 'id') { if (!value.includes('\0')) this.idBuffer = value; }
    else if (field === 'retry') { if (/^\d+$/.test(value)) this.onRetry(Number(value)); }
  }
}

/**
 * A self-reconnecting stream: new EventStream({url, headers: () => ({...}), onMessage, onState}).
 * onState(state, detail) gets 'connecting' | 'live' | 'reconnecting' with a detail string.
 */
export class EventStream {
  constructor({url, headers, onMessage, onState, maxDelay = 5000, idleTimeout = 45000}) {
    this.url = url;
    this.headers = headers;
    this.onMessage = onMessage;
    this.onState = onState;
    this.maxDelay = maxDelay;
    this.idleTimeout = idleTimeout;
    this.retry = 1000;
    this.delay = this.retry;
    this.lastEventId = null;
    this.controller = null;
    this.timer = null;
    this.stopped = true;
  }

  start() {
    this.stopped = false;
    this.connect();
  }

  stop() {
    this.stopped = true;
    clearTimeout(this.timer);
    if (this.controller) this.controller.abort();
  }

  /** Reconnect now (e.g. the token changed), keeping Last-Event-ID. */
  restart() {
    this.stop();
    this.delay = this.retry;
    this.start();
  }

  async connect() {
    clearTimeout(this.timer);
    const controller = new AbortController();
    this.controller = controller;
    let idle = null;
    const touch = () => {
      clearTimeout(idle);
      idle = setTimeout(() => controller.abort(), this.idleTimeout);
    };
    let detail = 'stream ended';
    try {
      const headers = {Accept: 'text/event-stream', ...this.headers()};
      if (this.lastEventId) headers['Last-Event-ID'] = this.lastEventId;
      this.onState('connecting', '');
      touch();
      const resp = await fetch(this.url, {headers, cache: 'no-store', signal: controller.signal});
      if (!resp.ok || !resp.body) {
        let text = '';
        try { text = await resp.text(); } catch (e) { /* the body is only for the message */ }
        detail = `${resp.status}: ${errorText(text) || resp.statusText}`;
      } else {
        const parser = new SseParser({
          onEvent: (msg) => {
            if (msg.id !== null) this.lastEventId = msg.id;
            this.delay = this.retry;
            this.onMessage(msg);
          },
          onId: (id) => { this.lastEventId = id; },
          onRetry: (ms) => { this.retry = ms; this.delay = ms; },
        });
        const reader = resp.body.pipeThrough(new TextDecoderStream()).getReader();
        let live = false;
        for (;;) {
          const {value, done} = await reader.read();
          if (done) break;
          touch();
          parser.feed(value);
          if (!live && parser.seen) {
            live = true;
            this.onState('live', '');
          }
        }
      }
    } catch (err) {
      detail = controller.signal.aborted && !this.stopped ? 'no data for a while' : String(err && err.message || err);
    } finally {
      clearTimeout(idle);
    }
    if (this.stopped || this.controller !== controller) return;
    this.onState('reconnecting', detail);
    const wait = this.delay;
    this.delay = Math.min(this.maxDelay, this.delay * 2);
    this.timer = setTimeout(() => this.connect(), wait);
  }
}

/** The `error` of a JSON error body, else the text itself (one line). */
export function errorText(text) {
  try {
    const j = JSON.parse(text);
    if (j && typeof j.error === 'string') return j.error;
  } catch (e) { /* not JSON */ }
  return String(text || '').trim().split('\n')[0].slice(0, 300);
}
