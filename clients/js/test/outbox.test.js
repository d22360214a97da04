// Unit tests of the outbox (order, exactly-once delivery with idempotency
// keys, holding while offline, permanent refusals) and of the backoff bounds.
import test from 'node:test';
import assert from 'node:assert/strict';
import { Outbox, SwitchyardError, backoffDelay, parseRetryAfter } from '../switchyard.js';
import { rng } from '../test-support/random.js';

/** A server that dedupes by idempotency key, like §6, and sometimes loses answers. */
function flakyServer(random) {
  const log = [];
  const receipts = new Map();
  return {
    log,
    async send(payload) {
      await new Promise((r) => setTimeout(r, random() * 2));
      const r = random();
      if (r < 0.2) throw new SwitchyardError('connection refused'); // never arrived
      if (r < 0.3) throw new SwitchyardError('busy', { status: 429, code: 'rate_limit_exceeded', retryAfterMs: 1 });
      if (!receipts.has(payload.idempotency_key)) {
        log.push(payload.n);
        receipts.set(payload.idempotency_key, { id: log.length });
      }
      if (r < 0.45) throw new SwitchyardError('answer lost'); // applied, answer lost
      return receipts.get(payload.idempotency_key);
    },
  };
}

const noWait = (ms, signal) => new Promise((r) => (signal?.aborted ? r() : setTimeout(r, 0)));

test('the outbox delivers each send once, in order, through lost requests and answers', async () => {
  const random = rng(3);
  const server = flakyServer(random);
  const outbox = new Outbox((p) => server.send(p), { wait: noWait });
  const sends = [];
  for (let n = 0; n < 200; n++) sends.push(outbox.push({ n, idempotency_key: `k${n}` }));
  const receipts = await Promise.all(sends);
  assert.deepEqual(server.log, [...Array(200).keys()]);
  assert.deepEqual(receipts.map((r) => r.id), [...Array(200).keys()].map((n) => n + 1));
  assert.equal(outbox.size, 0);
});

test('a permanent refusal rejects that send only; the rest go on in order', async () => {
  const delivered = [];
  const outbox = new Outbox(async (p) => {
    if (p.n === 1) throw new SwitchyardError('no', { status: 403, code: 'permission_denied' });
    delivered.push(p.n);
    return p.n;
  });
  const results = await Promise.allSettled([0, 1, 2].map((n) => outbox.push({ n })));
  assert.deepEqual(results.map((r) => r.status), ['fulfilled', 'rejected', 'fulfilled']);
  assert.equal(results[1].reason.code, 'permission_denied');
  assert.deepEqual(delivered, [0, 2]);
});

test('offline, the outbox holds its sends until woken', async () => {
  let online = false;
  const delivered = [];
  const outbox = new Outbox(async (p) => delivered.push(p.n), { isOnline: () => online });
  const done = Promise.all([outbox.push({ n: 1 }), outbox.push({ n: 2 })]);
  await new Promise((r) => setTimeout(r, 30));
  assert.deepEqual(delivered, []);
  assert.equal(outbox.size, 2);
  online = true;
  outbox.wake();
  await done;
  assert.deepEqual(delivered, [1, 2]);
});

test('a retry waits at least Retry-After', async () => {
  const waits = [];
  let calls = 0;
  const outbox = new Outbox(
    async () => {
      if (calls++ === 0) throw new SwitchyardError('slow down', { status: 429, retryAfterMs: 7000 });
      return 'ok';
    },
    { wait: async (ms) => waits.push(ms), delay: () => 1000 },
  );
  assert.equal(await outbox.push({}), 'ok');
  assert.deepEqual(waits, [7000]);
});

test('backoff grows from 1 s to at most 60 s, with jitter', () => {
  const random = rng(11);
  let previousMax = 0;
  for (let attempt = 0; attempt < 40; attempt++) {
    const samples = Array.from({ length: 200 }, () => backoffDelay(attempt, { random }));
    const lo = Math.min(...samples);
    const hi = Math.max(...samples);
    assert.ok(lo >= 1000 && hi <= 60000, `attempt ${attempt}: ${lo}..${hi}`);
    assert.ok(hi >= previousMax, 'never shrinks');
    if (attempt >= 1 && attempt <= 4) assert.ok(hi > lo, `attempt ${attempt} is jittered`);
    previousMax = hi;
  }
  assert.equal(backoffDelay(0, { random: () => 0 }), 1000);
  assert.equal(backoffDelay(3, { random: () => 0 }), 8000);
  assert.equal(backoffDelay(50, { random: () => 0.99 }), 60000);
});

test('Retry-After is read in seconds or as a date', () => {
  assert.equal(parseRetryAfter('3'), 3000);
  assert.equal(parseRetryAfter(null), null);
  assert.equal(parseRetryAfter('soon'), null);
  const now = Date.parse('2026-11-22T10:00:00Z');
  assert.equal(parseRetryAfter('Sun, 22 Nov 2026 10:00:05 GMT', now), 5000);
});
