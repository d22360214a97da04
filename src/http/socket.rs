//! The socket hyper serves: the bytes the accept loop already read put back
//! in front, what the connection does reported to its [`ConnState`], and
//! the few answers hyper writes by itself given the protocol's error body.
//!
//! hyper answers a head it cannot parse (too large, malformed, a bad
//! `Content-Length`) with a bare status line and no body. Those answers are
//! recognised here (status 400, 414 or 431 with no `content-type`: every
//! answer of ours has one) and replaced by the same status with the §11
//! JSON body; hyper closes the connection after them either way.
//!
//! Closing is lingering: when hyper shuts the socket down (after an answer
//! sent before the request body was read, a 413 say), the write side is
//! shut and whatever the client still sends is read and discarded, for at
//! most [`LINGER_TIME`] and [`LINGER_BYTES`]. Closing a socket with unread
//! bytes makes the kernel send a reset, and a client still writing its body
//! would lose the answer to it. A socket dropped without a shutdown (an
//! upgraded WebSocket closing) lingers the same way, from a task of its own,
//! unless the client has closed its end.
//!
//! Invariants: a connection's [`Ticket`] lives exactly as long as this
//! socket (an upgraded WebSocket carries it along); a connection dropped
//! for a slow head answers 408 with the error body as it closes.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use bytes::{Buf, Bytes};
use switchyard_core::ErrorCode;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

use super::connections::{ConnState, Ticket};
use super::error::status;

/// Longest a closing connection reads and discards what its client sends.
pub const LINGER_TIME: std::time::Duration = std::time::Duration::from_secs(2);
/// Most bytes a closing connection reads and discards.
pub const LINGER_BYTES: usize = 16 * 1024 * 1024;

pub struct Socket {
    /// Bytes read before hyper took over, to be read again first.
    read: Bytes,
    stream: TcpStream,
    state: Arc<ConnState>,
    /// An answer of ours being written in place of one of hyper's, and how
    /// much of it is written.
    replacing: Option<(Bytes, usize)>,
    /// Set once the write side is shut: until when, and how many more
    /// bytes, the client's leftovers are discarded.
    linger: Option<(Pin<Box<tokio::time::Sleep>>, usize)>,
    /// Held to the end, or handed to a lingering close (see `Drop`).
    ticket: Option<Ticket>,
}

impl Socket {
    pub fn new(read: Bytes, stream: TcpStream, state: Arc<ConnState>, ticket: Ticket) -> Self {
        Self {
            read,
            stream,
            state,
            replacing: None,
            linger: None,
            ticket: Some(ticket),
        }
    }

    /// Writes what remains of a replacement answer.
    fn poll_replacement(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while let Some((answer, written)) = &mut self.replacing {
            if *written == answer.len() {
                self.replacing = None;
                break;
            }
            let n = ready!(Pin::new(&mut self.stream).poll_write(cx, &answer[*written..]))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            *written += n;
        }
        Poll::Ready(Ok(()))
    }
}

impl Socket {
    /// Reads and discards until the client closes, errs, or the linger's
    /// time or bytes run out.
    fn poll_linger(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let Some((until, left)) = &mut self.linger else {
            return Poll::Ready(Ok(()));
        };
        let mut scratch = [0u8; 4096];
        loop {
            if until.as_mut().poll(cx).is_ready() || *left == 0 {
                return Poll::Ready(Ok(()));
            }
            let mut buf = ReadBuf::new(&mut scratch);
            match ready!(Pin::new(&mut self.stream).poll_read(cx, &mut buf)) {
                Ok(()) if !buf.filled().is_empty() => {
                    *left = left.saturating_sub(buf.filled().len());
                }
                // The client closed or the connection broke: done.
                _ => return Poll::Ready(Ok(())),
            }
        }
    }
}

/// The status of one of hyper's own error answers, if `head` starts one.
fn hyper_error(head: &[u8]) -> Option<u16> {
    let status: u16 = std::str::from_utf8(head.strip_prefix(b"HTTP/1.1 ")?.get(..3)?)
        .ok()?
        .parse()
        .ok()?;
    if !matches!(status, 400 | 414 | 431) {
        return None;
    }
    let end = head.windows(4).position(|w| w == b"\r\n\r\n")?;
    let ours = head[..end]
        .split(|&b| b == b'\n')
        .any(|line| line.to_ascii_lowercase().starts_with(b"content-type:"));
    (!ours).then_some(status)
}

/// A complete answer with the protocol's error body, closing the connection.
pub fn error_answer(code: ErrorCode, message: &str) -> Bytes {
    let error = switchyard_core::Error::new(code, message);
    switchyard_core::metrics::error_answered(code);
    let body = error.body(&uuid::Uuid::now_v7().to_string()).to_string();
    let status = status(code);
    Bytes::from(format!(
        "HTTP/1.1 {} {}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\
         connection: close\r\ndate: {}\r\n\r\n{body}",
        status.as_str(),
        status.canonical_reason().unwrap_or(""),
        body.len(),
        httpdate::fmt_http_date(std::time::SystemTime::now()),
    ))
}

fn replacement(status: u16) -> Bytes {
    match status {
        431 => error_answer(
            ErrorCode::HeadersTooLarge,
            "The request head is too large: at most 8 KiB and 100 headers",
        ),
        414 => error_answer(ErrorCode::InvalidMessage, "The request URI is too long"),
        _ => error_answer(
            ErrorCode::InvalidMessage,
            "The request head is malformed (method, URI, version, a header or its length)",
        ),
    }
}

impl AsyncRead for Socket {
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
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.stream).poll_read(cx, buf);
        if matches!(polled, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.state.read();
        }
        polled
    }
}

impl AsyncWrite for Socket {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        ready!(self.poll_replacement(cx))?;
        if let Some(status) = hyper_error(buf) {
            self.replacing = Some((replacement(status), 0));
            ready!(self.poll_replacement(cx))?;
            return Poll::Ready(Ok(buf.len()));
        }
        let polled = Pin::new(&mut self.stream).poll_write(cx, buf);
        self.state.write_pending(polled.is_pending());
        polled
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        ready!(self.poll_replacement(cx))?;
        if let Some(first) = bufs.first()
            && let Some(status) = hyper_error(first)
        {
            self.replacing = Some((replacement(status), 0));
            ready!(self.poll_replacement(cx))?;
            return Poll::Ready(Ok(bufs.iter().map(|b| b.len()).sum()));
        }
        let polled = Pin::new(&mut self.stream).poll_write_vectored(cx, bufs);
        self.state.write_pending(polled.is_pending());
        polled
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        ready!(self.poll_replacement(cx))?;
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        ready!(self.poll_replacement(cx))?;
        if self.linger.is_none() {
            ready!(Pin::new(&mut self.stream).poll_shutdown(cx))?;
            let until = Box::pin(tokio::time::sleep(LINGER_TIME));
            self.linger = Some((until, LINGER_BYTES));
        }
        self.poll_linger(cx)
    }
}

impl Drop for Socket {
    fn drop(&mut self) {
        if self.state.take_head_timed_out() {
            // A few hundred bytes into an idle socket's send buffer: written
            // at once, or not at all (the client may be gone).
            let answer = error_answer(
                ErrorCode::RequestTimeout,
                "The request head took too long to arrive",
            );
            let _ = self.stream.try_write(&answer);
        }
        // What is left of a linger begun and not seen through (its closer
        // gave up on it), or a whole one.
        let (until, left) = match &self.linger {
            None => (tokio::time::Instant::now() + LINGER_TIME, LINGER_BYTES),
            Some((until, left)) => (until.deadline(), *left),
        };
        if left > 0 && until > tokio::time::Instant::now() {
            self.linger_detached(until, left);
        }
    }
}

impl Socket {
    /// Closing without a shutdown seen through (an upgraded WebSocket that
    /// refused a frame too big, say, is dropped) while the client still
    /// sends would reset the connection and lose what was written to it.
    /// So a task takes a duplicate of the socket and the connection's
    /// ticket, shuts the write side, and discards what arrives until the
    /// client closes, `until`, or `left` bytes. Nothing waiting unread is
    /// no sign the client is done (the rest of its write may be on the
    /// way); only a client that closed its end is closed at once.
    fn linger_detached(&mut self, until: tokio::time::Instant, mut left: usize) {
        // A duplicate of the descriptor, so that a peek (which tokio's
        // cached readiness cannot answer) needs neither ownership nor
        // `unsafe`; closed at once when nothing waits.
        let Ok(descriptor) = std::os::fd::AsFd::as_fd(&self.stream).try_clone_to_owned() else {
            return;
        };
        let duplicate = std::net::TcpStream::from(descriptor);
        match duplicate.peek(&mut [0u8; 1]) {
            Ok(0) => return,
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(_) => return,
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let _entered = runtime.enter();
        let Ok(mut stream) = TcpStream::from_std(duplicate) else {
            return;
        };
        let ticket = self.ticket.take();
        runtime.spawn(async move {
            let _ticket = ticket;
            let _ = tokio::time::timeout_at(until, async {
                tokio::io::AsyncWriteExt::shutdown(&mut stream).await?;
                let mut scratch = [0u8; 4096];
                while left > 0 {
                    match tokio::io::AsyncReadExt::read(&mut stream, &mut scratch).await? {
                        0 => break,
                        n => left = left.saturating_sub(n),
                    }
                }
                io::Result::Ok(())
            })
            .await;
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hyper_answers_are_told_from_ours() {
        let bare =
            b"HTTP/1.1 431 Request Header Fields Too Large\r\ncontent-length: 0\r\ndate: x\r\n\r\n";
        assert_eq!(hyper_error(bare), Some(431));
        let bad = b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\n\r\n";
        assert_eq!(hyper_error(bad), Some(400));
        let ours = b"HTTP/1.1 400 Bad Request\r\ncontent-type: application/json\r\ncontent-length: 9\r\n\r\n{\"a\":1}";
        assert_eq!(hyper_error(ours), None);
        let ok = b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n";
        assert_eq!(hyper_error(ok), None);
    }

    #[test]
    fn replacements_carry_the_error_body() {
        let answer = String::from_utf8(replacement(431).to_vec()).unwrap();
        assert!(answer.starts_with("HTTP/1.1 431 "), "{answer}");
        assert!(
            answer.contains("\"code\":\"headers_too_large\""),
            "{answer}"
        );
        assert!(answer.contains("connection: close\r\n"), "{answer}");
    }
}
