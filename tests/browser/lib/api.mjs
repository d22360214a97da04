// Node-side helpers for the browser tests: HS256 tokens signed with the
// server's secret, calls to the API (broadcasts from a "backend", reads of
// the log and of documents), and polling until a condition holds.
import crypto from 'node:crypto';

const b64url = (value) => Buffer.from(typeof value === 'string' ? value : JSON.stringify(value)).toString('base64url');

/** An HS256 JWT, as the server verifies them (PROTOCOL §1). */
export function signToken(secret, { sub, ttl = 3600, ...claims }) {
  const now = Math.floor(Date.now() / 1000);
  const body = `${b64url({ alg: 'HS256', typ: 'JWT' })}.${b64url({ sub, iat: now, exp: now + ttl, ...claims })}`;
  return `${body}.${crypto.createHmac('sha256', secret).update(body).digest('base64url')}`;
}

export async function api(base, token, method, path, body) {
  const res = await fetch(`${base}${path}`, {
    method,
    headers: { Authorization: `Bearer ${token}`, ...(body ? { 'Content-Type': 'application/json' } : {}) },
    body: body ? JSON.stringify(body) : undefined,
  });
  const json = await res.json().catch(() => null);
  if (!res.ok) throw Object.assign(new Error(`${method} ${path}: ${res.status} ${JSON.stringify(json)}`), { status: res.status });
  return json;
}

/** Every retained event of `channels` (read with a service token). */
export async function readLog(base, token, channels) {
  const events = [];
  let cursor = 0;
  for (;;) {
    const page = await api(base, token, 'GET', `/realtime/poll?channels=${channels.join(',')}&last_poll_id=${cursor}&timeout=0&limit=1000`);
    events.push(...page.events);
    cursor = page.last_poll_id;
    if (!page.has_more) return events;
  }
}

/**
 * A backend that broadcasts `count` numbered events to `channel`, one every
 * `everyMs`, retrying each (same idempotency key) until the server takes it,
 * so it can keep going through a restart. Resolves with the receipts' ids.
 */
export function ticker(getBase, token, channel, { count, everyMs = 100, event = 'tick', prefix = 'tick' }) {
  const ids = [];
  const run = (async () => {
    for (let n = 0; n < count; n++) {
      const body = { channel, event, data: { n }, idempotency_key: `${prefix}-${n}` };
      for (;;) {
        try {
          ids.push((await api(getBase(), token, 'POST', '/realtime/broadcast', body)).id);
          break;
        } catch {
          await sleep(100);
        }
      }
      await sleep(everyMs);
    }
    return ids;
  })();
  return { ids, done: run };
}

export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/** Polls `check` (sync or async) until it returns a truthy value. */
export async function waitFor(what, check, { timeoutMs = 20000, everyMs = 100, detail } = {}) {
  const deadline = Date.now() + timeoutMs;
  let last;
  for (;;) {
    try {
      last = await check();
      if (last) return last;
    } catch (e) {
      last = e;
    }
    if (Date.now() > deadline) {
      const more = detail ? `\n${JSON.stringify(await detail().catch((e) => e.message))}` : '';
      throw new Error(`timed out waiting for ${what} (last: ${last instanceof Error ? last.message : JSON.stringify(last)})${more}`);
    }
    await sleep(everyMs);
  }
}

export function assert(condition, message) {
  if (!condition) throw new Error(`assertion failed: ${message}`);
}

export function assertEqual(actual, expected, message) {
  const a = JSON.stringify(actual);
  const e = JSON.stringify(expected);
  if (a !== e) throw new Error(`${message}\n  expected ${e}\n  actual   ${a}`);
}
