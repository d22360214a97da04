// Publishes made while the network is cut wait in the outbox and are
// delivered once, in order, when it returns; a publish whose answer is lost
// (applied, then the connection reset) is retried with its idempotency key
// and still appended once.
import { assert, assertEqual, readLog, sleep, waitFor } from '../lib/api.mjs';
import { openHarness } from '../lib/harness.mjs';

export const name = 'offline: a publish made while the network is cut is delivered once after it returns';

export async function run({ browser, startServer, token, fail }) {
  const server = await startServer();
  const channel = 'project:offline';
  const backend = token({ sub: 'backend', role: 'service' });
  const mint = (user) => token({ sub: user, channels: [channel], publish: [channel] });
  const h = await openHarness(browser, server.url, { mint, onError: fail });
  await h.start('c', 'fay', { channels: [channel], backoff: { minMs: 300, maxMs: 2000 } });
  await waitFor('open', async () => (await h.log('c')).states.at(-1) === 'open:sse');

  await h.context.setOffline(true);
  await waitFor('the offline state', async () => (await h.log('c')).states.at(-1) === 'offline:sse');
  await h.page.evaluate((ch) => {
    const { client } = window.clients.c;
    window.sends = [0, 1, 2].map((n) => client.publish(ch, 'note', { n }).then((r) => r.id));
  }, channel);
  await sleep(1500);
  assert((await h.client('c', (c) => c.pending)) === 3, 'three publishes wait in the outbox');
  const early = (await readLog(server.url, backend, [channel])).filter((e) => e.event === 'note');
  assertEqual(early.length, 0, 'nothing reached the server while offline');

  await h.context.setOffline(false);
  const receipts = await h.page.evaluate(() => Promise.all(window.sends));
  let notes = (await readLog(server.url, backend, [channel])).filter((e) => e.event === 'note');
  assertEqual(notes.map((e) => e.data.n), [0, 1, 2], 'each publish appended once, in order');
  assertEqual(notes.map((e) => e.id), receipts, 'the receipts name those events');
  await waitFor('the stream to deliver them', async () => (await h.log('c')).events.filter((e) => e.event === 'note').length === 3);

  // The answer is lost after the server applied the publish.
  let cut = 0;
  await h.page.route('**/realtime/publish', async (route) => {
    if (cut++ > 0) return route.continue();
    await route.fetch(); // reaches the server and is applied
    await route.abort('connectionreset'); // the page never hears back
  });
  const receipt = await h.page.evaluate((ch) => window.clients.c.client.publish(ch, 'note', { n: 3 }).then((r) => r.id), channel);
  assert(cut === 2, `the publish was retried (${cut} requests)`);
  notes = (await readLog(server.url, backend, [channel])).filter((e) => e.event === 'note');
  assertEqual(notes.map((e) => e.data.n), [0, 1, 2, 3], 'the retried publish was appended once');
  assertEqual(notes.at(-1).id, receipt, 'the retry got the first answer');
  await waitFor('the stream to deliver it', async () => (await h.log('c')).events.filter((e) => e.event === 'note').length === 4);
  await sleep(500);
  const seen = (await h.log('c')).events.filter((e) => e.event === 'note').map((e) => e.data.n);
  assertEqual(seen, [0, 1, 2, 3], 'the stream delivered each once');
  await h.close();
}
