//! One producer handle's lifecycle: sends in flight, what became of them, and the gate that
//! `close` shuts. A send is counted from the moment it is accepted to the moment it is
//! acknowledged or fails, so `flush` can wait for exactly the sends accepted before it.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use tokio::sync::Notify;

/// What became of the sends of one producer handle so far.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct SendCounts {
    /// Accepted and not yet acknowledged or failed.
    pub in_flight: u64,
    /// Acknowledged by the broker (acks=all).
    pub acknowledged: u64,
    /// Failed with an error returned to the caller (after retries, or refused by the breaker
    /// or the size limit), or abandoned by a caller that dropped the send.
    pub failed: u64,
    /// Refused because the producer was closed.
    pub refused_closed: u64,
}

#[derive(Debug, Default)]
pub(crate) struct Lifecycle {
    closed: AtomicBool,
    in_flight: AtomicU64,
    acknowledged: AtomicU64,
    failed: AtomicU64,
    refused_closed: AtomicU64,
    idle: Notify,
}

/// One accepted send; finishing (or dropping) it takes it out of the in-flight count.
pub(crate) struct InFlight {
    lifecycle: Arc<Lifecycle>,
    outcome: Option<bool>,
}

impl InFlight {
    /// Records the send's outcome.
    pub(crate) fn finish(mut self, acknowledged: bool) {
        self.outcome = Some(acknowledged);
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        let l = &self.lifecycle;
        match self.outcome {
            Some(true) => l.acknowledged.fetch_add(1, Ordering::SeqCst),
            _ => l.failed.fetch_add(1, Ordering::SeqCst),
        };
        if l.in_flight.fetch_sub(1, Ordering::SeqCst) == 1 {
            l.idle.notify_waiters();
        }
    }
}

impl Lifecycle {
    /// Accepts a send, or `None` once closed. Counting before checking the gate means a
    /// `close` that saw zero in flight cannot miss a send that got past the gate.
    pub(crate) fn enter(self: &Arc<Self>) -> Option<InFlight> {
        self.in_flight.fetch_add(1, Ordering::SeqCst);
        if self.closed.load(Ordering::SeqCst) {
            if self.in_flight.fetch_sub(1, Ordering::SeqCst) == 1 {
                self.idle.notify_waiters();
            }
            self.refused_closed.fetch_add(1, Ordering::SeqCst);
            return None;
        }
        Some(InFlight {
            lifecycle: self.clone(),
            outcome: None,
        })
    }

    /// Refuses every later send.
    pub(crate) fn close(&self) {
        self.closed.store(true, Ordering::SeqCst);
    }

    /// True once closed.
    pub(crate) fn is_closed(&self) -> bool {
        self.closed.load(Ordering::SeqCst)
    }

    /// Waits until nothing is in flight.
    pub(crate) async fn idle(&self) {
        loop {
            let notified = self.idle.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.in_flight.load(Ordering::SeqCst) == 0 {
                return;
            }
            notified.await;
        }
    }

    pub(crate) fn counts(&self) -> SendCounts {
        SendCounts {
            in_flight: self.in_flight.load(Ordering::SeqCst),
            acknowledged: self.acknowledged.load(Ordering::SeqCst),
            failed: self.failed.load(Ordering::SeqCst),
            refused_closed: self.refused_closed.load(Ordering::SeqCst),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn idle_waits_for_every_accepted_send_and_close_refuses_later_ones() {
        let l = Arc::new(Lifecycle::default());
        l.idle().await; // nothing in flight: at once
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let l2 = l.clone();
        let send = tokio::spawn(async move {
            let f = l2.enter().unwrap();
            rx.await.unwrap();
            f.finish(true);
        });
        tokio::time::sleep(Duration::from_millis(20)).await;
        l.close();
        assert!(l.enter().is_none());
        let waiting = tokio::spawn({
            let l = l.clone();
            async move { l.idle().await }
        });
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(
            !waiting.is_finished(),
            "idle returned with a send in flight"
        );
        tx.send(()).unwrap();
        send.await.unwrap();
        tokio::time::timeout(Duration::from_secs(1), waiting)
            .await
            .unwrap()
            .unwrap();
        let c = l.counts();
        assert_eq!(
            (c.in_flight, c.acknowledged, c.failed, c.refused_closed),
            (0, 1, 0, 1)
        );
        drop(l.enter()); // closed: refused again
        assert_eq!(l.counts().refused_closed, 2);
    }
}
