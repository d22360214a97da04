// Switchyard browser client (PROTOCOL v1). One ES module, no dependencies,
// no build step. Reads one sequenced event log over Server-Sent Events, long
// polling or WebSocket with a single cursor (a transport switch loses and
// repeats nothing), reconnects with backoff, refreshes tokens, publishes
// through an offline outbox, sends presence/viewing/typing, edits plain
// text together with others through an operational-transformation client,
// and keeps the user's inbox: notifications and conversations.
//
// Sections: 1 helpers and errors, 2 text operations (OT), 3 transports,
// 4 outbox, 5 the client, 6 collaborative documents and the textarea binding,
// 7 the inbox.

// ---------------------------------------------------------------------------
// 1. Helpers and errors
// ---------------------------------------------------------------------------

/** The protocol's error body (§11) as an exception; status 0 = no answer. */
export class SwitchyardError extends Error {
  constructor(message, { status = 0, code = 'network_error', details = {}, requestId = null, retryAfterMs = null } = {}) {
    super(message);
    this.name = 'SwitchyardError';
    this.status = status;
    this.code = code;
    this.details = details;
    this.requestId = requestId;
    this.retryAfterMs = retryAfterMs;
  }

  /** Worth retrying unchanged: no answer, 408, 429 or a server error. */
  get retryable() {
    return this.status === 0 || this.status === 408 || this.status === 429 || this.status >= 500;
  }
}

/**
 * Exponential backoff with jitter: attempt 0 waits 1-1.5 s, each further
 * attempt doubles the base, never more than 60 s.
 */
export function backoffDelay(attempt, { minMs = 1000, maxMs = 60000, random = Math.random } = {}) {
  const base = Math.min(maxMs, minMs * 2 ** Math.min(attempt, 30));
  return Math.round(Math.min(maxMs, Math.max(minMs, base * (1 + random() / 2))));
}

/** `Retry-After` (seconds or an HTTP date) in milliseconds, or null. */
export function parseRetryAfter(value, now = Date.now()) {
  if (value == null || value === '') return null;
  const s = String(value).trim();
  if (/^\d+(\.\d+)?$/.test(s)) return Math.round(parseFloat(s) * 1000);
  const at = Date.parse(s);
  return Number.isNaN(at) ? null : Math.max(0, at - now);
}

/** A random id for idempotency keys and operation ids (works outside secure contexts). */
export function randomId() {
  const bytes = new Uint8Array(16);
  if (globalThis.crypto?.getRandomValues) globalThis.crypto.getRandomValues(bytes);
  else for (let i = 0; i < bytes.length; i++) bytes[i] = Math.floor(Math.random() * 256);
  return Array.from(bytes, (b) => b.toString(16).padStart(2, '0')).join('');
}

/** Resolves after `ms`, or early (without error) when `signal` aborts. */
export function sleep(ms, signal) {
  return new Promise((resolve) => {
    if (signal?.aborted) return resolve();
    const timer = setTimeout(done, Math.max(0, ms));
    function done() {
      clearTimeout(timer);
      signal?.removeEventListener('abort', done);
      resolve();
    }
    signal?.addEventListener('abort', done);
  });
}

/** A minimal event emitter; a throwing listener never breaks the emitter. */
export class Emitter {
  #listeners = new Map();

  /** Adds a listener; returns a function that removes it. */
  on(name, fn) {
    if (!this.#listeners.has(name)) this.#listeners.set(name, new Set());
    this.#listeners.get(name).add(fn);
    return () => this.off(name, fn);
  }

  off(name, fn) {
    this.#listeners.get(name)?.delete(fn);
  }

  emit(name, value) {
    for (const fn of [...(this.#listeners.get(name) ?? [])]) {
      try {
        fn(value);
      } catch (e) {
        console.error(`switchyard: a '${name}' listener threw`, e);
      }
    }
  }
}

// ---------------------------------------------------------------------------
// 2. Text operations. Lengths count Unicode code points (the server's chars),
// never UTF-16 units: "😀" is one character. An operation spans its whole
// base document; components are {retain:n}, {insert:"text"}, {delete:n}.
// ---------------------------------------------------------------------------

const isHigh = (c) => c >= 0xd800 && c <= 0xdbff;
const isLow = (c) => c >= 0xdc00 && c <= 0xdfff;

/** Number of code points in `s`. */
export function codePointLength(s) {
  let n = s.length;
  for (let i = 0; i + 1 < s.length; i++) {
    if (isHigh(s.charCodeAt(i)) && isLow(s.charCodeAt(i + 1))) {
      n--;
      i++;
    }
  }
  return n;
}

/** UTF-16 index reached after `n` code points from UTF-16 index `from`. */
function advance(s, from, n) {
  let i = from;
  for (; n > 0 && i < s.length; n--) {
    i += isHigh(s.charCodeAt(i)) && i + 1 < s.length && isLow(s.charCodeAt(i + 1)) ? 2 : 1;
  }
  if (n > 0) throw new Error('operation runs past the end of the document');
  return i;
}

/** Code point index of UTF-16 index `index` (inside a pair counts as after it). */
export function toCodePointIndex(s, index) {
  return codePointLength(s.slice(0, Math.min(index, s.length)));
}

/** UTF-16 index of code point index `cp` (clamped to the string). */
export function toUtf16Index(s, cp) {
  let i = 0;
  for (; cp > 0 && i < s.length; cp--) {
    i += isHigh(s.charCodeAt(i)) && i + 1 < s.length && isLow(s.charCodeAt(i + 1)) ? 2 : 1;
  }
  return i;
}

/**
 * A normalised text operation (the same normal form as the server and
 * ot.js: no empty components, no two neighbours of one kind, an insert
 * before a delete at the same place), so equal edits compare equal.
 */
export class TextOperation {
  constructor() {
    this.ops = [];
    this.baseLength = 0;
    this.targetLength = 0;
  }

  /** Parses the wire form, rejecting anything the server would refuse. */
  static fromJSON(list) {
    if (!Array.isArray(list)) throw new TypeError('an operation is an array of components');
    const op = new TextOperation();
    for (const c of list) {
      const keys = c && typeof c === 'object' ? Object.keys(c) : [];
      if (keys.length !== 1) throw new TypeError(`bad component ${JSON.stringify(c)}`);
      if (keys[0] === 'retain' && isPositive(c.retain)) op.retain(c.retain);
      else if (keys[0] === 'delete' && isPositive(c.delete)) op.delete(c.delete);
      else if (keys[0] === 'insert' && typeof c.insert === 'string' && c.insert !== '') op.insert(c.insert);
      else throw new TypeError(`bad component ${JSON.stringify(c)}`);
    }
    return op;
  }

  toJSON() {
    return this.ops.map((c) => ({ ...c }));
  }

  retain(n) {
    checkCount(n);
    if (n === 0) return this;
    this.baseLength += n;
    this.targetLength += n;
    const last = this.ops[this.ops.length - 1];
    if (last && 'retain' in last) last.retain += n;
    else this.ops.push({ retain: n });
    return this;
  }

  insert(text) {
    if (typeof text !== 'string') throw new TypeError('insert takes a string');
    if (text === '') return this;
    this.targetLength += codePointLength(text);
    const ops = this.ops;
    const last = ops[ops.length - 1];
    if (last && 'insert' in last) last.insert += text;
    else if (last && 'delete' in last) {
      const prev = ops[ops.length - 2];
      if (prev && 'insert' in prev) prev.insert += text;
      else ops.splice(ops.length - 1, 0, { insert: text });
    } else ops.push({ insert: text });
    return this;
  }

  delete(n) {
    checkCount(n);
    if (n === 0) return this;
    this.baseLength += n;
    const last = this.ops[this.ops.length - 1];
    if (last && 'delete' in last) last.delete += n;
    else this.ops.push({ delete: n });
    return this;
  }

  /** True when applying changes nothing. */
  isNoop() {
    return this.ops.every((c) => 'retain' in c);
  }

  equals(other) {
    return JSON.stringify(this.ops) === JSON.stringify(other.ops);
  }

  /** Applies to `doc`, which must be exactly `baseLength` code points long. */
  apply(doc) {
    const length = codePointLength(doc);
    if (length !== this.baseLength) {
      throw new Error(`operation spans ${this.baseLength} characters but the document has ${length}`);
    }
    const out = [];
    let at = 0;
    for (const c of this.ops) {
      if ('retain' in c) {
        const end = advance(doc, at, c.retain);
        out.push(doc.slice(at, end));
        at = end;
      } else if ('insert' in c) out.push(c.insert);
      else at = advance(doc, at, c.delete);
    }
    return out.join('');
  }
}

function isPositive(n) {
  return Number.isSafeInteger(n) && n > 0;
}

function checkCount(n) {
  if (!Number.isSafeInteger(n) || n < 0) throw new TypeError(`length must be a non-negative integer, got ${n}`);
}

/** Walks an operation piece by piece, splitting pieces on demand. */
function pieces(op) {
  const list = op.ops.map((c) =>
    'retain' in c ? { t: 'r', n: c.retain } : 'delete' in c ? { t: 'd', n: c.delete } : { t: 'i', n: codePointLength(c.insert), s: c.insert },
  );
  let i = 0;
  return {
    peek: () => list[i],
    next: () => list[++i],
    /** Consumes `n` code points of the current piece; returns the new current one. */
    take(n) {
      const p = list[i];
      if (p.n === n) return list[++i];
      list[i] = p.t === 'i' ? { t: 'i', n: p.n - n, s: p.s.slice(advance(p.s, 0, n)) } : { t: p.t, n: p.n - n };
      return list[i];
    },
  };
}

/**
 * Transforms concurrent operations `a` and `b` (same base): returns
 * [a', b'] with b' after a equal to a' after b. At equal positions `a`'s
 * insert goes first, as on the server, which passes the operation it
 * received later as `a`.
 */
export function transform(a, b) {
  if (a.baseLength !== b.baseLength) {
    throw new Error(`cannot transform operations with base lengths ${a.baseLength} and ${b.baseLength}`);
  }
  const ap = new TextOperation();
  const bp = new TextOperation();
  const A = pieces(a);
  const B = pieces(b);
  let x = A.peek();
  let y = B.peek();
  while (x || y) {
    if (x && x.t === 'i') {
      ap.insert(x.s);
      bp.retain(x.n);
      x = A.next();
    } else if (y && y.t === 'i') {
      ap.retain(y.n);
      bp.insert(y.s);
      y = B.next();
    } else if (!x || !y) {
      throw new Error('transform: operations ended unevenly');
    } else {
      const n = Math.min(x.n, y.n);
      if (x.t === 'r' && y.t === 'r') {
        ap.retain(n);
        bp.retain(n);
      } else if (x.t === 'd' && y.t === 'r') ap.delete(n);
      else if (x.t === 'r' && y.t === 'd') bp.delete(n);
      // Deleted by both: gone on either side.
      x = A.take(n);
      y = B.take(n);
    }
  }
  return [ap, bp];
}

/** Composes consecutive operations: applying the result equals `a` then `b`. */
export function compose(a, b) {
  if (a.targetLength !== b.baseLength) {
    throw new Error(`cannot compose: the first produces ${a.targetLength} characters, the second spans ${b.baseLength}`);
  }
  const out = new TextOperation();
  const A = pieces(a);
  const B = pieces(b);
  let x = A.peek();
  let y = B.peek();
  while (x || y) {
    if (x && x.t === 'd') {
      out.delete(x.n);
      x = A.next();
    } else if (y && y.t === 'i') {
      out.insert(y.s);
      y = B.next();
    } else if (!x || !y) {
      throw new Error('compose: operations ended unevenly');
    } else {
      const n = Math.min(x.n, y.n);
      if (x.t === 'r' && y.t === 'r') out.retain(n);
      else if (x.t === 'r' && y.t === 'd') out.delete(n);
      else if (x.t === 'i' && y.t === 'r') out.insert(x.s.slice(0, advance(x.s, 0, n)));
      // Inserted by `a`, deleted by `b`: never existed.
      x = A.take(n);
      y = B.take(n);
    }
  }
  return out;
}

/**
 * Moves a caret (code point index) through `op`. An insert exactly at the
 * caret pushes it along only with `pushedByInsert`, so a remote insert at a
 * collapsed caret leaves it before the new text and outside a selection.
 */
export function transformIndex(op, index, pushedByInsert = false) {
  let base = 0;
  let out = index;
  for (const c of op.ops) {
    if (base > index) break;
    if ('retain' in c) base += c.retain;
    else if ('insert' in c) {
      if (base < index || pushedByInsert) out += codePointLength(c.insert);
    } else {
      if (base < index) out -= Math.min(c.delete, index - base);
      base += c.delete;
    }
  }
  return out;
}

/**
 * The operation turning `before` into `after` (one replaced range). `caret`,
 * the UTF-16 caret in `after`, places an ambiguous edit ("a" typed in "aa")
 * where the user made it. Never splits a surrogate pair.
 */
export function diffToOperation(before, after, caret = after.length) {
  const limit = Math.min(before.length, after.length);
  let suffix = 0;
  const maxSuffix = Math.min(limit, Math.max(0, after.length - caret));
  while (suffix < maxSuffix && before.charCodeAt(before.length - 1 - suffix) === after.charCodeAt(after.length - 1 - suffix)) suffix++;
  let prefix = 0;
  while (prefix < limit - suffix && before.charCodeAt(prefix) === after.charCodeAt(prefix)) prefix++;
  // With a caret hint the suffix may stop short; let it grow into what the prefix left.
  while (suffix < limit - prefix && before.charCodeAt(before.length - 1 - suffix) === after.charCodeAt(after.length - 1 - suffix)) suffix++;
  if (prefix > 0 && isHigh(before.charCodeAt(prefix - 1))) prefix--;
  if (suffix > 0 && isLow(before.charCodeAt(before.length - suffix))) suffix--;
  const op = new TextOperation();
  op.retain(codePointLength(before.slice(0, prefix)));
  op.delete(codePointLength(before.slice(prefix, before.length - suffix)));
  op.insert(after.slice(prefix, after.length - suffix));
  op.retain(codePointLength(before.slice(before.length - suffix)));
  return op;
}

// ---------------------------------------------------------------------------
// 3. Transports. Each reads the stream from the client's cursor and hands
// every message to the client, which dedupes by id and owns the cursor.
// Callbacks: client._opened(t), client._message(t, msg), client._failed(t, info).
// ---------------------------------------------------------------------------

const MAX_CURSOR = Number.MAX_SAFE_INTEGER;
/** Most channels one stream or poll may name (§2). */
const MAX_CHANNELS = 50;
/** Ids of recent events, to deliver each once when readers overlap. */
const SEEN_IDS = 4096;

/** Server-Sent Events through the browser's EventSource. */
class SseTransport {
  kind = 'sse';

  constructor(client, channels) {
    this.client = client;
    this.channels = channels;
    this.live = true;
    this.errors = 0;
    this.subscribed = false;
    this.lastMessage = Date.now();
  }

  start() {
    const c = this.client;
    this.floor = c.cursor;
    const url = c._url('/realtime/sse', { channels: this.channels.join(','), last_event_id: c.cursor, token: c._token });
    const es = new EventSource(url);
    this.es = es;
    this.#watch();
    es.onopen = () => {
      this.main = null;
    };
    es.onmessage = (e) => {
      if (!this.live) return;
      this.lastMessage = Date.now();
      let msg;
      try {
        msg = JSON.parse(e.data);
      } catch {
        return;
      }
      if (msg.type === 'subscription') {
        // The first one of a connection names what one server reader
        // follows, in id order; channels added later (a conversation joined
        // while open) are read apart.
        this.main ??= new Set(msg.channels);
        this.subscribed = true;
        this.errors = 0;
        clearTimeout(this.watchdog);
        c._opened(this);
      }
      c._message(this, msg);
    };
    es.onerror = () => {
      if (!this.live) return;
      this.errors++;
      this.subscribed = false;
      // The first drop is left to the browser, which reconnects after the
      // server's `retry:` delay and sends Last-Event-ID itself; a second
      // failure in a row, or a refusal (CLOSED), is ours to diagnose.
      if (es.readyState === EventSource.CONNECTING && this.errors < 2) {
        c._reconnecting(this);
        this.#watch();
        return;
      }
      this.stop();
      c._failed(this, { diagnose: true, failures: this.errors });
    };
    this.probe = setInterval(() => {
      if (this.live && this.subscribed && Date.now() - this.lastMessage >= c.options.silenceProbeMs) {
        this.lastMessage = Date.now();
        c._probeSilence(this);
      }
    }, Math.max(1000, Math.floor(c.options.silenceProbeMs / 4)));
  }

  /** True when `event` came from the reader of the connection's first channels. */
  ordered(event) {
    return !this.main || (event.channels ?? [event.channel]).some((ch) => this.main.has(ch));
  }

  /** No subscription message in time: the stream is buffered or stuck. */
  #watch() {
    clearTimeout(this.watchdog);
    this.watchdog = setTimeout(() => {
      if (!this.live || this.subscribed) return;
      this.stop();
      this.client._failed(this, { diagnose: true, silent: true, failures: this.errors + 1 });
    }, this.client.options.sseOpenTimeoutMs);
  }

  stop() {
    this.live = false;
    clearTimeout(this.watchdog);
    clearInterval(this.probe);
    this.es?.close();
  }
}

/** Long polling: `GET /realtime/poll` with `last_poll_id`. */
class PollTransport {
  kind = 'poll';

  constructor(client, channels) {
    this.client = client;
    this.channels = channels;
    this.live = true;
    this.abort = new AbortController();
  }

  start() {
    this.#loop();
  }

  async #loop() {
    const c = this.client;
    let opened = false;
    while (this.live) {
      let answer;
      try {
        answer = await c._request('GET', '/realtime/poll', {
          query: {
            channels: this.channels.join(','),
            last_poll_id: c.cursor,
            // The first poll answers at once, so the state is known at once.
            timeout: opened ? c.options.pollTimeoutSecs : 0,
            limit: c.options.pollLimit,
          },
          signal: this.abort.signal,
        });
      } catch (error) {
        if (!this.live) return;
        if (opened && error.status === 429) {
          // Over the poll rate: wait as told and go on, still connected.
          await sleep(error.retryAfterMs ?? c._backoff(0), this.abort.signal);
          continue;
        }
        this.stop();
        c._failed(this, { error });
        return;
      }
      if (!this.live) return;
      const body = answer.body;
      if (!opened) {
        opened = true;
        c._opened(this);
        c._message(this, { type: 'subscription', status: 'success', channels: this.channels, errors: body.errors ?? [] });
      }
      if (body.reset) c._message(this, { type: 'reset', ...body.reset });
      for (const event of body.events) c._message(this, event);
      c._pollCursor(body.last_poll_id);
      // Out of polls (§12): wait for the next one to come back rather than be refused.
      const h = answer.headers;
      const limit = Number(h.get('x-ratelimit-limit'));
      const reset = Number(h.get('x-ratelimit-reset'));
      if (h.get('x-ratelimit-remaining') === '0' && limit > 0 && reset > 0) {
        await sleep(Math.min(60000, (reset * 1000 - Date.now()) / limit + 100), this.abort.signal);
      }
    }
  }

  stop() {
    this.live = false;
    this.abort.abort();
  }
}

/** WebSocket (`/realtime/connect`), JSON frames; used for reading only. */
class WsTransport {
  kind = 'websocket';

  constructor(client, channels) {
    this.client = client;
    this.channels = channels;
    this.live = true;
    this.subscribed = false;
    this.early = false;
    this.main = new Set();
  }

  start() {
    const c = this.client;
    this.floor = c.cursor;
    const url = c._url('/realtime/connect', { token: c._token }).replace(/^http/, 'ws');
    const ws = new WebSocket(url);
    this.ws = ws;
    this.watchdog = setTimeout(() => this.#fail({ diagnose: true, silent: true }), c.options.sseOpenTimeoutMs);
    ws.onmessage = (e) => {
      if (!this.live || typeof e.data !== 'string') return;
      let msg;
      try {
        msg = JSON.parse(e.data);
      } catch {
        return;
      }
      if (msg.type === 'connected') {
        this.own = `user:${msg.user_id}`;
        ws.send(JSON.stringify({ type: 'subscribe', channels: this.channels, last_event_id: c.cursor, ack_id: 'subscribe' }));
        return;
      }
      if (msg.type === 'ping') {
        ws.send(JSON.stringify({ type: 'pong', timestamp: msg.timestamp }));
        return;
      }
      if (msg.type === 'ack') return;
      if (msg.type === 'event' && !this.subscribed) this.early = true;
      if (msg.type === 'error' && msg.ack_id === 'subscribe') {
        this.#fail({ error: errorFromBody(0, msg) });
        return;
      }
      if (msg.type === 'subscription' && !this.subscribed) {
        this.subscribed = true;
        clearTimeout(this.watchdog);
        // The first subscription is one reader over these channels and the
        // inbox, in id order, unless events came before it: then the inbox
        // (own channel, conversations) was being read apart since connecting.
        for (const ch of msg.channels) if (!this.early || !isInbox(ch, this.own)) this.main.add(ch);
        c._opened(this);
      }
      c._message(this, msg);
    };
    ws.onclose = () => this.#fail({ diagnose: !this.subscribed });
  }

  /** True when `event` came from the reader of the subscribed channels. */
  ordered(event) {
    return (event.channels ?? [event.channel]).some((ch) => this.main.has(ch));
  }

  #fail(info) {
    if (!this.live) return;
    this.stop();
    this.client._failed(this, info);
  }

  stop() {
    this.live = false;
    clearTimeout(this.watchdog);
    try {
      this.ws?.close(1000);
    } catch {
      // already closed
    }
  }
}

const TRANSPORTS = { sse: SseTransport, poll: PollTransport, websocket: WsTransport };

/** The user's inbox channels (§9a), which a stream follows without naming them. */
function isInbox(channel, own) {
  return channel === own || channel.startsWith('conversation:');
}

// ---------------------------------------------------------------------------
// 4. Outbox: sends in order, each exactly once (the same idempotency key on
// every retry), holding them while offline.
// ---------------------------------------------------------------------------

export class Outbox {
  /**
   * @param send async (payload) => result; throws SwitchyardError
   * @param options isOnline() => bool, delay(attempt) => ms, wait(ms, signal)
   */
  constructor(send, { isOnline = () => true, delay = backoffDelay, wait = sleep } = {}) {
    this.send = send;
    this.isOnline = isOnline;
    this.delay = delay;
    this.wait = wait;
    this.queue = [];
    this.running = false;
    this.waker = new AbortController();
  }

  get size() {
    return this.queue.length;
  }

  /** Queues `payload`; resolves with its result, rejects on a permanent refusal. */
  push(payload) {
    return new Promise((resolve, reject) => {
      this.queue.push({ payload, resolve, reject });
      this.#run();
    });
  }

  /** Retry now (the network came back). */
  wake() {
    this.waker.abort();
    this.waker = new AbortController();
    this.#run();
  }

  async #run() {
    if (this.running) return;
    this.running = true;
    let attempt = 0;
    try {
      while (this.queue.length) {
        if (!this.isOnline()) {
          await this.wait(60000, this.waker.signal);
          continue;
        }
        const item = this.queue[0];
        try {
          const result = await this.send(item.payload);
          this.queue.shift();
          attempt = 0;
          item.resolve(result);
        } catch (error) {
          if (error instanceof SwitchyardError && error.retryable) {
            const ms = Math.max(this.delay(attempt++), error.retryAfterMs ?? 0);
            await this.wait(ms, this.waker.signal);
          } else {
            this.queue.shift();
            attempt = 0;
            item.reject(error);
          }
        }
      }
    } finally {
      this.running = false;
    }
  }
}

// ---------------------------------------------------------------------------
// 5. The client
// ---------------------------------------------------------------------------

const DEFAULTS = {
  url: undefined,
  channels: [],
  transport: 'auto',
  preferWebSocket: false,
  lastEventId: undefined,
  pollTimeoutSecs: 30,
  pollLimit: 100,
  sseOpenTimeoutMs: 8000,
  silenceProbeMs: 45000,
  probeTimeoutMs: 4000,
  shutdownRetryMs: 2000,
  minOpIntervalMs: 100,
  backoff: { minMs: 1000, maxMs: 60000 },
};

/**
 * Connection states: 'idle' (not started), 'connecting', 'open', 'fallback'
 * (open on a fallback transport), 'offline' (no network or server; retrying),
 * 'stopped' (stop() or a refusal that retrying cannot fix).
 */
export class SwitchyardClient extends Emitter {
  constructor(options = {}) {
    super();
    if (typeof options.getToken !== 'function') throw new TypeError('getToken is required');
    this.options = { ...DEFAULTS, ...options };
    const base = this.options.url ?? globalThis.location?.origin;
    if (!base) throw new TypeError('url is required outside a browser page');
    this.baseUrl = String(base).replace(/\/+$/, '');
    this.channels = [...new Set(this.options.channels)];
    this.cursor = this.options.lastEventId ?? null;
    this.state = 'idle';
    this.transport = null;
    this._token = null;
    this._seen = new Set();
    this._kinds = this.#kinds();
    this._kindIndex = 0;
    this._attempt = 0;
    this._failures = 0;
    this._authFailures = 0;
    this._viewing = undefined;
    this._channelWaiters = [];
    this._conversations = new Set();
    // Publishes and conversation messages share one queue: in order, each once.
    this._outbox = new Outbox(({ path, body }) => this._request('POST', path, { body }).then((r) => r.body), {
      isOnline: () => globalThis.navigator?.onLine !== false,
      delay: (attempt) => this._backoff(attempt),
    });
    /** Notifications (§9): list, read, and a live unread count. */
    this.notifications = new Notifications(this);
    /** Conversations (§9a): open, list, send through the outbox, read receipts, typing. */
    this.conversations = new Conversations(this);
    for (const [name, key] of [['event', 'onEvent'], ['reset', 'onReset'], ['state', 'onStateChange'], ['error', 'onError'], ['system', 'onSystem']]) {
      if (typeof options[key] === 'function') this.on(name, options[key]);
    }
    if (typeof options.onNotification === 'function') this.notifications.on('notification', options.onNotification);
    this._online = () => this.#networkBack();
    this._offline = () => this.#networkLost();
  }

  /** The reconnection and retry delay for `attempt` (options.backoff bounds it). */
  _backoff(attempt) {
    return backoffDelay(attempt, this.options.backoff);
  }

  #kinds() {
    const t = this.options.transport;
    if (t === 'auto') return this.options.preferWebSocket ? ['websocket', 'sse', 'poll'] : ['sse', 'poll'];
    if (!TRANSPORTS[t]) throw new TypeError(`unknown transport '${t}': use auto, sse, poll or websocket`);
    return [t];
  }

  /**
   * Connects (gets a token, fixes the cursor) and keeps the stream open until
   * stop(). Resolves once the first connection is under way; 'state' says when it is open.
   */
  async start() {
    if (this._running) return;
    this._running = true;
    globalThis.addEventListener?.('online', this._online);
    globalThis.addEventListener?.('offline', this._offline);
    this.#setState('connecting');
    await this.#connect();
  }

  /** Closes the stream. Publishes already queued are still delivered. */
  stop() {
    this._running = false;
    clearTimeout(this._timer);
    this._active?.stop();
    this._next?.stop();
    this._active = this._next = null;
    globalThis.removeEventListener?.('online', this._online);
    globalThis.removeEventListener?.('offline', this._offline);
    for (const w of this._channelWaiters.splice(0)) w.reject(new SwitchyardError('client stopped', { code: 'stopped' }));
    this.#setState('stopped');
  }

  /**
   * Adds channels. The stream moves over at the cursor (a new one opens
   * before the old one closes), so the other channels lose nothing; the new
   * ones are read from the moment the returned promise resolves.
   */
  subscribe(...channels) {
    return this.setChannels([...this.channels, ...channels.flat()]);
  }

  unsubscribe(...channels) {
    const drop = new Set(channels.flat());
    return this.setChannels(this.channels.filter((c) => !drop.has(c)));
  }

  /** Replaces the channel list; resolves once a stream reading all of them is open. */
  setChannels(channels) {
    const next = [...new Set(channels)];
    const opened = new Promise((resolve, reject) => this._channelWaiters.push({ channels: next, resolve, reject }));
    if (next.length !== this.channels.length || next.some((c, i) => c !== this.channels[i])) {
      this.channels = next;
      // Changes made together cost one reconnection (new connections are rate limited).
      clearTimeout(this._channelTimer);
      this._channelTimer = setTimeout(() => this.#swap(), 50);
    } else if (this._active && this.state !== 'connecting' && this.state !== 'offline') {
      this.#resolveWaiters(this._active);
    }
    return opened;
  }

  #resolveWaiters(t) {
    this._channelWaiters = this._channelWaiters.filter((w) => {
      if (!w.channels.every((c) => t.channels.includes(c))) return true;
      w.resolve();
      return false;
    });
  }

  // --- actions over HTTP --------------------------------------------------

  /**
   * Publishes one event through the outbox (§6): held while offline, sent in
   * order, retried with the same idempotency key until the server answers.
   * `extra` may carry channels, expected_last_id or idempotency_key.
   */
  publish(channel, event, data = null, extra = {}) {
    const body = { channel, event, data, ...extra, idempotency_key: extra.idempotency_key ?? randomId() };
    return this._outbox.push({ path: '/realtime/publish', body });
  }

  /** Publishes and messages still waiting to be delivered. */
  get pending() {
    return this._outbox.size;
  }

  /** The token's user (`sub`), once there is a token; null before. */
  get userId() {
    return tokenSubject(this._token);
  }

  /** `POST /realtime/presence`: 'online' | 'away' | 'busy'. */
  setStatus(status, statusMessage = null) {
    return this._act('POST', '/realtime/presence', { status, status_message: statusMessage });
  }

  /** `POST /realtime/presence/viewing`; `setViewing(null)` clears. Sent again after being offline. */
  setViewing(resourceType, resourceId) {
    this._viewing = resourceType == null ? null : { resource_type: resourceType, resource_id: String(resourceId) };
    return this._act('POST', '/realtime/presence/viewing', this._viewing ?? { resource_type: null, resource_id: null });
  }

  /** `POST /realtime/typing` once, never retried (a late typing notice is wrong); prefer typingIndicator(). */
  sendTyping(resourceType, resourceId, field, isTyping) {
    return this.request('POST', '/realtime/typing', { resource_type: resourceType, resource_id: String(resourceId), field, is_typing: isTyping });
  }

  /** A helper that announces typing while input() is called and stops by itself. */
  typingIndicator(resourceType, resourceId, field, options) {
    return new TypingIndicator(this, resourceType, resourceId, field, options);
  }

  /** Opens a collaborative plain-text field (§8) and follows its channel. */
  async openDocument(resource) {
    const doc = new EditDocument(this, resource);
    await doc.open();
    return doc;
  }

  /** Any API call with the token: resolves to the JSON body, throws SwitchyardError. */
  async request(method, path, body, options = {}) {
    return (await this._request(method, path, { ...options, body })).body;
  }

  /** A request safe to repeat, with short retries for the network or limits; after that the caller decides. */
  async _act(method, path, body) {
    for (let attempt = 0; ; attempt++) {
      try {
        return (await this._request(method, path, { body })).body;
      } catch (e) {
        if (!(e instanceof SwitchyardError) || !e.retryable || attempt >= 4) throw e;
        await sleep(Math.max(this._backoff(attempt), e.retryAfterMs ?? 0));
      }
    }
  }

  // --- HTTP ---------------------------------------------------------------

  _url(path, query = {}) {
    const params = new URLSearchParams();
    for (const [k, v] of Object.entries(query)) if (v != null && v !== '') params.set(k, String(v));
    const qs = params.toString();
    return `${this.baseUrl}${path}${qs ? `?${qs}` : ''}`;
  }

  /** fetch with the token as a Bearer header; one token refresh on 401. */
  async _request(method, path, { body, query, signal, auth = true } = {}) {
    for (let refreshed = false; ; refreshed = true) {
      if (auth && !this._token) await this._refreshToken('start');
      const token = this._token;
      const headers = { Accept: 'application/json' };
      if (auth) headers.Authorization = `Bearer ${token}`;
      if (body !== undefined) headers['Content-Type'] = 'application/json';
      let res;
      try {
        res = await fetch(this._url(path, query), {
          method,
          headers,
          body: body === undefined ? undefined : JSON.stringify(body),
          signal,
          cache: 'no-store',
        });
      } catch (e) {
        if (signal?.aborted) throw new SwitchyardError('aborted', { code: 'aborted' });
        throw new SwitchyardError(`Cannot reach the server: ${e.message}`);
      }
      let text = '';
      try {
        text = await res.text();
      } catch (e) {
        if (signal?.aborted) throw new SwitchyardError('aborted', { code: 'aborted' });
        throw new SwitchyardError(`The answer was cut off: ${e.message}`);
      }
      let json = null;
      try {
        json = text ? JSON.parse(text) : null;
      } catch {
        // not JSON: a proxy's page
      }
      if (res.ok) return { status: res.status, body: json, headers: res.headers };
      const error = errorFromBody(res.status, json, res.headers);
      if (res.status === 401 && auth && !refreshed) {
        await this._refreshToken(error.code === 'token_expired' ? 'expired' : 'rejected', token);
        continue;
      }
      throw error;
    }
  }

  /** Calls getToken() once for all callers; `stale` skips it if already replaced. */
  async _refreshToken(reason, stale = this._token) {
    if (this._token !== stale && this._token) return this._token;
    if (!this._refreshing) {
      this._refreshing = (async () => {
        try {
          const token = await this.options.getToken({ reason });
          if (typeof token !== 'string' || !token) throw new SwitchyardError('getToken() gave no token', { code: 'missing_token' });
          this._token = token;
          this.emit('token', { reason });
          return token;
        } finally {
          this._refreshing = null;
        }
      })();
    }
    return this._refreshing;
  }

  // --- connection management -------------------------------------------------

  async #connect() {
    if (!this._running) return;
    clearTimeout(this._timer);
    try {
      if (!this._token) await this._refreshToken('start');
      if (this.cursor == null) await this.#findHead();
    } catch (error) {
      return this.#recover(null, { error: asError(error) });
    }
    if (!this._running || this._active) return;
    const kind = this._kinds[this._kindIndex];
    this.transport = kind;
    this.#setState(globalThis.navigator?.onLine === false ? 'offline' : 'connecting');
    const t = new TRANSPORTS[kind](this, this.#streamChannels(kind));
    this._active = t;
    t.start();
  }

  /** "From now": the log's current end, asked once so every transport shares it. */
  async #findHead() {
    const { body } = await this._request('GET', '/realtime/poll', {
      query: { channels: this.#streamChannels('poll').join(','), last_poll_id: MAX_CURSOR, timeout: 0, limit: 1 },
    });
    if (this.cursor == null) this.cursor = body.last_poll_id;
  }

  /**
   * What a transport names. No channels is the inbox (§9a): the user's own
   * channel and conversations; a WebSocket subscription must name one, and
   * `notifications` is the user's own. A poll that names channels reads
   * only those and the user's own, so it names the conversations known too.
   */
  #streamChannels(kind) {
    if (!this.channels.length) return kind === 'websocket' ? ['notifications'] : [];
    if (kind !== 'poll') return this.channels;
    const known = [...this._conversations].filter((c) => !this.channels.includes(c));
    return [...this.channels, ...known].slice(0, Math.max(this.channels.length, MAX_CHANNELS));
  }

  /**
   * Conversations of the user, learnt from streams and the inbox helpers.
   * A poll that names channels reopens to name a new one.
   */
  _learnConversations(added = [], removed = []) {
    let changed = false;
    for (const ch of added) {
      if (ch.startsWith('conversation:') && !this._conversations.has(ch)) {
        this._conversations.add(ch);
        changed = true;
      }
    }
    for (const ch of removed) changed = this._conversations.delete(ch) || changed;
    if (changed && this._running && this.channels.length && this._active?.kind === 'poll') {
      clearTimeout(this._channelTimer);
      this._channelTimer = setTimeout(() => this.#swap(), 50);
    }
  }

  /** Opens a second stream at the cursor and drops the first once it is open. */
  #swap() {
    if (!this._running) return;
    if (!this._active || this._active.kind === 'poll') {
      this._active?.stop();
      this._active = null;
      this.#connect();
      return;
    }
    this._next?.stop();
    const t = new TRANSPORTS[this._active.kind](this, this.#streamChannels(this._active.kind));
    this._next = t;
    t.start();
  }

  _opened(t) {
    if (t === this._next) {
      this._active?.stop();
      this._active = t;
      this._next = null;
    }
    if (t !== this._active) return;
    const wasOffline = this._wentOffline;
    this._attempt = 0;
    this._failures = 0;
    this._authFailures = 0;
    this._wentOffline = false;
    this.#setState(this._kindIndex > 0 ? 'fallback' : 'open');
    this.#resolveWaiters(t);
    if (wasOffline && this._viewing) this._act('POST', '/realtime/presence/viewing', this._viewing).catch(() => {});
  }

  _reconnecting(t) {
    if (t === this._active) this.#setState('connecting');
  }

  _message(t, msg) {
    if (t !== this._active && t !== this._next) return;
    switch (msg.type) {
      case 'event':
        if (this.#accept(msg, t.kind === 'poll' || t.ordered(msg), t.floor)) this.emit('event', msg);
        break;
      case 'reset':
        // After a reset the log restarts at oldest_id: a cursor beyond it
        // (a replaced database) must come back or every new event is dropped.
        if (msg.oldest_id != null && this.cursor != null && this.cursor >= msg.oldest_id) {
          this.cursor = msg.oldest_id - 1;
          this._seen.clear();
        }
        this.emit('reset', msg);
        break;
      case 'system':
        this.emit('system', msg);
        if (msg.event === 'token.expiring') this.#renewToken('expiring');
        else if (msg.event === 'token.expired') this.#restart(t, 0, 'expired');
        else if (msg.event === 'server.shutdown') this.#restart(t, this.options.shutdownRetryMs);
        break;
      case 'error':
        this.emit('error', errorFromBody(0, msg));
        break;
      case 'subscription':
        this._learnConversations(msg.channels, msg.removed);
        if (msg.errors?.length) this.emit('error', new SwitchyardError('Some channels may not be read', { status: 403, code: 'permission_denied', details: { errors: msg.errors } }));
        this.emit('subscription', msg);
        break;
      default:
        this.emit('control', msg);
    }
  }

  /**
   * Dedupe by id: each event once. Events of the stream's main reader come
   * in log order and move the cursor. A stream may also read some channels
   * apart (a conversation joined while it is open; on WebSocket, the inbox
   * read before the first subscription): their events may come after
   * higher ids, so they are taken below the cursor too, down to where the
   * stream started (`floor`), and never move it.
   */
  #accept(event, ordered, floor) {
    const id = event.id;
    if (typeof id !== 'number') return false;
    if (ordered) {
      if (id <= (this.cursor ?? -1)) return false;
      this.cursor = id;
    } else if (id <= (floor ?? this.cursor ?? -1)) return false;
    if (this._seen.has(id)) return false;
    this._seen.add(id);
    if (this._seen.size > SEEN_IDS) this._seen.delete(this._seen.values().next().value);
    return true;
  }

  _pollCursor(lastPollId) {
    if (typeof lastPollId === 'number') this.cursor = lastPollId;
  }

  async #renewToken(reason) {
    try {
      await this._refreshToken(reason);
    } catch (e) {
      this.emit('error', asError(e));
      return;
    }
    // Streams carry the token in their URL: open a new one at the cursor
    // before closing the old, so nothing is missed. Polls pick it up by themselves.
    this.#swap();
  }

  /** The stream ended on purpose (shutdown, expiry): reconnect at the cursor. */
  async #restart(t, delayMs, tokenReason) {
    if (t !== this._active) return;
    t.stop();
    this._active = null;
    this._next?.stop();
    this._next = null;
    if (tokenReason) {
      try {
        await this._refreshToken(tokenReason);
      } catch (e) {
        return this.#recover(null, { error: asError(e) });
      }
    }
    this.#schedule(delayMs, 'connecting');
  }

  _failed(t, info) {
    if (t === this._next) {
      this._next = null;
      if (this._active) {
        // The replacement stream failed; the old one still runs. Try again later.
        this.#later(() => this.#swap(), this._backoff(this._attempt++));
        return;
      }
      return this.#recover(t, info);
    }
    if (t !== this._active) return;
    this._active = null;
    // A replacement is opening: it takes over, or recovers if it fails too.
    if (!this._next) this.#recover(t, info);
  }

  /** Decides what a failure means: refresh the token, wait, fall back, or give up. */
  async #recover(t, info) {
    if (!this._running) return;
    let error = info.error ?? null;
    if (!error && info.diagnose && t) {
      this.#setState('connecting');
      error = await this.#diagnose(t.kind);
      if (!this._running) return;
    }
    if (error?.code === 'aborted') return;
    const status = error?.status;
    if (status === 401) {
      if (this._authFailures++ < 2) {
        try {
          await this._refreshToken(error.code === 'token_expired' ? 'expired' : 'rejected');
          return this.#schedule(0, 'connecting');
        } catch (e) {
          error = asError(e);
        }
      }
    } else if (status >= 400 && status < 500 && status !== 408 && status !== 429) {
      // 400/403/404: retrying the same request cannot help.
      this.emit('error', error);
      this.stop();
      return;
    }
    if (error?.code === 'transport_failed') {
      this._failures += info.failures ?? 1;
      if (this.options.transport === 'auto' && this._kindIndex < this._kinds.length - 1 && (info.silent || this._failures >= 2)) {
        const from = this._kinds[this._kindIndex++];
        this._failures = 0;
        this._attempt = 0;
        this.transport = this._kinds[this._kindIndex];
        this.emit('fallback', { from, to: this.transport, reason: info.silent ? 'silent' : 'failed' });
        return this.#schedule(0, 'connecting');
      }
    }
    // Unreachable, busy or rate limited: the state says it; the rest is news.
    if (error && error.code !== 'network_error' && status !== 429 && !(status >= 500)) this.emit('error', error);
    const wait = Math.max(this._backoff(this._attempt++), error?.retryAfterMs ?? 0);
    const offline = !status && error?.code === 'network_error';
    if (offline) this._wentOffline = true;
    this.#schedule(wait, offline ? 'offline' : 'connecting');
  }

  /**
   * Why did a stream fail? An EventSource or WebSocket hides the HTTP answer,
   * so ask plainly: a poll tells the token and network apart; for SSE a
   * fetch of the stream itself shows its own refusals (429, 401).
   * Returns a SwitchyardError; code 'transport_failed' when only the stream fails.
   */
  async #diagnose(kind) {
    try {
      await this._request('GET', '/realtime/poll', {
        query: { channels: this.#streamChannels('poll').join(','), last_poll_id: this.cursor ?? 0, timeout: 0, limit: 1 },
      });
    } catch (e) {
      return asError(e);
    }
    if (kind === 'sse') {
      const abort = new AbortController();
      const timer = setTimeout(() => abort.abort(), this.options.probeTimeoutMs);
      try {
        const res = await fetch(this._url('/realtime/sse', { channels: this.#streamChannels('sse').join(','), last_event_id: this.cursor, token: this._token }), {
          signal: abort.signal,
          cache: 'no-store',
        });
        if (!res.ok) {
          let json = null;
          try {
            json = await res.json();
          } catch {
            // not JSON
          }
          return errorFromBody(res.status, json, res.headers);
        }
      } catch {
        // blocked, reset or buffered: EventSource cannot work here
      } finally {
        clearTimeout(timer);
        abort.abort();
      }
    }
    return new SwitchyardError(`The ${kind} stream fails while plain requests work`, { code: 'transport_failed' });
  }

  /** The SSE stream has been quiet; if a poll has news it did not deliver, it is stuck. */
  async _probeSilence(t) {
    if (this._probing) return;
    this._probing = true;
    try {
      const { body } = await this._request('GET', '/realtime/poll', {
        query: { channels: this.#streamChannels('poll').join(','), last_poll_id: this.cursor, timeout: 0, limit: 1 },
      });
      const first = body.events[0];
      if (!first) return;
      await sleep(this.options.probeTimeoutMs);
      if (t === this._active && t.live && (this.cursor ?? 0) < first.id && !this._seen.has(first.id)) {
        t.stop();
        this._active = null;
        this.#recover(t, { error: new SwitchyardError('The stream is silent while events wait', { code: 'transport_failed' }), silent: true });
      }
    } catch {
      // The probe is advisory; the stream's own errors decide.
    } finally {
      this._probing = false;
    }
  }

  #schedule(ms, state) {
    clearTimeout(this._timer);
    if (!this._running) return;
    this.#setState(globalThis.navigator?.onLine === false ? 'offline' : state);
    this._timer = setTimeout(() => this.#connect(), ms);
  }

  #later(fn, ms) {
    setTimeout(() => this._running && fn(), ms);
  }

  #networkLost() {
    this._outbox.wake();
    if (!this._running) return;
    this._wentOffline = true;
    this.#setState('offline');
  }

  #networkBack() {
    this._outbox.wake();
    if (!this._running) return;
    // Reconnect at the cursor now, rather than wait out a backoff or trust
    // a stream that lived through the outage.
    this._attempt = 0;
    this._active?.stop();
    this._next?.stop();
    this._active = this._next = null;
    this.#schedule(0, 'connecting');
  }

  #setState(state) {
    if (state === this.state) return;
    this.state = state;
    this.emit('state', { state, transport: this.transport });
  }
}

function errorFromBody(status, body, headers) {
  const retryAfterMs = parseRetryAfter(headers?.get?.('retry-after')) ?? (body?.details?.retry_after != null ? body.details.retry_after * 1000 : null);
  if (body && body.type === 'error') {
    return new SwitchyardError(body.message ?? body.code, { status: status || statusOf(body.code), code: body.code, details: body.details ?? {}, requestId: body.request_id ?? null, retryAfterMs });
  }
  return new SwitchyardError(`HTTP ${status}`, { status, code: status >= 500 ? 'server_error' : 'http_error', retryAfterMs });
}

/** §11's HTTP status of an error code (WebSocket errors carry no status). */
function statusOf(code) {
  const table = { missing_token: 401, invalid_token: 401, token_expired: 401, permission_denied: 403, not_found: 404, channel_not_found: 404, invalid_message: 400, invalid_channel: 400, subscription_limit_exceeded: 400, invalid_operation: 422, conflict: 409, resource_locked: 409, session_expired: 410, payload_too_large: 413, rate_limit_exceeded: 429, max_connections: 429, unavailable: 503 };
  return table[code] ?? 500;
}

/** The `sub` (or `user_id`) claim of a JWT, without checking it: the server does. */
function tokenSubject(token) {
  try {
    const claims = JSON.parse(atob(token.split('.')[1].replace(/-/g, '+').replace(/_/g, '/')));
    return claims.sub ?? claims.user_id ?? null;
  } catch {
    return null;
  }
}

function asError(e) {
  return e instanceof SwitchyardError ? e : new SwitchyardError(String(e?.message ?? e), { code: 'client_error', status: 0 });
}

// ---------------------------------------------------------------------------
// 6. Typing, collaborative documents and the textarea binding
// ---------------------------------------------------------------------------

/** Sends `is_typing:true` at most every `intervalMs` while input() is called, `false` after `idleMs` without. */
export class TypingIndicator {
  constructor(client, resourceType, resourceId, field, { intervalMs = 2000, idleMs = 3000 } = {}) {
    Object.assign(this, { client, resourceType, resourceId, field, intervalMs: Math.max(1000, intervalMs), idleMs });
    this.active = false;
    this.lastSent = 0;
  }

  /** Call on every keystroke. */
  input() {
    const now = Date.now();
    if (!this.active || now - this.lastSent >= this.intervalMs) {
      this.active = true;
      this.lastSent = now;
      this.#send(true);
    }
    clearTimeout(this.idle);
    this.idle = setTimeout(() => this.stop(), this.idleMs);
  }

  /** Typing ended (blur, submit); sends `false` once. */
  stop() {
    clearTimeout(this.idle);
    if (!this.active) return;
    this.active = false;
    this.#send(false);
  }

  #send(isTyping) {
    // Ephemeral: a lost typing notice is not worth queueing or retrying.
    this.client.sendTyping(this.resourceType, this.resourceId, this.field, isTyping).catch(() => {});
  }
}

/**
 * One collaborative plain-text field, as ot.js's Client: synchronized, or
 * one operation awaiting confirmation, plus a buffer of the edits made since.
 * The confirmation is the operation's own `edit.operation` event (its
 * session_id and client_op_id); others' operations are transformed against
 * the pending ones and applied in revision order. Emits 'change'
 * ({op, remote, reset, userId}), 'status' (see `status`), 'resync' and 'error'.
 */
export class EditDocument extends Emitter {
  constructor(client, { resource_type, resource_id, field }) {
    super();
    this.client = client;
    this.resource = { resource_type, resource_id: String(resource_id), field };
    this.channel = `${resource_type}:${resource_id}`;
    this.text = '';
    this.revision = 0;
    this.sessionId = null;
    this.activeEditors = [];
    this.inflight = null;
    this.buffer = null;
    this.closed = false;
    this._sessions = new Set();
    this._early = null;
    this._waiters = [];
    this._lastSend = 0;
  }

  /** 'synchronized', 'awaiting' or 'awaiting-with-buffer'. */
  get status() {
    return !this.inflight ? 'synchronized' : this.buffer ? 'awaiting-with-buffer' : 'awaiting';
  }

  async open() {
    this._off = this.client.on('event', (e) => this.#onEvent(e));
    this._ownsChannel = !this.client.channels.includes(this.channel);
    // The stream must read the channel before the session starts, or the
    // first operations after it could be missed.
    await this.client.subscribe(this.channel);
    await this.#adopt(true);
  }

  /**
   * Starts a session and takes its text and revision. Events that arrive
   * meanwhile wait, then those past the session's revision apply.
   */
  async #adopt(takeContent) {
    this._early = [];
    let s;
    try {
      s = await this.client.request('POST', '/realtime/edit/sessions', this.resource);
    } catch (e) {
      const early = this._early;
      this._early = null;
      for (const ev of early) this.#onEvent(ev);
      throw e;
    }
    this.sessionId = s.session_id;
    this._sessions.add(s.session_id);
    this.activeEditors = s.active_editors;
    if (takeContent) {
      this.text = s.content;
      this.revision = s.revision;
    }
    const early = this._early;
    this._early = null;
    for (const ev of early) this.#onEvent(ev);
    return s;
  }

  /** Applies a local edit (an operation on the current text) and sends it. */
  applyLocal(op) {
    if (this.closed) throw new Error('document is closed');
    this.text = op.apply(this.text);
    if (op.isNoop()) return;
    const before = this.status;
    if (!this.inflight) {
      this.inflight = { op, id: randomId(), body: null };
      this.#send(this.inflight);
    } else {
      this.buffer = this.buffer ? compose(this.buffer, op) : op;
    }
    this.emit('change', { op, remote: false });
    if (this.status !== before) this.emit('status', this.status);
  }

  /** Replaces the whole text (a convenience over applyLocal). */
  setText(text) {
    this.applyLocal(diffToOperation(this.text, text));
  }

  /** Records the current revision as saved (`edit.saved`). */
  save() {
    return this.client.request('POST', `/realtime/edit/sessions/${this.sessionId}/save`);
  }

  /** Leaves the session once pending edits are confirmed (or after `waitMs`). */
  async close(waitMs = 5000) {
    if (this.closed) return;
    await Promise.race([this.whenSynced(), sleep(waitMs)]);
    this.closed = true;
    this._off?.();
    if (this._ownsChannel) this.client.unsubscribe(this.channel).catch(() => {});
    await this.client.request('DELETE', `/realtime/edit/sessions/${this.sessionId}`).catch(() => {});
  }

  /** Resolves when every local edit is confirmed. */
  whenSynced() {
    if (!this.inflight && !this._resyncing) return Promise.resolve();
    return new Promise((resolve) => this._waiters.push(resolve));
  }

  #onEvent(event) {
    if (event.event !== 'edit.operation' || this.closed) return;
    const d = event.data ?? {};
    const r = this.resource;
    if (d.resource_type !== r.resource_type || String(d.resource_id) !== r.resource_id || d.field !== r.field) return;
    if (this._early) {
      this._early.push(event);
      return;
    }
    if (d.revision <= this.revision) return;
    if (d.revision !== this.revision + 1) {
      this.#resync(new Error(`missed revisions ${this.revision + 1} to ${d.revision - 1}`));
      return;
    }
    if (this.inflight && this._sessions.has(d.session_id) && d.client_op_id === this.inflight.id) {
      this.revision = d.revision;
      this.inflight = this.buffer ? { op: this.buffer, id: randomId(), body: null } : null;
      this.buffer = null;
      if (this.inflight) this.#send(this.inflight);
      else this.#settle();
      this.emit('status', this.status);
      return;
    }
    let op;
    try {
      op = TextOperation.fromJSON(d.ops);
      if (this.inflight) [this.inflight.op, op] = transform(this.inflight.op, op);
      if (this.buffer) [this.buffer, op] = transform(this.buffer, op);
      this.text = op.apply(this.text);
    } catch (e) {
      this.#resync(e);
      return;
    }
    this.revision = d.revision;
    this.emit('change', { op, remote: true, userId: d.user_id });
  }

  /** Sends `pending` until it is confirmed, superseded or refused. */
  async #send(pending) {
    // Pace operations well under the server's limit; the buffer absorbs keystrokes.
    const wait = this._lastSend + this.client.options.minOpIntervalMs - Date.now();
    if (wait > 0) await sleep(wait);
    for (let attempt = 0; this.inflight === pending && !this.closed; attempt++) {
      // Fixed at the first try: a retry must repeat the request exactly.
      pending.body ??= { revision: this.revision, ops: pending.op.toJSON(), client_op_id: pending.id };
      this._lastSend = Date.now();
      try {
        await this.client.request('POST', `/realtime/edit/sessions/${this.sessionId}/operations`, pending.body);
        return; // confirmed by its event on the stream
      } catch (e) {
        if (this.inflight !== pending) return;
        if (e.status === 410) {
          if (!(await this.#renewSession(pending))) return;
          continue;
        }
        if (!(e instanceof SwitchyardError) || !e.retryable) {
          this.#resync(e);
          return;
        }
        await sleep(Math.max(this.client._backoff(attempt), e.retryAfterMs ?? 0));
      }
    }
  }

  /**
   * The session expired. Start another, let the stream catch up to its
   * revision (an earlier try of `pending` may have been applied: then its
   * own event confirms it), and resend what is still unconfirmed.
   */
  async #renewSession(pending) {
    try {
      const s = await this.#adopt(false);
      while (this.revision < s.revision && this.inflight === pending && !this.closed) await sleep(100);
    } catch (e) {
      this.#resync(e);
      return false;
    }
    if (this.inflight !== pending) return false;
    pending.id = randomId();
    pending.body = null;
    return true;
  }

  /** Unrecoverable (refused operation, missed events): reload the server's text; unconfirmed local edits are dropped. */
  async #resync(reason) {
    if (this._resyncing) return;
    this._resyncing = true;
    this.emit('error', reason);
    this.inflight = null;
    this.buffer = null;
    for (let attempt = 0; !this.closed; attempt++) {
      try {
        await this.#adopt(true);
        this.emit('resync', { reason });
        this.emit('change', { op: null, remote: true, reset: true });
        break;
      } catch (e) {
        this.emit('error', e);
        await sleep(this.client._backoff(attempt));
      }
    }
    this._resyncing = false;
    this.#settle();
    this.emit('status', this.status);
  }

  #settle() {
    if (this.inflight || this._resyncing) return;
    const waiters = this._waiters;
    this._waiters = [];
    for (const w of waiters) w();
  }
}

/**
 * Binds a document to a <textarea> or <input> (anything with value,
 * selectionStart/End and input events). Local input becomes operations;
 * remote operations update the value and move the selection so it stays on
 * the same text. During IME composition remote edits wait and are merged
 * after it. Returns { dispose() }.
 */
export function bindTextarea(doc, el) {
  let shown = doc.text;
  let composing = false;
  let deferred = null;
  el.value = shown;

  const flush = () => {
    const value = el.value;
    if (value === shown) return;
    const local = diffToOperation(shown, value, el.selectionEnd ?? value.length);
    shown = value;
    if (deferred) {
      const [mine, theirs] = transform(local, deferred);
      deferred = null;
      doc.applyLocal(mine);
      render(theirs);
    } else doc.applyLocal(local);
  };

  const render = (op) => {
    const focused = globalThis.document?.activeElement === el;
    const start = toCodePointIndex(shown, el.selectionStart ?? 0);
    const end = toCodePointIndex(shown, el.selectionEnd ?? 0);
    const collapsed = start === end;
    const next = op.apply(shown);
    const scroll = el.scrollTop;
    el.value = next;
    shown = next;
    if (focused) {
      const s = transformIndex(op, start, !collapsed);
      const e = collapsed ? s : Math.max(s, transformIndex(op, end, false));
      el.setSelectionRange(toUtf16Index(next, s), toUtf16Index(next, e), el.selectionDirection);
    }
    el.scrollTop = scroll;
  };

  const onInput = () => {
    if (!composing) flush();
  };
  const onStart = () => {
    composing = true;
  };
  const onEnd = () => {
    composing = false;
    flush();
    if (deferred) {
      const op = deferred;
      deferred = null;
      render(op);
    }
  };
  const offChange = doc.on('change', ({ op, remote, reset }) => {
    if (!remote) return;
    if (reset) {
      deferred = null;
      shown = doc.text;
      el.value = shown;
      return;
    }
    // The user's own change not yet turned into an operation (composing, or
    // typed this instant) goes first: remote edits wait and are merged then.
    if (composing || el.value !== shown) {
      deferred = deferred ? compose(deferred, op) : op;
      if (!composing) flush();
      return;
    }
    render(op);
  });
  el.addEventListener('input', onInput);
  el.addEventListener('compositionstart', onStart);
  el.addEventListener('compositionend', onEnd);
  return {
    dispose() {
      offChange();
      el.removeEventListener('input', onInput);
      el.removeEventListener('compositionstart', onStart);
      el.removeEventListener('compositionend', onEnd);
    },
  };
}

// ---------------------------------------------------------------------------
// 7. The inbox (§9, §9a): notifications with their read state, and
// conversations. Both follow the events of the user's stream, which carries
// the inbox whatever channels it names (on long polling the client names
// the conversations it knows of).
// ---------------------------------------------------------------------------

/** An id as one URL path segment. */
const segment = (id) => encodeURIComponent(String(id));

/**
 * The user's notifications. `unread` is the live unread count once known
 * (after unreadCount() or list()), kept from `notification`,
 * `notification.read` and `notification.read_all` events, so every tab and
 * device shows the same. Emits 'notification' (a new one), 'read'
 * ({id, read_at, unread_count}), 'read_all' ({read_at, unread_count}) and
 * 'unread' (the count, when it changes).
 */
export class Notifications extends Emitter {
  constructor(client) {
    super();
    this.client = client;
    this.unread = null;
    this._events = 0;
    client.on('event', (e) => this.#onEvent(e));
    // Events before a reset are gone: ask the server again.
    client.on('reset', () => {
      if (this.unread != null) this.unreadCount().catch(() => {});
    });
  }

  /** `GET /realtime/notifications`, newest first; pass `next_before` as `before` for the next page. */
  async list({ unread, limit, before } = {}) {
    const seen = this._events;
    const page = await this.client.request('GET', '/realtime/notifications', undefined, { query: { unread, limit, before } });
    if (seen === this._events) this.#setUnread(page.unread_count);
    return page;
  }

  /** Asks the server for the unread count and keeps it live from then on. */
  async unreadCount() {
    for (let tries = 0; ; tries++) {
      const seen = this._events;
      const { unread_count } = await this.client.request('GET', '/realtime/notifications/unread-count');
      // An event that came meanwhile may or may not be counted: ask again.
      if (seen === this._events || tries >= 2) {
        this.#setUnread(unread_count);
        return unread_count;
      }
    }
  }

  /** Marks one read; the answer and a `notification.read` event carry the new count. */
  async read(id) {
    const answer = await this.client._act('POST', `/realtime/notifications/${segment(id)}/read`);
    this.#setUnread(answer.unread_count);
    return answer;
  }

  /** Marks all read (`notification.read_all` tells the user's other tabs and devices). */
  async readAll() {
    const answer = await this.client._act('POST', '/realtime/notifications/read-all');
    this.#setUnread(answer.unread_count);
    return answer;
  }

  #onEvent(event) {
    if (!event.channel?.startsWith('user:')) return;
    const d = event.data ?? {};
    switch (event.event) {
      case 'notification':
        this._events++;
        if (this.unread != null && !d.read_at) this.#setUnread(this.unread + 1);
        this.emit('notification', d);
        break;
      case 'notification.read':
        this._events++;
        this.#setUnread(d.unread_count);
        this.emit('read', d);
        break;
      case 'notification.read_all':
        this._events++;
        this.#setUnread(d.unread_count);
        this.emit('read_all', d);
        break;
    }
  }

  #setUnread(count) {
    if (typeof count !== 'number' || count === this.unread) return;
    this.unread = count;
    this.emit('unread', count);
  }
}

/** Conversation events passed on by name; `user.typing` becomes 'typing'. */
const CONVERSATION_EVENTS = new Set(['message.created', 'message.updated', 'message.deleted', 'message.read', 'member.added', 'member.removed']);

/**
 * The user's conversations. Sends go through the client's outbox: held
 * while offline, in order with publishes, retried with the same
 * `client_message_id` so the server stores each message once. Emits
 * 'message.created', 'message.updated', 'message.deleted' (the message),
 * 'message.read' ({conversation_id, user_id, message_id, read_at,
 * unread_count}), 'member.added' and 'member.removed' ({conversation_id,
 * channel, user_id, ...}), 'typing' ({conversation_id, user_id,
 * is_typing}) and 'reset' (events were lost: reload what is shown).
 */
export class Conversations extends Emitter {
  constructor(client) {
    super();
    this.client = client;
    client.on('event', (e) => this.#onEvent(e));
    client.on('reset', (r) => this.emit('reset', r));
  }

  /**
   * Opens the direct conversation with `userId` (one per pair: the same
   * one whoever opens it) or a new group: `{type: 'group', title, members}`.
   */
  async open({ type = 'direct', userId, user_id, title, members } = {}) {
    const url = '/realtime/conversations';
    const conversation =
      type === 'group'
        ? await this.client.request('POST', url, { type, title, members })
        : await this.client._act('POST', url, { type, user_id: userId ?? user_id });
    this.client._learnConversations([conversation.channel]);
    return conversation;
  }

  /** `GET /realtime/conversations`, by last activity, with unread counts and members' read positions. */
  async list({ limit, before } = {}) {
    const page = await this.client.request('GET', '/realtime/conversations', undefined, { query: { limit, before } });
    this.client._learnConversations(page.conversations.map((c) => c.channel));
    return page;
  }

  /** A page of messages, newest first; pass `next_before` as `before` for older ones. */
  messages(id, { before, limit } = {}) {
    return this.client.request('GET', `/realtime/conversations/${segment(id)}/messages`, undefined, { query: { before, limit } });
  }

  /**
   * Sends a message through the outbox. The promise resolves with the
   * stored message and carries `clientMessageId`, which its
   * `message.created` event will carry too (to match an optimistic copy).
   */
  send(id, content, { clientMessageId = randomId() } = {}) {
    const sending = this.client._outbox.push({
      path: `/realtime/conversations/${segment(id)}/messages`,
      body: { content, client_message_id: clientMessageId },
    });
    return Object.assign(sending, { clientMessageId });
  }

  /** Replaces the content of one's own message (`message.updated`). */
  edit(id, messageId, content) {
    return this.client.request('PATCH', `/realtime/conversations/${segment(id)}/messages/${segment(messageId)}`, { content });
  }

  /** Deletes one's own message; it keeps its place with empty content (`message.deleted`). */
  delete(id, messageId) {
    return this.client.request('DELETE', `/realtime/conversations/${segment(id)}/messages/${segment(messageId)}`);
  }

  /** Moves the user's read position forward to `messageId` (`message.read`); never back. */
  read(id, messageId) {
    return this.client._act('POST', `/realtime/conversations/${segment(id)}/read`, { message_id: messageId });
  }

  /** Says once that the user is typing (or stopped); prefer typingIndicator(). */
  typing(id, isTyping) {
    return this.client.sendTyping('conversation', id, 'message', isTyping);
  }

  /** Announces typing in conversation `id` while input() is called, and stops by itself. */
  typingIndicator(id, options) {
    return this.client.typingIndicator('conversation', id, 'message', options);
  }

  #onEvent(event) {
    if (!event.channel?.startsWith('conversation:')) return;
    const conversationId = event.channel.slice('conversation:'.length);
    const d = event.data ?? {};
    if (event.event === 'user.typing') {
      this.emit('typing', { conversation_id: conversationId, user_id: d.user_id, is_typing: !!d.is_typing });
      return;
    }
    if (!CONVERSATION_EVENTS.has(event.event)) return;
    if (event.event === 'member.removed' && d.user_id === this.client.userId) this.client._learnConversations([], [event.channel]);
    this.emit(event.event, { conversation_id: conversationId, ...d });
  }
}
