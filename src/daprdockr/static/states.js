// Each state has a symbol and a word besides its colour (colour-blind safe).

const INSTANCE = {
  claimed: '○', starting: '◔', running: '✓', failed: '✗', stopping: '↓', paused: '‖',
};
const HEALTH = {starting: '◔', healthy: '♥', unhealthy: '⚠'};
const NODE = {ready: '✓', draining: '↓', drained: '○'};
const STATUS = {ok: '✓', deleted: '–', invalid: '⚠'};
const ROLLOUT = {rolling: '↻', complete: '✓', paused: '‖', 'rolled-back': '↶'};
const EVENT = {
  claimed: '○', started: '✓', failed: '✗', stopped: '↓', moved: '→', scaled: '↕', updated: '✎',
  deleted: '–', created: '+', rollback: '↶', paused: '‖', drain: '↓', undrain: '↑',
  'node-joined': '+', 'node-left': '–',
};

function sym(table, word) {
  return table[word] || '?';
}

export const INSTANCE_STATES = Object.keys(INSTANCE);
export const instanceSymbol = (s) => sym(INSTANCE, s);
export const healthSymbol = (h) => sym(HEALTH, h);
export const nodeSymbol = (s) => sym(NODE, s);
export const statusSymbol = (s) => sym(STATUS, s);
export const rolloutSymbol = (s) => sym(ROLLOUT, s);
export const eventSymbol = (k) => sym(EVENT, k);

/** "✓ running" */
export const label = (symbol, word) => `${symbol} ${word}`;
