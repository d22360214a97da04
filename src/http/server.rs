//! The accept loop: hyper driven directly rather than through `axum::serve`,
//! with SSE streams written straight to their sockets, every connection
//! counted, and every connection on a deadline.
//!
//! Why hyper directly: every open stream is a connection that lives for
//! hours, so its per-connection cost is the server's memory. hyper keeps two
//! 8 KiB buffers per connection for its whole life, and `axum::serve` would
//! also rebuild the route table per connection. So the first request head
//! of a connection is read here ([`opening`]): a plain `GET /realtime/sse`
//! goes through the same router (auth, limits, request id, CORS) and its
//! body is then written by [`super::stream_socket`], which holds nothing but
//! the socket and the stream; everything else is handed to hyper with the
//! bytes already read put back in front ([`Socket`]).
//!
//! Bounds ([`Deadlines`], [`Connections`]): a connection may wait `idle`
//! for the first byte of its next request, and then `header` for the rest
//! of the head (408 with the error body otherwise); a write the client does
//! not read within `write` drops the connection; past the connection cap,
//! idle kept-alive connections are closed to make room, and when none is
//! idle a new connection gets only a health check or a 503.
//!
//! Invariants: after `shutdown` no connection is accepted; streams end
//! themselves on the same signal and idle connections close; whatever
//! still holds on after [`SHUTDOWN_GRACE`] (a half-sent body, a client that
//! does not read) is dropped, so this returns within that time.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::http::{HeaderName, HeaderValue, Method, Request, Version};
use bytes::{Bytes, BytesMut};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto::Builder;
use hyper_util::service::TowerToHyperService;
use switchyard_core::ErrorCode;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower::ServiceExt;

use super::connections::{ConnState, Connections, Room, Ticket, Verdict};
use super::socket::{Socket, error_answer};
use super::state::Deadlines;
use super::tracked::Tracked;

/// Largest request head read (hyper's smallest allowed read buffer too).
const READ_BUFFER_CAP: usize = 8192;
/// Request headers looked at when reading a head; more goes to hyper.
const MAX_HEADERS: usize = 64;
/// The path whose responses are written on the raw socket.
const SSE_PATH: &str = "/realtime/sse";
/// How long connections get to finish after shutdown before they are dropped.
pub const SHUTDOWN_GRACE: Duration = Duration::from_millis(1500);

/// What the accept loop needs besides the routes.
#[derive(Clone)]
pub struct FrontDoor {
    pub deadlines: Deadlines,
    pub connections: Arc<Connections>,
}

pub async fn serve(
    listener: TcpListener,
    app: Router,
    front: FrontDoor,
    shutdown: CancellationToken,
) {
    let mut builder = Builder::new(TokioExecutor::new()).http1_only();
    builder
        .http1()
        .max_buf_size(READ_BUFFER_CAP)
        .keep_alive(true);
    let builder = Arc::new(builder);
    let tracker = TaskTracker::new();
    let force = CancellationToken::new();
    loop {
        let stream = tokio::select! {
            _ = shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    // Out of file descriptors, say: back off instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let (ticket, room) = front.connections.admit();
        if room == Room::None {
            // No descriptor to spare: not even a word.
            continue;
        }
        let _ = stream.set_nodelay(true);
        tracker.spawn(connection(Connection {
            stream,
            ticket,
            room,
            app: app.clone(),
            builder: builder.clone(),
            front: front.clone(),
            shutdown: shutdown.clone(),
            force: force.clone(),
            tracker: tracker.clone(),
        }));
    }
    drop(listener);
    tracker.close();
    if tokio::time::timeout(SHUTDOWN_GRACE, tracker.wait())
        .await
        .is_err()
    {
        tracing::info!(
            connections = tracker.len(),
            "dropping connections still open after the shutdown grace"
        );
        force.cancel();
        tracker.wait().await;
    }
}

/// One accepted connection and what serving it needs.
struct Connection {
    stream: TcpStream,
    ticket: Ticket,
    room: Room,
    app: Router,
    builder: Arc<Builder<TokioExecutor>>,
    front: FrontDoor,
    shutdown: CancellationToken,
    /// Cancelled when the shutdown grace is over: stop at once.
    force: CancellationToken,
    /// Where the connection's serving task goes once its head is read.
    tracker: TaskTracker,
}

/// Opens one connection: reads its first head, then hands the connection
/// to a task of its own that serves it (an SSE stream written straight to
/// its socket, or hyper), and ends. A stream's task so holds only what
/// serving needs, not this opening's state: an idle stream is mostly that
/// task. The tracker counts the serving task before this one ends, so
/// shutdown waits for both.
async fn connection(c: Connection) {
    let Connection {
        mut stream,
        ticket,
        room,
        app,
        builder,
        front,
        shutdown,
        force,
        tracker,
    } = c;
    let opening = tokio::select! {
        _ = shutdown.cancelled() => return,
        opening = Box::pin(opening(&mut stream, &front.deadlines)) => opening,
    };
    let (request, read) = match opening {
        Opening::Gone => return,
        Opening::TimedOut => {
            let answer = error_answer(
                ErrorCode::RequestTimeout,
                "The request head took too long to arrive",
            );
            let _ = tokio::time::timeout(SHUTDOWN_GRACE, stream.write_all(&answer)).await;
            return;
        }
        Opening::Head { request, read } => (request, read),
    };
    if room == Room::Full {
        return Box::pin(answer_at_capacity(stream, app, request)).await;
    }
    match request {
        Some(request) if is_sse(request.uri().path()) => {
            // The head's bytes were parsed into `request`: holding them for
            // the stream's life would cost every idle stream their buffer.
            drop(read);
            tracker.spawn(super::stream_socket::serve(
                stream,
                app,
                *request,
                front.deadlines.write,
                shutdown,
                ticket,
            ));
        }
        _ => {
            let state = front.connections.track(&ticket);
            let socket = Socket::new(read, stream, state.clone(), ticket);
            tracker.spawn(hyper_connection(
                socket,
                state,
                app,
                &builder,
                front.deadlines,
                shutdown,
                force,
            ));
        }
    }
}

/// At the connection cap with nothing idle to close: health checks are
/// answered (the reserve above the cap is for them), anything else gets a
/// 503; either way the connection then closes.
async fn answer_at_capacity(
    mut stream: TcpStream,
    app: Router,
    request: Option<Box<Request<Body>>>,
) {
    match request {
        Some(request) if matches!(request.uri().path(), "/healthz" | "/readyz") => {
            super::stream_socket::answer_once(stream, app, *request).await
        }
        _ => {
            let answer = error_answer(
                ErrorCode::Unavailable,
                "The server is at its connection limit; retry shortly",
            );
            let _ = tokio::time::timeout(SHUTDOWN_GRACE, stream.write_all(&answer)).await;
        }
    }
}

/// hyper serving the connection, watched by its deadlines.
fn hyper_connection(
    socket: Socket,
    state: Arc<ConnState>,
    app: Router,
    builder: &Builder<TokioExecutor>,
    deadlines: Deadlines,
    shutdown: CancellationToken,
    force: CancellationToken,
) -> Pin<Box<dyn Future<Output = ()> + Send>> {
    let started = state.clone();
    let service = TowerToHyperService::new(
        app.map_request(move |req: hyper::Request<Incoming>| {
            started.request_started();
            req.map(Body::new)
        })
        .map_response({
            let state = state.clone();
            move |res: axum::response::Response| {
                let state = state.clone();
                res.map(|body| Body::new(Tracked::new(body, move || state.request_finished())))
            }
        }),
    );
    let served = builder
        .serve_connection_with_upgrades(TokioIo::new(socket), service)
        .into_owned();
    Box::pin(async move {
        let mut served = std::pin::pin!(served);
        // One timer for the connection's life, moved only when the next
        // look changes: a request costs the watchdog nothing.
        let mut look = std::pin::pin!(tokio::time::sleep(Duration::ZERO));
        let mut armed = None;
        let mut closing = false;
        loop {
            let verdict = state.verdict(&deadlines);
            match verdict {
                Verdict::WriteStalled => {
                    tracing::debug!("dropping a connection whose client stopped reading");
                    return;
                }
                Verdict::HeadTimeout => {
                    // Dropped: its socket answers 408 as it closes.
                    state.mark_head_timed_out();
                    return;
                }
                Verdict::Close if !closing => {
                    closing = true;
                    served.as_mut().graceful_shutdown();
                }
                _ => {}
            }
            let next = state.look_again(verdict, &deadlines);
            if armed != Some(next) {
                look.as_mut().reset(Instant::from_std(next));
                armed = Some(next);
            }
            tokio::select! {
                done = served.as_mut() => {
                    if let Err(e) = done {
                        tracing::debug!(error = %e, "connection ended with an error");
                    }
                    return;
                }
                _ = look.as_mut() => {}
                _ = state.changed.notified() => {}
                _ = shutdown.cancelled(), if !closing => {
                    closing = true;
                    served.as_mut().graceful_shutdown();
                }
                _ = force.cancelled() => return,
            }
        }
    })
}

fn is_sse(path: &str) -> bool {
    path.strip_prefix(SSE_PATH)
        .is_some_and(|rest| rest.is_empty() || rest.starts_with('?'))
}

/// What a connection's first bytes turned out to be.
enum Opening {
    /// A request head (complete, or not one this module reads: too large,
    /// malformed, which hyper answers), with the bytes read so far, and the
    /// request itself when it is a plain `GET` over HTTP/1.1 without a body
    /// or upgrade.
    Head {
        request: Option<Box<Request<Body>>>,
        read: Bytes,
    },
    /// Closed or broken before sending anything.
    Gone,
    /// Bytes arrived but no complete head in time.
    TimedOut,
}

/// Reads the first head: the first byte within the idle deadline, the rest
/// within the header deadline.
async fn opening(stream: &mut TcpStream, deadlines: &Deadlines) -> Opening {
    let mut buf = BytesMut::with_capacity(1024);
    let mut deadline = Instant::now() + deadlines.idle;
    loop {
        let read = match tokio::time::timeout_at(deadline, stream.read_buf(&mut buf)).await {
            Ok(read) => read,
            Err(_) if buf.is_empty() => return Opening::Gone,
            Err(_) => return Opening::TimedOut,
        };
        match read {
            Ok(0) | Err(_) if buf.is_empty() => return Opening::Gone,
            Ok(0) | Err(_) => {
                return Opening::Head {
                    request: None,
                    read: buf.freeze(),
                };
            }
            Ok(n) if n == buf.len() => deadline = Instant::now() + deadlines.header,
            Ok(_) => {}
        }
        match first_head(&buf) {
            Head::Complete(request) => {
                return Opening::Head {
                    request,
                    read: buf.freeze(),
                };
            }
            Head::Incomplete => buf.reserve(1024),
            Head::Other => {
                return Opening::Head {
                    request: None,
                    read: buf.freeze(),
                };
            }
        }
    }
}

/// What the bytes a connection sent so far make of its first request head.
pub enum Head {
    /// Not a whole head yet, and room to read more.
    Incomplete,
    /// A whole head, with the request when it is a plain `GET` (HTTP/1.1,
    /// no body, no upgrade): one this module may answer itself.
    Complete(Option<Box<Request<Body>>>),
    /// Malformed or oversized: hyper's to answer.
    Other,
}

/// [`opening`]'s verdict on `buf`, pure so that it can be fuzzed
/// (`fuzz/fuzz_targets/request_head.rs`).
pub fn first_head(buf: &[u8]) -> Head {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut head = httparse::Request::new(&mut headers);
    match head.parse(buf) {
        Ok(httparse::Status::Complete(_)) => Head::Complete(simple_get(&head).map(Box::new)),
        Ok(httparse::Status::Partial) if buf.len() < READ_BUFFER_CAP => Head::Incomplete,
        _ => Head::Other,
    }
}

/// The request as the router will see it, when it is a plain `GET`
/// (HTTP/1.1, no body, no upgrade): one this module may answer itself.
fn simple_get(head: &httparse::Request<'_, '_>) -> Option<Request<Body>> {
    let path = head.path?;
    if head.method != Some("GET") || head.version != Some(1) {
        return None;
    }
    let mut request = Request::builder()
        .method(Method::GET)
        .uri(path)
        .version(Version::HTTP_11);
    for header in head.headers.iter() {
        let name = HeaderName::from_bytes(header.name.as_bytes()).ok()?;
        let has_body = name == axum::http::header::TRANSFER_ENCODING
            || (name == axum::http::header::CONTENT_LENGTH && header.value != b"0");
        if has_body || name == axum::http::header::UPGRADE {
            return None;
        }
        request = request.header(name, HeaderValue::from_bytes(header.value).ok()?);
    }
    request.body(Body::empty()).ok()
}
