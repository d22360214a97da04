// With the SSE route blocked (every request aborted), or held without an
// answer like a proxy that buffers the stream, the client falls back to long
// polling and keeps receiving every event once, in order. Told to prefer
// WebSocket, a client whose sockets are closed at once falls back to SSE.
import { assert, assertEqual, ticker, waitFor } from '../lib/api.mjs';
import { openHarness } from '../lib/harness.mjs';

export const name = 'fallback: SSE blocked or buffered, the client long-polls and keeps receiving; WebSocket falls back to SSE';

async function receivesAll(h, client, tick, channel, count) {
  const ids = await tick.done;
  const log = await waitFor(`${client} to receive ${count} events`, async () => {
    const l = await h.log(client);
    return l.events.filter((e) => e.event === 'tick' && e.channel === channel).length >= count && l;
  }, { detail: () => h.log(client) });
  assertEqual(log.events.filter((e) => e.event === 'tick' && e.channel === channel).map((e) => e.id), ids, `${client}: every event once, in order`);
  return log;
}

export async function run({ browser, startServer, token, fail }) {
  const server = await startServer();
  const backend = token({ sub: 'backend', role: 'service' });
  const mint = (user) => token({ sub: user, channels: ['project:*'] });

  // Blocked: the connection is refused every time.
  const blocked = await openHarness(browser, server.url, { mint, onError: fail });
  let sseAttempts = 0;
  await blocked.page.route('**/realtime/sse**', (route) => {
    sseAttempts++;
    return route.abort('connectionrefused');
  });
  await blocked.start('c', 'dan', { channels: ['project:blocked'], backoff: { minMs: 300, maxMs: 2000 } });
  // Events flow while the client is still trying SSE, and after.
  const tick = ticker(() => server.url, backend, 'project:blocked', { count: 20, everyMs: 150, prefix: 'blocked' });
  const log = await receivesAll(blocked, 'c', tick, 'project:blocked', 20);
  assert(sseAttempts >= 2, `EventSource was tried (${sseAttempts} times)`);
  assertEqual(log.fallbacks.map((f) => [f.from, f.to, f.reason]), [['sse', 'poll', 'failed']], 'one fallback, SSE to polling');
  assertEqual(log.states.at(-1), 'fallback:poll', 'the state shows the fallback');
  await blocked.close();

  // Buffered: the stream's response never arrives (a proxy holding it).
  const buffered = await openHarness(browser, server.url, { mint, onError: fail });
  await buffered.page.route('**/realtime/sse**', () => {});
  await buffered.start('c', 'eve', { channels: ['project:buffered'], sseOpenTimeoutMs: 2000, probeTimeoutMs: 1500, backoff: { minMs: 300, maxMs: 2000 } });
  const tick2 = ticker(() => server.url, backend, 'project:buffered', { count: 10, everyMs: 150, prefix: 'buffered' });
  const log2 = await receivesAll(buffered, 'c', tick2, 'project:buffered', 10);
  assertEqual(log2.fallbacks.map((f) => [f.from, f.to, f.reason]), [['sse', 'poll', 'silent']], 'a silent stream falls back');
  await buffered.close();

  // WebSocket preferred, but every socket is closed as soon as it opens.
  const noSockets = await openHarness(browser, server.url, { mint, onError: fail });
  let sockets = 0;
  await noSockets.page.routeWebSocket(/\/realtime\/connect/, (ws) => {
    sockets++;
    ws.close();
  });
  await noSockets.start('c', 'gil', { channels: ['project:nows'], preferWebSocket: true, backoff: { minMs: 300, maxMs: 2000 } });
  const tick3 = ticker(() => server.url, backend, 'project:nows', { count: 10, everyMs: 150, prefix: 'nows' });
  const log3 = await receivesAll(noSockets, 'c', tick3, 'project:nows', 10);
  assert(sockets >= 2, `WebSocket was tried (${sockets} times)`);
  assertEqual(log3.fallbacks.map((f) => [f.from, f.to]), [['websocket', 'sse']], 'WebSocket falls back to SSE');
  assertEqual(log3.states.at(-1), 'fallback:sse', 'the state shows the fallback');
  await noSockets.close();
}
