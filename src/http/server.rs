//! The accept loop: hyper driven directly rather than through `axum::serve`.
//!
//! Why: every open stream is a connection that lives for hours, so its
//! per-connection cost is the server's memory. `axum::serve` rebuilds the
//! router's route table for each connection (about 9 KB kept per stream),
//! and hyper's read buffer may grow past 8 KB on a connection that only ever
//! reads one request head. Here the router is shared (an `Arc` clone) and
//! the buffer capped. Invariant: after `shutdown` no connection is accepted,
//! and this returns once every connection has closed (streams end
//! themselves on the same signal; idle keep-alive connections are closed).

use std::time::Duration;

use axum::Router;
use axum::body::Body;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto::Builder;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;

/// hyper's smallest allowed read buffer: request heads are small.
const READ_BUFFER_CAP: usize = 8192;

pub async fn serve(listener: TcpListener, app: Router, shutdown: CancellationToken) {
    let mut builder = Builder::new(TokioExecutor::new()).http1_only();
    builder
        .http1()
        .max_buf_size(READ_BUFFER_CAP)
        .keep_alive(true);
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
        let service = TowerToHyperService::new(
            app.clone()
                .map_request(|req: hyper::Request<Incoming>| req.map(Body::new)),
        );
        let connection = builder
            .serve_connection_with_upgrades(TokioIo::new(stream), service)
            .into_owned();
        let connection = graceful.watch(connection);
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!(error = %e, "connection ended with an error");
            }
        });
    }
    drop(listener);
    graceful.shutdown().await;
}
