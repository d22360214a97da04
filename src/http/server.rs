//! The accept loop: hyper driven directly rather than through `axum::serve`,
//! with SSE streams written straight to their sockets.
//!
//! Why: every open stream is a connection that lives for hours, so its
//! per-connection cost is the server's memory. hyper keeps two 8 KiB
//! buffers per connection for its whole life, and `axum::serve` would also
//! rebuild the route table per connection. So the first request head of a
//! connection is read here ([`opening`]): a plain `GET /realtime/sse` goes
//! through the same router (auth, limits, request id, CORS) and its body is
//! then written by [`super::stream_socket`], which holds nothing but the
//! socket and the stream; everything else is handed to hyper with the bytes
//! already read put back in front ([`Rewind`]).
//!
//! Invariants: after `shutdown` no connection is accepted, and this returns
//! once every connection has closed (streams end themselves on the same
//! signal; idle keep-alive connections are closed). The router sees the same
//! request either way; only who writes the response differs.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::http::{HeaderName, HeaderValue, Method, Request, Version};
use bytes::{Buf, Bytes, BytesMut};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto::Builder;
use hyper_util::server::graceful::{GracefulShutdown, Watcher};
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;

/// Largest request head read (hyper's smallest allowed read buffer too).
const READ_BUFFER_CAP: usize = 8192;
/// How long a new connection may take to send its first request head.
const HEAD_TIMEOUT: Duration = Duration::from_secs(30);
/// Request headers looked at when reading a head; more goes to hyper.
const MAX_HEADERS: usize = 64;
/// The path whose responses are written on the raw socket.
const SSE_PATH: &str = "/realtime/sse";

pub async fn serve(listener: TcpListener, app: Router, shutdown: CancellationToken) {
    let mut builder = Builder::new(TokioExecutor::new()).http1_only();
    builder
        .http1()
        .max_buf_size(READ_BUFFER_CAP)
        .keep_alive(true);
    let builder = Arc::new(builder);
    let graceful = GracefulShutdown::new();
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
        let _ = stream.set_nodelay(true);
        tokio::spawn(connection(
            stream,
            app.clone(),
            builder.clone(),
            graceful.watcher(),
            shutdown.clone(),
        ));
    }
    drop(listener);
    // Waits for every watcher, including those of streams on raw sockets.
    graceful.shutdown().await;
}

/// Serves one connection; `watcher` is held until it closes.
///
/// This future lives as long as the connection, so it only ever holds
/// pointers to the bigger phases (reading the head, hyper's connection):
/// an inline phase keeps its space for the task's whole life.
async fn connection(
    stream: TcpStream,
    app: Router,
    builder: Arc<Builder<TokioExecutor>>,
    watcher: Watcher,
    shutdown: CancellationToken,
) {
    let (stream, opening) = match Box::pin(read_opening(stream, shutdown)).await {
        Some(read) => read,
        None => return,
    };
    match opening {
        Opening::Gone => {}
        Opening::Stream(request) => {
            super::stream_socket::serve(stream, app, request).await;
            drop(watcher);
        }
        Opening::Other(read) => {
            hyper_connection(Rewind { read, stream }, app, &builder, watcher).await
        }
    }
}

/// The first request head, unless shutdown or the head timeout comes first.
async fn read_opening(
    mut stream: TcpStream,
    shutdown: CancellationToken,
) -> Option<(TcpStream, Opening)> {
    tokio::select! {
        _ = shutdown.cancelled() => None,
        read = tokio::time::timeout(HEAD_TIMEOUT, opening(&mut stream)) => match read {
            Ok(opening) => Some((stream, opening)),
            Err(_) => None,
        },
    }
}

/// hyper serving the connection, boxed as soon as it is built.
fn hyper_connection(
    io: Rewind,
    app: Router,
    builder: &Builder<TokioExecutor>,
    watcher: Watcher,
) -> Pin<Box<dyn Future<Output = ()> + Send>> {
    let service = TowerToHyperService::new(
        app.map_request(|req: hyper::Request<Incoming>| req.map(Body::new)),
    );
    let served = builder
        .serve_connection_with_upgrades(TokioIo::new(io), service)
        .into_owned();
    let served = watcher.watch(served);
    Box::pin(async move {
        if let Err(e) = served.await {
            tracing::debug!(error = %e, "connection ended with an error");
        }
    })
}

/// What a connection's first bytes turned out to be.
enum Opening {
    /// A `GET /realtime/sse` over HTTP/1.1 without a body or upgrade.
    Stream(Request<Body>),
    /// Anything else (including heads too large or malformed, which hyper
    /// answers): the bytes read so far, for hyper to read first.
    Other(Bytes),
    /// Closed or broken before sending anything.
    Gone,
}

async fn opening(stream: &mut TcpStream) -> Opening {
    let mut buf = BytesMut::with_capacity(1024);
    loop {
        match stream.read_buf(&mut buf).await {
            Ok(0) | Err(_) if buf.is_empty() => return Opening::Gone,
            Ok(0) | Err(_) => return Opening::Other(buf.freeze()),
            Ok(_) => {}
        }
        let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let mut head = httparse::Request::new(&mut headers);
        match head.parse(&buf) {
            Ok(httparse::Status::Complete(_)) => {
                return match stream_request(&head) {
                    Some(request) => Opening::Stream(request),
                    None => Opening::Other(buf.freeze()),
                };
            }
            Ok(httparse::Status::Partial) if buf.len() < READ_BUFFER_CAP => {
                buf.reserve(1024);
            }
            _ => return Opening::Other(buf.freeze()),
        }
    }
}

/// The request as the router will see it, when it is one whose response
/// this module writes itself.
fn stream_request(head: &httparse::Request<'_, '_>) -> Option<Request<Body>> {
    let path = head.path?;
    let is_sse = path
        .strip_prefix(SSE_PATH)
        .is_some_and(|rest| rest.is_empty() || rest.starts_with('?'));
    if head.method != Some("GET") || head.version != Some(1) || !is_sse {
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

/// A socket with bytes already read from it put back in front.
struct Rewind {
    read: Bytes,
    stream: TcpStream,
}

impl AsyncRead for Rewind {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if !self.read.is_empty() {
            let n = self.read.len().min(buf.remaining());
            buf.put_slice(&self.read[..n]);
            self.read.advance(n);
            if self.read.is_empty() {
                // Let the buffer go: a long-lived connection must not keep it.
                self.read = Bytes::new();
            }
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for Rewind {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}
