// The demo's wiring: signs in (a dev token from /demo/token when the server
// generated its own secret, else a pasted token), replays project:demo's
// retained events into the board and follows it live, and opens a task:
// viewing, typing, and the description edited together through the OT client.
// The same stream carries the user's inbox (inbox.js): notifications and
// direct messages.
import { SwitchyardClient, bindTextarea } from '../client.js';
import { Board } from './board.js';
import { Inbox } from './inbox.js';

const $ = (id) => document.getElementById(id);
const PROJECT = 'project:demo';
/** A stream reads at most 50 channels: the project plus the newest tasks. */
const MAX_TASK_CHANNELS = 45;
const STORE = 'switchyard-demo';

let client;
let board;
let me;
let open = null; // the task in the detail panel

boot().catch((e) => showLoginError(e));

async function boot() {
  const devTokens = await hasDevTokens();
  const fromHash = new URLSearchParams(location.hash.slice(1)).get('user');
  const saved = JSON.parse(sessionStorage.getItem(STORE) ?? 'null');
  if (devTokens && (fromHash || saved?.user)) return start({ user: fromHash || saved.user });
  if (!devTokens && saved?.token) return start({ token: saved.token });
  $('login').hidden = false;
  const form = devTokens ? $('dev-login') : $('token-login');
  form.hidden = false;
  form.onsubmit = (e) => {
    e.preventDefault();
    const user = $('user-name').value.trim() || $('user-pick').value;
    start(devTokens ? { user } : { token: $('token-input').value.trim() }).catch(showLoginError);
  };
}

/** GET demo/token without a name: 400 when dev tokens are on, 404 when off. */
async function hasDevTokens() {
  const res = await fetch('demo/token', { cache: 'no-store' });
  return res.status === 400;
}

async function mintDevToken(user) {
  const res = await fetch(`demo/token?sub=${encodeURIComponent(user)}`, { cache: 'no-store' });
  const body = await res.json();
  if (!res.ok) throw new Error(body.message ?? `HTTP ${res.status}`);
  return body.token;
}

/** A pasted token cannot be renewed here: ask for another when it runs out. */
function askForToken(reason) {
  return new Promise((resolve) => {
    $('login').hidden = false;
    $('token-login').hidden = false;
    $('login-error').textContent = `The token ${reason === 'expiring' ? 'expires soon' : 'was refused'}: paste a new one.`;
    $('token-login').onsubmit = (e) => {
      e.preventDefault();
      $('token-login').onsubmit = null;
      $('login').hidden = true;
      const token = $('token-input').value.trim();
      sessionStorage.setItem(STORE, JSON.stringify({ token }));
      resolve(token);
    };
  });
}

async function start({ user, token }) {
  me = user ?? claimsOf(token).sub;
  let first = token;
  const getToken = ({ reason }) => {
    if (user) return mintDevToken(user);
    if (first) {
      const t = first;
      first = null;
      return t;
    }
    return askForToken(reason);
  };
  sessionStorage.setItem(STORE, JSON.stringify(user ? { user } : { token }));
  // Replay every retained event of the project (lastEventId 0) to build the
  // board, then stay live; task channels are added as tasks appear.
  client = new SwitchyardClient({ getToken, channels: [PROJECT], lastEventId: 0 });
  board = new Board($('board'), { me, onOpen: openTask });
  board.onChange = () => {
    $('empty').hidden = board.tasks.size > 0;
    if (open) renderDetail();
  };
  client.on('state', ({ state, transport }) => {
    const badge = $('transport');
    badge.textContent = `${{ sse: 'SSE', poll: 'Long polling', websocket: 'WebSocket' }[transport] ?? '—'} · ${state}`;
    badge.dataset.state = state;
    badge.dataset.transport = transport ?? '';
  });
  client.on('event', (event) => {
    if (board.apply(event) && event.event === 'task.created') followTasks();
  });
  client.on('reset', () => toast('Some older events expired; the board shows what is retained.'));
  // Connection trouble shows in the badge; tell the user about the rest.
  client.on('error', (e) => {
    if (!e.retryable) toast(e.message);
  });
  const users = [...$('user-pick').options].map((o) => o.value);
  const inbox = new Inbox(client, { me, users, toast, track });
  $('me').replaceChildren(document.createTextNode(`Signed in as ${me}`));
  $('login').hidden = true;
  $('dev-login').onsubmit = $('token-login').onsubmit = null;
  $('app').hidden = false;
  $('inbox').hidden = false;
  wireForms();
  await client.start();
  await inbox.load().catch((e) => toast(`Inbox: ${e.message}`));
}

function claimsOf(token) {
  try {
    return JSON.parse(atob(token.split('.')[1].replace(/-/g, '+').replace(/_/g, '/')));
  } catch {
    throw new Error('That does not look like a JWT.');
  }
}

/** Follows the newest tasks' channels (viewing, typing, editing happen there). */
function followTasks() {
  const ids = [...board.tasks.keys()].slice(-MAX_TASK_CHANNELS);
  const wanted = [PROJECT, ...ids.map((id) => `task:${id}`)];
  if (open && !wanted.includes(`task:${open.id}`)) wanted.push(`task:${open.id}`);
  const added = ids.filter((id) => !client.channels.includes(`task:${id}`));
  client.setChannels(wanted).then(() => seedViewers(added)).catch(() => {});
}

async function seedViewers(ids) {
  for (const id of ids) {
    try {
      const p = await client.request('GET', '/realtime/presence', undefined, { query: { resource: 'task', id } });
      board.seedViewers(id, p.active_users.filter((u) => u.viewing).map((u) => u.user_id));
    } catch {
      // presence is a nicety; the live events still arrive
    }
  }
}

function wireForms() {
  $('new-task').addEventListener('submit', (e) => {
    e.preventDefault();
    const title = $('new-title').value.trim();
    if (!title) return;
    $('new-title').value = '';
    const taskId = Math.random().toString(36).slice(2, 10);
    track(client.publish(PROJECT, 'task.created', { task_id: taskId, title, status: 'todo' }));
  });
  $('detail-status').addEventListener('change', () => {
    const task = board.tasks.get(open?.id);
    if (!task) return;
    const change = { field: 'status', old_value: task.status, new_value: $('detail-status').value };
    track(client.publish(PROJECT, 'task.updated', { task_id: task.id, changes: [change] }));
  });
  $('detail-close').addEventListener('click', closeTask);
}

/** Shows how many publishes and messages wait in the outbox (offline, or being retried). */
function track(sending) {
  const show = () => {
    const n = client.pending;
    $('outbox').hidden = n === 0;
    $('outbox').textContent = `${n} change${n === 1 ? '' : 's'} waiting to send`;
  };
  show();
  const timer = setInterval(show, 500);
  sending
    .catch((e) => toast(`Not sent: ${e.message}`))
    .finally(() => {
      clearInterval(timer);
      show();
    });
}

async function openTask(id) {
  if (open?.id === id) return;
  await closeTask();
  const area = $('description');
  const current = { id, doc: null, binding: null, typing: client.typingIndicator('task', id, 'description') };
  open = current;
  $('detail').hidden = false;
  document.body.classList.add('detail-open');
  area.value = '';
  area.disabled = true;
  area.placeholder = 'Loading…';
  renderDetail();
  client.setViewing('task', id).catch((e) => toast(e.message));
  try {
    const doc = await client.openDocument({ resource_type: 'task', resource_id: id, field: 'description' });
    if (open !== current) return void doc.close();
    current.doc = doc;
    current.binding = bindTextarea(doc, area);
    doc.on('change', () => renderDetail());
    doc.on('status', () => renderDetail());
    doc.on('resync', () => toast('The description was reloaded from the server.'));
    area.disabled = false;
    area.placeholder = 'Describe the task…';
    area.oninput = () => current.typing.input();
    area.onblur = () => current.typing.stop();
    renderDetail();
  } catch (e) {
    toast(`Cannot edit: ${e.message}`);
  }
}

async function closeTask() {
  const current = open;
  if (!current) return;
  open = null;
  $('detail').hidden = true;
  document.body.classList.remove('detail-open');
  current.typing.stop();
  current.binding?.dispose();
  $('description').oninput = $('description').onblur = null;
  client.setViewing(null).catch(() => {});
  await current.doc?.close();
}

function renderDetail() {
  const task = board.tasks.get(open.id);
  $('detail-title').textContent = task?.title ?? `Task ${open.id}`;
  if (task) $('detail-status').value = task.status;
  const typists = board.typists(open.id, me);
  $('detail-typing').textContent = typists.length ? `${typists.join(', ')} ${typists.length > 1 ? 'are' : 'is'} typing…` : '';
  const doc = open.doc;
  $('detail-sync').textContent = doc ? `revision ${doc.revision} · ${doc.status === 'synchronized' ? 'all changes saved' : 'sending…'}` : '';
  $('detail-sync').dataset.status = doc?.status ?? '';
}

let toastTimer;
function toast(message) {
  $('toast').textContent = message;
  $('toast').hidden = false;
  clearTimeout(toastTimer);
  toastTimer = setTimeout(() => ($('toast').hidden = true), 4000);
}

function showLoginError(e) {
  $('login').hidden = false;
  $('login-error').textContent = e?.message ?? String(e);
}
