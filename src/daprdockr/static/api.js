// Calls to the agent API. The token (#token, kept in sessionStorage) goes in an
// Authorization: Bearer header, never in a cookie; with no token no header is sent.
import {byId, setText} from './dom.js';
import {errorText} from './sse.js';

const TOKEN_KEY = 'daprdockr.api-token';

export function getToken() {
  try { return sessionStorage.getItem(TOKEN_KEY) || ''; } catch (e) { return ''; }
}

export function setToken(value) {
  try {
    if (value) sessionStorage.setItem(TOKEN_KEY, value);
    else sessionStorage.removeItem(TOKEN_KEY);
  } catch (e) { /* storage disabled: the token lives for this page only */ }
}

export function authHeaders() {
  const t = getToken() || (document.getElementById('token') || {}).value || '';
  return t ? {Authorization: `Bearer ${t}`} : {};
}

/** "web.myapp" -> "myapp/web" (the API's <group>/<service>). */
export function servicePath(name) {
  const dot = name.indexOf('.');
  const service = dot < 0 ? name : name.slice(0, dot);
  const group = dot < 0 ? '' : name.slice(dot + 1);
  return `${encodeURIComponent(group)}/${encodeURIComponent(service)}`;
}

export async function getJson(url, signal) {
  const resp = await fetch(url, {headers: {Accept: 'application/json', ...authHeaders()}, cache: 'no-store', signal});
  const text = await resp.text();
  if (!resp.ok) throw new Error(`${resp.status}: ${errorText(text) || resp.statusText}`);
  return JSON.parse(text);
}

let actionSeq = 0;

/** POST a JSON action; #action-status shows "done text" or "<status>: <error>". */
export async function postAction(url, body, describe) {
  const status = byId('action-status');
  const seq = ++actionSeq;
  status.dataset.state = 'pending';
  setText(status, `… POST ${url}`);
  let state = 'error';
  let text;
  try {
    const resp = await fetch(url, {
      method: 'POST',
      headers: {'Content-Type': 'application/json', Accept: 'application/json', ...authHeaders()},
      body: JSON.stringify(body),
      cache: 'no-store',
    });
    const raw = await resp.text();
    if (resp.ok) {
      let json = {};
      try { json = JSON.parse(raw); } catch (e) { /* an empty body is fine */ }
      state = 'ok';
      text = `✓ ${describe(json)}`;
    } else {
      text = `${resp.status}: ${errorText(raw) || resp.statusText}`;
    }
    status.dataset.code = String(resp.status);
  } catch (err) {
    status.dataset.code = '0';
    text = `network error: ${err && err.message || err}`;
  }
  if (seq !== actionSeq) return;
  status.dataset.state = state;
  setText(status, text);
}

export const actions = {
  scale: (name, n) => postAction(`/v1/services/${servicePath(name)}/scale`, {instances: n},
    (j) => `scaled ${name} to ${j.instances ?? n}`),
  rollback: (name, to) => postAction(`/v1/services/${servicePath(name)}/rollback`, to ? {to} : {},
    (j) => `rolled ${name} back${j.version ? ` to version ${j.version}` : ''}`),
  restart: (name, n) => postAction(`/v1/services/${servicePath(name)}/instances/${n}/restart`, {},
    () => `restarted ${name} #${n}`),
  drain: (node) => postAction(`/v1/nodes/${encodeURIComponent(node)}/drain`, {}, () => `draining ${node}`),
  undrain: (node) => postAction(`/v1/nodes/${encodeURIComponent(node)}/undrain`, {}, () => `undrained ${node}`),
};
