//! An SSE response written straight to its socket, without hyper.
//!
//! [`super::server`] hands over connections whose first request is a plain
//! `GET /realtime/sse`. The request still goes through the router, so
//! auth, limits, request ids and CORS are the same as everywhere; only the
//! writing differs: the response head is rendered here, the body's frames
//! go out as HTTP/1.1 chunks, each chunk in one vectored write, and while
//! the stream is idle the connection holds the socket and the body's state
//! and nothing else (no read or write buffer).
//!
//! Invariants: the body is polled only when the previous chunk is fully
//! written, so a client that stops reading leaves its reader behind (it
//! catches up from the log) instead of buffering here; a client that closes
//! its end drops the body at once (its reader and presence go with it);
//! every response says `connection: close` and the socket is closed after
//! it, so a request after a stream on the same connection is never mixed in.

use std::io::{self, IoSlice, Write};
use std::time::SystemTime;

use axum::Router;
use axum::body::Body;
use axum::http::response::Parts;
use axum::http::{Request, StatusCode, header};
use bytes::Bytes;
use http_body_util::BodyExt;
use tokio::io::{AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tower::ServiceExt;

/// Serves `request` on `socket` and closes it.
pub async fn serve(mut socket: TcpStream, app: Router, request: Request<Body>) {
    // Boxed: answering is large and over before the stream starts; inline,
    // its space would stay reserved in every stream's task.
    if let Some(body) = Box::pin(respond(&mut socket, app, request)).await {
        pump(socket, body).await;
    }
}

/// Routes the request and writes the response head; the body to stream
/// when it is one, `None` when the answer is complete (or the client left).
async fn respond(socket: &mut TcpStream, app: Router, request: Request<Body>) -> Option<Body> {
    let response = match app.oneshot(request).await {
        Ok(response) => response,
        Err(never) => match never {},
    };
    let (parts, body) = response.into_parts();
    let is_stream = parts.status == StatusCode::OK
        && parts
            .headers
            .get(header::CONTENT_TYPE)
            .is_some_and(|v| v.as_bytes().starts_with(b"text/event-stream"));
    if !is_stream {
        // An error answer: small and complete, sent with its length.
        let bytes = body.collect().await.ok()?.to_bytes();
        let head = render_head(&parts, Framing::Length(bytes.len()));
        let _ = write_all(socket, [&head[..], &bytes[..]]).await;
        let _ = socket.shutdown().await;
        return None;
    }
    let head = render_head(&parts, Framing::Chunked);
    write_all(socket, [&head[..]]).await.ok()?;
    Some(body)
}

/// Writes the body's frames as chunks until it ends or the client leaves.
async fn pump(mut socket: TcpStream, mut body: Body) {
    let (mut from_client, mut to_client) = socket.split();
    // A client sends nothing after its request; this only notices it leaving.
    let mut scratch = [0u8; 32];
    loop {
        tokio::select! {
            frame = body.frame() => match frame {
                Some(Ok(frame)) => {
                    let Ok(data) = frame.into_data() else { continue };
                    if !data.is_empty() && write_chunk(&mut to_client, &data).await.is_err() {
                        return;
                    }
                }
                // Ended without the last chunk: the client sees a cut stream.
                Some(Err(_)) => return,
                None => {
                    let _ = to_client.write_all(b"0\r\n\r\n").await;
                    let _ = to_client.shutdown().await;
                    return;
                }
            },
            read = from_client.read(&mut scratch) => match read {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            },
        }
    }
}

async fn write_chunk<W: AsyncWrite + Unpin>(socket: &mut W, data: &Bytes) -> io::Result<()> {
    let mut size = [0u8; 18];
    let n = {
        let mut cursor = io::Cursor::new(&mut size[..]);
        write!(cursor, "{:x}\r\n", data.len())?;
        cursor.position() as usize
    };
    write_all(socket, [&size[..n], data, b"\r\n"]).await
}

/// Writes every part, in one `writev` when the socket takes it all (no
/// allocation: this runs once per delivery).
async fn write_all<W: AsyncWrite + Unpin, const N: usize>(
    socket: &mut W,
    mut parts: [&[u8]; N],
) -> io::Result<()> {
    while parts.iter().any(|p| !p.is_empty()) {
        let slices = parts.map(IoSlice::new);
        let mut written = socket.write_vectored(&slices).await?;
        if written == 0 {
            return Err(io::ErrorKind::WriteZero.into());
        }
        for part in parts.iter_mut() {
            let done = written.min(part.len());
            *part = &part[done..];
            written -= done;
        }
    }
    Ok(())
}

enum Framing {
    Chunked,
    Length(usize),
}

/// The status line and headers, with this module's framing and `close`.
fn render_head(parts: &Parts, framing: Framing) -> Vec<u8> {
    let mut head = Vec::with_capacity(512);
    let status = parts.status;
    head.extend_from_slice(b"HTTP/1.1 ");
    head.extend_from_slice(status.as_str().as_bytes());
    head.push(b' ');
    head.extend_from_slice(status.canonical_reason().unwrap_or("").as_bytes());
    head.extend_from_slice(b"\r\n");
    for (name, value) in &parts.headers {
        let framing_header = name == header::CONTENT_LENGTH
            || name == header::TRANSFER_ENCODING
            || name == header::CONNECTION;
        if !framing_header {
            head.extend_from_slice(name.as_str().as_bytes());
            head.extend_from_slice(b": ");
            head.extend_from_slice(value.as_bytes());
            head.extend_from_slice(b"\r\n");
        }
    }
    head.extend_from_slice(b"date: ");
    head.extend_from_slice(httpdate::fmt_http_date(SystemTime::now()).as_bytes());
    head.extend_from_slice(b"\r\n");
    match framing {
        Framing::Chunked => head.extend_from_slice(b"transfer-encoding: chunked\r\n"),
        Framing::Length(n) => head.extend_from_slice(format!("content-length: {n}\r\n").as_bytes()),
    }
    head.extend_from_slice(b"connection: close\r\n\r\n");
    head
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn chunks_carry_their_size_in_hex() {
        let mut out: Vec<u8> = Vec::new();
        write_chunk(&mut out, &Bytes::from(vec![b'x'; 26]))
            .await
            .unwrap();
        assert_eq!(out, [b"1a\r\n".as_slice(), &[b'x'; 26], b"\r\n"].concat());
    }

    #[test]
    fn the_head_replaces_framing_headers() {
        let response = axum::http::Response::builder()
            .status(StatusCode::UNAUTHORIZED)
            .header(header::CONTENT_TYPE, "application/json")
            .header(header::CONTENT_LENGTH, "999")
            .header(header::CONNECTION, "keep-alive")
            .body(())
            .unwrap();
        let (parts, ()) = response.into_parts();
        let head = String::from_utf8(render_head(&parts, Framing::Length(12))).unwrap();
        assert!(head.starts_with("HTTP/1.1 401 Unauthorized\r\n"), "{head}");
        assert!(
            head.contains("content-type: application/json\r\n"),
            "{head}"
        );
        assert!(head.contains("content-length: 12\r\n"), "{head}");
        assert!(
            !head.contains("999") && !head.contains("keep-alive"),
            "{head}"
        );
        assert!(head.ends_with("connection: close\r\n\r\n"), "{head}");
    }
}
