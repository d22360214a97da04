// The demo's inbox with two users in two browser contexts (bob with two
// tabs), on a server with a generated secret (the page mints its own dev
// tokens; the harness takes the service token the server printed): alice
// writes to bob, bob sees it live with the unread badge, opens it and alice
// sees "Seen"; bob's typing shows at alice's and his reply arrives live; a
// message written offline waits, then arrives once; notifications a backend
// creates ring bob's bell in both tabs, and reading them in one clears the
// other. A screenshot is kept.
import path from 'node:path';
import { api, assert, assertEqual, waitFor } from '../lib/api.mjs';

export const name = 'inbox: direct messages with unread, typing and seen; notifications in the bell on every tab';

/** Opens the demo as `user` (the #user= hash skips the sign-in form). */
async function join(context, url, user) {
  const page = await context.newPage();
  await page.goto(`${url}/demo#user=${user}`);
  await page.waitForSelector('#transport[data-state="open"]');
  await page.waitForSelector('#inbox:not([hidden])');
  return page;
}

const badge = (page, id) => page.$eval(id, (el) => (el.hidden ? '' : el.textContent));
const waitBadge = (pages, id, want) =>
  waitFor(`${id} to show '${want}'`, async () => (await Promise.all(pages.map((p) => badge(p, id)))).every((v) => v === want));
const texts = (page, selector) => page.$$eval(selector, (els) => els.map((e) => e.querySelector('.text').textContent));

export async function run({ browser, startServer, artifacts, fail }) {
  const server = await startServer({ secret: null });
  const backend = server.serviceToken;
  const context = async () => {
    const c = await browser.newContext({ viewport: { width: 1280, height: 760 } });
    c.setDefaultTimeout(15000);
    return c;
  };
  const aliceContext = await context();
  const bobContext = await context();
  const alice = await join(aliceContext, server.url, 'alice');
  const bob = await join(bobContext, server.url, 'bob');
  const bob2 = await join(bobContext, server.url, 'bob');
  for (const page of [alice, bob, bob2]) page.on('pageerror', (e) => fail(`demo page error: ${e.message}`));

  // Alice opens the direct conversation with bob (it did not exist: bob's
  // open streams follow it from now on) and writes.
  await alice.click('#dm-toggle');
  await alice.selectOption('#dm-peer', 'bob');
  await alice.fill('#dm-input', 'Launch at noon?');
  await alice.press('#dm-input', 'Enter');
  await alice.waitForSelector('#dm-messages li.mine[data-id]:has-text("Launch at noon?")');

  // Both of bob's tabs show the unread message live.
  await waitBadge([bob, bob2], '#dm-unread', '1');

  // Bob opens the panel in his first tab (brought to the front: a hidden
  // tab's page does not paint, and does not mark messages read): the unread
  // conversation shows, is read, and the badge clears in both tabs; alice
  // sees "Seen" under her message.
  await bob.bringToFront();
  await bob.click('#dm-toggle');
  await bob.waitForSelector('#dm-messages li.theirs:has-text("Launch at noon?")');
  assertEqual(await bob.inputValue('#dm-peer'), 'alice', 'the panel opens on the unread conversation');
  await waitBadge([bob, bob2], '#dm-unread', '');
  await alice.waitForSelector('#dm-messages li.mine[data-status="seen"]:has-text("Launch at noon?")');

  // Bob types: alice sees it; his reply ends it and arrives live; alice has
  // the conversation open, so she reads it at once and bob sees "Seen".
  await bob.click('#dm-input');
  await bob.keyboard.type('Noon works', { delay: 40 });
  await alice.waitForFunction(() => document.querySelector('#dm-typing').textContent.includes('bob is typing'));
  await bob.press('#dm-input', 'Enter');
  await alice.waitForSelector('#dm-messages li.theirs:has-text("Noon works")');
  await alice.waitForFunction(() => document.querySelector('#dm-typing').textContent === '');
  await bob.waitForSelector('#dm-messages li.mine[data-status="seen"]:has-text("Noon works")');
  assertEqual(await badge(alice, '#dm-unread'), '', 'read as it arrived');

  // Offline, alice's message waits in the outbox; back online it is sent,
  // and stored once.
  await aliceContext.setOffline(true);
  await alice.waitForSelector('#transport[data-state="offline"]');
  await alice.fill('#dm-input', 'Are you there?');
  await alice.press('#dm-input', 'Enter');
  await alice.waitForSelector('#dm-messages li.pending[data-status="sending"]:has-text("Are you there?")');
  assert((await alice.textContent('#outbox')).includes('1 change'), 'the outbox shows the waiting message');
  await aliceContext.setOffline(false);
  await bob.waitForSelector('#dm-messages li.theirs:has-text("Are you there?")');
  await alice.waitForSelector('#dm-messages li.mine[data-id]:has-text("Are you there?")');
  const checker = (await (await fetch(`${server.url}/demo/token?sub=alice`)).json()).token;
  const [conversation] = (await api(server.url, checker, 'GET', '/realtime/conversations')).conversations;
  const stored = (await api(server.url, checker, 'GET', `/realtime/conversations/${conversation.id}/messages`)).messages;
  assertEqual(stored.map((m) => m.content).reverse(), ['Launch at noon?', 'Noon works', 'Are you there?'], 'each message stored once');
  for (const page of [alice, bob]) {
    assertEqual(await texts(page, '#dm-messages li[data-id]'), ['Launch at noon?', 'Noon works', 'Are you there?'], 'each message shown once');
  }

  // A backend notifies bob twice (the API and a `notification` broadcast):
  // both tabs ring; reading one in a tab lowers the count in both.
  await api(server.url, backend, 'POST', '/realtime/notifications', { user_id: 'bob', type: 'task.assigned', title: 'Task 42 is yours', body: 'Ship it by Friday' });
  await api(server.url, backend, 'POST', '/realtime/broadcast', { channel: 'user:bob', event: 'notification', data: { type: 'calendar', title: 'Standup moved to 10:00' } });
  await waitBadge([bob, bob2], '#bell-count', '2');
  assertEqual(await badge(alice, '#bell-count'), '', "alice's bell stays quiet");
  await bob.click('#bell');
  await bob.waitForSelector('#notification-list li.unread:has-text("Task 42 is yours")');
  await bob.click('#notification-list li:has-text("Standup moved") .mark-read');
  await waitBadge([bob, bob2], '#bell-count', '1');
  await bob.waitForSelector('#notification-list li.read:has-text("Standup moved")');
  await bob.screenshot({ path: path.join(artifacts, 'inbox.png') });

  // Mark all read in one tab: the other follows (notification.read_all).
  await bob.click('#read-all');
  await waitBadge([bob, bob2], '#bell-count', '');
  await bob.waitForSelector('#notification-list li.read:has-text("Task 42 is yours")');
  await bob2.bringToFront();
  await bob2.click('#bell');
  await bob2.waitForSelector('#notification-list li.read:has-text("Task 42 is yours")');
  assertEqual(await bob2.$$eval('#notification-list li.unread', (els) => els.length), 0, 'nothing unread in the other tab');

  await aliceContext.close();
  await bobContext.close();
}
