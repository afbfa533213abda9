//! The HTTP/1.1 wire format, as much as the [`super::FaultProxy`] needs: message heads, body
//! framing (Content-Length, chunked, until close), copying bodies byte for byte, S3 error
//! answers, and resets.

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Closes `socket` with a TCP reset.
pub(super) fn reset(socket: TcpStream) {
    let _ = socket.set_zero_linger();
    drop(socket);
}

/// One end of a connection with its read-ahead buffer.
pub(super) struct Peer {
    pub(super) stream: TcpStream,
    buf: Vec<u8>,
}

/// Longest request or response head accepted.
const MAX_HEAD: usize = 64 * 1024;

impl Peer {
    pub(super) fn new(stream: TcpStream) -> Self {
        Peer { stream, buf: Vec::new() }
    }

    async fn fill(&mut self) -> std::io::Result<usize> {
        self.buf.reserve(64 * 1024);
        self.stream.read_buf(&mut self.buf).await
    }

    /// The next message head (through the blank line); `None` at a clean end of stream.
    pub(super) async fn read_head(&mut self) -> std::io::Result<Option<Vec<u8>>> {
        loop {
            if let Some(end) = self.buf.windows(4).position(|w| w == b"\r\n\r\n") {
                return Ok(Some(self.buf.drain(..end + 4).collect()));
            }
            if self.buf.len() > MAX_HEAD {
                return Err(std::io::Error::other("message head too long"));
            }
            if self.fill().await? == 0 {
                return if self.buf.is_empty() { Ok(None) } else { Err(eof()) };
            }
        }
    }

    /// One line (CRLF included).
    async fn read_line(&mut self) -> std::io::Result<Vec<u8>> {
        loop {
            if let Some(end) = self.buf.windows(2).position(|w| w == b"\r\n") {
                return Ok(self.buf.drain(..end + 2).collect());
            }
            if self.fill().await? == 0 {
                return Err(eof());
            }
        }
    }

    /// Moves `n` bytes to `to` (or discards them); stops early at `limit` bytes if given.
    pub(super) async fn copy(&mut self, mut n: u64, to: &mut Option<&mut TcpStream>) -> std::io::Result<()> {
        while n > 0 {
            if self.buf.is_empty() && self.fill().await? == 0 {
                return Err(eof());
            }
            let take = (self.buf.len() as u64).min(n) as usize;
            if let Some(out) = to.as_mut() {
                out.write_all(&self.buf[..take]).await?;
            }
            self.buf.drain(..take);
            n -= take as u64;
        }
        Ok(())
    }

    /// Moves a body framed as `framing` to `to` (or discards it).
    pub(super) async fn copy_body(&mut self, framing: Framing, mut to: Option<&mut TcpStream>) -> std::io::Result<()> {
        match framing {
            Framing::Length(n) => self.copy(n, &mut to).await,
            Framing::Chunked => loop {
                let line = self.read_line().await?;
                let text = String::from_utf8_lossy(&line);
                let size = text.trim().split(';').next().unwrap_or("");
                let size = u64::from_str_radix(size, 16).map_err(|_| std::io::Error::other("bad chunk size"))?;
                if let Some(out) = to.as_mut() {
                    out.write_all(&line).await?;
                }
                if size == 0 {
                    // Trailers, then the blank line.
                    loop {
                        let trailer = self.read_line().await?;
                        if let Some(out) = to.as_mut() {
                            out.write_all(&trailer).await?;
                        }
                        if trailer == b"\r\n" {
                            return Ok(());
                        }
                    }
                }
                self.copy(size + 2, &mut to).await?;
            },
            Framing::UntilClose => loop {
                if self.buf.is_empty() && self.fill().await? == 0 {
                    return Ok(());
                }
                if let Some(out) = to.as_mut() {
                    out.write_all(&self.buf).await?;
                }
                self.buf.clear();
            },
        }
    }
}

fn eof() -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "connection closed mid-message")
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Framing {
    Length(u64),
    Chunked,
    UntilClose,
}

/// The parts of a message head the proxy needs.
pub(super) struct Head {
    /// Request: method and target. Response: status.
    pub(super) first: Vec<String>,
    headers: Vec<(String, String)>,
}

impl Head {
    pub(super) fn parse(raw: &[u8]) -> std::io::Result<Head> {
        let text = std::str::from_utf8(raw).map_err(|_| std::io::Error::other("head is not UTF-8"))?;
        let mut lines = text.split("\r\n");
        let first = lines.next().unwrap_or("").split(' ').map(str::to_string).collect();
        let headers = lines
            .filter_map(|l| l.split_once(':'))
            .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
            .collect();
        Ok(Head { first, headers })
    }

    pub(super) fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
    }

    /// Body framing; `None` if the headers name no length (then the default applies).
    pub(super) fn framing(&self) -> Option<Framing> {
        if self.header("transfer-encoding").is_some_and(|v| v.to_ascii_lowercase().contains("chunked")) {
            return Some(Framing::Chunked);
        }
        self.header("content-length").and_then(|v| v.parse().ok()).map(Framing::Length)
    }

    pub(super) fn closes(&self) -> bool {
        self.header("connection").is_some_and(|v| v.eq_ignore_ascii_case("close"))
    }
}

/// An S3 error answer: XML body with code, message and request id (no body for HEAD).
pub(super) fn error_response(status: u16, code: &str, request_id: &str, head: bool) -> Vec<u8> {
    let reason = match status {
        500 => "Internal Server Error",
        503 => "Service Unavailable",
        403 => "Forbidden",
        _ => "Error",
    };
    let body = format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>{code}</Code>\
         <Message>injected by the fault proxy</Message><RequestId>{request_id}</RequestId></Error>"
    );
    let length = if head { 0 } else { body.len() };
    let mut out = format!(
        "HTTP/1.1 {status} {reason}\r\nContent-Type: application/xml\r\nContent-Length: {length}\r\n\
         x-amz-request-id: {request_id}\r\n\r\n"
    );
    if !head {
        out.push_str(&body);
    }
    out.into_bytes()
}

/// S3's answer to a request for a bucket in another region: 301 PermanentRedirect naming the
/// bucket's region in `x-amz-bucket-region` (no body for HEAD).
pub(super) fn redirect_response(region: &str, request_id: &str, head: bool) -> Vec<u8> {
    let body = format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>PermanentRedirect</Code>\
         <Message>The bucket you are attempting to access must be addressed using the specified \
         endpoint. Please send all future requests to this endpoint.</Message>\
         <Endpoint>s3.{region}.amazonaws.com</Endpoint><RequestId>{request_id}</RequestId></Error>"
    );
    let length = if head { 0 } else { body.len() };
    let mut out = format!(
        "HTTP/1.1 301 Moved Permanently\r\nContent-Type: application/xml\r\nContent-Length: {length}\r\n\
         x-amz-bucket-region: {region}\r\nx-amz-request-id: {request_id}\r\n\r\n"
    );
    if !head {
        out.push_str(&body);
    }
    out.into_bytes()
}
