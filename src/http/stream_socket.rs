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

use std::future::Future;
use std::io::{self, IoSlice, Write};
use std::pin::Pin;
use std::task::{Poll, ready};
use std::time::{Duration, SystemTime};

use axum::Router;
use axum::body::Body;
use axum::http::response::Parts;
use axum::http::{Request, StatusCode, header};
use bytes::Bytes;
use futures_util::FutureExt;
use futures_util::future::OptionFuture;
use http_body::Body as _;
use http_body_util::BodyExt;
use tokio::io::{AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;

use super::connections::Ticket;

/// After shutdown, how long a write may still wait for the client.
const SHUTDOWN_WRITE_GRACE: Duration = Duration::from_secs(1);

/// Serves `request` on `socket` and closes it. `ticket` counts the
/// connection until then.
///
/// This future is most of every idle stream's task, so it is built to keep
/// nothing but [`pump`] once the stream starts: answering (large, and over
/// before the stream starts) is boxed and owns all it needs, and the two
/// are chained with combinators: an `async` block would keep its captures,
/// and any local it moves into `pump`, reserved for its whole life.
pub fn serve(
    socket: TcpStream,
    app: Router,
    request: Request<Body>,
    write_deadline: Duration,
    shutdown: CancellationToken,
    ticket: Ticket,
) -> impl Future<Output = ()> + Send + 'static {
    let serving = Box::new(Serving {
        socket,
        app,
        request,
        write_deadline,
        shutdown,
    });
    Box::pin(start(serving))
        .map(|started| {
            OptionFuture::from(
                started.map(|s| pump(s.socket, s.body, s.write_deadline, s.shutdown)),
            )
        })
        .flatten()
        .map(move |_| drop(ticket))
}

/// What [`serve`] needs until the response head is written.
struct Serving {
    socket: TcpStream,
    app: Router,
    request: Request<Body>,
    write_deadline: Duration,
    shutdown: CancellationToken,
}

/// A stream whose head is written: what [`pump`] takes.
struct Started {
    socket: TcpStream,
    body: Body,
    write_deadline: Duration,
    shutdown: CancellationToken,
}

/// Answers the request; the stream to pump when the answer is one.
async fn start(serving: Box<Serving>) -> Option<Started> {
    let Serving {
        mut socket,
        app,
        request,
        write_deadline,
        shutdown,
    } = *serving;
    let body = respond(&mut socket, app, request).await?;
    Some(Started {
        socket,
        body,
        write_deadline,
        shutdown,
    })
}

/// Answers `request` and closes, whatever the answer (a stream is cut
/// after its head): for the few requests served at the connection cap.
pub async fn answer_once(mut socket: TcpStream, app: Router, request: Request<Body>) {
    let _ = tokio::time::timeout(
        SHUTDOWN_WRITE_GRACE,
        Box::pin(respond(&mut socket, app, request)),
    )
    .await;
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

/// Writes the body's frames as chunks until it ends or the client leaves,
/// or a write waits longer than `write_deadline` for the client to read
/// (shorter once the server shuts down): then the connection is dropped and
/// the client resumes from its cursor.
///
/// This future is most of an idle stream's task, so it waits with
/// [`next_frame`] (a few pointers) rather than a `select!` whose branches
/// would all stay reserved beside the write, and writes each chunk at once
/// when the socket takes it whole (almost always): only a write that has to
/// wait for the client is a future, boxed, with its deadline.
#[allow(clippy::manual_async_fn)] // on purpose: an `async fn` keeps its arguments twice
fn pump(
    mut socket: TcpStream,
    mut body: Body,
    write_deadline: Duration,
    shutdown: CancellationToken,
) -> impl Future<Output = ()> + Send + 'static {
    async move {
        loop {
            // Only the data outlives the match: `Next` is not kept across
            // the write's await.
            let data = match next_frame(&mut socket, &mut body).await {
                Next::Data(data) => data,
                // Ended without the last chunk: the client sees a cut stream.
                Next::Failed | Next::Gone => return,
                Next::End => {
                    // Boxed with its timer: once per stream, and inline its
                    // space would stay reserved in every idle one.
                    let end = Box::pin(async move {
                        write_all(&mut socket, [b"0\r\n\r\n"]).await?;
                        socket.shutdown().await
                    });
                    let _ = Box::pin(tokio::time::timeout(SHUTDOWN_WRITE_GRACE, end)).await;
                    return;
                }
            };
            if data.is_empty() {
                continue;
            }
            let written = match try_write_chunk(&socket, &data) {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => 0,
                Err(_) => return,
            };
            if written < chunk_len(&data) {
                let rest = write_chunk_from(&mut socket, &data, written);
                let rest = Box::pin(write_within(rest, write_deadline, &shutdown));
                if rest.await.is_err() {
                    return;
                }
            }
        }
    }
}

enum Next {
    Data(Bytes),
    End,
    Failed,
    /// The client closed its end (or the connection broke).
    Gone,
}

/// The body's next data frame, or the client leaving, whichever is first.
/// A client sends nothing after its request: a read only notices it going.
fn next_frame<'a>(
    socket: &'a mut TcpStream,
    body: &'a mut Body,
) -> impl Future<Output = Next> + 'a {
    std::future::poll_fn(move |cx| {
        loop {
            match Pin::new(&mut *body).poll_frame(cx) {
                Poll::Ready(Some(Ok(frame))) => match frame.into_data() {
                    Ok(data) => return Poll::Ready(Next::Data(data)),
                    Err(_) => continue,
                },
                Poll::Ready(Some(Err(_))) => return Poll::Ready(Next::Failed),
                Poll::Ready(None) => return Poll::Ready(Next::End),
                Poll::Pending => break,
            }
        }
        loop {
            match socket.poll_read_ready(cx) {
                Poll::Ready(Ok(())) => {}
                Poll::Ready(Err(_)) => return Poll::Ready(Next::Gone),
                Poll::Pending => return Poll::Pending,
            }
            let mut scratch = [0u8; 512];
            match socket.try_read(&mut scratch) {
                Ok(0) => return Poll::Ready(Next::Gone),
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(_) => return Poll::Ready(Next::Gone),
            }
        }
    })
}

/// Runs a write; a timer starts only if it cannot complete at once (the
/// client's window is full), so a reader that keeps up costs no timer.
async fn write_within(
    write: impl Future<Output = io::Result<()>>,
    deadline: Duration,
    shutdown: &CancellationToken,
) -> io::Result<()> {
    let mut write = std::pin::pin!(write);
    if let Poll::Ready(done) = futures_util::poll!(write.as_mut()) {
        return done;
    }
    // Boxed: the timers are for a client that is not reading; inline, their
    // space would stay reserved in every stream's task.
    Box::pin(async move {
        let shutdown_grace = async {
            shutdown.cancelled().await;
            tokio::time::sleep(SHUTDOWN_WRITE_GRACE).await;
        };
        tokio::select! {
            done = write => done,
            _ = tokio::time::sleep(deadline) => Err(io::ErrorKind::TimedOut.into()),
            _ = shutdown_grace => Err(io::ErrorKind::TimedOut.into()),
        }
    })
    .await
}

/// A chunk's size line: the length in hex and CRLF.
fn size_line(data: &[u8]) -> ([u8; 18], usize) {
    let mut size = [0u8; 18];
    let mut cursor = io::Cursor::new(&mut size[..]);
    write!(cursor, "{:x}\r\n", data.len()).expect("a usize in hex fits in 18 bytes");
    let n = cursor.position() as usize;
    (size, n)
}

/// Bytes of `data` framed as a chunk.
fn chunk_len(data: &[u8]) -> usize {
    size_line(data).1 + data.len() + 2
}

/// Writes as much of `data`'s chunk as the socket takes now, in one
/// `writev`; how many bytes went.
fn try_write_chunk(socket: &TcpStream, data: &[u8]) -> io::Result<usize> {
    let (size, n) = size_line(data);
    let parts = [
        IoSlice::new(&size[..n]),
        IoSlice::new(data),
        IoSlice::new(b"\r\n"),
    ];
    socket.try_write_vectored(&parts)
}

/// Writes `data`'s chunk but its first `skip` bytes (already written).
async fn write_chunk_from<W: AsyncWrite + Unpin>(
    socket: &mut W,
    data: &[u8],
    skip: usize,
) -> io::Result<()> {
    let (size, n) = size_line(data);
    let mut parts: [&[u8]; 3] = [&size[..n], data, b"\r\n"];
    let mut skip = skip;
    for part in parts.iter_mut() {
        let done = skip.min(part.len());
        *part = &part[done..];
        skip -= done;
    }
    write_all(socket, parts).await
}

/// Writes every part, in one `writev` when the socket takes it all (no
/// allocation: this runs once per delivery).
fn write_all<'a, W: AsyncWrite + Unpin, const N: usize>(
    socket: &'a mut W,
    mut parts: [&'a [u8]; N],
) -> impl Future<Output = io::Result<()>> + 'a {
    std::future::poll_fn(move |cx| {
        while parts.iter().any(|p| !p.is_empty()) {
            let slices = parts.map(IoSlice::new);
            let mut written = ready!(Pin::new(&mut *socket).poll_write_vectored(cx, &slices))?;
            if written == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            for part in parts.iter_mut() {
                let done = written.min(part.len());
                *part = &part[done..];
                written -= done;
            }
        }
        Poll::Ready(Ok(()))
    })
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

    /// The size of the future `f` would return, without calling it.
    fn future_size<Fut>(_: impl FnOnce() -> Fut) -> usize {
        std::mem::size_of::<Fut>()
    }

    /// `serve` (with `pump`) is most of every idle stream's task: a
    /// `select!` over the body and the socket beside the write made `pump`
    /// 976 bytes, its write future inline 488, its closing write inline
    /// 240, and `serve` as an `async fn` (its arguments kept twice) 664,
    /// as an `async` block with its arguments as captures 352. Under about
    /// 250, the task's cell (128-byte aligned, with tokio's header and
    /// trailer) takes 384 bytes instead of 512. (Release builds: 160 and
    /// 184; debug builds a few bytes more.)
    #[test]
    #[allow(unreachable_code)]
    fn an_idle_streams_pump_stays_small() {
        let pump = future_size(|| pump(todo!(), todo!(), todo!(), todo!()));
        assert!(pump <= 176, "pump's future is {pump} bytes");
        let serve = future_size(|| serve(todo!(), todo!(), todo!(), todo!(), todo!(), todo!()));
        assert!(
            serve <= 200,
            "serve's future is {serve} bytes (pump {pump})"
        );
    }

    #[tokio::test]
    async fn chunks_carry_their_size_in_hex() {
        let mut out: Vec<u8> = Vec::new();
        let data = vec![b'x'; 26];
        write_chunk_from(&mut out, &data, 0).await.unwrap();
        let chunk = [b"1a\r\n".as_slice(), &[b'x'; 26], b"\r\n"].concat();
        assert_eq!(out, chunk);
        assert_eq!(chunk_len(&data), chunk.len());
        // What a partial write left, from any point on.
        for skip in [0, 1, 3, 4, 20, 29, 30, 32] {
            let mut rest: Vec<u8> = Vec::new();
            write_chunk_from(&mut rest, &data, skip).await.unwrap();
            assert_eq!(rest, chunk[skip..], "skipping {skip}");
        }
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
