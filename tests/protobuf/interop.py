"""Interop test of proto/switchyard.proto: a client whose message classes
protoc generated from the .proto (run.sh does that) against the real
`switchyard` binary, started here on 127.0.0.1:0 with a temp SQLite file.

It speaks switchyard.v1.protobuf through the whole protocol and checks every
field of every message both ways, so the server's hand-written prost types
cannot drift from the .proto unseen: a field the server sends that the
.proto lacks fails the unknown-field check on every frame received, a field
the server reads under another number or type changes what the server
does, and event envelopes are compared key for key with the JSON the HTTP
API gives for the same events.

    PYTHONPATH=<protoc output> python3 tests/protobuf/interop.py

SWITCHYARD_BIN picks the binary (default: the newer of target/release and
target/debug under CARGO_TARGET_DIR or ./target). Prints one line per
check and 'N passed, N failed'; exits 1 on any failure.
"""

import asyncio
import json
import os
import queue
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
import traceback
import urllib.error
import urllib.request

import switchyard_pb2 as pb
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

PROTOBUF = "switchyard.v1.protobuf"
SECRET = f"protobuf-interop-{os.getpid()}-{time.time_ns()}"
REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
TIMEOUT = 10


class Failure(Exception):
    pass


def check(condition, what):
    if not condition:
        raise Failure(what)


def equal(actual, expected, what):
    if actual != expected:
        raise Failure(f"{what}: expected {expected!r}, got {actual!r}")


# --- the server ---------------------------------------------------------


def find_binary():
    if os.environ.get("SWITCHYARD_BIN"):
        return os.environ["SWITCHYARD_BIN"]
    target = os.environ.get("CARGO_TARGET_DIR", os.path.join(REPO, "target"))
    builds = [os.path.join(target, p, "switchyard") for p in ("release", "debug")]
    builds = [b for b in builds if os.path.exists(b)]
    if not builds:
        sys.exit(f"no switchyard binary under {target}: run cargo build --bin switchyard first")
    return max(builds, key=os.path.getmtime)


class Server:
    def __init__(self, binary, db_dir):
        self.binary = binary
        env = {
            "PATH": os.environ.get("PATH", ""),
            "SWITCHYARD_LISTEN": "127.0.0.1:0",
            "SWITCHYARD_DATABASE_URL": f"sqlite://{os.path.join(db_dir, 'switchyard.db')}",
            "SWITCHYARD_JWT_SECRET": SECRET,
            "SWITCHYARD_RATE_LIMITS": "off",
            # Server pings every second, so pings and pongs are seen.
            "SWITCHYARD_WS_PING_SECS": "1",
            "RUST_LOG": os.environ.get("RUST_LOG", "warn"),
        }
        self.child = subprocess.Popen(
            [binary], env=env, stdout=subprocess.PIPE, stderr=sys.stderr, text=True
        )
        lines = queue.Queue()

        def read():
            for line in self.child.stdout:
                lines.put(line)

        threading.Thread(target=read, daemon=True).start()
        deadline = time.monotonic() + 30
        while True:
            try:
                line = lines.get(timeout=max(0.1, deadline - time.monotonic()))
            except queue.Empty:
                self.stop()
                sys.exit("the server did not print its address within 30 s")
            m = re.match(r"switchyard listening on (http://\S+)", line)
            if m:
                self.base = m.group(1)
                self.ws = self.base.replace("http://", "ws://", 1)
                return

    def stop(self):
        if self.child.poll() is None:
            self.child.kill()
        self.child.wait()

    def token(self, sub, *args):
        out = subprocess.run(
            [self.binary, "token", "--sub", sub, *args],
            env={"PATH": os.environ.get("PATH", ""), "SWITCHYARD_JWT_SECRET": SECRET},
            check=True,
            capture_output=True,
            text=True,
        )
        return out.stdout.strip()

    def http(self, method, path, token, body=None):
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(self.base + path, data=data, method=method)
        request.add_header("Authorization", f"Bearer {token}")
        if data is not None:
            request.add_header("Content-Type", "application/json")
        try:
            with urllib.request.urlopen(request, timeout=TIMEOUT) as res:
                return res.status, json.loads(res.read())
        except urllib.error.HTTPError as e:
            return e.code, json.loads(e.read())


# --- the protobuf socket -------------------------------------------------


def decode(raw):
    """A ServerMessage, refused if it holds a field the .proto does not
    declare (anywhere in it)."""
    check(isinstance(raw, bytes), f"a binary frame, got text {raw!r}")
    message = pb.ServerMessage()
    message.ParseFromString(raw)
    known = pb.ServerMessage()
    known.CopyFrom(message)
    known.DiscardUnknownFields()
    check(
        known.SerializeToString() == raw,
        f"the server sent fields switchyard.proto does not declare: {raw!r} reads as {message}",
    )
    return message


def json_of(data):
    return None if data == b"" else json.loads(data)


def repeated(field):
    # `label` is gone from newer runtimes, `is_repeated` absent from older.
    if hasattr(field, "is_repeated"):
        return field.is_repeated
    return field.label == field.LABEL_REPEATED


# Repeated fields the JSON protocol leaves out when they are empty.
OMITTED_WHEN_EMPTY = {("subscription", "removed"), ("event", "channels")}


def as_json(message):
    """A server message's submessage as the JSON protocol's object: `type`
    from the oneof, every field of the .proto by its name, JSON text
    fields parsed, unset optional fields null."""
    kind = message.WhichOneof("message")
    body = getattr(message, kind)
    out = {"type": kind}
    for field in body.DESCRIPTOR.fields:
        value = getattr(body, field.name)
        if field.has_presence and not body.HasField(field.name):
            value = None
        elif field.type == field.TYPE_BYTES:
            value = json_of(value)
        elif field.type == field.TYPE_MESSAGE:
            value = [{f.name: getattr(v, f.name) for f in v.DESCRIPTOR.fields} for v in value]
        elif repeated(field):
            value = list(value)
            if not value and (kind, field.name) in OMITTED_WHEN_EMPTY:
                continue
        out[field.name] = value
    if message.HasField("ack_id"):
        out["ack_id"] = message.ack_id
    return out


class Socket:
    """A protobuf WebSocket that answers the server's pings, and keeps
    events aside while a test waits for an answer."""

    def __init__(self, ws):
        self.ws = ws
        self.events = []
        self.presence = []
        self.server_pings = []

    @classmethod
    async def open(cls, server, token):
        ws = await connect(f"{server.ws}/realtime/connect?token={token}", subprotocols=[PROTOBUF])
        equal(ws.subprotocol, PROTOBUF, "the subprotocol the server echoed")
        return cls(ws)

    async def send(self, ack_id=None, **message):
        ((kind, body),) = message.items()
        frame = pb.ClientMessage()
        if ack_id is not None:
            frame.ack_id = ack_id
        getattr(frame, kind).CopyFrom(body)
        await self.ws.send(frame.SerializeToString())

    async def next(self):
        """The next message but server pings (answered with a Pong), within
        TIMEOUT (pings do not extend it)."""
        deadline = time.monotonic() + TIMEOUT
        while True:
            left = deadline - time.monotonic()
            try:
                raw = await asyncio.wait_for(self.ws.recv(), max(left, 0.001))
            except TimeoutError:
                raise Failure(f"no message within {TIMEOUT} s") from None
            message = decode(raw)
            if message.WhichOneof("message") == "ping":
                self.server_pings.append(message.ping.timestamp)
                await self.send(pong=pb.Pong(timestamp=message.ping.timestamp))
                continue
            return message

    async def expect(self, kind, ack_id=None):
        """The next message that is not an event; events are kept aside."""
        while True:
            message = await self.next()
            if message.WhichOneof("message") == "event":
                self.events.append(message.event)
                continue
            equal(message.WhichOneof("message"), kind, f"message kind ({message})")
            if ack_id is None:
                check(not message.HasField("ack_id"), f"no ack_id expected: {message}")
            else:
                equal(message.ack_id, ack_id, "ack_id")
            return getattr(message, kind)

    async def event(self):
        """The next event, kept aside or read now. Presence announcements
        (alice joining the room of `task:7`, whenever the server sends it)
        are checked and set aside: the steps below count the others."""
        while True:
            if self.events:
                event = self.events.pop(0)
            else:
                message = await self.next()
                equal(message.WhichOneof("message"), "event", f"message kind ({message})")
                event = message.event
            if event.event in ("user.connected", "user.disconnected"):
                equal(
                    (event.event, event.channel, json.loads(event.data)["user_id"]),
                    ("user.connected", "task:7", "alice"),
                    "the one presence announcement",
                )
                self.presence.append(event)
                continue
            return event

    async def close_code(self):
        try:
            while True:
                await self.next()
        except ConnectionClosed as closed:
            return closed.rcvd.code if closed.rcvd else None


# --- the checks ------------------------------------------------------------


def event_json(event):
    message = pb.ServerMessage()
    message.event.CopyFrom(event)
    return as_json(message)


async def run(server):
    results = []
    state = {}

    async def step(name, body):
        try:
            await body()
            results.append(True)
            print(f"ok - {name}", flush=True)
        except Exception as e:  # noqa: BLE001 - every failure is reported
            results.append(False)
            frames = [f for f in traceback.extract_tb(e.__traceback__) if f.filename == __file__]
            where = " (lines " + " > ".join(str(f.lineno) for f in frames[1:]) + ")" if frames else ""
            print(f"not ok - {name}: {e}{where}", flush=True)
            if not isinstance(e, Failure):
                traceback.print_exc()

    service = server.token("backend", "--role", "service")
    alice = server.token(
        "alice", "--channels", "task:*", "--publish", "feed:*,task:*", "--name", "Alice"
    )

    def broadcast(event, data):
        status, receipt = server.http(
            "POST", "/realtime/broadcast", service,
            {"channel": "feed:interop", "event": event, "data": data},
        )
        equal(status, 202, f"broadcast answered {receipt}")
        return receipt["id"]

    first = broadcast("old", {"n": 1})
    before = [
        broadcast("missed", {"n": 2, "big": 12345678901234567890, "x": 0.1, "s": "é\n"}),
        broadcast("missed.null", None),
    ]

    async def connected():
        sock = await Socket.open(server, alice)
        c = await sock.expect("connected")
        equal(c.user_id, "alice", "connected.user_id")
        check(len(c.connection_id) > 0, "connected.connection_id")
        state["sock"] = sock

    async def subscribe_from_a_cursor():
        sock = state["sock"]
        await sock.send(
            "s1",
            subscribe=pb.Subscribe(
                channels=["feed:interop", "task:7", "project:9"], last_event_id=first
            ),
        )
        ack = await sock.expect("ack", "s1")
        equal(ack.status, "success", "ack.status")
        equal(
            json_of(ack.data),
            {
                "channels": ["user:alice", "feed:interop", "task:7"],
                "added": ["user:alice", "feed:interop", "task:7"],
                "errors": [{"channel": "project:9", "code": "permission_denied"}],
            },
            "subscribe ack data",
        )
        sub = await sock.expect("subscription")
        equal(
            as_json(sub_message(subscription=sub)),
            {
                "type": "subscription",
                "status": "success",
                "channels": ["user:alice", "feed:interop", "task:7"],
                "errors": [{"channel": "project:9", "code": "permission_denied"}],
            },
            "subscription",
        )
        # The missed events, as the JSON API renders them.
        status, polled = server.http(
            "GET", f"/realtime/poll?channels=feed:interop&last_poll_id={first}&timeout=1", alice
        )
        equal(status, 200, f"poll answered {polled}")
        equal([e["id"] for e in polled["events"]], before, "polled ids")
        state["replayed"] = []
        for envelope in polled["events"]:
            event = await sock.event()
            equal(event_json(event), envelope, "a replayed event beside its JSON envelope")
            state["replayed"].append(event)

    async def data_is_the_stored_json_text():
        # Byte for byte what was published (compacted): integers past 2^53
        # and decimals exact, escapes kept; absent data is null.
        missed, null = state["replayed"]
        equal(missed.data, b'{"n":2,"big":12345678901234567890,"x":0.1,"s":"\\u00e9\\n"}', "data")
        equal(null.data, b"null", "null data")

    async def live_events():
        sock = state["sock"]
        live = broadcast("live", {"k": [1, 2, 3]})
        event = await sock.event()
        equal(event.id, live, "live event id")
        equal(event.event, "live", "live event name")
        equal(event.data, b'{"k":[1,2,3]}', "data as compact JSON text")
        equal(event.user_id, "backend", "user_id")
        check(
            re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", event.timestamp),
            f"RFC 3339 timestamp: {event.timestamp}",
        )
        state["last"] = live

    async def publish_with_acks():
        sock = state["sock"]
        data = b'{"text":"hi","big":12345678901234567890,"x":0.10}'
        publish = pb.Publish(
            channel="feed:interop", event="comment.added", data=data,
            idempotency_key="k1", user_id="alice",
        )
        await sock.send("p1", publish=publish)
        ack = await sock.expect("ack", "p1")
        receipt = json_of(ack.data)
        equal(receipt["status"], "sent", "receipt status")
        equal(receipt["ids"], [receipt["id"]], "receipt ids")
        check(receipt["recipients"] >= 1, f"recipients counts this socket: {receipt}")
        event = await sock.event()
        equal((event.id, event.channel, event.event), (receipt["id"], "feed:interop", "comment.added"), "the published event")
        equal(event.data, data, "data exactly as sent (compact already)")
        equal(event.user_id, "alice", "publisher")
        # The same idempotency key: the first receipt, nothing appended.
        await sock.send("p2", publish=publish)
        equal(json_of((await sock.expect("ack", "p2")).data), receipt, "idempotent retry")
        # One event on two channels, and a batch.
        await sock.send(
            "p3", publish=pb.Publish(channels=["feed:interop", "task:7"], event="both")
        )
        both = json_of((await sock.expect("ack", "p3")).data)
        equal(len(both["ids"]), 1, f"one event on both channels: {both}")
        await sock.send(
            "p4",
            publish=pb.Publish(
                events=[
                    pb.PublishItem(channel="feed:interop", event="b1", data=b"1"),
                    pb.PublishItem(channels=["feed:interop", "task:7"], event="b2"),
                    pb.PublishItem(channel="task:8", event="b3", expected_last_id=0),
                ]
            ),
        )
        batch = json_of((await sock.expect("ack", "p4")).data)
        equal(len(batch["ids"]), 3, f"batch ids: {batch}")
        # expected_last_id that is not the channel's: conflict, with the ack_id.
        await sock.send(
            "p5", publish=pb.Publish(channel="task:8", event="late", expected_last_id=1)
        )
        conflict = await sock.expect("error", "p5")
        equal(conflict.code, "conflict", "error code")
        equal(json_of(conflict.details)["last_id"], batch["ids"][-1], "details.last_id")
        check(conflict.message and conflict.request_id, "message and request_id")
        # user_id is the token's subject or nothing.
        await sock.send("p6", publish=pb.Publish(channel="feed:interop", event="x", user_id="mallory"))
        equal((await sock.expect("error", "p6")).code, "permission_denied", "user_id of another")
        # Every event appended on a followed channel (not task:8) arrives,
        # in id order; absent data is null.
        wanted = sorted(both["ids"] + batch["ids"][:2])
        ids = [e.id for e in await events_until(sock, wanted[-1])]
        equal(ids, wanted, "published events received")

    async def events_until(sock, last):
        got = []
        while not got or got[-1].id < last:
            got.append(await sock.event())
        for e in got:
            if e.event == "both":
                equal(e.data, b"null", "absent data is null")
                equal(list(e.channels), ["feed:interop", "task:7"], "an event's channels")
            elif e.event == "b1":
                equal(list(e.channels), [], "one channel: none listed")
        return got

    async def ping_pong():
        sock = state["sock"]
        await sock.send("t1", ping=pb.Ping(timestamp=1234567890123))
        pong = await sock.expect("pong", "t1")
        check(pong.HasField("timestamp"), "pong.timestamp set")
        equal(pong.timestamp, 1234567890123, "pong echoes the client's timestamp")
        await sock.send(ping=pb.Ping())
        pong = await sock.expect("pong")
        check(abs(pong.timestamp - time.time() * 1000) < 60_000, f"server clock: {pong.timestamp}")

    async def server_pings_answered_with_pong():
        sock = state["sock"]
        # Three ping periods: unanswered, two would close the socket (1008).
        deadline = time.monotonic() + 3.5
        while time.monotonic() < deadline:
            await sock.send("w", ping=pb.Ping(timestamp=1))
            await sock.expect("pong", "w")
            await asyncio.sleep(0.25)
        check(len(sock.server_pings) >= 2, f"server pings seen: {sock.server_pings}")
        check(all(abs(t - time.time() * 1000) < 60_000 for t in sock.server_pings), "ping timestamps")

    async def presence_actions():
        sock = state["sock"]
        typing = {"resource_type": "task", "resource_id": "7", "field": "comment", "is_typing": True}
        await sock.send("pr1", presence=pb.Presence(action="typing", data=json.dumps(typing).encode()))
        ack = await sock.expect("ack", "pr1")
        equal(ack.status, "success", "typing ack")
        event = await next_named(sock, "user.typing")
        equal(json_of(event.data)["is_typing"], True, "user.typing data")
        equal(event.channel, "task:7", "user.typing channel")
        await sock.send(
            "pr2",
            presence=pb.Presence(action="update", data=b'{"status":"busy","status_message":"In a meeting"}'),
        )
        equal(json_of((await sock.expect("ack", "pr2")).data)["status"], "busy", "status update ack")
        await sock.send("pr3", presence=pb.Presence(action="dance"))
        equal((await sock.expect("error", "pr3")).code, "invalid_message", "unknown action")

    async def next_named(sock, name):
        while True:
            event = await sock.event()
            if event.event == name:
                return event

    async def edit_actions():
        sock = state["sock"]
        start = {"resource_type": "task", "resource_id": "7", "field": "description"}
        await sock.send("e1", edit=pb.Edit(action="start", data=json.dumps(start).encode()))
        session = json_of((await sock.expect("ack", "e1")).data)
        equal((session["content"], session["revision"]), ("", 0), "a new document")
        op = {"session_id": session["session_id"], "revision": 0, "ops": [{"insert": "Hello"}]}
        await sock.send("e2", edit=pb.Edit(action="operation", data=json.dumps(op).encode()))
        applied = json_of((await sock.expect("ack", "e2")).data)
        equal(applied["revision"], 1, "revision after the operation")
        seen = await next_named(sock, "edit.operation")
        equal(json_of(seen.data)["ops"], [{"insert": "Hello"}], "edit.operation ops")
        await sock.send("e3", edit=pb.Edit(action="save", data=json.dumps({"session_id": session["session_id"]}).encode()))
        equal(json_of((await sock.expect("ack", "e3")).data)["revision"], 1, "saved revision")
        await sock.send("e4", edit=pb.Edit(action="operation", data=b'{"revision":0}'))
        equal((await sock.expect("error", "e4")).code, "invalid_message", "operation without session_id")

    async def unsubscribe():
        sock = state["sock"]
        await sock.send("u1", unsubscribe=pb.Unsubscribe(channels=["task:7"]))
        equal(json_of((await sock.expect("ack", "u1")).data), {"channels": ["user:alice", "feed:interop"]}, "unsubscribe ack")

    async def errors():
        sock = state["sock"]
        # A bad message: the §11 error, with its ack_id.
        await sock.send("x1", subscribe=pb.Subscribe(channels=["not a channel!"]))
        error = await sock.expect("error", "x1")
        equal(error.code, "invalid_channel", "error code")
        check(error.message, "error message")
        check(re.fullmatch(r"[0-9a-f-]{36}", error.request_id), f"request_id {error.request_id}")
        check(isinstance(json_of(error.details), dict), "details is a JSON object")
        # A text frame: invalid_message, no ack_id, and the socket stays open.
        await sock.ws.send('{"type":"ping","ack_id":"j"}')
        error = await sock.expect("error")
        equal(error.code, "invalid_message", "a text frame in protobuf mode")
        check(PROTOBUF in error.message, error.message)
        # Not a ClientMessage at all.
        await sock.ws.send(b"\xff\xff\xff")
        equal((await sock.expect("error")).code, "invalid_message", "garbage")
        # A message with nothing in it.
        await sock.ws.send(pb.ClientMessage(ack_id="x2").SerializeToString())
        equal((await sock.expect("error", "x2")).code, "invalid_message", "an empty ClientMessage")
        await sock.send("alive", ping=pb.Ping(timestamp=5))
        equal((await sock.expect("pong", "alive")).timestamp, 5, "still open")

    async def reset_for_a_cursor_past_the_end():
        sock = state["sock"]
        await sock.send("r1", subscribe=pb.Subscribe(channels=["feed:other"], last_event_id=10**9))
        await sock.expect("ack", "r1")
        await sock.expect("subscription")
        reset = await sock.expect("reset")
        equal(reset.reason, "cursor_expired", "reset.reason")
        check(state["last"] < reset.oldest_id < 10**9, f"oldest_id is the next id: {reset.oldest_id}")

    async def token_expiry():
        short = server.token("carol", "--ttl", "3")
        sock = await Socket.open(server, short)
        await sock.expect("connected")
        expiring = await sock.expect("system")
        equal(expiring.event, "token.expiring", "first system message")
        check(0 <= json_of(expiring.data)["expires_in"] <= 3, f"expires_in {expiring.data}")
        expired = await sock.expect("system")
        equal((expired.event, expired.data), ("token.expired", b""), "token.expired, no data")
        equal(await sock.close_code(), 1008, "close code after token.expired")

    async def shutdown():
        # A fresh socket: the first one has not answered pings since the
        # expiry check, and has been closed for it.
        sock = await Socket.open(server, alice)
        await sock.expect("connected")
        server.child.send_signal(signal.SIGTERM)
        goodbye = await sock.expect("system")
        equal((goodbye.event, goodbye.data), ("server.shutdown", b""), "server.shutdown")
        equal(await sock.close_code(), 1001, "close code on shutdown")
        equal(server.child.wait(timeout=TIMEOUT), 0, "server exit status")

    async def refused_offer():
        try:
            await connect(f"{server.ws}/realtime/connect?token={alice}", subprotocols=["switchyard.v2.protobuf"])
        except InvalidStatus as e:
            equal(e.response.status_code, 400, "an offer of nothing the server speaks")
            return
        raise Failure("the handshake was accepted")

    await step("connect: subprotocol echoed, Connected", connected)
    await step("subscribe with a cursor: ack, subscription, events replayed as JSON says", subscribe_from_a_cursor)
    await step("event data is the stored JSON text", data_is_the_stored_json_text)
    await step("live events", live_events)
    await step("publish: ack with receipt, idempotency, channels, batch, conflict", publish_with_acks)
    await step("ping: pong echoes the client's timestamp", ping_pong)
    await step("server pings answered with Pong keep the socket open", server_pings_answered_with_pong)
    await step("presence actions", presence_actions)
    await step("edit actions", edit_actions)
    await step("unsubscribe", unsubscribe)
    await step("errors: ack_id, text frame, garbage", errors)
    await step("reset for a cursor past the end", reset_for_a_cursor_past_the_end)
    await step("an offer of nothing known is refused", refused_offer)
    await step("token.expiring, token.expired, close 1008", token_expiry)
    await step("server.shutdown, close 1001", shutdown)
    return results


def sub_message(**message):
    ((kind, body),) = message.items()
    out = pb.ServerMessage()
    getattr(out, kind).CopyFrom(body)
    return out


def main():
    binary = find_binary()
    print(f"# {binary}", flush=True)
    with tempfile.TemporaryDirectory(prefix="switchyard-protobuf-") as db_dir:
        server = Server(binary, db_dir)
        try:
            started = time.monotonic()
            results = asyncio.run(run(server))
        finally:
            server.stop()
    passed = sum(results)
    failed = len(results) - passed
    print(f"# {time.monotonic() - started:.1f}s")
    print(f"{passed} passed, {failed} failed")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
