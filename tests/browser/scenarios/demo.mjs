// The demo board with two users in two browser contexts, on a server with a
// generated secret (the page mints its own tokens): backend broadcasts move
// cards live, each sees the other viewing and typing, both type into the same
// description at once and end with the same text as the server's document.
// A screenshot is kept. With a configured key the page asks for a token.
import path from 'node:path';
import { api, assert, assertEqual, waitFor } from '../lib/api.mjs';

export const name = 'demo: two users edit one description at once, see presence and typing, cards update live';

const DESCRIPTION = '#description';

async function join(browser, url, user) {
  const context = await browser.newContext({ viewport: { width: 1280, height: 760 } });
  context.setDefaultTimeout(15000);
  const page = await context.newPage();
  await page.goto(`${url}/demo`);
  await page.selectOption('#user-pick', user);
  await page.click('#dev-login button');
  await page.waitForSelector('#transport[data-state="open"]');
  return page;
}

const text = (page) => page.inputValue(DESCRIPTION);
const synced = (page) => page.$eval('#detail-sync', (el) => el.dataset.status === 'synchronized');

/** Both pages show the same text, have nothing pending, and match the server. */
async function converged(pages, readDocument) {
  return waitFor('both descriptions to converge with the server', async () => {
    const [a, b] = await Promise.all(pages.map(text));
    if (a !== b || !(await synced(pages[0])) || !(await synced(pages[1]))) return false;
    const doc = await readDocument();
    return doc.content === a && a;
  });
}

function isSubsequence(whole, part) {
  let i = 0;
  for (const ch of whole) if (ch === [...part][i]) i++;
  return i === [...part].length;
}

export async function run({ browser, startServer, token, artifacts, fail }) {
  const server = await startServer({ secret: null });
  const backend = server.serviceToken;
  const broadcast = (channel, event, data) => api(server.url, backend, 'POST', '/realtime/broadcast', { channel, event, data });
  const alice = await join(browser, server.url, 'alice');
  const bob = await join(browser, server.url, 'bob');
  for (const page of [alice, bob]) page.on('pageerror', (e) => fail(`demo page error: ${e.message}`));
  assertEqual(await alice.textContent('#transport'), 'SSE · open', 'the badge shows the transport');

  // Cards update live from backend broadcasts.
  await broadcast('project:demo', 'task.created', { task_id: 'T1', title: 'Write the launch post', status: 'todo' });
  await broadcast('project:demo', 'task.created', { task_id: 'T2', title: 'Fix the flaky test', status: 'todo' });
  await broadcast('project:demo', 'task.updated', { task_id: 'T1', changes: [{ field: 'status', old_value: 'todo', new_value: 'doing' }] });
  await broadcast('task:T2', 'task.updated', { status: 'done' });
  for (const page of [alice, bob]) {
    await page.waitForSelector('.column[data-status="doing"] .card[data-task="T1"]');
    await page.waitForSelector('.column[data-status="done"] .card[data-task="T2"]');
  }

  // Both open T1: each sees the other's avatar on the card.
  for (const page of [alice, bob]) {
    await page.click('.card[data-task="T1"]');
    await page.waitForSelector(`${DESCRIPTION}:not([disabled])`);
  }
  await alice.waitForSelector('.card[data-task="T1"] .avatar[data-user="bob"]');
  await bob.waitForSelector('.card[data-task="T1"] .avatar[data-user="alice"]');

  const checker = (await (await fetch(`${server.url}/demo/token?sub=checker`)).json()).token;
  const readDocument = () => api(server.url, checker, 'GET', '/realtime/edit/documents?resource_type=task&resource_id=T1&field=description');

  // 1. Alice writes alone.
  await alice.focus(DESCRIPTION);
  await alice.keyboard.type('Hello world', { delay: 15 });
  assertEqual(await converged([alice, bob], readDocument), 'Hello world', 'first text');

  // 2. At once: Alice appends at the end, Bob writes at the start; Bob sees Alice typing.
  const tail = ' and everyone else, from Alice 😀 with love';
  const head = 'Bob 🎉 says: ';
  await bob.focus(DESCRIPTION);
  await bob.keyboard.press('Control+Home');
  const typing = Promise.all([alice.keyboard.type(tail, { delay: 40 }), bob.keyboard.type(head, { delay: 55 })]);
  await bob.waitForFunction(() => document.querySelector('#detail-typing').textContent.includes('alice is typing'));
  await alice.waitForSelector('.card[data-task="T1"] .typing');
  await typing;
  assertEqual(await converged([alice, bob], readDocument), `${head}Hello world${tail}`, 'edits at both ends');
  await alice.screenshot({ path: path.join(artifacts, 'demo.png') });

  // 3. Both type at the same spot at once: same text everywhere, each one's
  // characters still in the order they typed them.
  await alice.keyboard.press('Control+Home');
  await bob.keyboard.press('Control+Home');
  const a = 'alpha 🅰️ ';
  const b = 'beta 🅱️ ';
  const before = await text(alice);
  await Promise.all([alice.keyboard.type(a, { delay: 30 }), bob.keyboard.type(b, { delay: 30 })]);
  const final = await converged([alice, bob], readDocument);
  assertEqual([...final].length, [...before].length + [...a].length + [...b].length, 'nothing lost or doubled');
  assert(isSubsequence(final, a) && isSubsequence(final, b), `each user's text keeps its order: ${final}`);
  assert(final.endsWith(before), 'the rest is untouched');

  // With a configured key, the page asks for a token instead of minting one.
  const keyed = await startServer();
  const context = await browser.newContext();
  const page = await context.newPage();
  await page.goto(`${keyed.url}/demo`);
  await page.waitForSelector('#token-login:not([hidden])');
  assert(await page.$eval('#dev-login', (el) => el.hidden), 'no dev login with a configured key');
  await page.fill('#token-input', token({ sub: 'zoe', channels: ['project:demo', 'task:*'], publish: ['project:demo', 'task:*'] }));
  await page.click('#token-login button');
  await page.waitForSelector('#transport[data-state="open"]');
  await context.close();
}
