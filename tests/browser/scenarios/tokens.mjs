// An expiring token is refreshed without a gap: on SSE and WebSocket the
// `token.expiring` message makes the client fetch a new token and open a new
// stream at its cursor before closing the old one; a poll refused with
// `token_expired` gets a new token and goes on. Events flow all the while and
// arrive once, in order, and the connection never leaves the open state. The
// new streams are held back a second, so they replay what the old ones
// already delivered: the client must drop those repeats.
import { assertEqual, api, sleep, ticker, waitFor } from '../lib/api.mjs';
import { openHarness } from '../lib/harness.mjs';

export const name = 'tokens: an expiring token is refreshed without a gap';

export async function run({ browser, startServer, token, fail }) {
  const server = await startServer();
  const channel = 'project:tokens';
  // The first token of each user is short: 303 s gives `token.expiring` (300 s
  // before exp) after 3 s; the poller's 4 s one simply runs out.
  const firstTtl = { gus: 303, hal: 303, ivy: 4 };
  const mint = (user, reason, n) => token({ sub: user, channels: [channel], ttl: n === 1 ? firstTtl[user] : 3600 });
  const h = await openHarness(browser, server.url, { mint, onError: fail });
  const opened = { sse: 0, websocket: 0 };
  await h.page.route('**/realtime/sse**', async (route) => {
    if (++opened.sse === 2) await sleep(1000);
    await route.continue();
  });
  await h.page.routeWebSocket(/\/realtime\/connect/, async (ws) => {
    if (++opened.websocket === 2) await sleep(1000);
    ws.connectToServer();
  });
  const clients = { sse: ['gus', 'sse'], websocket: ['hal', 'websocket'], poll: ['ivy', 'poll'] };
  for (const [name, [user, transport]] of Object.entries(clients)) await h.start(name, user, { channels: [channel], transport });

  const backend = token({ sub: 'backend', role: 'service' });
  const tick = ticker(() => server.url, backend, channel, { count: 50, everyMs: 150, prefix: 'tokens' });
  const ids = await tick.done;
  for (const [name, [, transport]] of Object.entries(clients)) {
    const log = await waitFor(`${name} to receive 50 events`, async () => {
      const l = await h.log(name);
      return l.events.filter((e) => e.event === 'tick').length >= 50 && l;
    }, { detail: async () => ({ ...(await h.log(name)), events: (await h.log(name)).events.map((e) => e.id) }) });
    // Presence events (user.connected) share the channel: only the ticks count.
    assertEqual(log.events.filter((e) => e.event === 'tick').map((e) => e.id), ids, `${name}: every event once, in order`);
    assertEqual(log.tokens, ['start', transport === 'poll' ? 'expired' : 'expiring'], `${name}: one refresh`);
    assertEqual(log.states, ['connecting:null', `open:${transport}`], `${name}: never left the open state`);
  }
  assertEqual(opened, { sse: 2, websocket: 2 }, 'each stream was replaced once');
  // The replaced streams were closed: one SSE and one WebSocket remain.
  await waitFor('old streams closed', async () => (await api(server.url, backend, 'GET', '/realtime/status')).connections === 2);
  await h.close();
}
