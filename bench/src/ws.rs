//! One WebSocket subscriber (Switchyard's `/realtime/connect`), in JSON text
//! frames (`switchyard.v1.json`) or protobuf binary frames
//! (`switchyard.v1.protobuf`): as cheap per event as the SSE subscriber, so
//! the two modes differ only on the wire and in the server.
//!
//! A raw TCP stream with a hand-written upgrade, one large read buffer and
//! frames parsed in place. An event's `seq`, `step` and `t` are found the
//! same way in both modes (its `data` is the same JSON text in both), and
//! recorded in the same [`SubStats`]; every byte read after the handshake
//! is counted. Server pings are answered; a connection that ends is
//! reopened and resubscribed from the last event id, and counted.

use std::sync::{Arc, LazyLock};
use std::time::Duration;

use anyhow::{anyhow, bail};
use memchr::memmem::Finder;
use prost::Message as _;
use switchyard_proto::{self as proto, client_message, server_message};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::oneshot;

use crate::clock;
use crate::conn::{connect, parse_head, source_for};
use crate::sse::{Shared, SubConfig, number_after};

/// How the socket's messages are framed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Framing {
    Json,
    Protobuf,
}

impl Framing {
    fn subprotocol(self) -> &'static str {
        match self {
            Framing::Json => "switchyard.v1.json",
            Framing::Protobuf => "switchyard.v1.protobuf",
        }
    }
}

static SEQ: LazyLock<Finder<'static>> = LazyLock::new(|| Finder::new(b"\"seq\":"));
static STEP: LazyLock<Finder<'static>> = LazyLock::new(|| Finder::new(b"\"step\":"));
static T: LazyLock<Finder<'static>> = LazyLock::new(|| Finder::new(b"\"t\":"));
static ID: LazyLock<Finder<'static>> = LazyLock::new(|| Finder::new(b"\"id\":"));

/// Any client mask will do: the server unmasks whatever it is.
const MASK: [u8; 4] = [0x5a, 0x17, 0xc3, 0x2e];

/// Runs subscriber `i` until aborted; `ready` is answered once its
/// `subscription` message arrived, or it failed to open.
pub async fn subscribe(
    i: usize,
    framing: Framing,
    cfg: Arc<SubConfig>,
    stats: Shared,
    ready: oneshot::Sender<anyhow::Result<()>>,
) {
    let mut ready = Some(ready);
    let mut buf = vec![0u8; cfg.read_buf];
    let mut last_id: Option<u64> = None;
    let mut failures = 0u64;
    loop {
        let result = session(i, framing, &cfg, &stats, &mut buf, &mut last_id, &mut ready).await;
        let why = match result {
            Ok(()) => "server closed the socket".to_string(),
            Err(e) => format!("{e:#}"),
        };
        failures += 1;
        if ready.is_some() && failures >= 5 {
            let _ = ready.take().expect("checked").send(Err(anyhow!(why)));
            return;
        }
        if ready.is_none() {
            let mut s = stats.lock().expect("stats lock");
            s.reconnects += 1;
            s.last_error = Some(why);
        }
        if !cfg.reconnect && ready.is_none() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100 * failures.min(10))).await;
    }
}

async fn session(
    i: usize,
    framing: Framing,
    cfg: &SubConfig,
    stats: &Shared,
    buf: &mut [u8],
    last_id: &mut Option<u64>,
    ready: &mut Option<oneshot::Sender<anyhow::Result<()>>>,
) -> anyhow::Result<()> {
    let ep = cfg.target.endpoint(i);
    let mut stream = connect(ep.addr, source_for(i, cfg.source_addrs)).await?;
    let token = cfg.target.subscriber_token(i)?;
    let request = format!(
        "GET /realtime/connect?token={token} HTTP/1.1\r\nHost: {}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Protocol: {}\r\n\r\n",
        ep.host,
        framing.subprotocol()
    );
    stream.write_all(request.as_bytes()).await?;
    let mut filled = 0;
    let head = loop {
        let n = stream.read(&mut buf[filled..]).await?;
        if n == 0 {
            bail!("connection closed before the response head");
        }
        filled += n;
        if let Some(head) = parse_head(&buf[..filled])? {
            break head;
        }
        if filled == buf.len() {
            bail!("response head larger than the read buffer");
        }
    };
    if head.status != 101 {
        let text = String::from_utf8_lossy(&buf[head.len..filled]);
        bail!(
            "HTTP {}: {}",
            head.status,
            text.chars().take(300).collect::<String>()
        );
    }
    let echoed = buf[..head.len].to_ascii_lowercase();
    let wanted = format!("sec-websocket-protocol: {}", framing.subprotocol());
    if memchr::memmem::find(&echoed, wanted.as_bytes()).is_none() {
        bail!("the server did not echo {}", framing.subprotocol());
    }
    let subscribe = subscribe_message(framing, &cfg.target.channel, *last_id);
    stream.write_all(&subscribe).await?;
    // Frames are parsed from the front of buf[start..end]; a partial one
    // is moved to the front before the next read.
    let (mut start, mut end) = (head.len, filled);
    stats.lock().expect("stats lock").bytes += (end - start) as u64;
    loop {
        let now = clock::now_ns();
        let used = frames(
            &buf[start..end],
            framing,
            now,
            cfg.sigfig,
            stats,
            last_id,
            ready,
            &mut stream,
        )
        .await?;
        start += used;
        if start == end {
            (start, end) = (0, 0);
        } else if end == buf.len() {
            if start == 0 {
                bail!("a frame larger than the read buffer ({} bytes)", buf.len());
            }
            buf.copy_within(start..end, 0);
            (start, end) = (0, end - start);
        }
        let n = stream.read(&mut buf[end..]).await?;
        if n == 0 {
            return Ok(());
        }
        end += n;
        stats.lock().expect("stats lock").bytes += n as u64;
    }
}

/// Handles the complete frames at the front of `data`; returns the bytes
/// used. Answers pings on `stream`.
#[allow(clippy::too_many_arguments)]
async fn frames(
    data: &[u8],
    framing: Framing,
    now_ns: u64,
    sigfig: u8,
    stats: &Shared,
    last_id: &mut Option<u64>,
    ready: &mut Option<oneshot::Sender<anyhow::Result<()>>>,
    stream: &mut TcpStream,
) -> anyhow::Result<usize> {
    let mut pos = 0;
    let mut pongs = Vec::new();
    {
        let mut s = stats.lock().expect("stats lock");
        while let Some((opcode, payload, len)) = frame(&data[pos..])? {
            pos += len;
            match opcode {
                0x1 | 0x2 => {}
                0x8 => bail!("server closed the socket: {:?}", close_reason(payload)),
                _ => continue, // WebSocket-level ping or pong
            }
            let kind = match framing {
                Framing::Json => json_kind(payload),
                Framing::Protobuf => protobuf_kind(payload),
            };
            match kind {
                Kind::Event(id) => {
                    *last_id = Some(id);
                    let (Some(seq), Some(step), Some(t)) = (
                        number_after(payload, &SEQ),
                        number_after(payload, &STEP),
                        number_after(payload, &T),
                    ) else {
                        continue;
                    };
                    s.record(seq, step as u32, now_ns.saturating_sub(t) / 1000, sigfig);
                }
                Kind::Subscription => {
                    if let Some(tx) = ready.take() {
                        let _ = tx.send(Ok(()));
                    }
                }
                Kind::Ping => pongs.push(pong_message(framing)),
                Kind::Error => {
                    s.errors += 1;
                    s.last_error =
                        Some(String::from_utf8_lossy(payload).chars().take(300).collect());
                }
                Kind::Reset => s.resets += 1,
                Kind::Other => {}
            }
        }
    }
    for pong in pongs {
        stream.write_all(&pong).await?;
    }
    Ok(pos)
}

/// What a server message is, read without decoding all of it.
#[derive(Debug, PartialEq, Eq)]
enum Kind {
    Event(u64),
    Subscription,
    Ping,
    Error,
    Reset,
    Other,
}

fn json_kind(payload: &[u8]) -> Kind {
    // Every message starts with its type (the server renders them so).
    let Some(rest) = payload.strip_prefix(b"{\"type\":\"") else {
        return Kind::Other;
    };
    let kind = &rest[..memchr::memchr(b'"', rest).unwrap_or(0)];
    match kind {
        b"event" => number_after(payload, &ID).map_or(Kind::Other, Kind::Event),
        b"subscription" => Kind::Subscription,
        b"ping" => Kind::Ping,
        b"error" => Kind::Error,
        b"reset" => Kind::Reset,
        _ => Kind::Other,
    }
}

fn protobuf_kind(payload: &[u8]) -> Kind {
    // An event: ServerMessage field 3 (LEN), whose first field is its id
    // (field 1, varint). Everything else is rare: decoded in full.
    if payload.first() == Some(&0x1a) {
        let mut rest = &payload[1..];
        if prost::encoding::decode_varint(&mut rest).is_ok() && rest.first() == Some(&0x08) {
            rest = &rest[1..];
            if let Ok(id) = prost::encoding::decode_varint(&mut rest) {
                return Kind::Event(id);
            }
        }
    }
    match proto::ServerMessage::decode(payload).map(|m| m.message) {
        Ok(Some(server_message::Message::Subscription(_))) => Kind::Subscription,
        Ok(Some(server_message::Message::Ping(_))) => Kind::Ping,
        Ok(Some(server_message::Message::Error(_))) => Kind::Error,
        Ok(Some(server_message::Message::Reset(_))) => Kind::Reset,
        _ => Kind::Other,
    }
}

/// The frame at the front of `data`: opcode, payload and total length;
/// `None` until it is complete. Server frames are unmasked and, from
/// Switchyard, never fragmented.
fn frame(data: &[u8]) -> anyhow::Result<Option<(u8, &[u8], usize)>> {
    if data.len() < 2 {
        return Ok(None);
    }
    if data[0] & 0x80 == 0 {
        bail!("a fragmented frame");
    }
    let (len, at) = match data[1] & 0x7f {
        126 if data.len() >= 4 => (u16::from_be_bytes([data[2], data[3]]) as usize, 4),
        127 if data.len() >= 10 => (
            u64::from_be_bytes(data[2..10].try_into().expect("8 bytes")) as usize,
            10,
        ),
        126 | 127 => return Ok(None),
        n => (n as usize, 2),
    };
    if data.len() < at + len {
        return Ok(None);
    }
    Ok(Some((data[0] & 0x0f, &data[at..at + len], at + len)))
}

fn close_reason(payload: &[u8]) -> String {
    match payload {
        [a, b, reason @ ..] => format!(
            "{} {}",
            u16::from_be_bytes([*a, *b]),
            String::from_utf8_lossy(reason)
        ),
        _ => "no code".into(),
    }
}

/// A masked client frame.
fn client_frame(opcode: u8, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(payload.len() + 14);
    out.push(0x80 | opcode);
    match payload.len() {
        n if n < 126 => out.push(0x80 | n as u8),
        n if n <= u16::MAX as usize => {
            out.push(0x80 | 126);
            out.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            out.push(0x80 | 127);
            out.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    out.extend_from_slice(&MASK);
    out.extend(payload.iter().enumerate().map(|(i, b)| b ^ MASK[i % 4]));
    out
}

fn subscribe_message(framing: Framing, channel: &str, after: Option<u64>) -> Vec<u8> {
    match framing {
        Framing::Json => {
            let mut message = serde_json::json!({"type": "subscribe", "channels": [channel]});
            if let Some(id) = after {
                message["last_event_id"] = id.into();
            }
            client_frame(0x1, message.to_string().as_bytes())
        }
        Framing::Protobuf => {
            let message = proto::ClientMessage {
                ack_id: None,
                message: Some(client_message::Message::Subscribe(proto::Subscribe {
                    channels: vec![channel.to_string()],
                    last_event_id: after,
                })),
            };
            client_frame(0x2, &message.encode_to_vec())
        }
    }
}

fn pong_message(framing: Framing) -> Vec<u8> {
    match framing {
        Framing::Json => client_frame(0x1, br#"{"type":"pong"}"#),
        Framing::Protobuf => {
            let message = proto::ClientMessage {
                ack_id: None,
                message: Some(client_message::Message::Pong(proto::Pong::default())),
            };
            client_frame(0x2, &message.encode_to_vec())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn server_frame(opcode: u8, payload: &[u8]) -> Vec<u8> {
        let mut out = vec![0x80 | opcode];
        if payload.len() < 126 {
            out.push(payload.len() as u8);
        } else {
            out.push(126);
            out.extend_from_slice(&(payload.len() as u16).to_be_bytes());
        }
        out.extend_from_slice(payload);
        out
    }

    #[test]
    fn reads_events_in_both_framings() {
        let data = br#"{"seq":3,"step":1,"t":1000000}"#;
        let json = format!(
            r#"{{"type":"event","id":77,"channel":"feed:bench","event":"bench","data":{},"user_id":"bench","timestamp":"x"}}"#,
            std::str::from_utf8(data).unwrap()
        );
        let event = proto::ServerMessage {
            ack_id: None,
            message: Some(server_message::Message::Event(proto::Event {
                id: 300,
                channel: "feed:bench".into(),
                event: "bench".into(),
                data: bytes::Bytes::from_static(data),
                user_id: Some("bench".into()),
                timestamp: "x".into(),
                channels: Vec::new(),
            })),
        }
        .encode_to_vec();
        assert_eq!(json_kind(json.as_bytes()), Kind::Event(77));
        assert_eq!(protobuf_kind(&event), Kind::Event(300));
        assert_eq!(json_kind(br#"{"type":"ping","timestamp":1}"#), Kind::Ping);
        let ping = proto::ServerMessage {
            ack_id: None,
            message: Some(server_message::Message::Ping(proto::Ping {
                timestamp: Some(1),
            })),
        }
        .encode_to_vec();
        assert_eq!(protobuf_kind(&ping), Kind::Ping);
        let mut wire = server_frame(0x2, &event);
        let long = vec![b'x'; 300];
        wire.extend(server_frame(0x1, &long));
        let (op, payload, len) = frame(&wire).unwrap().unwrap();
        assert_eq!((op, payload, len), (0x2, &event[..], event.len() + 2));
        let (op, payload, _) = frame(&wire[len..]).unwrap().unwrap();
        assert_eq!((op, payload.len()), (0x1, 300));
        assert!(frame(&wire[len..len + 3]).unwrap().is_none());
    }
}
