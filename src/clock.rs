//! The clock seam: everything that ages (cached modes, message ids, tokens) asks a [`Clock`]
//! instead of `Instant::now()`, so tests move time forward instead of sleeping.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A source of `Instant`s: the system's monotonic clock, or a manual one for tests.
#[derive(Clone, Debug, Default)]
pub struct Clock {
    manual: Option<Arc<ManualClock>>,
}

/// A clock that only moves when told to.
#[derive(Debug)]
pub struct ManualClock {
    base: Instant,
    offset_nanos: AtomicU64,
}

impl ManualClock {
    /// Moves the clock forward by `by`.
    pub fn advance(&self, by: Duration) {
        let nanos = u64::try_from(by.as_nanos()).unwrap_or(u64::MAX);
        self.offset_nanos.fetch_add(nanos, Ordering::SeqCst);
    }

    fn now(&self) -> Instant {
        self.base + Duration::from_nanos(self.offset_nanos.load(Ordering::SeqCst))
    }
}

impl Clock {
    /// The system's monotonic clock.
    pub fn system() -> Clock {
        Clock { manual: None }
    }

    /// A manual clock starting now, and the handle that moves it.
    pub fn manual() -> (Clock, Arc<ManualClock>) {
        let handle = Arc::new(ManualClock {
            base: Instant::now(),
            offset_nanos: AtomicU64::new(0),
        });
        (
            Clock {
                manual: Some(handle.clone()),
            },
            handle,
        )
    }

    /// The current instant.
    pub fn now(&self) -> Instant {
        match &self.manual {
            None => Instant::now(),
            Some(m) => m.now(),
        }
    }

    /// Time since `earlier` (zero if `earlier` is in the future).
    pub fn since(&self, earlier: Instant) -> Duration {
        self.now().saturating_duration_since(earlier)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_manual_clock_moves_only_when_advanced() {
        let (clock, handle) = Clock::manual();
        let start = clock.now();
        assert_eq!(clock.since(start), Duration::ZERO);
        handle.advance(Duration::from_secs(301));
        assert_eq!(clock.since(start), Duration::from_secs(301));
    }
}
