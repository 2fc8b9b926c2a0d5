//! Liveness bookkeeping shared by both group protocols: the poll tracker
//! behind `max_poll_interval`, and the flags the heartbeat tasks raise for the
//! poll path.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// Tracks how long it has been since the application last called `poll()`.
///
/// # Why the consumer needs this
///
/// Heartbeats are sent by a background task, so they keep flowing whether or
/// not the application is making progress. An application that stops calling
/// `poll()` — deadlocked, stuck on a slow downstream call, or looping forever
/// on one record — therefore looks perfectly healthy to the coordinator. It
/// holds its partitions indefinitely while consuming nothing from them, and
/// because the group never rebalances, no other member can take over. Nothing
/// in the system reports an error; the partitions simply stop advancing.
///
/// `max.poll.interval.ms` is the bound that makes that failure visible. The
/// heartbeat task compares the elapsed time against it and, once exceeded,
/// stops heartbeating so the coordinator can reassign the partitions to a
/// member that is actually consuming.
#[derive(Debug)]
pub(crate) struct PollTracker {
    /// When `poll()` was last entered.
    last_poll: parking_lot::Mutex<tokio::time::Instant>,
    /// Maximum permitted gap between `poll()` calls.
    max_poll_interval: Duration,
    /// Set once the interval has been exceeded, so `poll()` can report it.
    exceeded: std::sync::atomic::AtomicBool,
}

impl PollTracker {
    /// Create a tracker armed from now.
    pub(crate) fn new(max_poll_interval: Duration) -> Self {
        Self {
            last_poll: parking_lot::Mutex::new(tokio::time::Instant::now()),
            max_poll_interval,
            exceeded: std::sync::atomic::AtomicBool::new(false),
        }
    }

    /// Record that the application has just called `poll()`.
    pub(crate) fn note_poll(&self) {
        *self.last_poll.lock() = tokio::time::Instant::now();
    }

    /// Time since the last `poll()`.
    pub(crate) fn elapsed(&self) -> Duration {
        self.last_poll.lock().elapsed()
    }

    /// The configured maximum poll interval.
    pub(crate) fn max_poll_interval(&self) -> Duration {
        self.max_poll_interval
    }

    /// Whether the application has exceeded the maximum poll interval.
    pub(crate) fn is_expired(&self) -> bool {
        self.elapsed() > self.max_poll_interval
    }

    /// Latch the expired state. Returns `true` the first time it is set, so
    /// the caller can act on the transition exactly once.
    pub(crate) fn mark_exceeded(&self) -> bool {
        !self
            .exceeded
            .swap(true, std::sync::atomic::Ordering::SeqCst)
    }

    /// Whether the tracker has been latched as exceeded.
    pub(crate) fn exceeded(&self) -> bool {
        self.exceeded.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Clear the latch and restart the timer, e.g. after rejoining the group.
    pub(crate) fn reset(&self) {
        self.exceeded
            .store(false, std::sync::atomic::Ordering::SeqCst);
        self.note_poll();
    }
}

/// Flags the heartbeat task raises for the poll path, and whether it runs.
#[derive(Debug)]
pub(crate) struct HeartbeatController {
    /// Whether a heartbeat task is running.
    running: AtomicBool,
    /// The coordinator asked for a rebalance.
    rebalance_needed: AtomicBool,
    /// The coordinator no longer knows this member (unknown member, illegal
    /// generation, fenced epoch): its partitions are lost.
    member_invalidated: AtomicBool,
    /// meshbus patch: the invalidation was the coordinator answering UNKNOWN_MEMBER_ID, so the
    /// member id is no longer held and the next join registers afresh. Any other invalidation
    /// (ILLEGAL_GENERATION, no heartbeat answered within the session, a fatal error) keeps the
    /// id: the coordinator may still hold it, and a join with an empty id would leave it behind
    /// as a ghost member that holds the next rebalance for a session.
    member_unknown: AtomicBool,
    /// meshbus patch: how many times the member was invalidated, published the moment it
    /// happens, so an application can stop work on its partitions at once instead of at its
    /// next poll (which a stalled fetch can hold for a whole request timeout).
    lost_count: tokio::sync::watch::Sender<u64>,
    /// meshbus patch: the local session deadline of the running heartbeat task (classic
    /// protocol): past it, no heartbeat was answered within the session's safe part and the
    /// coordinator may have given the member's partitions away. `None` before the first join.
    session_deadline: parking_lot::Mutex<Option<std::time::Instant>>,
}

impl Default for HeartbeatController {
    fn default() -> Self {
        Self {
            running: AtomicBool::new(false),
            rebalance_needed: AtomicBool::new(false),
            member_invalidated: AtomicBool::new(false),
            member_unknown: AtomicBool::new(false),
            lost_count: tokio::sync::watch::Sender::new(0),
            session_deadline: parking_lot::Mutex::new(None),
        }
    }
}

impl HeartbeatController {
    pub(crate) fn is_running(&self) -> bool {
        self.running.load(Ordering::Acquire)
    }

    pub(crate) fn start(&self) {
        self.running.store(true, Ordering::Release);
    }

    pub(crate) fn stop(&self) {
        self.running.store(false, Ordering::Release);
    }

    pub(crate) fn signal_rebalance(&self) {
        self.rebalance_needed.store(true, Ordering::Release);
    }

    pub(crate) fn take_rebalance_needed(&self) -> bool {
        self.rebalance_needed.swap(false, Ordering::AcqRel)
    }

    /// Record that the member was invalidated; also requests a rebalance.
    pub(crate) fn signal_member_invalidated(&self) {
        self.member_invalidated.store(true, Ordering::Release);
        self.rebalance_needed.store(true, Ordering::Release);
        self.lost_count.send_modify(|n| *n += 1);
    }

    /// meshbus patch: record that the coordinator answered UNKNOWN_MEMBER_ID: the member is
    /// invalidated and its id is no longer held.
    pub(crate) fn signal_member_unknown(&self) {
        self.member_unknown.store(true, Ordering::Release);
        self.signal_member_invalidated();
    }

    /// meshbus patch: whether the last invalidation was an UNKNOWN_MEMBER_ID answer, once.
    pub(crate) fn take_member_unknown(&self) -> bool {
        self.member_unknown.swap(false, Ordering::AcqRel)
    }

    /// meshbus patch: publishes the heartbeat task's session deadline.
    pub(crate) fn set_session_deadline(&self, deadline: tokio::time::Instant) {
        *self.session_deadline.lock() = Some(deadline.into_std());
    }

    /// meshbus patch: the session deadline last published, if any.
    pub(crate) fn session_deadline(&self) -> Option<std::time::Instant> {
        *self.session_deadline.lock()
    }

    /// meshbus patch: a receiver of the invalidation count.
    pub(crate) fn lost_watch(&self) -> tokio::sync::watch::Receiver<u64> {
        self.lost_count.subscribe()
    }

    pub(crate) fn take_member_invalidated(&self) -> bool {
        self.member_invalidated.swap(false, Ordering::AcqRel)
    }
}

/// Commands for the heartbeat background task.
#[derive(Debug)]
pub(crate) enum HeartbeatCommand {
    /// Stop the heartbeat task.
    Stop,
    /// Send a full heartbeat now, reporting the owned partitions the
    /// consumer just acknowledged (KIP-848).
    AcknowledgeRevocation,
}
