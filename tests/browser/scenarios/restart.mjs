// The server is stopped with SIGTERM and started again on the same database
// and port while a backend keeps broadcasting, then killed (SIGKILL, no
// shutdown message: the browser's own EventSource reconnection with
// Last-Event-ID takes over) and started again: clients on SSE, long polling
// and WebSocket each end with every event exactly once, in order.
import { assert, assertEqual, sleep, ticker, waitFor } from '../lib/api.mjs';
import { openHarness } from '../lib/harness.mjs';

export const name = 'restart: every stream resumes with nothing lost or repeated';

export async function run({ browser, startServer, token, fail }) {
  const server = await startServer();
  const channel = 'project:restart';
  const mint = (user) => token({ sub: user, channels: [channel] });
  const h = await openHarness(browser, server.url, { mint, onError: fail });
  const transports = { sse: 'ann', poll: 'ben', websocket: 'cat' };
  for (const [transport, user] of Object.entries(transports)) {
    await h.start(transport, user, { channels: [channel], transport, backoff: { minMs: 300, maxMs: 2000 } });
  }
  await waitFor('three open streams', async () => {
    const logs = await Promise.all(Object.keys(transports).map((t) => h.log(t)));
    return logs.every((l) => l.states.at(-1)?.startsWith('open'));
  }, { detail: () => Promise.all(Object.keys(transports).map((t) => h.log(t))) });

  const backend = token({ sub: 'backend', role: 'service' });
  const tick = ticker(() => server.url, backend, channel, { count: 40, everyMs: 100, prefix: 'restart' });
  await waitFor('ten events sent', () => tick.ids.length >= 10);
  await server.stop();
  await sleep(1000); // publishes fail meanwhile; the backend keeps retrying
  await server.start(); // same port, same database
  await waitFor('twenty-five events sent', () => tick.ids.length >= 25);
  await server.crash();
  await server.start();
  const ids = await tick.done;
  assert(new Set(ids).size === 40, 'forty distinct events were appended');

  for (const transport of Object.keys(transports)) {
    const log = await waitFor(`${transport} to receive all 40`, async () => {
      const l = await h.log(transport);
      return l.events.filter((e) => e.event === 'tick').length >= 40 && l;
    });
    const got = log.events.filter((e) => e.event === 'tick');
    assertEqual(got.map((e) => e.id), ids, `${transport}: ids in order, none lost or repeated`);
    assertEqual(got.map((e) => e.data.n), [...Array(40).keys()], `${transport}: payloads in order`);
    const reopened = log.states.filter((s) => s.startsWith('open')).length;
    assert(reopened >= 3, `${transport} reconnected twice (states: ${log.states.join(' ')})`);
  }
  await sleep(500);
  for (const transport of Object.keys(transports)) {
    const got = (await h.log(transport)).events.filter((e) => e.event === 'tick');
    assert(got.length === 40, `${transport}: no late duplicate (${got.length})`);
  }
  await h.close();
}
