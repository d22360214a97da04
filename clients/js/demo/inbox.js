// The demo's inbox, built on client.notifications and client.conversations
// only: a bell with the live unread count and a dropdown to read the
// notifications a backend sends, and a panel of direct messages with the
// other demo users (live messages, typing, unread counts, "seen").
import { el } from './board.js';

const $ = (id) => document.getElementById(id);
/** A typing notice not refreshed within this time is dropped (the server ends typing after 6 s). */
const TYPING_TTL_MS = 7000;
const PAGE = 50;

export class Inbox {
  /**
   * @param users the demo users to chat with (the user's own name is left out)
   * @param track shows a send waiting in the outbox (app.js)
   */
  constructor(client, { me, users, toast, track }) {
    Object.assign(this, { client, me, toast, track });
    this.peers = users.filter((u) => u !== me);
    this.conversations = new Map(); // id -> {id, peer, unread, readBy: Map(user -> message id)}
    this.notifications = null; // the dropdown's list once loaded, newest first
    this.active = null; // the conversation shown: {id, peer, messages, pending, early, typing, typists}
    this.changes = 0; // message and read events seen: an answer that raced one has a stale unread count
    this.#listen();
    this.#wire();
  }

  /** Reads the unread count and the conversations; call once the client has started. */
  async load() {
    // Once the stream is open, so events from before the count do not add to it.
    await this.client.subscribe();
    await this.client.notifications.unreadCount();
    await this.#loadConversations();
  }

  // --- notifications ----------------------------------------------------------

  #renderBell() {
    const n = this.client.notifications.unread ?? 0;
    $('bell-count').textContent = String(n);
    $('bell-count').hidden = n === 0;
    $('bell').setAttribute('aria-label', `Notifications, ${n} unread`);
  }

  async #openBell() {
    const menu = $('bell-menu');
    menu.hidden = !menu.hidden;
    $('bell').setAttribute('aria-expanded', String(!menu.hidden));
    if (menu.hidden) return;
    try {
      this.notifications = (await this.client.notifications.list({ limit: 20 })).notifications;
    } catch (e) {
      this.toast(`Cannot load notifications: ${e.message}`);
    }
    this.#renderNotifications();
  }

  #renderNotifications() {
    const list = this.notifications ?? [];
    $('notifications-empty').hidden = list.length > 0;
    $('notification-list').replaceChildren(
      ...list.map((n) => {
        const li = el('li', { class: n.read_at ? 'read' : 'unread', 'data-id': n.id });
        li.append(el('strong', {}, n.title));
        if (n.body) li.append(el('span', { class: 'body' }, n.body));
        li.append(el('time', { datetime: n.created_at }, new Date(n.created_at).toLocaleTimeString()));
        if (!n.read_at) {
          const button = el('button', { type: 'button', class: 'mark-read' }, 'Mark read');
          button.addEventListener('click', () => this.client.notifications.read(n.id).catch((e) => this.toast(e.message)));
          li.append(button);
        }
        return li;
      }),
    );
  }

  /** Applies a read state to the loaded list (`null` id: all of them). */
  #markRead(id, readAt) {
    for (const n of this.notifications ?? []) if ((id == null || n.id === id) && !n.read_at) n.read_at = readAt ?? new Date().toISOString();
    this.#renderNotifications();
  }

  // --- conversations ----------------------------------------------------------

  async #loadConversations() {
    const seen = this.changes;
    const { conversations } = await this.client.conversations.list({ limit: PAGE });
    for (const c of conversations) if (c.type === 'direct') this.#remember(c, seen === this.changes);
    this.#renderUnread();
  }

  /** Takes a conversation from an answer; its unread count only if no event came meanwhile (`fresh`). */
  #remember(c, fresh) {
    const peer = c.members.find((m) => m.user_id !== this.me)?.user_id;
    if (!peer) return null;
    const known = this.conversations.get(c.id);
    if (known && !fresh) return known;
    const kept = known ?? { id: c.id, peer, unread: 0, readBy: new Map() };
    kept.unread = c.unread_count;
    for (const m of c.members) if (m.last_read_message_id) kept.readBy.set(m.user_id, m.last_read_message_id);
    this.conversations.set(c.id, kept);
    if (!this.peers.includes(peer)) this.peers.push(peer);
    return kept;
  }

  #byPeer(peer) {
    return [...this.conversations.values()].find((c) => c.peer === peer);
  }

  #renderUnread() {
    const total = [...this.conversations.values()].reduce((sum, c) => sum + c.unread, 0);
    $('dm-unread').textContent = String(total);
    $('dm-unread').hidden = total === 0;
    const select = $('dm-peer');
    const chosen = select.value;
    select.replaceChildren(
      el('option', { value: '' }, 'Pick a user…'),
      ...this.peers.map((p) => {
        const unread = this.#byPeer(p)?.unread ?? 0;
        return el('option', { value: p }, unread ? `${p} (${unread})` : p);
      }),
    );
    select.value = this.active?.peer ?? chosen;
  }

  async #openPeer(peer) {
    this.active?.typing.stop();
    if (!peer) {
      this.active = null;
      this.#renderMessages();
      return;
    }
    const shown = { peer, id: null, messages: [], pending: new Map(), early: [], typists: new Map(), typing: { input() {}, stop() {} } };
    this.active = shown;
    this.#renderMessages();
    try {
      const seen = this.changes;
      const c = await this.client.conversations.open({ type: 'direct', userId: peer });
      this.#remember(c, seen === this.changes);
      shown.id = c.id;
      shown.typing = this.client.conversations.typingIndicator(c.id);
      const { messages } = await this.client.conversations.messages(c.id, { limit: PAGE });
      if (this.active !== shown) return;
      shown.messages = messages.reverse();
      // Events that came while the page loaded are newer than it, or repeat it.
      for (const m of shown.early.splice(0)) this.#upsert(shown, m);
      shown.early = null;
    } catch (e) {
      this.toast(`Cannot open the conversation: ${e.message}`);
    }
    this.#renderUnread();
    this.#renderMessages();
    this.#readShown();
  }

  /** Puts a stored message in its place (replacing its optimistic copy or an older version). */
  #upsert(shown, message) {
    if (shown.early) {
      shown.early.push(message);
      return;
    }
    shown.pending.delete(message.client_message_id);
    const i = shown.messages.findIndex((m) => m.id === message.id);
    if (i >= 0) shown.messages[i] = message;
    else shown.messages.push(message);
  }

  /** Moves the read position to the newest message while the panel shows it. */
  #readShown() {
    const shown = this.active;
    const c = shown && this.conversations.get(shown.id);
    if (!c || $('dm').hidden || document.hidden || shown.early) return;
    const newest = shown.messages.at(-1);
    if (!newest || c.unread === 0 || shown.readUpTo === newest.id) return;
    shown.readUpTo = newest.id;
    this.client.conversations.read(c.id, newest.id).catch((e) => this.toast(e.message));
  }

  #send(text) {
    const shown = this.active;
    if (!shown?.id) return;
    shown.typing.stop();
    const sending = this.client.conversations.send(shown.id, text);
    shown.pending.set(sending.clientMessageId, { client_message_id: sending.clientMessageId, content: text, sender: { user_id: this.me } });
    this.#renderMessages();
    this.track(sending);
    sending
      .then((m) => this.#upsert(shown, m))
      .catch(() => shown.pending.delete(sending.clientMessageId))
      .finally(() => this.active === shown && this.#renderMessages());
  }

  #renderMessages() {
    const shown = this.active;
    $('dm-form').hidden = !shown;
    $('dm-input').disabled = !shown?.id;
    const list = $('dm-messages');
    if (!shown) {
      list.replaceChildren(el('li', { class: 'hint' }, 'Pick a user to write to.'));
      $('dm-typing').textContent = '';
      return;
    }
    const c = this.conversations.get(shown.id);
    // "Seen" goes under the last of my messages at or before the peer's read position.
    const readAt = shown.messages.findIndex((m) => m.id === c?.readBy.get(shown.peer));
    let seen = -1;
    shown.messages.forEach((m, i) => {
      if (m.sender.user_id === this.me && i <= readAt) seen = i;
    });
    const items = shown.messages.map((m, i) => {
      const mine = m.sender.user_id === this.me;
      const li = el('li', { class: mine ? 'mine' : 'theirs', 'data-id': m.id });
      li.append(el('span', { class: 'text' }, m.deleted_at ? 'message deleted' : m.content));
      if (m.edited_at && !m.deleted_at) li.append(el('span', { class: 'meta' }, 'edited'));
      if (i === seen) {
        li.dataset.status = 'seen';
        li.append(el('span', { class: 'meta status' }, 'Seen'));
      }
      return li;
    });
    for (const p of shown.pending.values()) {
      const li = el('li', { class: 'mine pending', 'data-status': 'sending' });
      li.append(el('span', { class: 'text' }, p.content), el('span', { class: 'meta status' }, 'sending…'));
      items.push(li);
    }
    if (!items.length) items.push(el('li', { class: 'hint' }, shown.id ? `No messages with ${shown.peer} yet.` : 'Opening…'));
    list.replaceChildren(...items);
    list.scrollTop = list.scrollHeight;
    const typists = [...shown.typists.keys()];
    $('dm-typing').textContent = typists.length ? `${typists.join(', ')} is typing…` : '';
  }

  // --- events -------------------------------------------------------------------

  #listen() {
    const n = this.client.notifications;
    n.on('unread', () => this.#renderBell());
    n.on('notification', (item) => {
      this.notifications?.unshift(item);
      if (!$('bell-menu').hidden) this.#renderNotifications();
      $('bell').classList.remove('ring');
      void $('bell').offsetWidth; // restart the animation
      $('bell').classList.add('ring');
    });
    n.on('read', ({ id, read_at }) => this.#markRead(id, read_at));
    n.on('read_all', ({ read_at }) => this.#markRead(null, read_at));

    const conv = this.client.conversations;
    conv.on('message.created', (m) => {
      this.changes++;
      let c = this.conversations.get(m.conversation_id);
      if (!c) {
        // A conversation someone just opened with us: its members come with the list.
        this.#loadConversations().catch(() => {});
        c = m.sender.user_id !== this.me ? { id: m.conversation_id, peer: m.sender.user_id, unread: 0, readBy: new Map() } : null;
        if (c) this.conversations.set(c.id, c);
      }
      if (c && m.sender.user_id !== this.me) c.unread++;
      this.#onMessage(m);
      this.#renderUnread();
    });
    conv.on('message.updated', (m) => this.#onMessage(m));
    conv.on('message.deleted', (m) => this.#onMessage(m));
    conv.on('message.read', (r) => {
      this.changes++;
      const c = this.conversations.get(r.conversation_id);
      if (!c) return;
      if (r.user_id === this.me) c.unread = r.unread_count; // read here or in another tab
      if (r.message_id) c.readBy.set(r.user_id, r.message_id);
      this.#renderUnread();
      if (this.active?.id === c.id) this.#renderMessages();
    });
    conv.on('typing', ({ conversation_id, user_id, is_typing }) => {
      const shown = this.active;
      if (shown?.id !== conversation_id || user_id === this.me) return;
      clearTimeout(shown.typists.get(user_id));
      shown.typists.delete(user_id);
      if (is_typing) {
        const expire = () => {
          shown.typists.delete(user_id);
          if (this.active === shown) this.#renderMessages();
        };
        shown.typists.set(user_id, setTimeout(expire, TYPING_TTL_MS));
      }
      this.#renderMessages();
    });
    conv.on('member.added', ({ conversation_id }) => {
      if (!this.conversations.has(conversation_id)) this.#loadConversations().catch(() => {});
    });
    conv.on('reset', () => {
      this.#loadConversations().catch(() => {});
      if (this.active) this.#openPeer(this.active.peer);
    });
  }

  #onMessage(m) {
    const shown = this.active;
    if (shown?.id !== m.conversation_id) return;
    // A message ends its sender's typing.
    clearTimeout(shown.typists.get(m.sender.user_id));
    shown.typists.delete(m.sender.user_id);
    this.#upsert(shown, m);
    this.#renderMessages();
    this.#readShown();
  }

  #wire() {
    $('bell').addEventListener('click', () => this.#openBell());
    $('read-all').addEventListener('click', () => this.client.notifications.readAll().catch((e) => this.toast(e.message)));
    $('dm-toggle').addEventListener('click', () => {
      $('dm').hidden = !$('dm').hidden;
      $('dm-toggle').setAttribute('aria-expanded', String(!$('dm').hidden));
      if ($('dm').hidden) return void this.active?.typing.stop();
      if (!this.active) {
        const first = [...this.conversations.values()].find((c) => c.unread > 0)?.peer;
        if (first) this.#openPeer(first);
        else this.#renderMessages();
      }
      this.#renderUnread();
      this.#readShown();
    });
    $('dm-close').addEventListener('click', () => $('dm-toggle').click());
    $('dm-peer').addEventListener('change', () => this.#openPeer($('dm-peer').value));
    $('dm-input').addEventListener('input', () => this.active?.typing.input());
    $('dm-input').addEventListener('blur', () => this.active?.typing.stop());
    $('dm-form').addEventListener('submit', (e) => {
      e.preventDefault();
      const text = $('dm-input').value.trim();
      if (!text) return;
      $('dm-input').value = '';
      this.#send(text);
    });
    document.addEventListener('visibilitychange', () => this.#readShown());
    this.#renderBell();
    this.#renderUnread();
  }
}
