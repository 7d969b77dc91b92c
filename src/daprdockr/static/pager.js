// A window of PAGE rows over a long list, with prev/next buttons and a "1–100 of 1 234" label.
import {setText} from './dom.js';

export const PAGE = 100;

export class Pager {
  constructor({prev, next, range, onChange}) {
    this.start = 0;
    this.total = 0;
    this.prev = prev;
    this.next = next;
    this.range = range;
    prev.addEventListener('click', () => this.move(-PAGE, onChange));
    next.addEventListener('click', () => this.move(PAGE, onChange));
  }

  move(by, onChange) {
    const start = Math.max(0, Math.min(this.lastStart(), this.start + by));
    if (start !== this.start) {
      this.start = start;
      onChange();
    }
  }

  lastStart() {
    return Math.max(0, Math.floor((this.total - 1) / PAGE) * PAGE);
  }

  /** Clamp to total and return [start, end) of the window. */
  window(total) {
    this.total = total;
    this.start = Math.min(this.start, this.lastStart());
    const end = Math.min(total, this.start + PAGE);
    this.prev.disabled = this.start === 0;
    this.next.disabled = end >= total;
    const fmt = (n) => n.toLocaleString();
    setText(this.range, total ? `${fmt(this.start + 1)}–${fmt(end)} of ${fmt(total)}` : '0 of 0');
    return [this.start, end];
  }
}
