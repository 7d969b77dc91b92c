// The in-memory model of the cluster, kept in maps keyed by service, node and instance key.
// applySnapshot() replaces it; applyChange() upserts/removes by key. Both return a Delta that
// says which parts changed, so the views re-render only those.

export const EVENTS_MAX = 500;

export class Delta {
  constructor() {
    this.snapshot = false;
    this.services = new Set();      // service names whose row changed (or were removed)
    this.serviceSet = false;        // a service was added or removed
    this.nodes = new Set();         // node ids whose card changed (record, or its instances)
    this.nodeSet = false;           // a node was added or removed
    this.instServices = new Set();  // services whose instances changed
    this.instKeys = new Set();      // instance keys upserted or removed
    this.events = [];               // new events, oldest first
    this.revision = 0;
  }

  merge(other) {
    this.snapshot = this.snapshot || other.snapshot;
    this.serviceSet = this.serviceSet || other.serviceSet;
    this.nodeSet = this.nodeSet || other.nodeSet;
    for (const s of other.services) this.services.add(s);
    for (const n of other.nodes) this.nodes.add(n);
    for (const s of other.instServices) this.instServices.add(s);
    for (const k of other.instKeys) this.instKeys.add(k);
    for (const e of other.events) this.events.push(e);
    if (this.events.length > EVENTS_MAX) this.events.splice(0, this.events.length - EVENTS_MAX);
    this.revision = Math.max(this.revision, other.revision);
    return this;
  }

  get empty() {
    return !this.snapshot && !this.services.size && !this.nodes.size && !this.instKeys.size && !this.events.length
      && !this.serviceSet && !this.nodeSet;
  }
}

function bucket(map, key) {
  let m = map.get(key);
  if (!m) { m = new Map(); map.set(key, m); }
  return m;
}

export class Model {
  constructor() {
    this.clear();
  }

  clear() {
    this.revision = 0;
    this.node = '';
    this.services = new Map();    // name -> Svc
    this.nodes = new Map();       // id -> Node
    this.instances = new Map();   // key -> Inst
    this.byService = new Map();   // service -> Map(key -> Inst)
    this.byNode = new Map();      // node -> Map(key -> Inst)
    this.events = [];             // oldest first, at most EVENTS_MAX
    this.loaded = false;
  }

  applySnapshot(snap) {
    this.clear();
    this.loaded = true;
    this.revision = Number(snap.revision) || 0;
    this.node = String(snap.node || '');
    for (const s of snap.services || []) this.services.set(s.service, s);
    for (const n of snap.nodes || []) this.nodes.set(n.node, n);
    for (const i of snap.instances || []) this.putInstance(i, null);
    this.events = (snap.events || []).slice(-EVENTS_MAX);
    const d = new Delta();
    d.snapshot = true;
    d.revision = this.revision;
    return d;
  }

  applyChange(ch) {
    const d = new Delta();
    d.revision = this.revision = Math.max(this.revision, Number(ch.revision) || 0);
    for (const s of ch.services || []) {
      if (!this.services.has(s.service)) d.serviceSet = true;
      this.services.set(s.service, s);
      d.services.add(s.service);
    }
    for (const name of ch.services_removed || []) {
      if (this.services.delete(name)) d.serviceSet = true;
      d.services.add(name);
    }
    for (const n of ch.nodes || []) {
      if (!this.nodes.has(n.node)) d.nodeSet = true;
      this.nodes.set(n.node, n);
      d.nodes.add(n.node);
    }
    for (const id of ch.nodes_removed || []) {
      if (this.nodes.delete(id)) d.nodeSet = true;
      d.nodes.add(id);
    }
    for (const i of ch.instances || []) this.putInstance(i, d);
    for (const key of ch.instances_removed || []) this.dropInstance(key, d);
    for (const e of ch.events || []) {
      this.events.push(e);
      d.events.push(e);
    }
    if (this.events.length > EVENTS_MAX) this.events.splice(0, this.events.length - EVENTS_MAX);
    return d;
  }

  putInstance(inst, d) {
    const old = this.instances.get(inst.key);
    if (old) {
      if (old.node !== inst.node) this.unindex(old, d);
      if (old.service !== inst.service) {
        const m = this.byService.get(old.service);
        if (m) m.delete(old.key);
      }
    }
    this.instances.set(inst.key, inst);
    bucket(this.byService, inst.service).set(inst.key, inst);
    bucket(this.byNode, inst.node).set(inst.key, inst);
    if (d) {
      d.instKeys.add(inst.key);
      d.instServices.add(inst.service);
      d.nodes.add(inst.node);
    }
  }

  dropInstance(key, d) {
    const old = this.instances.get(key);
    d.instKeys.add(key);
    if (!old) return;
    this.instances.delete(key);
    this.unindex(old, d);
    const m = this.byService.get(old.service);
    if (m) {
      m.delete(key);
      if (!m.size) this.byService.delete(old.service);
    }
    d.instServices.add(old.service);
  }

  unindex(old, d) {
    const m = this.byNode.get(old.node);
    if (m) {
      m.delete(old.key);
      if (!m.size) this.byNode.delete(old.node);
    }
    if (d) d.nodes.add(old.node);
  }

  /** Instances of a service, sorted by number. */
  serviceInstances(name) {
    const m = this.byService.get(name);
    if (!m) return [];
    return Array.from(m.values()).sort((a, b) => a.number - b.number);
  }

  /** Instances on a node, sorted by (service, number). */
  nodeInstances(id) {
    const m = this.byNode.get(id);
    if (!m) return [];
    return Array.from(m.values()).sort(byServiceNumber);
  }

  /** Node ids to draw: every node record, plus nodes that only instances name (lease gone). */
  nodeIds() {
    const ids = new Set(this.nodes.keys());
    for (const id of this.byNode.keys()) ids.add(id);
    return Array.from(ids).sort();
  }
}

export function byServiceNumber(a, b) {
  if (a.service !== b.service) return a.service < b.service ? -1 : 1;
  return a.number - b.number;
}
