// Unit tests of the inbox on the real SwitchyardClient, with a fake network
// (fetch, EventSource, WebSocket): a client with no channels reads the
// inbox; events of a conversation joined while the stream is open arrive
// once even after higher ids; the live unread count of notifications;
// conversation messages through the outbox (held offline, each stored once
// through lost answers); conversation events by name; long polls that name
// channels name the conversations known too.
import test from 'node:test';
import assert from 'node:assert/strict';
import { SwitchyardClient } from '../switchyard.js';
import { FakeEventSource, fakeToken, install } from '../test-support/fake-network.js';

const URL_BASE = 'http://switchyard.test';
const HEAD = 10; // the log's end when the client starts
const tick = (ms = 0) => new Promise((r) => setTimeout(r, ms));

async function until(what, check, timeoutMs = 2000) {
  const deadline = Date.now() + timeoutMs;
  while (!check()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await tick(2);
  }
}

/** The inbox endpoints, kept in memory; `loseAnswers` drops that many answers to sends after storing them. */
function inboxServer() {
  const server = {
    unread: 2,
    messages: [],
    loseAnswers: 0,
    conversations: [{ id: 'c1', type: 'direct', channel: 'conversation:c1', unread_count: 0, members: [] }],
    onCount: null,
    async handle({ method, url, body }) {
      const p = url.pathname;
      if (p === '/realtime/poll') {
        if (url.searchParams.get('timeout') !== '0') await tick(10);
        return { body: { events: [], last_poll_id: HEAD, has_more: false } };
      }
      if (p === '/realtime/notifications/unread-count') {
        await server.onCount?.();
        return { body: { unread_count: server.unread } };
      }
      if (p === '/realtime/notifications/read-all') {
        server.unread = 0;
        return { body: { id: null, read_at: '2026-11-22T10:00:00.000Z', unread_count: 0 } };
      }
      if (p === '/realtime/conversations' && method === 'GET') return { body: { conversations: server.conversations, next_before: null } };
      const send = /^\/realtime\/conversations\/([^/]+)\/messages$/.exec(p);
      if (send && method === 'POST') {
        if (body.content === 'forbidden') return { status: 403, body: { type: 'error', code: 'permission_denied', message: 'no', details: {} } };
        let message = server.messages.find((m) => m.client_message_id === body.client_message_id);
        const created = !message;
        if (created) {
          message = { id: `m${server.messages.length + 1}`, conversation_id: decodeURIComponent(send[1]), content: body.content, client_message_id: body.client_message_id };
          server.messages.push(message);
        }
        if (server.loseAnswers > 0) {
          server.loseAnswers--;
          throw new TypeError('connection reset'); // stored, but the answer is lost
        }
        return { status: created ? 201 : 200, body: message };
      }
      return { status: 404, body: { type: 'error', code: 'not_found', message: `no ${method} ${p}`, details: {} } };
    },
  };
  return server;
}

/** A client for user bob, stopped when the test ends (even when it fails). */
function newClient(t, options = {}) {
  const client = new SwitchyardClient({ url: URL_BASE, getToken: () => fakeToken('bob'), transport: 'sse', backoff: { minMs: 1, maxMs: 5 }, ...options });
  t.after(() => {
    client.stop();
    client._outbox.wake(); // whatever still waits in it is refused now (install)
  });
  return client;
}

/** Starts a client on SSE and opens its stream with a `subscription` naming `channels`. */
async function openSse(client, channels) {
  await client.start();
  await until('the EventSource', () => FakeEventSource.latest());
  const es = FakeEventSource.latest();
  es.open({ type: 'subscription', status: 'success', channels, errors: [] });
  return es;
}

const event = (id, channel, name, data = {}) => ({ type: 'event', id, channel, event: name, data, user_id: 'x', timestamp: '2026-11-22T10:00:00.000Z' });

test('a client with no channels reads the inbox: its stream and polls name no channel', async (t) => {
  const server = inboxServer();
  const net = install(t, (r) => server.handle(r));
  const client = newClient(t);
  const es = await openSse(client, ['user:bob', 'conversation:c1']);
  assert.equal(es.url.pathname, '/realtime/sse');
  assert.equal(es.url.searchParams.has('channels'), false);
  assert.equal(es.url.searchParams.get('last_event_id'), String(HEAD));
  const head = net.requests.find((r) => r.url.pathname === '/realtime/poll');
  assert.equal(head.url.searchParams.has('channels'), false);
  assert.equal(client.state, 'open');
  assert.equal(client.userId, 'bob');
  client.stop();

  const polling = newClient(t, { transport: 'poll' });
  await polling.start();
  await until('two polls', () => net.requests.filter((r) => r.url.pathname === '/realtime/poll').length >= 3);
  polling.stop();
  assert.ok(net.requests.filter((r) => r.url.pathname === '/realtime/poll').every((r) => !r.url.searchParams.has('channels')));
});

test('on WebSocket a client with no channels subscribes to its own channel, which brings the inbox', async (t) => {
  const server = inboxServer();
  const net = install(t, (r) => server.handle(r));
  const sockets = [];
  globalThis.WebSocket = class {
    constructor(url) {
      this.url = url;
      this.sent = [];
      sockets.push(this);
    }
    send(text) {
      this.sent.push(JSON.parse(text));
    }
    close() {}
  };
  t.after(() => delete globalThis.WebSocket);
  const client = newClient(t, { transport: 'websocket' });
  const events = [];
  client.on('event', (e) => events.push(e.id));
  await client.start();
  await until('the socket', () => sockets.length === 1);
  const ws = sockets[0];
  ws.onmessage({ data: JSON.stringify({ type: 'connected', connection_id: 'k', user_id: 'bob' }) });
  assert.deepEqual(ws.sent[0].channels, ['notifications']);
  ws.onmessage({ data: JSON.stringify({ type: 'subscription', status: 'success', channels: ['user:bob', 'conversation:c1'], errors: [] }) });
  assert.equal(client.state, 'open');
  // One reader for the inbox: its events move the cursor.
  ws.onmessage({ data: JSON.stringify(event(11, 'conversation:c1', 'message.created')) });
  ws.onmessage({ data: JSON.stringify(event(12, 'user:bob', 'notification')) });
  assert.deepEqual(events, [11, 12]);
  assert.equal(client.cursor, 12);
  client.stop();
});

test('events of a conversation joined while the stream is open arrive once, even after higher ids', async (t) => {
  const server = inboxServer();
  const net = install(t, (r) => server.handle(r));
  const client = newClient(t);
  const delivered = [];
  client.on('event', (e) => delivered.push(e.id));
  const es = await openSse(client, ['user:bob']);
  es.send(event(11, 'user:bob', 'notification'));
  // Bob is added to c1: the server follows it with a second reader, whose
  // events may come after higher ids of the first.
  es.send({ type: 'subscription', status: 'success', channels: ['user:bob', 'conversation:c1'], errors: [] });
  es.send(event(13, 'user:bob', 'notification'));
  es.send(event(12, 'conversation:c1', 'member.added'));
  es.send(event(12, 'conversation:c1', 'member.added'));
  es.send(event(14, 'conversation:c1', 'message.created'));
  assert.deepEqual(delivered, [11, 13, 12, 14]);
  assert.equal(client.cursor, 13, 'only the first reader moves the cursor');
  es.send(event(13, 'user:bob', 'notification'));
  es.send(event(15, 'user:bob', 'notification'));
  assert.deepEqual(delivered, [11, 13, 12, 14, 15]);

  // The browser reconnects the stream from its Last-Event-ID: one reader
  // again, replaying what was delivered.
  es.open({ type: 'subscription', status: 'success', channels: ['user:bob', 'conversation:c1'], errors: [] });
  for (const id of [14, 15]) es.send(event(id, id === 14 ? 'conversation:c1' : 'user:bob', 'x'));
  es.send(event(16, 'conversation:c1', 'message.created'));
  assert.deepEqual(delivered, [11, 13, 12, 14, 15, 16]);
  assert.equal(client.cursor, 16);
  client.stop();
});

test('the unread count of notifications is kept live from events, on every tab', async (t) => {
  const server = inboxServer();
  const net = install(t, (r) => server.handle(r));
  const received = [];
  const client = newClient(t, { onNotification: (n) => received.push(n.title) });
  const counts = [];
  client.notifications.on('unread', (n) => counts.push(n));
  const es = await openSse(client, ['user:bob']);
  assert.equal(client.notifications.unread, null, 'unknown until asked');
  es.send(event(11, 'user:bob', 'notification', { id: 'n0', title: 'before', read_at: null }));
  assert.equal(client.notifications.unread, null, 'not guessed from events alone');

  assert.equal(await client.notifications.unreadCount(), 2);
  es.send(event(12, 'user:bob', 'notification', { id: 'n3', title: 'Task 123 is yours', read_at: null }));
  assert.equal(client.notifications.unread, 3);
  // Another tab read one: the event carries the count.
  es.send(event(13, 'user:bob', 'notification.read', { id: 'n1', read_at: '2026-11-22T10:00:00.000Z', unread_count: 2 }));
  assert.equal(client.notifications.unread, 2);
  assert.equal((await client.notifications.readAll()).unread_count, 0);
  assert.equal(client.notifications.unread, 0);
  es.send(event(14, 'user:bob', 'notification.read_all', { read_at: '2026-11-22T10:00:00.000Z', unread_count: 0 }));
  // Events on other channels are not notifications.
  es.send(event(15, 'project:1', 'notification', { title: 'not mine' }));
  assert.deepEqual(counts, [2, 3, 2, 0]);
  assert.deepEqual(received, ['before', 'Task 123 is yours']);

  // A notification that arrives while the count is being read may or may
  // not be in it: the client asks again.
  server.unread = 5;
  let asked = 0;
  server.onCount = () => {
    if (asked++ === 0) es.send(event(16, 'user:bob', 'notification', { id: 'n9', title: 'racing', read_at: null }));
  };
  assert.equal(await client.notifications.unreadCount(), 5);
  assert.equal(asked, 2);
  assert.equal(client.notifications.unread, 5);
  client.stop();
});

test('messages go through the outbox: held offline, in order, each stored once through lost answers', async (t) => {
  const server = inboxServer();
  const net = install(t, (r) => server.handle(r));
  const client = newClient(t);
  await openSse(client, ['user:bob', 'conversation:c1']);

  net.setOnline(false);
  const first = client.conversations.send('c1', 'Launch at noon?');
  const second = client.conversations.send('c1', 'Or at one?', { clientMessageId: 'mine-2' });
  assert.match(first.clientMessageId, /^[0-9a-f]{32}$/);
  assert.equal(second.clientMessageId, 'mine-2');
  await tick(30);
  assert.equal(client.pending, 2);
  assert.equal(server.messages.length, 0, 'nothing sent while offline');

  server.loseAnswers = 2; // stored, then the answer is lost: the retry must not store it again
  net.setOnline(true);
  const [a, b] = await Promise.all([first, second]);
  assert.deepEqual(server.messages.map((m) => m.content), ['Launch at noon?', 'Or at one?']);
  assert.deepEqual([a.id, b.id], ['m1', 'm2']);
  assert.equal(a.client_message_id, first.clientMessageId);
  assert.equal(client.pending, 0);
  const posts = net.requests.filter((r) => r.method === 'POST' && r.url.pathname.endsWith('/messages'));
  assert.ok(posts.length >= 4, `retried (${posts.length} requests)`);
  assert.deepEqual(new Set(posts.map((r) => r.body.client_message_id)), new Set([first.clientMessageId, 'mine-2']));

  // A refusal rejects that message only.
  const results = await Promise.allSettled(['fine', 'forbidden', 'also fine'].map((c) => client.conversations.send('c1', c)));
  assert.deepEqual(results.map((r) => r.status), ['fulfilled', 'rejected', 'fulfilled']);
  assert.equal(results[1].reason.code, 'permission_denied');
  assert.deepEqual(server.messages.map((m) => m.content).slice(2), ['fine', 'also fine']);
  client.stop();
});

test('conversation events are emitted by name, with the conversation id', async (t) => {
  const server = inboxServer();
  const net = install(t, (r) => server.handle(r));
  const client = newClient(t);
  const seen = [];
  for (const name of ['message.created', 'message.updated', 'message.deleted', 'message.read', 'member.added', 'member.removed', 'typing']) {
    client.conversations.on(name, (v) => seen.push([name, v.conversation_id, v.user_id ?? v.sender?.user_id, v.is_typing]));
  }
  const es = await openSse(client, ['user:bob', 'conversation:c1']);
  es.send(event(11, 'conversation:c1', 'member.added', { channel: 'conversation:c1', user_id: 'ann' }));
  es.send(event(12, 'conversation:c1', 'message.created', { id: 'm1', conversation_id: 'c1', sender: { user_id: 'ann' }, content: 'hi' }));
  es.send(event(13, 'conversation:c1', 'user.typing', { user_id: 'ann', resource_type: 'conversation', resource_id: 'c1', field: 'message', is_typing: true }));
  es.send(event(14, 'conversation:c1', 'message.read', { conversation_id: 'c1', user_id: 'bob', message_id: 'm1', unread_count: 0 }));
  es.send(event(15, 'conversation:c1', 'user.connected', { user_id: 'ann' }));
  es.send(event(16, 'task:1', 'message.created', { content: 'not a conversation' }));
  assert.deepEqual(seen, [
    ['member.added', 'c1', 'ann', undefined],
    ['message.created', 'c1', 'ann', undefined],
    ['typing', 'c1', 'ann', true],
    ['message.read', 'c1', 'bob', undefined],
  ]);
  client.stop();
});

test('a long poll that names channels names the conversations known too', async (t) => {
  const server = inboxServer();
  const net = install(t, (r) => server.handle(r));
  const client = newClient(t, { transport: 'poll', channels: ['project:1'] });
  await client.start();
  const polled = () => net.requests.filter((r) => r.url.pathname === '/realtime/poll' && r.url.searchParams.get('timeout') !== '0').map((r) => r.url.searchParams.get('channels'));
  await until('a poll', () => polled().length > 0);
  assert.equal(polled().at(-1), 'project:1');
  await client.conversations.list();
  await until('a poll naming c1', () => polled().at(-1) === 'project:1,conversation:c1');
  client.stop();
});
