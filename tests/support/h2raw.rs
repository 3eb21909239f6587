//! A raw HTTP/2 (h2c, prior knowledge) client written against RFC 9113 and RFC 7541, for the
//! abuse cases a client library will not produce: streams reset as soon as they open, header
//! blocks that never end, HPACK references that expand, floods of control frames.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;
use tokio::sync::Mutex;

pub const DATA: u8 = 0x0;
pub const HEADERS: u8 = 0x1;
pub const RST_STREAM: u8 = 0x3;
pub const SETTINGS: u8 = 0x4;
pub const PING: u8 = 0x6;
pub const GOAWAY: u8 = 0x7;
pub const WINDOW_UPDATE: u8 = 0x8;
pub const CONTINUATION: u8 = 0x9;

pub const END_STREAM: u8 = 0x1;
pub const ACK: u8 = 0x1;
pub const END_HEADERS: u8 = 0x4;

/// `REFUSED_STREAM`, `CANCEL`, `ENHANCE_YOUR_CALM` (RFC 9113 section 7).
pub const REFUSED_STREAM: u32 = 0x7;
pub const CANCEL: u32 = 0x8;
pub const ENHANCE_YOUR_CALM: u32 = 0xb;

/// One frame as read.
#[derive(Clone, Debug)]
pub struct Frame {
    pub kind: u8,
    pub flags: u8,
    pub stream: u32,
    pub payload: Vec<u8>,
}

impl Frame {
    /// The error code of a `RST_STREAM` or `GOAWAY`.
    pub fn error_code(&self) -> Option<u32> {
        let at = match self.kind {
            RST_STREAM => 0,
            GOAWAY => 4,
            _ => return None,
        };
        let bytes = self.payload.get(at..at + 4)?;
        Some(u32::from_be_bytes(bytes.try_into().ok()?))
    }
}

/// Encodes one frame.
pub fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(9 + payload.len());
    out.extend_from_slice(&(payload.len() as u32).to_be_bytes()[1..]);
    out.push(kind);
    out.push(flags);
    out.extend_from_slice(&(stream & 0x7fff_ffff).to_be_bytes());
    out.extend_from_slice(payload);
    out
}

/// An HPACK literal field without indexing, new name, no Huffman (RFC 7541 6.2.2); names and
/// values under 127 bytes.
pub fn literal(name: &str, value: &str) -> Vec<u8> {
    assert!(name.len() < 127 && value.len() < 127);
    let mut out = vec![0x00, name.len() as u8];
    out.extend_from_slice(name.as_bytes());
    out.push(value.len() as u8);
    out.extend_from_slice(value.as_bytes());
    out
}

/// An HPACK integer with an `n`-bit prefix, OR-ed with `first` (RFC 7541 5.1).
pub fn hpack_int(first: u8, n: u32, value: usize) -> Vec<u8> {
    let max = (1usize << n) - 1;
    if value < max {
        return vec![first | value as u8];
    }
    let mut out = vec![first | max as u8];
    let mut rest = value - max;
    while rest >= 128 {
        out.push((rest % 128 + 128) as u8);
        rest /= 128;
    }
    out.push(rest as u8);
    out
}

/// The header block of a GET for `path`.
pub fn get_block(path: &str) -> Vec<u8> {
    [
        literal(":method", "GET"),
        literal(":scheme", "http"),
        literal(":path", path),
        literal(":authority", "gateway"),
    ]
    .concat()
}

/// The client connection preface and an empty SETTINGS frame.
pub fn preface() -> Vec<u8> {
    let mut out = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
    out.extend(frame(SETTINGS, 0, 0, &[]));
    out
}

/// A raw h2c connection: the read side here, the write side shareable with a writer task.
pub struct H2Raw {
    read: OwnedReadHalf,
    pub write: Arc<Mutex<OwnedWriteHalf>>,
    buf: Vec<u8>,
}

impl H2Raw {
    /// Connects and sends the preface.
    pub async fn connect(addr: SocketAddr) -> H2Raw {
        let stream = TcpStream::connect(addr).await.expect("connect");
        let (read, write) = stream.into_split();
        let raw = H2Raw {
            read,
            write: Arc::new(Mutex::new(write)),
            buf: Vec::new(),
        };
        raw.send(&preface()).await.expect("preface");
        raw
    }

    /// Connects, acknowledges the server's SETTINGS and waits until the server has applied
    /// them (it answers a PING sent after the acknowledgement), so its limits are in force.
    pub async fn handshaken(addr: SocketAddr) -> H2Raw {
        let mut raw = H2Raw::connect(addr).await;
        let frames = raw
            .read_until(Duration::from_secs(5), |f| {
                f.kind == SETTINGS && f.flags & ACK == 0
            })
            .await;
        assert!(frames.iter().any(|f| f.kind == SETTINGS), "server SETTINGS");
        raw.send(&frame(PING, 0, 0, b"handshak"))
            .await
            .expect("ping");
        let frames = raw
            .read_until(Duration::from_secs(5), |f| {
                f.kind == PING && f.flags & ACK != 0
            })
            .await;
        assert!(frames.iter().any(|f| f.kind == PING), "PING answered");
        raw
    }

    pub async fn send(&self, bytes: &[u8]) -> std::io::Result<()> {
        self.write.lock().await.write_all(bytes).await
    }

    /// Writes `bytes` from a task while the caller reads: the gateway may answer (or close)
    /// before all of them are taken. A failed write is left for the reader to see.
    pub fn send_in_background(&self, bytes: Vec<u8>) -> tokio::task::JoinHandle<()> {
        let write = self.write.clone();
        tokio::spawn(async move {
            let _ = write.lock().await.write_all(&bytes).await;
        })
    }

    /// Reads frames until `stop` says so, the connection closes or `within` passes;
    /// acknowledges the server's SETTINGS. Returns what was read.
    pub async fn read_until(
        &mut self,
        within: Duration,
        mut stop: impl FnMut(&Frame) -> bool,
    ) -> Vec<Frame> {
        let deadline = tokio::time::Instant::now() + within;
        let mut frames = Vec::new();
        loop {
            while let Some(f) = self.next_buffered() {
                if f.kind == SETTINGS && f.flags & ACK == 0 {
                    let _ = self.send(&frame(SETTINGS, ACK, 0, &[])).await;
                }
                let done = stop(&f);
                frames.push(f);
                if done {
                    return frames;
                }
            }
            let mut chunk = [0u8; 16 * 1024];
            match tokio::time::timeout_at(deadline, self.read.read(&mut chunk)).await {
                Ok(Ok(n)) if n > 0 => self.buf.extend_from_slice(&chunk[..n]),
                _ => return frames,
            }
        }
    }

    /// Reads until the server's GOAWAY (at most `within`); returns the frames read and the
    /// GOAWAY's error code. Fails when the connection ends or the time passes without one.
    pub async fn read_goaway(&mut self, within: Duration) -> (Vec<Frame>, Option<u32>) {
        let frames = self.read_until(within, |f| f.kind == GOAWAY).await;
        let code = frames
            .iter()
            .find(|f| f.kind == GOAWAY)
            .expect("the connection is closed with GOAWAY")
            .error_code();
        (frames, code)
    }

    fn next_buffered(&mut self) -> Option<Frame> {
        if self.buf.len() < 9 {
            return None;
        }
        let len = u32::from_be_bytes([0, self.buf[0], self.buf[1], self.buf[2]]) as usize;
        if self.buf.len() < 9 + len {
            return None;
        }
        let head: Vec<u8> = self.buf.drain(..9 + len).collect();
        Some(Frame {
            kind: head[3],
            flags: head[4],
            stream: u32::from_be_bytes([head[5], head[6], head[7], head[8]]) & 0x7fff_ffff,
            payload: head[9..].to_vec(),
        })
    }
}
