//! Raw HTTP/1.1 over tokio TCP: connecting from a chosen source address, a
//! response-head parser, a chunked-transfer decoder, and a keep-alive client
//! for request/response traffic (publish, poll). No per-request allocation
//! beyond what the caller reuses.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::os::fd::AsRawFd;

use anyhow::{Context, bail};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

use crate::target::Endpoint;

/// Raises the soft open-files limit to the hard one.
pub fn raise_nofile_limit() {
    // SAFETY: plain syscalls on a struct we own.
    unsafe {
        let mut lim: libc::rlimit = std::mem::zeroed();
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 && lim.rlim_cur < lim.rlim_max {
            lim.rlim_cur = lim.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
        }
    }
}

/// The open-files limit in force.
pub fn nofile_limit() -> u64 {
    // SAFETY: as above.
    unsafe {
        let mut lim: libc::rlimit = std::mem::zeroed();
        libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim);
        lim.rlim_cur as u64
    }
}

/// Source address for connection `i` when spreading over `n` loopback
/// addresses (127.0.0.1 .. 127.0.0.n); None with n <= 1 (kernel's choice).
pub fn source_for(i: usize, n: u8) -> Option<IpAddr> {
    (n > 1).then(|| IpAddr::V4(Ipv4Addr::new(127, 0, 0, 1 + (i % n as usize) as u8)))
}

/// Connects to `addr`, binding to `source` first when given. The port is
/// left to connect() (IP_BIND_ADDRESS_NO_PORT), so each source address has
/// its own ~28k ports per destination.
pub async fn connect(addr: SocketAddr, source: Option<IpAddr>) -> std::io::Result<TcpStream> {
    let sock = TcpSocket::new_v4()?;
    if let Some(ip) = source {
        let one: libc::c_int = 1;
        // SAFETY: setsockopt reads an int we own for the call's duration.
        unsafe {
            libc::setsockopt(
                sock.as_raw_fd(),
                libc::IPPROTO_IP,
                libc::IP_BIND_ADDRESS_NO_PORT,
                &one as *const libc::c_int as *const libc::c_void,
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            );
        }
        sock.bind(SocketAddr::new(ip, 0))?;
    }
    let stream = sock.connect(addr).await?;
    stream.set_nodelay(true)?;
    Ok(stream)
}

/// What a response head says about its body.
#[derive(Debug, Clone, Copy)]
pub struct Head {
    pub status: u16,
    pub chunked: bool,
    pub content_length: Option<usize>,
    pub close: bool,
    /// Bytes of the head, including the blank line.
    pub len: usize,
}

/// Parses a response head; Ok(None) while incomplete.
pub fn parse_head(buf: &[u8]) -> anyhow::Result<Option<Head>> {
    let mut headers = [httparse::EMPTY_HEADER; 32];
    let mut resp = httparse::Response::new(&mut headers);
    let len = match resp.parse(buf).context("malformed response head")? {
        httparse::Status::Partial => return Ok(None),
        httparse::Status::Complete(len) => len,
    };
    let mut head = Head {
        status: resp.code.unwrap_or(0),
        chunked: false,
        content_length: None,
        close: false,
        len,
    };
    for h in resp.headers.iter() {
        if h.name.eq_ignore_ascii_case("transfer-encoding") {
            head.chunked = h
                .value
                .windows(7)
                .any(|w| w.eq_ignore_ascii_case(b"chunked"));
        } else if h.name.eq_ignore_ascii_case("content-length") {
            head.content_length = std::str::from_utf8(h.value)
                .ok()
                .and_then(|v| v.trim().parse().ok());
        } else if h.name.eq_ignore_ascii_case("connection") {
            head.close = h.value.eq_ignore_ascii_case(b"close");
        }
    }
    Ok(Some(head))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ChunkState {
    Size,
    SizeExt,
    SizeLf,
    Data,
    DataCr,
    DataLf,
    Trailer { line_empty: bool },
    Done,
}

/// Decodes `Transfer-Encoding: chunked` incrementally, input split anywhere.
#[derive(Debug)]
pub struct Dechunker {
    state: ChunkState,
    size: usize,
}

impl Default for Dechunker {
    fn default() -> Self {
        Self {
            state: ChunkState::Size,
            size: 0,
        }
    }
}

impl Dechunker {
    pub fn done(&self) -> bool {
        self.state == ChunkState::Done
    }

    /// Appends the payload in `input` to `out`; returns the bytes consumed
    /// (less than `input.len()` only once the last chunk and trailer are read).
    pub fn feed(&mut self, input: &[u8], out: &mut Vec<u8>) -> anyhow::Result<usize> {
        let mut i = 0;
        while i < input.len() {
            match self.state {
                ChunkState::Data => {
                    let n = self.size.min(input.len() - i);
                    out.extend_from_slice(&input[i..i + n]);
                    i += n;
                    self.size -= n;
                    if self.size == 0 {
                        self.state = ChunkState::DataCr;
                    }
                    continue;
                }
                ChunkState::Done => return Ok(i),
                _ => {}
            }
            let b = input[i];
            i += 1;
            self.state = match (self.state, b) {
                (ChunkState::Size, b'0'..=b'9') => self.digit(b - b'0')?,
                (ChunkState::Size, b'a'..=b'f') => self.digit(b - b'a' + 10)?,
                (ChunkState::Size, b'A'..=b'F') => self.digit(b - b'A' + 10)?,
                (ChunkState::Size, b';' | b' ' | b'\t') => ChunkState::SizeExt,
                (ChunkState::Size | ChunkState::SizeExt, b'\r') => ChunkState::SizeLf,
                (ChunkState::SizeExt, _) => ChunkState::SizeExt,
                (ChunkState::Size | ChunkState::SizeLf, b'\n') => {
                    if self.size == 0 {
                        ChunkState::Trailer { line_empty: true }
                    } else {
                        ChunkState::Data
                    }
                }
                (ChunkState::DataCr, b'\r') => ChunkState::DataLf,
                (ChunkState::DataCr | ChunkState::DataLf, b'\n') => ChunkState::Size,
                (ChunkState::Trailer { line_empty }, b'\n') => {
                    if line_empty {
                        ChunkState::Done
                    } else {
                        ChunkState::Trailer { line_empty: true }
                    }
                }
                (ChunkState::Trailer { line_empty }, b'\r') => ChunkState::Trailer { line_empty },
                (ChunkState::Trailer { .. }, _) => ChunkState::Trailer { line_empty: false },
                (state, b) => bail!("bad chunked encoding: byte {b:#04x} in state {state:?}"),
            };
        }
        Ok(i)
    }

    fn digit(&mut self, v: u8) -> anyhow::Result<ChunkState> {
        self.size = self
            .size
            .checked_mul(16)
            .and_then(|s| s.checked_add(v as usize))
            .context("chunk size overflows")?;
        Ok(ChunkState::Size)
    }
}

/// One keep-alive connection doing request/response, reconnecting when the
/// server closes it.
pub struct HttpConn {
    endpoint: Endpoint,
    source: Option<IpAddr>,
    stream: Option<TcpStream>,
    buf: Vec<u8>,
    /// Valid bytes in `buf` not yet consumed.
    len: usize,
    /// The last response's body (de-chunked).
    pub body: Vec<u8>,
    /// Connections opened after the first.
    pub reconnects: u64,
    opened: bool,
}

impl HttpConn {
    pub fn new(endpoint: Endpoint, source: Option<IpAddr>) -> Self {
        Self {
            endpoint,
            source,
            stream: None,
            buf: vec![0; 64 * 1024],
            len: 0,
            body: Vec::with_capacity(16 * 1024),
            reconnects: 0,
            opened: false,
        }
    }

    pub fn endpoint(&self) -> &Endpoint {
        &self.endpoint
    }

    /// Sends `req` and reads the whole response; returns its status, with
    /// the body in `self.body`. On an error the connection is dropped and the
    /// next request opens a new one.
    pub async fn request(&mut self, req: &[u8]) -> anyhow::Result<u16> {
        let result = self.exchange(req).await;
        if result.is_err() {
            self.stream = None;
            self.len = 0;
        }
        result
    }

    async fn exchange(&mut self, req: &[u8]) -> anyhow::Result<u16> {
        if self.stream.is_none() {
            if self.opened {
                self.reconnects += 1;
            }
            self.opened = true;
            self.stream = Some(connect(self.endpoint.addr, self.source).await?);
            self.len = 0;
        }
        let stream = self.stream.as_mut().expect("connected above");
        stream.write_all(req).await?;
        let head = loop {
            if let Some(head) = parse_head(&self.buf[..self.len])? {
                break head;
            }
            if self.len == self.buf.len() {
                bail!("response head larger than {} bytes", self.buf.len());
            }
            let n = stream.read(&mut self.buf[self.len..]).await?;
            if n == 0 {
                bail!("server closed the connection");
            }
            self.len += n;
        };
        self.body.clear();
        let mut pos = head.len;
        if head.chunked {
            let mut dechunk = Dechunker::default();
            loop {
                pos += dechunk.feed(&self.buf[pos..self.len], &mut self.body)?;
                if dechunk.done() {
                    break;
                }
                pos = 0;
                self.len = 0;
                let n = stream.read(&mut self.buf).await?;
                if n == 0 {
                    bail!("server closed the connection mid-body");
                }
                self.len = n;
            }
        } else {
            let want = head.content_length.unwrap_or(0);
            loop {
                let take = (want - self.body.len()).min(self.len - pos);
                self.body.extend_from_slice(&self.buf[pos..pos + take]);
                pos += take;
                if self.body.len() == want {
                    break;
                }
                pos = 0;
                self.len = 0;
                let n = stream.read(&mut self.buf).await?;
                if n == 0 {
                    bail!("server closed the connection mid-body");
                }
                self.len = n;
            }
        }
        // Keep bytes past this response (none without pipelining).
        self.buf.copy_within(pos..self.len, 0);
        self.len -= pos;
        if head.close {
            self.stream = None;
            self.len = 0;
        }
        Ok(head.status)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dechunks_input_split_anywhere() {
        let wire = b"5\r\nhello\r\n7;ext=1\r\n, world\r\n0\r\n\r\nNEXT";
        let end = wire.len() - 4;
        for split in 0..wire.len() {
            let mut d = Dechunker::default();
            let mut out = Vec::new();
            let a = d.feed(&wire[..split], &mut out).unwrap();
            assert_eq!(a, split.min(end));
            let b = d.feed(&wire[a..], &mut out).unwrap();
            assert!(d.done());
            assert_eq!(out, b"hello, world");
            assert_eq!(&wire[a + b..], b"NEXT");
        }
    }

    #[test]
    fn parses_heads() {
        let h = parse_head(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nxx")
            .unwrap()
            .unwrap();
        assert_eq!((h.status, h.chunked, h.len), (200, true, 47));
        assert!(
            parse_head(b"HTTP/1.1 200 OK\r\nContent-")
                .unwrap()
                .is_none()
        );
    }
}
