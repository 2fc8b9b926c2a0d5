//! Nonces of SPEC 3e: `timestamp_ms` u64 BE || `instance_id` u32 BE || `counter` u32 BE.

use std::sync::Mutex;

/// Generates unique nonces for one producer instance; safe to share across threads and tasks.
///
/// The counter resets when the millisecond changes; a clock that steps back is clamped to the
/// last millisecond used; a counter wrap advances the millisecond.
#[derive(Debug)]
pub struct NonceGenerator {
    instance_id: u32,
    state: Mutex<NonceState>,
}

#[derive(Debug, Default)]
struct NonceState {
    last_ms: u64,
    counter: u32,
}

impl NonceGenerator {
    /// A generator for `instance_id` (the node id).
    pub fn new(instance_id: u32) -> Self {
        NonceGenerator {
            instance_id,
            state: Mutex::new(NonceState::default()),
        }
    }

    /// The instance id written into every nonce.
    pub fn instance_id(&self) -> u32 {
        self.instance_id
    }

    /// The next nonce, given the current time in Unix milliseconds.
    pub fn next_at(&self, now_ms: i64) -> [u8; 16] {
        let now = u64::try_from(now_ms).unwrap_or(0);
        let (ms, counter) = {
            let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
            if now > st.last_ms {
                st.last_ms = now;
                st.counter = 0;
            } else if st.counter == u32::MAX {
                st.last_ms += 1;
                st.counter = 0;
            } else {
                st.counter += 1;
            }
            (st.last_ms, st.counter)
        };
        let mut out = [0u8; 16];
        out[..8].copy_from_slice(&ms.to_be_bytes());
        out[8..12].copy_from_slice(&self.instance_id.to_be_bytes());
        out[12..].copy_from_slice(&counter.to_be_bytes());
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_and_counter_reset() {
        let g = NonceGenerator::new(7);
        let a = g.next_at(1000);
        assert_eq!(&a[..8], &1000u64.to_be_bytes());
        assert_eq!(&a[8..12], &7u32.to_be_bytes());
        assert_eq!(&a[12..], &0u32.to_be_bytes());
        let b = g.next_at(1000);
        assert_eq!(&b[12..], &1u32.to_be_bytes());
        let c = g.next_at(1001);
        assert_eq!(&c[..8], &1001u64.to_be_bytes());
        assert_eq!(&c[12..], &0u32.to_be_bytes());
    }

    #[test]
    fn clock_step_back_is_clamped() {
        let g = NonceGenerator::new(1);
        let a = g.next_at(5000);
        let b = g.next_at(4000);
        assert_eq!(&b[..8], &5000u64.to_be_bytes());
        assert!(b > a);
    }

    #[test]
    fn counter_wrap_advances_millisecond() {
        let g = NonceGenerator::new(1);
        g.next_at(10);
        g.state.lock().unwrap().counter = u32::MAX;
        let n = g.next_at(10);
        assert_eq!(&n[..8], &11u64.to_be_bytes());
        assert_eq!(&n[12..], &0u32.to_be_bytes());
    }

    #[test]
    fn unique_across_threads() {
        let g = std::sync::Arc::new(NonceGenerator::new(3));
        let handles: Vec<_> = (0..4)
            .map(|_| {
                let g = g.clone();
                std::thread::spawn(move || (0..10_000).map(|_| g.next_at(42)).collect::<Vec<_>>())
            })
            .collect();
        let mut all = std::collections::HashSet::new();
        for h in handles {
            for n in h.join().unwrap() {
                assert!(all.insert(n), "duplicate nonce");
            }
        }
        assert_eq!(all.len(), 40_000);
    }
}
