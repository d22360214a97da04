//! A response body that reports when it has been sent to its end (or
//! abandoned), so a connection knows when it is idle again.

use std::pin::Pin;
use std::task::{Context, Poll};

use axum::body::{Body, Bytes};
use http_body::{Body as HttpBody, Frame, SizeHint};

pub struct Tracked<F: FnOnce()> {
    inner: Body,
    /// Called once: at the end of the body, or when it is dropped unfinished.
    on_end: Option<F>,
}

impl<F: FnOnce()> Tracked<F> {
    pub fn new(inner: Body, on_end: F) -> Self {
        Self {
            inner,
            on_end: Some(on_end),
        }
    }

    fn end(&mut self) {
        if let Some(on_end) = self.on_end.take() {
            on_end();
        }
    }
}

impl<F: FnOnce() + Unpin> HttpBody for Tracked<F> {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        if matches!(polled, Poll::Ready(None) | Poll::Ready(Some(Err(_)))) {
            self.end();
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl<F: FnOnce()> Drop for Tracked<F> {
    fn drop(&mut self) {
        self.end();
    }
}
