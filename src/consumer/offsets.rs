//! The offset tracker, the **mark** stage: per partition, "handled up to" (advanced by the
//! partition workers after a record was handled or its dead letter acknowledged) and
//! "committed up to", in one map. It is the only thing that commits: on the commit interval,
//! on revocation and on shutdown.

use super::Stats;
use crate::kafka::GroupConsumer;
use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::sync::Mutex;

/// A (topic, partition) pair.
pub type TopicPartition = (String, i32);

/// Where one partition stands: the next offset to read after what was handled, and after what
/// was committed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Progress {
    /// Everything before it was handled or dead-lettered (None: nothing yet).
    pub handled: Option<i64>,
    /// Everything before it was committed (None: nothing yet by this member).
    pub committed: Option<i64>,
}

/// Handled and committed offsets (the next offset to read) per partition held.
#[derive(Debug, Default)]
pub struct OffsetTracker {
    partitions: Mutex<BTreeMap<TopicPartition, Progress>>,
}

impl OffsetTracker {
    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<TopicPartition, Progress>> {
        self.partitions.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Starts tracking `tp` (a worker started on it). Nothing is marked or committed for a
    /// partition that is not tracked.
    pub(crate) fn track(&self, tp: &TopicPartition) {
        self.lock().entry(tp.clone()).or_default();
    }

    /// Records that everything before `next` in `tp` was handled or dead-lettered. Ignored for
    /// a partition no longer tracked (a worker finishing after its partition was lost must not
    /// lead to a commit for a partition this member does not hold).
    pub(crate) fn handled(&self, tp: &TopicPartition, next: i64) {
        if let Some(p) = self.lock().get_mut(tp) {
            p.handled = Some(next);
        }
    }

    /// The offset committed for `tp` by this member (the next offset to read), if any.
    pub fn committed(&self, tp: &TopicPartition) -> Option<i64> {
        self.lock().get(tp).and_then(|p| p.committed)
    }

    /// Where every partition held stands.
    pub fn progress(&self) -> BTreeMap<TopicPartition, Progress> {
        self.lock().clone()
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
        let changed: BTreeMap<TopicPartition, i64> = self
            .lock()
            .iter()
            .filter(|(tp, _)| only.is_none_or(|o| o.contains(tp)))
            .filter_map(|(tp, p)| match p.handled {
                Some(h) if p.committed != Some(h) => Some((tp.clone(), h)),
                _ => None,
            })
            .collect();
        if changed.is_empty() {
            return;
        }
        match consumer.commit(&changed).await {
            Ok(()) => {
                stats.commits.fetch_add(1, Ordering::Relaxed);
                let mut partitions = self.lock();
                for (tp, o) in changed {
                    if let Some(p) = partitions.get_mut(&tp) {
                        p.committed = Some(o);
                    }
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "offset commit failed; records since the last commit may be redelivered")
            }
        }
    }

    /// Forgets `tps` after they left this member (their next owner starts at the commit).
    pub(crate) fn forget(&self, tps: &[TopicPartition]) {
        let mut partitions = self.lock();
        for tp in tps {
            partitions.remove(tp);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_tracked_partitions_are_marked_and_nothing_before_a_handled_record() {
        let t = OffsetTracker::default();
        let tp = ("t".to_string(), 0);
        t.handled(&tp, 5);
        assert!(
            t.progress().is_empty(),
            "an untracked partition is not marked"
        );
        t.track(&tp);
        assert_eq!(
            t.progress()[&tp],
            Progress::default(),
            "nothing to commit yet"
        );
        t.handled(&tp, 7);
        assert_eq!(t.progress()[&tp].handled, Some(7));
        t.forget(std::slice::from_ref(&tp));
        t.handled(&tp, 9); // a worker finishing after its partition left
        assert!(t.progress().is_empty());
        assert_eq!(t.committed(&tp), None);
    }
}
