// DOM helpers: every value goes in as text (textContent / createTextNode), never as HTML.

/** Create an element: el('td', {class: 'x', data: {key: 'v'}, attrs: {...}}, child, 'text', ...). */
export function el(tag, opts, ...children) {
  const node = document.createElement(tag);
  if (opts) {
    if (opts.class) node.className = opts.class;
    if (opts.text !== undefined) node.textContent = String(opts.text);
    if (opts.data) for (const [k, v] of Object.entries(opts.data)) node.dataset[k] = String(v);
    if (opts.attrs) for (const [k, v] of Object.entries(opts.attrs)) node.setAttribute(k, String(v));
    if (opts.on) for (const [k, v] of Object.entries(opts.on)) node.addEventListener(k, v);
  }
  append(node, children);
  return node;
}

export function append(node, children) {
  for (const c of children) {
    if (c === null || c === undefined || c === false) continue;
    node.appendChild(typeof c === 'string' || typeof c === 'number' ? document.createTextNode(String(c)) : c);
  }
  return node;
}

/** Replace every child of node with children. */
export function replaceChildren(node, ...children) {
  node.replaceChildren();
  return append(node, children);
}

/** Set text only when it differs (avoids layout work on unchanged cells). */
export function setText(node, text) {
  const s = String(text);
  if (node.textContent !== s) node.textContent = s;
}

export function byId(id) {
  const node = document.getElementById(id);
  if (!node) throw new Error(`#${id} missing from index.html`);
  return node;
}

export function fmtTime(t) {
  if (!t) return '';
  const d = new Date(t * 1000);
  return d.toLocaleString(undefined, {hour12: false});
}

export function fmtAge(t, now = Date.now() / 1000) {
  if (!t) return '';
  let s = Math.max(0, Math.round(now - t));
  if (s < 60) return `${s}s`;
  if (s < 3600) return `${Math.floor(s / 60)}m`;
  if (s < 86400) return `${Math.floor(s / 3600)}h`;
  return `${Math.floor(s / 86400)}d`;
}

/**
 * Make parent's children exactly `nodes`, in order, moving only what is out of place (so a
 * focused link or button that stays keeps its focus, and unchanged rows cost nothing).
 */
export function syncChildren(parent, nodes) {
  const want = new Set(nodes);
  for (let c = parent.firstChild; c;) {
    const next = c.nextSibling;
    if (!want.has(c)) c.remove();
    c = next;
  }
  let cur = parent.firstChild;
  for (const n of nodes) {
    if (cur === n) {
      cur = cur.nextSibling;
    } else {
      parent.insertBefore(n, cur);
    }
  }
}
