//! How a WebSocket's messages travel: JSON text frames
//! (`switchyard.v1.json`, the default) or protobuf binary frames
//! (`switchyard.v1.protobuf`), picked at the upgrade from the client's
//! `Sec-WebSocket-Protocol` offer.
//!
//! The connection works on the JSON messages in both modes; the codec only
//! turns frames into message text and replies into frames. Invariants: a
//! connection keeps the codec it was opened with; a frame of the other
//! kind is refused with `invalid_message` (the socket stays open); an
//! event's frame is made once and shared by every connection of the same
//! codec.

use axum::extract::ws::{Message, Utf8Bytes};
use axum::http::{HeaderMap, HeaderValue, header};
use serde_json::Value;
use switchyard_core::Error;
use switchyard_core::event::Event;

use super::protobuf::{self, Refusal};

/// The subprotocol of JSON text frames.
pub const JSON: &str = "switchyard.v1.json";
/// The subprotocol of protobuf binary frames (`proto/switchyard.proto`).
pub const PROTOBUF: &str = "switchyard.v1.protobuf";

/// One connection's framing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Codec {
    Json,
    Protobuf,
}

impl Codec {
    /// The codec a handshake asks for, and the subprotocol to echo: the
    /// first of the client's offers (in its order of preference, over every
    /// `Sec-WebSocket-Protocol` header) that is known. No offer is JSON,
    /// echoing nothing; offers that are all unknown are refused, since the
    /// client would fail a handshake that picks none of them.
    pub fn negotiate(headers: &HeaderMap) -> Result<(Codec, Option<HeaderValue>), Error> {
        let mut offered = Vec::new();
        for value in headers.get_all(header::SEC_WEBSOCKET_PROTOCOL) {
            let value = value.to_str().map_err(|_| {
                Error::invalid_message("Sec-WebSocket-Protocol is not a list of tokens")
            })?;
            offered.extend(value.split(',').map(str::trim).filter(|p| !p.is_empty()));
        }
        if offered.is_empty() {
            return Ok((Codec::Json, None));
        }
        for protocol in &offered {
            match *protocol {
                JSON => return Ok((Codec::Json, Some(HeaderValue::from_static(JSON)))),
                PROTOBUF => {
                    return Ok((Codec::Protobuf, Some(HeaderValue::from_static(PROTOBUF))));
                }
                _ => {}
            }
        }
        Err(Error::invalid_message(format!(
            "Unsupported WebSocket subprotocol: offer {JSON} or {PROTOBUF} (or none, for JSON)"
        )))
    }

    /// A message (JSON) as a frame.
    pub fn encode(self, message: &Value) -> Message {
        match self {
            Codec::Json => Message::Text(message.to_string().into()),
            Codec::Protobuf => Message::Binary(protobuf::server_frame(message)),
        }
    }

    /// An event as a frame, sharing the event's bytes (no copy per
    /// connection).
    pub fn event(self, event: &Event) -> Message {
        match self {
            Codec::Json => Message::Text(
                Utf8Bytes::try_from(event.envelope_bytes()).expect("the envelope is UTF-8"),
            ),
            Codec::Protobuf => Message::Binary(protobuf::event_frame(event)),
        }
    }

    /// A client's text or binary frame as its JSON message.
    pub fn read(self, frame: Message) -> Result<Utf8Bytes, Refusal> {
        match (self, frame) {
            (Codec::Json, Message::Text(text)) => Ok(text),
            (Codec::Protobuf, Message::Binary(bytes)) => {
                protobuf::client_json(bytes).map(Into::into)
            }
            (Codec::Json, _) => Err((
                Box::new(Error::invalid_message(format!(
                    "Binary frames need Sec-WebSocket-Protocol: {PROTOBUF}; send JSON text frames"
                ))),
                None,
            )),
            (Codec::Protobuf, _) => Err((
                Box::new(Error::invalid_message(format!(
                    "This connection speaks {PROTOBUF}: send each ClientMessage in a binary frame"
                ))),
                None,
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The codec and the echoed subprotocol for these header values.
    fn offer(values: &[&str]) -> Result<(Codec, Option<String>), Error> {
        let mut headers = HeaderMap::new();
        for v in values {
            headers.append(
                header::SEC_WEBSOCKET_PROTOCOL,
                HeaderValue::from_str(v).unwrap(),
            );
        }
        let (codec, echo) = Codec::negotiate(&headers)?;
        Ok((codec, echo.map(|e| e.to_str().unwrap().to_string())))
    }

    #[test]
    fn the_clients_first_known_offer_wins() {
        let picked = |values: &[&str]| {
            let (codec, echo) = offer(values).unwrap();
            (codec, echo.unwrap())
        };
        assert_eq!(offer(&[]).unwrap(), (Codec::Json, None));
        assert_eq!(picked(&[PROTOBUF]), (Codec::Protobuf, PROTOBUF.into()));
        assert_eq!(
            picked(&["chat, switchyard.v1.json , switchyard.v1.protobuf"]),
            (Codec::Json, JSON.into())
        );
        assert_eq!(
            picked(&["chat", "switchyard.v1.protobuf, switchyard.v1.json"]),
            (Codec::Protobuf, PROTOBUF.into())
        );
        assert!(offer(&["chat, superchat"]).is_err());
        assert!(offer(&["switchyard.v2.protobuf"]).is_err());
    }

    #[test]
    fn a_frame_of_the_other_kind_is_refused_unread() {
        let (e, ack) = Codec::Protobuf
            .read(Message::Text(r#"{"type":"ping","ack_id":"p"}"#.into()))
            .unwrap_err();
        assert_eq!(e.code(), switchyard_core::ErrorCode::InvalidMessage);
        assert!(ack.is_none());
        let (e, _) = Codec::Json
            .read(Message::Binary(bytes::Bytes::from_static(b"\x22\x00")))
            .unwrap_err();
        assert_eq!(e.code(), switchyard_core::ErrorCode::InvalidMessage);
    }
}
