// TypeScript declarations for switchyard.js, the Switchyard browser client
// (PROTOCOL v1). Field names follow the wire format (snake_case).

export type TransportKind = 'sse' | 'poll' | 'websocket';
export type ConnectionState = 'idle' | 'connecting' | 'open' | 'fallback' | 'offline' | 'stopped';
export type TokenReason = 'start' | 'expiring' | 'expired' | 'rejected';

/** An event from the log (PROTOCOL §3). */
export interface SwitchyardEvent<T = unknown> {
  type: 'event';
  id: number;
  channel: string;
  channels?: string[];
  event: string;
  data: T;
  user_id: string;
  timestamp: string;
}

/** A `reset` control message: events before `oldest_id` are gone; reload state. */
export interface ResetMessage {
  type: 'reset';
  reason: string;
  oldest_id?: number;
}

export interface SystemMessage {
  type: 'system';
  event: string;
  data?: unknown;
}

export interface SubscriptionMessage {
  type: 'subscription';
  status: string;
  /** Every channel the stream follows now, the inbox included. */
  channels: string[];
  /** Channels no longer followed because a membership ended. */
  removed?: string[];
  errors: { channel: string; code: string }[];
}

export interface ClientOptions {
  /** Returns a JWT (or a promise of one). Called at start, on `token.expiring` and after a 401. */
  getToken(context: { reason: TokenReason }): string | Promise<string>;
  /** Server origin, e.g. "https://rt.example.com". Default: the page's origin. */
  url?: string;
  /**
   * Channels to read. The server adds the user's inbox (`user:{sub}` and
   * every conversation they belong to); none at all reads the inbox alone.
   */
  channels?: string[];
  /** 'auto' (default): SSE, falling back to long polling. */
  transport?: 'auto' | TransportKind;
  /** With 'auto': try WebSocket first, then SSE, then long polling. */
  preferWebSocket?: boolean;
  /** Resume after this event id (0 = every retained event). Default: from now. */
  lastEventId?: number;
  /** Long-poll hold in seconds (max 30). */
  pollTimeoutSecs?: number;
  /** Events per poll answer (max 1000). */
  pollLimit?: number;
  /** Without the first SSE message within this time the stream counts as stuck (8000). */
  sseOpenTimeoutMs?: number;
  /** An SSE stream silent this long is checked against a poll (45000). */
  silenceProbeMs?: number;
  /** Wait for a diagnostic probe (4000). */
  probeTimeoutMs?: number;
  /** Reconnect delay after `server.shutdown` (2000, the server's `retry:`). */
  shutdownRetryMs?: number;
  /** Least time between two edit operations of one document (100). */
  minOpIntervalMs?: number;
  /** Reconnection and retry backoff bounds (1 s to 60 s). */
  backoff?: { minMs?: number; maxMs?: number };
  onEvent?(event: SwitchyardEvent): void;
  onReset?(reset: ResetMessage): void;
  onStateChange?(change: { state: ConnectionState; transport: TransportKind | null }): void;
  onError?(error: SwitchyardError): void;
  onSystem?(message: SystemMessage): void;
  /** A new notification (same as `client.notifications.on('notification', fn)`). */
  onNotification?(notification: Notification): void;
}

/** The protocol's error body (§11); status 0 when the server did not answer. */
export class SwitchyardError extends Error {
  readonly status: number;
  readonly code: string;
  readonly details: Record<string, unknown>;
  readonly requestId: string | null;
  readonly retryAfterMs: number | null;
  readonly retryable: boolean;
}

export interface PublishReceipt {
  status: 'sent';
  id: number;
  ids: number[];
  recipients: number;
  timestamp: string;
}

export interface PublishExtra {
  channels?: string[];
  expected_last_id?: number;
  idempotency_key?: string;
  [field: string]: unknown;
}

export interface ClientEvents {
  event: SwitchyardEvent;
  reset: ResetMessage;
  state: { state: ConnectionState; transport: TransportKind | null };
  fallback: { from: TransportKind; to: TransportKind; reason: 'failed' | 'silent' };
  system: SystemMessage;
  subscription: SubscriptionMessage;
  token: { reason: TokenReason };
  error: SwitchyardError;
  control: { type: string; [field: string]: unknown };
}

export class Emitter<E = Record<string, unknown>> {
  on<K extends keyof E>(name: K, fn: (value: E[K]) => void): () => void;
  off<K extends keyof E>(name: K, fn: (value: E[K]) => void): void;
  emit<K extends keyof E>(name: K, value: E[K]): void;
}

export class SwitchyardClient extends Emitter<ClientEvents> {
  constructor(options: ClientOptions);
  readonly options: Required<Omit<ClientOptions, 'lastEventId' | 'url'>> & ClientOptions;
  /** Id of the last event delivered: pass it as `lastEventId` to resume later. */
  readonly cursor: number | null;
  readonly state: ConnectionState;
  readonly transport: TransportKind | null;
  readonly channels: string[];
  /** Publishes and conversation messages waiting in the outbox. */
  readonly pending: number;
  /** The token's `sub`, once there is a token. */
  readonly userId: string | null;
  /** Notifications (PROTOCOL §9). */
  readonly notifications: Notifications;
  /** Conversations (PROTOCOL §9a). */
  readonly conversations: Conversations;
  start(): Promise<void>;
  stop(): void;
  /** Resolves once a stream reading the channels is open. */
  subscribe(...channels: (string | string[])[]): Promise<void>;
  unsubscribe(...channels: (string | string[])[]): Promise<void>;
  setChannels(channels: string[]): Promise<void>;
  /** Through the outbox: held offline, in order, once (idempotency key). */
  publish<T = unknown>(channel: string, event: string, data?: T, extra?: PublishExtra): Promise<PublishReceipt>;
  setStatus(status: 'online' | 'away' | 'busy', statusMessage?: string | null): Promise<unknown>;
  /** `null` clears. */
  setViewing(resourceType: string | null, resourceId?: string | number): Promise<unknown>;
  sendTyping(resourceType: string, resourceId: string | number, field: string, isTyping: boolean): Promise<unknown>;
  typingIndicator(resourceType: string, resourceId: string | number, field: string, options?: TypingOptions): TypingIndicator;
  openDocument(resource: DocumentResource): Promise<EditDocument>;
  /** Any endpoint, with the token; throws SwitchyardError. */
  request<T = any>(method: string, path: string, body?: unknown, options?: { query?: Record<string, unknown>; signal?: AbortSignal }): Promise<T>;
}

/** A notification (PROTOCOL §9); `data` is whatever the backend sent. */
export interface Notification<T = unknown> {
  id: string;
  type: string;
  title: string;
  body: string | null;
  data: T;
  created_at: string;
  read_at: string | null;
}

export interface NotificationPage {
  notifications: Notification[];
  /** Pass as `before` for the next page; null on the last. */
  next_before: string | null;
  unread_count: number;
}

export interface NotificationsRead {
  /** The notification read; null for read-all. */
  id: string | null;
  read_at: string | null;
  unread_count: number;
}

export interface NotificationEvents {
  notification: Notification;
  read: NotificationsRead;
  read_all: { read_at: string | null; unread_count: number };
  /** The unread count, each time it changes. */
  unread: number;
}

/**
 * The user's notifications. `unread` is the live unread count once known
 * (after unreadCount() or list()), kept from events so every tab agrees.
 */
export class Notifications extends Emitter<NotificationEvents> {
  readonly unread: number | null;
  list(options?: { unread?: boolean; limit?: number; before?: string }): Promise<NotificationPage>;
  unreadCount(): Promise<number>;
  read(id: string): Promise<NotificationsRead>;
  readAll(): Promise<NotificationsRead>;
}

/** A message of a conversation; `content` is empty once deleted. */
export interface Message {
  id: string;
  conversation_id: string;
  sender: { user_id: string; name: string | null; avatar: string | null };
  content: string;
  client_message_id: string | null;
  created_at: string;
  edited_at: string | null;
  deleted_at: string | null;
}

export interface Conversation {
  id: string;
  type: 'direct' | 'group';
  title: string | null;
  /** `conversation:{id}` */
  channel: string;
  created_by: string;
  created_at: string;
  last_activity: string;
  last_message: Message | null;
  /** The user's unread messages. */
  unread_count: number;
  /** Each member's read position. */
  members: { user_id: string; last_read_message_id: string | null; read_at: string | null }[];
}

export interface MessageRead {
  conversation_id: string;
  user_id: string;
  message_id: string | null;
  read_at: string | null;
  /** The reader's unread messages now. */
  unread_count: number;
}

export interface MemberChange {
  conversation_id: string;
  channel: string;
  user_id: string;
  added_at?: string;
  removed_at?: string;
}

export interface ConversationEvents {
  'message.created': Message;
  'message.updated': Message;
  'message.deleted': Message;
  'message.read': MessageRead;
  'member.added': MemberChange;
  'member.removed': MemberChange;
  typing: { conversation_id: string; user_id: string; is_typing: boolean };
  /** Events were lost (the cursor expired): reload what is shown. */
  reset: ResetMessage;
}

/** A send in the outbox: resolves with the stored message. */
export type SendingMessage = Promise<Message> & { readonly clientMessageId: string };

/** The user's conversations; sends go through the outbox. */
export class Conversations extends Emitter<ConversationEvents> {
  /** The direct conversation with a user (one per pair), or a new group. */
  open(options: { type?: 'direct'; userId: string } | { type: 'group'; title: string; members: string[] }): Promise<Conversation>;
  list(options?: { limit?: number; before?: string }): Promise<{ conversations: Conversation[]; next_before: string | null }>;
  /** Newest first. */
  messages(id: string, options?: { before?: string; limit?: number }): Promise<{ messages: Message[]; next_before: string | null }>;
  /** Held offline, in order, stored once (retries keep the `client_message_id`). */
  send(id: string, content: string, options?: { clientMessageId?: string }): SendingMessage;
  edit(id: string, messageId: string, content: string): Promise<Message>;
  delete(id: string, messageId: string): Promise<Message>;
  /** Moves the read position forward (never back). */
  read(id: string, messageId: string): Promise<{ conversation_id: string; message_id: string | null; read_at: string | null; unread_count: number }>;
  typing(id: string, isTyping: boolean): Promise<unknown>;
  typingIndicator(id: string, options?: TypingOptions): TypingIndicator;
}

export interface TypingOptions {
  /** Least time between two `is_typing: true` (2000, never under 1000). */
  intervalMs?: number;
  /** Quiet time after which `is_typing: false` is sent (3000). */
  idleMs?: number;
}

export class TypingIndicator {
  /** Call on each keystroke. */
  input(): void;
  /** Sends `is_typing: false` now if typing was announced. */
  stop(): void;
}

export interface DocumentResource {
  resource_type: string;
  resource_id: string | number;
  field: string;
}

export interface DocumentEvents {
  change: { op: TextOperation | null; remote: boolean; reset?: boolean; userId?: string };
  status: 'synchronized' | 'awaiting' | 'awaiting-with-buffer';
  resync: { reason: unknown };
  error: unknown;
}

/** A collaborative plain-text field (PROTOCOL §8), as ot.js's Client. */
export class EditDocument extends Emitter<DocumentEvents> {
  readonly resource: DocumentResource;
  readonly channel: string;
  readonly text: string;
  readonly revision: number;
  readonly sessionId: string | null;
  readonly activeEditors: { user_id: string; name: string | null }[];
  readonly status: 'synchronized' | 'awaiting' | 'awaiting-with-buffer';
  applyLocal(op: TextOperation): void;
  setText(text: string): void;
  save(): Promise<unknown>;
  close(waitMs?: number): Promise<void>;
  whenSynced(): Promise<void>;
}

export type Component = { retain: number } | { insert: string } | { delete: number };

/** A text operation; lengths in Unicode code points. */
export class TextOperation {
  readonly ops: Component[];
  readonly baseLength: number;
  readonly targetLength: number;
  static fromJSON(list: Component[]): TextOperation;
  toJSON(): Component[];
  retain(n: number): this;
  insert(text: string): this;
  delete(n: number): this;
  isNoop(): boolean;
  equals(other: TextOperation): boolean;
  apply(doc: string): string;
}

export interface Outbox<P = unknown, R = unknown> {
  readonly size: number;
  push(payload: P): Promise<R>;
  wake(): void;
}
export const Outbox: {
  new <P, R>(
    send: (payload: P) => Promise<R>,
    options?: { isOnline?: () => boolean; delay?: (attempt: number) => number; wait?: (ms: number, signal?: AbortSignal) => Promise<void> },
  ): Outbox<P, R>;
};

export interface TextField extends EventTarget {
  value: string;
  selectionStart: number | null;
  selectionEnd: number | null;
  selectionDirection?: 'forward' | 'backward' | 'none' | null;
  scrollTop?: number;
  setSelectionRange(start: number, end: number, direction?: 'forward' | 'backward' | 'none'): void;
}

export function bindTextarea(doc: EditDocument, el: TextField): { dispose(): void };
export function transform(a: TextOperation, b: TextOperation): [TextOperation, TextOperation];
export function compose(a: TextOperation, b: TextOperation): TextOperation;
export function transformIndex(op: TextOperation, index: number, pushedByInsert?: boolean): number;
export function diffToOperation(before: string, after: string, caret?: number): TextOperation;
export function codePointLength(s: string): number;
export function toCodePointIndex(s: string, utf16Index: number): number;
export function toUtf16Index(s: string, codePointIndex: number): number;
export function backoffDelay(attempt: number, options?: { minMs?: number; maxMs?: number; random?: () => number }): number;
export function parseRetryAfter(value: string | null | undefined, now?: number): number | null;
export function randomId(): string;
export function sleep(ms: number, signal?: AbortSignal): Promise<void>;
