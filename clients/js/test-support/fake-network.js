// Stand-ins for what the client takes from the browser, for unit tests of
// SwitchyardClient itself: an EventSource the test feeds by hand, a fetch
// that routes requests to a handler, navigator.onLine with the window's
// online/offline events. install() replaces the globals for one test.

/** An EventSource whose messages the test sends: `es.open()`, `es.send(msg)`. */
export class FakeEventSource {
  static CONNECTING = 0;
  static OPEN = 1;
  static CLOSED = 2;
  static instances = [];

  constructor(url) {
    this.url = new URL(url);
    this.readyState = FakeEventSource.CONNECTING;
    this.onopen = null;
    this.onmessage = null;
    this.onerror = null;
    FakeEventSource.instances.push(this);
  }

  /** The stream is open: its `open` event and the server's first messages. */
  open(...messages) {
    this.readyState = FakeEventSource.OPEN;
    this.onopen?.({});
    for (const m of messages) this.send(m);
  }

  send(message) {
    if (this.readyState !== FakeEventSource.CLOSED) this.onmessage?.({ data: JSON.stringify(message) });
  }

  close() {
    this.readyState = FakeEventSource.CLOSED;
  }

  static latest() {
    return FakeEventSource.instances.at(-1);
  }
}

/** A token the client can read its user from (not signed: the fake does not check). */
export function fakeToken(sub) {
  const part = (v) => Buffer.from(JSON.stringify(v)).toString('base64url');
  return `${part({ alg: 'HS256', typ: 'JWT' })}.${part({ sub, exp: Math.floor(Date.now() / 1000) + 3600 })}.sig`;
}

/**
 * Replaces fetch with `handler({method, url, body})`, which returns
 * `{status, body}` (status 200 when left out) or throws (the network failed),
 * EventSource with FakeEventSource, and navigator.onLine and the window's
 * online/offline events with `network.setOnline()`. Every request is kept in
 * `requests`. When test `t` ends the fakes stay, closed: online, and every
 * request refused for good, so nothing the test left behind (a queued
 * message, a poll loop) retries forever and keeps the process alive.
 */
export function install(t, handler) {
  const requests = [];
  const window = new EventTarget();
  const network = {
    online: true,
    closed: false,
    requests,
    /** Cuts or restores the network, with the event a browser fires. */
    setOnline(online) {
      network.online = online;
      window.dispatchEvent(new Event(online ? 'online' : 'offline'));
    },
  };
  FakeEventSource.instances.length = 0;
  globalThis.EventSource = FakeEventSource;
  globalThis.addEventListener = window.addEventListener.bind(window);
  globalThis.removeEventListener = window.removeEventListener.bind(window);
  Object.defineProperty(globalThis, 'navigator', { value: { get onLine() { return network.online; } }, configurable: true, writable: true });
  globalThis.fetch = async (url, init = {}) => {
    const request = { method: init.method ?? 'GET', url: new URL(url), body: init.body ? JSON.parse(init.body) : undefined };
    requests.push(request);
    if (!network.online) throw new TypeError('Failed to fetch');
    const answer = network.closed
      ? { status: 400, body: { type: 'error', code: 'invalid_message', message: 'the test is over', details: {} } }
      : await handler(request);
    return new Response(answer.body === undefined ? '' : JSON.stringify(answer.body), {
      status: answer.status ?? 200,
      headers: { 'Content-Type': 'application/json' },
    });
  };
  t.after(() => {
    network.closed = true;
    network.online = true;
    for (const es of FakeEventSource.instances) es.close();
  });
  return network;
}
