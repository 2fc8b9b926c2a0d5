//! The producer's rate limit (`KAFKA_PRODUCER_MAX_RECORDS_PER_SEC`,
//! `KAFKA_PRODUCER_MAX_BYTES_PER_SEC`): a send over the rate waits, it is never dropped. The
//! cell arithmetic (GCRA) is `governor`'s; the waiting is a tokio sleep, so a throttled send
//! can be cancelled like any other future.

use governor::clock::{Clock, DefaultClock};
use governor::{Quota, RateLimiter};
use std::num::NonZeroU32;
use std::time::Duration;

type Limiter = RateLimiter<
    governor::state::NotKeyed,
    governor::state::InMemoryState,
    DefaultClock,
    governor::middleware::NoOpMiddleware<<DefaultClock as Clock>::Instant>,
>;

/// How much of a second's allowance may go out at once: 1/20 of it (50 ms worth), so the rate
/// holds over short windows too instead of allowing a whole second's burst up front.
const BURST_DIVISOR: u32 = 20;

/// Records-per-second and bytes-per-second caps; either may be absent.
pub(crate) struct Throttle {
    records: Option<Limiter>,
    bytes: Option<(Limiter, NonZeroU32)>,
}

fn quota(per_sec: u32) -> (Quota, NonZeroU32) {
    let per_sec = NonZeroU32::new(per_sec.max(1)).expect("at least 1");
    let burst = NonZeroU32::new((per_sec.get() / BURST_DIVISOR).max(1)).expect("at least 1");
    (Quota::per_second(per_sec).allow_burst(burst), burst)
}

impl Throttle {
    /// Caps from the settings; `None` means no limit.
    pub(crate) fn new(records_per_sec: Option<u32>, bytes_per_sec: Option<u32>) -> Throttle {
        Throttle {
            records: records_per_sec.map(|r| RateLimiter::direct(quota(r).0)),
            bytes: bytes_per_sec.map(|b| {
                let (q, burst) = quota(b);
                (RateLimiter::direct(q), burst)
            }),
        }
    }

    /// True when no cap is set (sends never wait).
    pub(crate) fn is_unlimited(&self) -> bool {
        self.records.is_none() && self.bytes.is_none()
    }

    /// Waits until one record of `size` value bytes may go; returns the time spent waiting.
    pub(crate) async fn admit(&self, size: usize) -> Duration {
        if self.is_unlimited() {
            return Duration::ZERO;
        }
        let started = tokio::time::Instant::now();
        if let Some(l) = &self.records {
            wait_for(l, NonZeroU32::MIN).await;
        }
        if let Some((l, burst)) = &self.bytes {
            // A record larger than the burst takes its bytes in burst-sized helpings.
            let mut left = size;
            while left > 0 {
                let take = left.min(burst.get() as usize);
                left -= take;
                let n = NonZeroU32::new(take as u32).expect("take > 0");
                wait_for(l, n).await;
            }
        }
        started.elapsed()
    }
}

async fn wait_for(l: &Limiter, n: NonZeroU32) {
    let clock = DefaultClock::default();
    loop {
        match l.check_n(n) {
            Ok(Ok(())) => return,
            Ok(Err(not_until)) => tokio::time::sleep(not_until.wait_time_from(clock.now())).await,
            // n never exceeds the burst (records take 1 cell, bytes at most `burst`).
            Err(_) => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_records_cap_spaces_sends_out() {
        let t = Throttle::new(Some(200), None);
        let started = std::time::Instant::now();
        for _ in 0..110 {
            t.admit(10).await;
        }
        // 10 go at once (the burst), the other 100 at 200/s: about 0.5 s.
        let took = started.elapsed().as_secs_f64();
        assert!((0.4..0.8).contains(&took), "took {took}");
    }

    #[tokio::test]
    async fn a_bytes_cap_counts_bytes_and_takes_big_records_in_helpings() {
        let t = Throttle::new(None, Some(100_000));
        let started = std::time::Instant::now();
        let mut waited = Duration::ZERO;
        for _ in 0..3 {
            waited += t.admit(20_000).await;
        }
        // 60 kB at 100 kB/s, minus one 5 kB burst: about 0.55 s.
        let took = started.elapsed().as_secs_f64();
        assert!((0.45..0.85).contains(&took), "took {took}");
        assert!(waited.as_secs_f64() > 0.4);
        assert!(Throttle::new(None, None).is_unlimited());
        assert_eq!(
            Throttle::new(None, None).admit(1 << 20).await,
            Duration::ZERO
        );
    }
}
