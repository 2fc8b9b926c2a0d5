//! The circuit breaker of SPEC 5: opens after N consecutive failures, rejects at once while
//! open, half-opens after a delay, closes after M successes, reopens on a half-open failure.

use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Breaker state; the numbers are the `kafka_circuit_breaker_state` gauge values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BreakerState {
    /// Sends flow.
    Closed = 0,
    /// Sends are refused at once.
    Open = 1,
    /// Trial sends flow; one failure reopens.
    HalfOpen = 2,
}

#[derive(Debug)]
struct Inner {
    state: BreakerState,
    failures: u32,
    successes: u32,
    opened_at: Option<Instant>,
}

/// A thread-safe circuit breaker.
#[derive(Debug)]
pub(crate) struct CircuitBreaker {
    failures_to_open: u32,
    open_for: Duration,
    successes_to_close: u32,
    inner: Mutex<Inner>,
}

impl CircuitBreaker {
    /// A closed breaker.
    pub(crate) fn new(failures_to_open: u32, open_for: Duration, successes_to_close: u32) -> Self {
        CircuitBreaker {
            failures_to_open: failures_to_open.max(1),
            open_for,
            successes_to_close: successes_to_close.max(1),
            inner: Mutex::new(Inner {
                state: BreakerState::Closed,
                failures: 0,
                successes: 0,
                opened_at: None,
            }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The current state (an open breaker past its delay reports half-open).
    pub(crate) fn state(&self) -> BreakerState {
        let mut i = self.lock();
        self.advance(&mut i);
        i.state
    }

    fn advance(&self, i: &mut Inner) {
        if i.state == BreakerState::Open
            && i.opened_at.is_some_and(|t| t.elapsed() >= self.open_for)
        {
            i.state = BreakerState::HalfOpen;
            i.successes = 0;
        }
    }

    /// Whether a send may go ahead now.
    pub(crate) fn allow(&self) -> bool {
        self.state() != BreakerState::Open
    }

    /// Records a successful send; returns the new state.
    pub(crate) fn on_success(&self) -> BreakerState {
        let mut i = self.lock();
        self.advance(&mut i);
        match i.state {
            BreakerState::HalfOpen => {
                i.successes += 1;
                if i.successes >= self.successes_to_close {
                    i.state = BreakerState::Closed;
                    i.failures = 0;
                }
            }
            _ => i.failures = 0,
        }
        i.state
    }

    /// Records a failed send; returns the new state.
    pub(crate) fn on_failure(&self) -> BreakerState {
        let mut i = self.lock();
        self.advance(&mut i);
        match i.state {
            BreakerState::HalfOpen => {
                i.state = BreakerState::Open;
                i.opened_at = Some(Instant::now());
            }
            BreakerState::Closed => {
                i.failures += 1;
                if i.failures >= self.failures_to_open {
                    i.state = BreakerState::Open;
                    i.opened_at = Some(Instant::now());
                }
            }
            BreakerState::Open => {}
        }
        i.state
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn full_cycle() {
        let b = CircuitBreaker::new(5, Duration::from_millis(50), 2);
        for _ in 0..4 {
            assert_eq!(b.on_failure(), BreakerState::Closed);
        }
        b.on_success(); // resets the consecutive count
        for _ in 0..4 {
            b.on_failure();
        }
        assert!(b.allow());
        assert_eq!(b.on_failure(), BreakerState::Open);
        assert!(!b.allow());
        std::thread::sleep(Duration::from_millis(60));
        assert_eq!(b.state(), BreakerState::HalfOpen);
        assert_eq!(
            b.on_failure(),
            BreakerState::Open,
            "half-open failure reopens"
        );
        std::thread::sleep(Duration::from_millis(60));
        assert_eq!(b.on_success(), BreakerState::HalfOpen);
        assert_eq!(b.on_success(), BreakerState::Closed);
    }
}
