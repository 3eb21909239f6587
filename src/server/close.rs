//! Why the gateway closed a client connection: [`CloseReason`], the bounded label of
//! `modegate_connections_closed_total{reason}`, and [`CloseCause`], where the parts of a
//! connection that decide to end it (the write watchdog, the request path) record why.

use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::sync::Arc;

/// Why the gateway closed a client connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum CloseReason {
    /// No complete request head within `server.header_read_timeout_secs`: from accept to the
    /// first request (through the protocol sniff, the TLS handshake, the h2 preface, SETTINGS
    /// and the first HEADERS), or a later HTTP/1.1 head begun and not finished.
    HeaderTimeout,
    /// An HTTP/1.1 keep-alive connection sent nothing of a next request within
    /// `server.header_read_timeout_secs` of its last answer.
    Idle,
    /// The client accepted none of the gateway's writes for `server.body_idle_timeout_secs`.
    WriteStall,
    /// An HTTP/1.1 request or response body made no progress for
    /// `server.body_idle_timeout_secs` (over h2 only the stream is reset).
    BodyIdle,
}

impl CloseReason {
    /// Every reason, in label order.
    pub const ALL: [CloseReason; 4] = [
        CloseReason::HeaderTimeout,
        CloseReason::Idle,
        CloseReason::WriteStall,
        CloseReason::BodyIdle,
    ];

    /// The metric label.
    pub const fn as_str(self) -> &'static str {
        match self {
            CloseReason::HeaderTimeout => "header_timeout",
            CloseReason::Idle => "idle",
            CloseReason::WriteStall => "write_stall",
            CloseReason::BodyIdle => "body_idle",
        }
    }

    fn code(self) -> u8 {
        self as u8 + 1
    }

    fn from_code(code: u8) -> Option<CloseReason> {
        CloseReason::ALL
            .get(usize::from(code.checked_sub(1)?))
            .copied()
    }
}

/// Told of every connection the gateway closed, with why.
pub type OnClose = Arc<dyn Fn(CloseReason) + Send + Sync>;

/// Why a connection is being closed, recorded by whatever decided it; the first reason
/// recorded stands. Shared by the connection's task, its socket wrapper and its requests.
#[derive(Clone, Debug, Default)]
pub struct CloseCause(Arc<Cause>);

#[derive(Debug, Default)]
struct Cause {
    reason: AtomicU8,
    /// Bytes of an HTTP/1.1 request head have arrived and the head is not complete yet.
    head_started: AtomicBool,
}

impl CloseCause {
    /// Records `reason`, unless one was recorded already.
    pub fn set(&self, reason: CloseReason) {
        let _ =
            self.0
                .reason
                .compare_exchange(0, reason.code(), Ordering::AcqRel, Ordering::Acquire);
    }

    /// The reason recorded, if any.
    pub fn get(&self) -> Option<CloseReason> {
        CloseReason::from_code(self.0.reason.load(Ordering::Acquire))
    }

    /// Notes whether an HTTP/1.1 request head is being received (begun, not complete).
    pub fn set_head_started(&self, started: bool) {
        self.0.head_started.store(started, Ordering::Release);
    }

    /// Whether an HTTP/1.1 request head is being received.
    pub fn head_started(&self) -> bool {
        self.0.head_started.load(Ordering::Acquire)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_reason_recorded_stands() {
        let cause = CloseCause::default();
        assert_eq!(cause.get(), None);
        cause.clone().set(CloseReason::WriteStall);
        cause.set(CloseReason::BodyIdle);
        assert_eq!(cause.get(), Some(CloseReason::WriteStall));
        for reason in CloseReason::ALL {
            assert_eq!(CloseReason::from_code(reason.code()), Some(reason));
        }
    }
}
