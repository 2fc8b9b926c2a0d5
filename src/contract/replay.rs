//! The replay guard of SPEC 3e: remembers `(producer_id, nonce)` of accepted `ai.*` messages for
//! a window (at least twice the skew), in bounded memory, and cannot be poisoned.
//!
//! Two tiers. The *exact* tier holds a 128-bit keyed hash of each entry with its expiry, bounded
//! in total ([`ReplayLimits::total`]) and per producer ([`ReplayLimits::per_producer`]). What the
//! exact tier cannot hold (the oldest entry when the total is reached; every further entry of a
//! producer over its share) goes to the *overflow* tier: a two-generation Bloom filter of fixed
//! size that keeps an entry for at least the window. A Bloom filter has no false negatives, so a
//! true replay is always refused; its false positives cost a fresh message a refusal with a
//! probability the README quantifies (about 4e-7 per message after a flood of a million
//! entries), and nothing else. No global floor exists, so a flood of records from freshly
//! minted keys with future timestamps cannot make honest producers fail.
//!
//! Entries are reserved while their record is being handled and remembered only once it was
//! handled or dead-lettered ([`Reservation::confirm`]); a reservation dropped unconfirmed (the
//! partition stopped, the handler panicked) is released, so a redelivery is handled again.
//!
//! Each exact entry keeps the [`Place`] of its first sighting (topic, partition, offset): a
//! repeat at the same place is the log handing the same record out again (a lost commit, a
//! rebalance), [`ReplayVerdict::Redelivered`]; at any other place it is
//! [`ReplayVerdict::Replayed`] (SPEC 3e). The overflow tier keeps no places: a repeat of an
//! overflowed entry is `Replayed` wherever it sits (the consumer tells redeliveries of the
//! records it finished itself apart before it asks, so only a record known from the log read
//! back at start-up can meet this).

use std::collections::hash_map::RandomState;
use std::collections::{HashMap, HashSet, VecDeque};
use std::hash::{BuildHasher, Hasher};
use std::sync::{Arc, Mutex};

/// Bounds of the guard's memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReplayLimits {
    /// Most entries held exactly (about 90 bytes each, the place of first sighting included).
    pub total: usize,
    /// Most exact entries one producer may hold; its further entries go to the overflow tier.
    pub per_producer: usize,
    /// Bits of one overflow generation, as a power of two (two generations; allocated on the
    /// first overflow only).
    pub overflow_bits_log2: u32,
}

impl Default for ReplayLimits {
    /// 262,144 exact entries (about 24 MB at most), 65,536 per producer, and two 8 MiB
    /// overflow generations.
    fn default() -> Self {
        ReplayLimits {
            total: 1 << 18,
            per_producer: 1 << 16,
            overflow_bits_log2: 26,
        }
    }
}

/// Outcome of a replay check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReplayVerdict {
    /// First sighting.
    Fresh,
    /// Remembered as accepted before at another place (or by the overflow filter).
    Replayed,
    /// Remembered as accepted before at this very place: the same record handed out again.
    Redelivered,
    /// The same message is being handled right now.
    InFlight,
}

/// Where a record sits: its topic and partition (as a 64-bit digest) and its offset.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Place {
    stream: u64,
    offset: i64,
}

impl Place {
    /// The place of the record at `offset` of `partition` of `topic`.
    pub fn new(topic: &str, partition: i32, offset: i64) -> Place {
        // FNV-1a: stable across processes and cheap; a collision would need two of a
        // deployment's few partitions to share a 64-bit digest.
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        for b in topic.bytes().chain([0xff]).chain(partition.to_be_bytes()) {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
        Place { stream: h, offset }
    }
}

/// Hash functions of the overflow filter.
const OVERFLOW_HASHES: u64 = 6;

/// One overflow generation: a Bloom filter.
#[derive(Debug)]
struct Generation {
    bits: Vec<u64>,
    started: i64,
    inserted: u64,
}

impl Generation {
    fn new(bits_log2: u32, started: i64) -> Generation {
        Generation {
            bits: vec![0; 1usize << bits_log2.saturating_sub(6)],
            started,
            inserted: 0,
        }
    }

    fn positions(&self, key: u128) -> impl Iterator<Item = usize> + '_ {
        let mask = (self.bits.len() as u64 * 64) - 1;
        let (h1, h2) = (key as u64, ((key >> 64) as u64) | 1);
        (0..OVERFLOW_HASHES).map(move |i| (h1.wrapping_add(i.wrapping_mul(h2)) & mask) as usize)
    }

    fn insert(&mut self, key: u128) {
        let pos: Vec<usize> = self.positions(key).collect();
        for p in pos {
            self.bits[p / 64] |= 1 << (p % 64);
        }
        self.inserted += 1;
    }

    fn contains(&self, key: u128) -> bool {
        self.positions(key)
            .all(|p| self.bits[p / 64] & (1 << (p % 64)) != 0)
    }
}

#[derive(Debug, Default)]
struct Inner {
    /// Exact tier: entry -> the place of its first sighting (expiries are in `order`).
    exact: HashMap<u128, Option<Place>>,
    /// Exact entries in acceptance order: (entry, expiry, producer).
    order: VecDeque<(u128, i64, u64)>,
    /// Exact entries held per producer.
    per_producer: HashMap<u64, usize>,
    /// Entries whose records are being handled.
    pending: HashSet<u128>,
    /// Overflow generations: current, previous.
    overflow: Option<(Generation, Option<Generation>)>,
    /// Latest time seen (the guard's clock never goes back).
    now: i64,
}

/// Remembers accepted `(producer_id, nonce)` pairs for `window_secs`, in bounded memory.
#[derive(Debug)]
pub struct ReplayGuard {
    window_secs: i64,
    limits: ReplayLimits,
    keys: (RandomState, RandomState),
    inner: Mutex<Inner>,
}

/// A fresh entry held while its record is handled. [`Reservation::confirm`] remembers it;
/// dropping it unconfirmed releases it.
#[derive(Debug)]
#[must_use = "a reservation is released when dropped unconfirmed"]
pub struct Reservation {
    guard: Arc<ReplayGuard>,
    key: u128,
    producer: u64,
    place: Option<Place>,
    done: bool,
}

impl Reservation {
    /// Remembers the entry: its record was handled or dead-lettered.
    pub fn confirm(mut self) {
        self.done = true;
        self.guard.remember(self.key, self.producer, self.place);
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        if !self.done {
            self.guard.lock().pending.remove(&self.key);
        }
    }
}

impl ReplayGuard {
    /// A guard remembering entries for `window_secs` (at least twice the skew) within `limits`.
    pub fn new(window_secs: i64, limits: ReplayLimits) -> Self {
        ReplayGuard {
            window_secs: window_secs.max(1),
            limits: ReplayLimits {
                total: limits.total.max(1),
                per_producer: limits.per_producer.max(1),
                overflow_bits_log2: limits.overflow_bits_log2.clamp(6, 34),
            },
            keys: (RandomState::new(), RandomState::new()),
            inner: Mutex::new(Inner::default()),
        }
    }

    /// Entries held exactly.
    pub fn len(&self) -> usize {
        self.lock().exact.len()
    }

    /// True when nothing is held exactly.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Entries sent to the overflow filter in its live generations.
    pub fn overflowed(&self) -> u64 {
        match &self.lock().overflow {
            Some((cur, prev)) => cur.inserted + prev.as_ref().map_or(0, |p| p.inserted),
            None => 0,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn key(&self, producer_id: &[u8], nonce: &[u8]) -> (u128, u64) {
        let hash = |s: &RandomState, tag: u8| {
            let mut h = s.build_hasher();
            h.write_u8(tag);
            h.write(producer_id);
            h.write_u8(0xff);
            h.write(nonce);
            h.finish()
        };
        let mut p = self.keys.0.build_hasher();
        p.write(producer_id);
        (
            (u128::from(hash(&self.keys.0, 1)) << 64) | u128::from(hash(&self.keys.1, 2)),
            p.finish(),
        )
    }

    /// Checks a message found at `place` (if known) and, if fresh, reserves it until the
    /// returned reservation is confirmed or dropped.
    pub fn reserve(
        self: &Arc<Self>,
        producer_id: &[u8],
        nonce: &[u8],
        now_secs: i64,
        place: Option<Place>,
    ) -> Result<Reservation, ReplayVerdict> {
        let (key, producer) = self.key(producer_id, nonce);
        let mut inner = self.lock();
        self.advance(&mut inner, now_secs);
        if let Some(seen) = inner.exact.get(&key) {
            return Err(match (*seen, place) {
                (Some(a), Some(b)) if a == b => ReplayVerdict::Redelivered,
                _ => ReplayVerdict::Replayed,
            });
        }
        if overflow_contains(&inner, key) {
            return Err(ReplayVerdict::Replayed);
        }
        if !inner.pending.insert(key) {
            return Err(ReplayVerdict::InFlight);
        }
        Ok(Reservation {
            guard: self.clone(),
            key,
            producer,
            place,
            done: false,
        })
    }

    /// Remembers a message accepted at `place` if it is not known yet (the read-back of a
    /// partition at assignment); returns whether it was new.
    pub fn learn(
        self: &Arc<Self>,
        producer_id: &[u8],
        nonce: &[u8],
        now_secs: i64,
        place: Place,
    ) -> bool {
        match self.reserve(producer_id, nonce, now_secs, Some(place)) {
            Ok(r) => {
                r.confirm();
                true
            }
            Err(_) => false,
        }
    }

    /// Checks a message and, if fresh, remembers it at once (the unit tests' shorthand).
    #[cfg(test)]
    pub(crate) fn check_and_remember(
        self: &Arc<Self>,
        producer_id: &[u8],
        nonce: &[u8],
        now_secs: i64,
    ) -> ReplayVerdict {
        match self.reserve(producer_id, nonce, now_secs, None) {
            Ok(r) => {
                r.confirm();
                ReplayVerdict::Fresh
            }
            Err(v) => v,
        }
    }

    /// Expires what is past its window and rotates the overflow generations.
    fn advance(&self, inner: &mut Inner, now_secs: i64) {
        inner.now = inner.now.max(now_secs);
        let now = inner.now;
        // An entry is still held at exactly its expiry, so a message exactly `skew` old at
        // both ends of a 2*skew window cannot slip through.
        while let Some(&(key, expires, producer)) = inner.order.front() {
            if expires >= now {
                break;
            }
            inner.order.pop_front();
            inner.exact.remove(&key);
            release_share(inner, producer);
        }
        let window = self.window_secs;
        let bits = self.limits.overflow_bits_log2;
        if let Some((cur, prev)) = &mut inner.overflow {
            if now >= cur.started.saturating_add(window) {
                // An entry inserted into `cur` lives until the second rotation after it went
                // in: at least one whole window.
                let mut fresh = prev.take().unwrap_or_else(|| Generation::new(bits, now));
                fresh.bits.fill(0);
                fresh.started = now;
                fresh.inserted = 0;
                let old = std::mem::replace(cur, fresh);
                *prev = Some(old);
            }
        }
    }

    fn remember(&self, key: u128, producer: u64, place: Option<Place>) {
        let mut inner = self.lock();
        inner.pending.remove(&key);
        if inner.exact.contains_key(&key) {
            // Learnt from the log while this record was in hand: the first sighting stays.
            return;
        }
        let now = inner.now;
        let share = inner.per_producer.get(&producer).copied().unwrap_or(0);
        if share >= self.limits.per_producer {
            self.overflow(&mut inner, key);
            return;
        }
        while inner.exact.len() >= self.limits.total {
            let Some((old, _, p)) = inner.order.pop_front() else {
                break;
            };
            inner.exact.remove(&old);
            release_share(&mut inner, p);
            self.overflow(&mut inner, old);
        }
        let expires = now.saturating_add(self.window_secs);
        inner.exact.insert(key, place);
        inner.order.push_back((key, expires, producer));
        *inner.per_producer.entry(producer).or_default() += 1;
    }

    fn overflow(&self, inner: &mut Inner, key: u128) {
        let now = inner.now;
        let bits = self.limits.overflow_bits_log2;
        inner
            .overflow
            .get_or_insert_with(|| (Generation::new(bits, now), None))
            .0
            .insert(key);
    }
}

fn overflow_contains(inner: &Inner, key: u128) -> bool {
    match &inner.overflow {
        Some((cur, prev)) => cur.contains(key) || prev.as_ref().is_some_and(|p| p.contains(key)),
        None => false,
    }
}

fn release_share(inner: &mut Inner, producer: u64) {
    if let Some(n) = inner.per_producer.get_mut(&producer) {
        *n -= 1;
        if *n == 0 {
            inner.per_producer.remove(&producer);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn guard(window: i64, total: usize, per_producer: usize) -> Arc<ReplayGuard> {
        Arc::new(ReplayGuard::new(
            window,
            ReplayLimits {
                total,
                per_producer,
                overflow_bits_log2: 20,
            },
        ))
    }

    #[test]
    fn repeats_are_refused_until_window_passes() {
        let g = guard(600, 100, 100);
        let pid = [1u8; 32];
        let n = [2u8; 16];
        assert_eq!(g.check_and_remember(&pid, &n, 1000), ReplayVerdict::Fresh);
        assert_eq!(
            g.check_and_remember(&pid, &n, 1500),
            ReplayVerdict::Replayed
        );
        // still held at exactly accepted + window
        assert_eq!(
            g.check_and_remember(&pid, &n, 1600),
            ReplayVerdict::Replayed
        );
        assert_eq!(g.check_and_remember(&pid, &n, 1601), ReplayVerdict::Fresh);
        // other producer, same nonce: fresh
        assert_eq!(
            g.check_and_remember(&[9u8; 32], &n, 1600),
            ReplayVerdict::Fresh
        );
    }

    #[test]
    fn a_repeat_at_the_first_place_is_a_redelivery_and_anywhere_else_a_replay() {
        let g = guard(600, 100, 100);
        let (pid, n) = ([1u8; 32], [2u8; 16]);
        let here = Place::new("ai.anomalies.v1", 0, 41);
        g.reserve(&pid, &n, 100, Some(here)).unwrap().confirm();
        let again = |place| g.reserve(&pid, &n, 100, place).unwrap_err();
        assert_eq!(again(Some(here)), ReplayVerdict::Redelivered);
        assert_eq!(
            again(Some(Place::new("ai.anomalies.v1", 0, 42))),
            ReplayVerdict::Replayed
        );
        assert_eq!(
            again(Some(Place::new("ai.anomalies.v1", 1, 41))),
            ReplayVerdict::Replayed
        );
        assert_eq!(
            again(Some(Place::new("ai.evidence.v1", 0, 41))),
            ReplayVerdict::Replayed
        );
        assert_eq!(again(None), ReplayVerdict::Replayed);
        // What the read-back learns keeps its first place; a later sighting does not move it.
        let (m, first) = ([3u8; 16], Place::new("ai.anomalies.v1", 2, 7));
        assert!(g.learn(&pid, &m, 100, first));
        assert!(!g.learn(&pid, &m, 100, Place::new("ai.anomalies.v1", 2, 9)));
        assert_eq!(
            g.reserve(&pid, &m, 100, Some(first)).unwrap_err(),
            ReplayVerdict::Redelivered
        );
    }

    #[test]
    fn overflow_never_lets_a_replay_through() {
        let g = guard(600, 3, 2);
        let pid = [1u8; 32];
        for i in 0..50u8 {
            assert_eq!(
                g.check_and_remember(&pid, &[i; 16], 200),
                ReplayVerdict::Fresh
            );
        }
        assert!(g.len() <= 3);
        assert!(g.overflowed() >= 47);
        for i in 0..50u8 {
            assert_eq!(
                g.check_and_remember(&pid, &[i; 16], 700),
                ReplayVerdict::Replayed,
                "entry {i}"
            );
        }
        // After the window, all forgotten (the timestamp check refuses such old messages).
        assert_eq!(
            g.check_and_remember(&pid, &[0; 16], 1500),
            ReplayVerdict::Fresh
        );
    }

    #[test]
    fn a_reservation_is_remembered_only_when_confirmed() {
        let g = guard(600, 100, 100);
        let (pid, n) = ([1u8; 32], [2u8; 16]);
        let r = g.reserve(&pid, &n, 100, None).unwrap();
        assert_eq!(
            g.reserve(&pid, &n, 100, None).unwrap_err(),
            ReplayVerdict::InFlight
        );
        drop(r); // handler never finished: released
        let r = g.reserve(&pid, &n, 100, None).unwrap();
        r.confirm();
        assert_eq!(
            g.reserve(&pid, &n, 100, None).unwrap_err(),
            ReplayVerdict::Replayed
        );
    }

    #[test]
    fn a_flood_from_fresh_keys_with_future_timestamps_does_not_block_an_honest_producer() {
        // A tenth of the default scale: 100,000 flood entries against 26,214 exact slots and
        // two 2^23-bit generations (the same bits per flood entry as the defaults at 1M).
        let g = Arc::new(ReplayGuard::new(
            600,
            ReplayLimits {
                total: 26_214,
                per_producer: 6_553,
                overflow_bits_log2: 23,
            },
        ));
        let now = 1_000_000;
        let honest = [7u8; 32];
        let mut accepted = 0;
        for i in 0..100_000u32 {
            let mut pid = [0u8; 32];
            pid[..4].copy_from_slice(&i.to_be_bytes());
            pid[4] = 1;
            assert_eq!(
                g.check_and_remember(&pid, &i.to_be_bytes(), now),
                ReplayVerdict::Fresh
            );
            if i % 10 == 0 {
                let mut n = [0u8; 16];
                n[..4].copy_from_slice(&i.to_be_bytes());
                if g.check_and_remember(&honest, &n, now) == ReplayVerdict::Fresh {
                    accepted += 1;
                }
            }
        }
        assert_eq!(accepted, 10_000, "honest messages refused during the flood");
        // After the flood, the honest producer still gets through, and nothing replays.
        for i in 0..1000u32 {
            let mut n = [1u8; 16];
            n[..4].copy_from_slice(&i.to_be_bytes());
            assert_eq!(
                g.check_and_remember(&honest, &n, now + 5),
                ReplayVerdict::Fresh
            );
            assert_eq!(
                g.check_and_remember(&honest, &n, now + 5),
                ReplayVerdict::Replayed
            );
        }
        for i in (0..100_000u32).step_by(97) {
            let mut pid = [0u8; 32];
            pid[..4].copy_from_slice(&i.to_be_bytes());
            pid[4] = 1;
            assert_eq!(
                g.check_and_remember(&pid, &i.to_be_bytes(), now + 10),
                ReplayVerdict::Replayed
            );
        }
        assert!(g.len() <= 26_214);
    }
}
