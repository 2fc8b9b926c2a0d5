//! The replay guard of SPEC 3e: remembers `(producer_id, nonce)` of accepted AI messages for
//! a window, in bounded memory.

use std::collections::{HashSet, VecDeque};
use std::sync::Mutex;

/// Key of one accepted message: producer id (32 bytes) and nonce (16 bytes).
type Entry = [u8; 48];

/// Remembers accepted `(producer_id, nonce)` pairs for `window_secs` after acceptance.
///
/// Memory is bounded by `capacity` entries. When full, the oldest entry is evicted early and
/// its message timestamp becomes a *floor*: any later message not newer than the floor is
/// refused as a possible replay, because the guard can no longer prove it fresh. So a
/// capacity overflow can cost false refusals of old messages, never an accepted replay.
#[derive(Debug)]
pub struct ReplayGuard {
    window_secs: i64,
    capacity: usize,
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    seen: HashSet<Entry>,
    /// (entry, expires_at, message ts), in acceptance order.
    order: VecDeque<(Entry, i64, i64)>,
    floor_ts: Option<i64>,
}

/// Outcome of [`ReplayGuard::check_and_remember`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReplayVerdict {
    /// First sighting; now remembered.
    Fresh,
    /// Seen before within the window.
    Replayed,
    /// Not newer than what overflow forced the guard to forget.
    BelowFloor,
}

impl ReplayGuard {
    /// A guard remembering entries for `window_secs` (at least twice the skew), at most
    /// `capacity` at once.
    pub fn new(window_secs: i64, capacity: usize) -> Self {
        ReplayGuard {
            window_secs,
            capacity: capacity.max(1),
            inner: Mutex::new(Inner::default()),
        }
    }

    /// Number of remembered entries.
    pub fn len(&self) -> usize {
        self.lock().seen.len()
    }

    /// True when nothing is remembered.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Checks a message and, if fresh, remembers it (atomically).
    pub fn check_and_remember(
        &self,
        producer_id: &[u8],
        nonce: &[u8],
        msg_ts: i64,
        now_secs: i64,
    ) -> ReplayVerdict {
        let mut entry = [0u8; 48];
        let pid_len = producer_id.len().min(32);
        entry[..pid_len].copy_from_slice(&producer_id[..pid_len]);
        let n_len = nonce.len().min(16);
        entry[32..32 + n_len].copy_from_slice(&nonce[..n_len]);

        let mut inner = self.lock();
        // Expire what is past its window (an entry is still held at exactly `expires`, so a
        // message exactly `skew` old at both ends of a 2*skew window cannot slip through).
        while let Some(&(e, expires, _)) = inner.order.front() {
            if expires >= now_secs {
                break;
            }
            inner.order.pop_front();
            inner.seen.remove(&e);
        }
        if inner.seen.contains(&entry) {
            return ReplayVerdict::Replayed;
        }
        if let Some(floor) = inner.floor_ts {
            if msg_ts <= floor {
                return ReplayVerdict::BelowFloor;
            }
        }
        while inner.seen.len() >= self.capacity {
            let Some((e, _, ts)) = inner.order.pop_front() else {
                break;
            };
            inner.seen.remove(&e);
            inner.floor_ts = Some(inner.floor_ts.map_or(ts, |f| f.max(ts)));
        }
        inner.seen.insert(entry);
        inner
            .order
            .push_back((entry, now_secs.saturating_add(self.window_secs), msg_ts));
        ReplayVerdict::Fresh
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repeats_are_refused_until_window_passes() {
        let g = ReplayGuard::new(600, 100);
        let pid = [1u8; 32];
        let n = [2u8; 16];
        assert_eq!(
            g.check_and_remember(&pid, &n, 1000, 1000),
            ReplayVerdict::Fresh
        );
        assert_eq!(
            g.check_and_remember(&pid, &n, 1000, 1500),
            ReplayVerdict::Replayed
        );
        // still held at exactly accepted + window
        assert_eq!(
            g.check_and_remember(&pid, &n, 1000, 1600),
            ReplayVerdict::Replayed
        );
        assert_eq!(
            g.check_and_remember(&pid, &n, 1000, 1601),
            ReplayVerdict::Fresh
        );
        // other producer, same nonce: fresh
        assert_eq!(
            g.check_and_remember(&[9u8; 32], &n, 1000, 1600),
            ReplayVerdict::Fresh
        );
    }

    #[test]
    fn overflow_sets_a_floor_never_lets_a_replay_through() {
        let g = ReplayGuard::new(600, 3);
        let pid = [1u8; 32];
        for i in 0..5u8 {
            assert_eq!(
                g.check_and_remember(&pid, &[i; 16], 100 + i as i64, 200),
                ReplayVerdict::Fresh
            );
        }
        assert_eq!(g.len(), 3);
        // Entries 0 and 1 were forgotten early: replaying them is still refused.
        assert_eq!(
            g.check_and_remember(&pid, &[0; 16], 100, 200),
            ReplayVerdict::BelowFloor
        );
        assert_eq!(
            g.check_and_remember(&pid, &[1; 16], 101, 200),
            ReplayVerdict::BelowFloor
        );
        assert_eq!(
            g.check_and_remember(&pid, &[4; 16], 104, 200),
            ReplayVerdict::Replayed
        );
        assert_eq!(
            g.check_and_remember(&pid, &[9; 16], 105, 200),
            ReplayVerdict::Fresh
        );
    }
}
