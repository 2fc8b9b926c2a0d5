//! The offset tracker: per partition, "handled up to" (advanced by the partition workers after
//! a record was handled or its dead letter acknowledged) and "committed up to". It is the only
//! thing that commits: on the commit interval, on revocation and on shutdown.

use super::Stats;
use crate::kafka::GroupConsumer;
use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};

/// A (topic, partition) pair.
pub type TopicPartition = (String, i32);

/// Handled and committed offsets (the next offset to read) per partition.
#[derive(Debug, Default)]
pub struct OffsetTracker {
    handled: Mutex<BTreeMap<TopicPartition, i64>>,
    committed: Arc<Mutex<BTreeMap<TopicPartition, i64>>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl OffsetTracker {
    /// Records that everything before `next` in `tp` was handled or dead-lettered.
    pub fn handled(&self, tp: &TopicPartition, next: i64) {
        lock(&self.handled).insert(tp.clone(), next);
    }

    /// The committed view, shared with callers of `Consumer::committed_offsets`.
    pub fn committed_view(&self) -> Arc<Mutex<BTreeMap<TopicPartition, i64>>> {
        self.committed.clone()
    }

    /// Commits the handled offsets of `only` (or of every partition when `None`) that moved
    /// since their last commit. A failed commit is logged: the records since the last commit
    /// are delivered again (at least once), never skipped.
    pub async fn commit(
        &self,
        consumer: &GroupConsumer,
        only: Option<&[TopicPartition]>,
        stats: &Stats,
    ) {
        let changed: BTreeMap<_, _> = {
            let handled = lock(&self.handled);
            let done = lock(&self.committed);
            handled
                .iter()
                .filter(|(tp, _)| only.is_none_or(|o| o.contains(tp)))
                .filter(|(tp, o)| done.get(*tp) != Some(*o))
                .map(|(tp, o)| (tp.clone(), *o))
                .collect()
        };
        if changed.is_empty() {
            return;
        }
        match consumer.commit(&changed).await {
            Ok(()) => {
                stats.commits.fetch_add(1, Ordering::Relaxed);
                lock(&self.committed).extend(changed);
            }
            Err(e) => {
                tracing::warn!(error = %e, "offset commit failed; records since the last commit may be redelivered")
            }
        }
    }

    /// Forgets `tps` after they left this member (their next owner starts at the commit).
    pub fn forget(&self, tps: &[TopicPartition]) {
        let mut h = lock(&self.handled);
        for tp in tps {
            h.remove(tp);
        }
    }
}
