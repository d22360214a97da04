// An in-memory stand-in for the server's editing endpoints (PROTOCOL §8) and
// the event stream, for unit tests of the OT client: transforms an incoming
// operation past everything applied since its revision (the incoming one
// inserts first), dedupes client_op_id per session, and delivers
// `edit.operation` events to each client in order after random delays.
// Requests can fail before or after being applied.
import { SwitchyardError, TextOperation, transform } from '../switchyard.js';

const RESOURCE = { resource_type: 'task', resource_id: '1', field: 'description' };

export class FakeEditServer {
  constructor(random, { failures = 0 } = {}) {
    this.random = random;
    this.failures = failures;
    this.content = '';
    this.history = [];
    this.answers = new Map();
    this.sessions = new Map();
    this.clients = [];
    this.eventId = 0;
  }

  /** A client object with what EditDocument uses: on, subscribe, request, options, channels. */
  client(userId) {
    const server = this;
    const listeners = new Set();
    const queue = [];
    let pumping = false;
    const c = {
      userId,
      channels: [],
      options: { minOpIntervalMs: 0 },
      _backoff: () => 1,
      on(name, fn) {
        listeners.add(fn);
        return () => listeners.delete(fn);
      },
      subscribe: async () => {},
      unsubscribe: async () => {},
      request: (method, path, body) => server.#request(userId, method, path, body),
      deliver(event) {
        queue.push(event);
        if (pumping) return;
        pumping = true;
        (async () => {
          while (queue.length) {
            await server.#pause();
            const next = queue.shift();
            for (const fn of [...listeners]) fn(next);
          }
          pumping = false;
        })();
      },
      get idle() {
        return !pumping && queue.length === 0;
      },
    };
    this.clients.push(c);
    return c;
  }

  #pause() {
    return new Promise((r) => setTimeout(r, Math.floor(this.random() * 3)));
  }

  async #request(userId, method, path, body) {
    await this.#pause();
    if (method === 'POST' && path === '/realtime/edit/sessions') {
      const id = `s${this.sessions.size + 1}`;
      this.sessions.set(id, userId);
      return { session_id: id, ...RESOURCE, content: this.content, revision: this.history.length, active_editors: [] };
    }
    const m = path.match(/^\/realtime\/edit\/sessions\/(\w+)\/operations$/);
    if (method !== 'POST' || !m) throw new Error(`unexpected ${method} ${path}`);
    if (this.random() < this.failures) throw new SwitchyardError('lost on the way');
    const answer = this.#submit(m[1], body);
    if (this.random() < this.failures) throw new SwitchyardError('answer lost');
    await this.#pause();
    return answer;
  }

  #submit(sessionId, { revision, ops, client_op_id }) {
    const key = `${sessionId}/${client_op_id}`;
    if (this.answers.has(key)) return this.answers.get(key);
    let op = TextOperation.fromJSON(ops);
    for (const applied of this.history.slice(revision)) op = transform(op, applied)[0];
    this.content = op.apply(this.content);
    this.history.push(op);
    const answer = { revision: this.history.length, ops: op.toJSON() };
    this.answers.set(key, answer);
    const event = {
      type: 'event',
      id: ++this.eventId,
      channel: 'task:1',
      event: 'edit.operation',
      data: { session_id: sessionId, user_id: this.sessions.get(sessionId), ...RESOURCE, revision: answer.revision, ops: answer.ops, client_op_id },
    };
    for (const c of this.clients) c.deliver(event);
    return answer;
  }
}
