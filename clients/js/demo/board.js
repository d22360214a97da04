// The demo board's state and rendering: tasks folded from `task.created` /
// `task.updated` events, who views each task (`user.viewing`) and who types
// (`user.typing`). No network here; app.js feeds it events.

const STATUSES = ['todo', 'doing', 'done'];
/** A typing notice not refreshed within this time is dropped (the server ends typing after 6 s). */
const TYPING_TTL_MS = 7000;

export class Board {
  constructor(root, { me, onOpen }) {
    this.root = root;
    this.me = me;
    this.onOpen = onOpen;
    this.tasks = new Map();
    this.viewers = new Map(); // task id -> Set(user)
    this.typing = new Map(); // task id -> Map(user -> expiry timer)
    this.onChange = () => {};
  }

  /** Folds one event into the board; returns true when it changed something. */
  apply(event) {
    const d = event.data ?? {};
    const id = taskId(event);
    switch (event.event) {
      case 'task.created':
        if (!id) return false;
        this.tasks.set(id, { id, title: String(d.title ?? `Task ${id}`), status: status(d.status), updatedBy: event.user_id });
        break;
      case 'task.updated': {
        if (!id) return false;
        const task = this.tasks.get(id) ?? { id, title: `Task ${id}`, status: 'todo' };
        for (const [field, value] of changes(d)) {
          if (field === 'status') task.status = status(value);
          if (field === 'title') task.title = String(value);
        }
        task.updatedBy = event.user_id;
        this.tasks.set(id, task);
        this.flash = id;
        break;
      }
      case 'user.viewing':
        if (d.resource_type !== 'task') return false;
        this.#setViewer(String(d.resource_id), d.user_id, d.viewing !== false);
        break;
      case 'user.typing':
        if (d.resource_type !== 'task') return false;
        this.#setTyping(String(d.resource_id), d.user_id, d.is_typing === true);
        break;
      default:
        return false;
    }
    this.render();
    return true;
  }

  /** Viewers known from `GET /realtime/presence` when the board loads. */
  seedViewers(id, users) {
    for (const u of users) this.#setViewer(id, u, true);
    this.render();
  }

  #setViewer(id, user, on) {
    if (!this.viewers.has(id)) this.viewers.set(id, new Set());
    if (on) {
      // Viewing one task means leaving any other.
      for (const [other, set] of this.viewers) if (other !== id) set.delete(user);
      this.viewers.get(id).add(user);
    } else this.viewers.get(id).delete(user);
  }

  #setTyping(id, user, on) {
    if (!this.typing.has(id)) this.typing.set(id, new Map());
    const users = this.typing.get(id);
    clearTimeout(users.get(user));
    users.delete(user);
    if (on) {
      users.set(user, setTimeout(() => {
        users.delete(user);
        this.render();
      }, TYPING_TTL_MS));
    }
  }

  typists(id, except) {
    return [...(this.typing.get(id)?.keys() ?? [])].filter((u) => u !== except);
  }

  render() {
    for (const column of this.root.querySelectorAll('.column')) {
      const list = column.querySelector('ul');
      const tasks = [...this.tasks.values()].filter((t) => t.status === column.dataset.status);
      list.replaceChildren(...tasks.map((t) => this.#card(t)));
    }
    this.flash = null;
    this.onChange();
  }

  #card(task) {
    const li = el('li', { class: 'card', 'data-task': task.id, tabindex: '0' });
    if (this.flash === task.id) li.classList.add('flash');
    li.append(el('span', { class: 'title' }, task.title));
    const viewers = el('span', { class: 'viewers' });
    for (const user of this.viewers.get(task.id) ?? []) viewers.append(avatar(user));
    li.append(viewers);
    const typists = this.typists(task.id, this.me);
    if (typists.length) li.append(el('span', { class: 'typing' }, `${typists.join(', ')} typing…`));
    li.addEventListener('click', () => this.onOpen(task.id));
    li.addEventListener('keydown', (e) => e.key === 'Enter' && this.onOpen(task.id));
    return li;
  }
}

/** An avatar: the user's initial on a colour derived from their id. */
export function avatar(user) {
  const a = el('span', { class: 'avatar', 'data-user': user, title: `${user} is viewing` }, user.slice(0, 1).toUpperCase());
  let hash = 0;
  for (const ch of user) hash = (hash * 31 + ch.codePointAt(0)) >>> 0;
  a.style.setProperty('background', `hsl(${hash % 360} 55% 45%)`);
  return a;
}

export function el(tag, attrs = {}, text) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v);
  if (text != null) node.textContent = text;
  return node;
}

/** The task an event is about: `data.task_id`, else the `task:{id}` channel. */
function taskId(event) {
  if (event.data?.task_id != null) return String(event.data.task_id);
  const m = /^task:(.+)$/.exec(event.channel ?? '');
  return m ? m[1] : null;
}

/** `changes: [{field, new_value}]` (PROTOCOL §3's example) or flat fields. */
function changes(d) {
  if (Array.isArray(d.changes)) return d.changes.map((c) => [c.field, c.new_value]);
  return Object.entries(d).filter(([k]) => k === 'status' || k === 'title');
}

function status(s) {
  return STATUSES.includes(s) ? s : 'todo';
}

export { STATUSES };
