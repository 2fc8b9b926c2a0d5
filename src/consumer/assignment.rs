//! The partitions this member holds: one worker task per assigned partition, fed by the poll
//! loop. On revocation (awaited by the group consumer before it gives partitions up) the
//! workers stop after the record in hand, and the tracker commits what they handled, so two
//! members never handle one partition at once and no handled record is committed late.

use super::offsets::{OffsetTracker, TopicPartition};
use super::partition::{PartitionCounters, PartitionWorker};
use super::warmup::Warming;
use super::Shared;
use crate::contract::Kind;
use crate::kafka::{EventFuture, GroupConsumer, InRecord, RebalanceEvents};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicI64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock, Weak};
use tokio::sync::{mpsc, watch};

/// Queued records above which a partition is paused, and below which it resumes.
const PAUSE_ABOVE: usize = 2000;
const RESUME_BELOW: usize = 500;

struct Worker {
    /// The membership-lost count when the worker started: a later loss is its partition's.
    epoch: u64,
    records: mpsc::UnboundedSender<InRecord>,
    queued: Arc<AtomicUsize>,
    paused: bool,
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

/// The workers of the partitions held now.
pub(crate) struct Assignment {
    shared: Arc<Shared>,
    kinds: BTreeMap<String, Kind>,
    tracker: Arc<OffsetTracker>,
    workers: Mutex<BTreeMap<TopicPartition, Worker>>,
    /// Partitions stopped because the membership was lost, until assigned again: records of
    /// theirs still arriving from a poll are not handled (their next owner has them).
    lost: Mutex<std::collections::BTreeSet<TopicPartition>>,
    /// The group consumer, held weakly: it holds this assignment as its rebalance listener,
    /// and a strong reference both ways would keep both (and the handlers, and a stream's
    /// sender) alive after the consumer's run ended.
    consumer: OnceLock<Weak<GroupConsumer>>,
    lost_count: OnceLock<watch::Receiver<u64>>,
    /// Per partition, the offset after the last record this process finished there, kept
    /// for the process's life (offsets below a partition's high watermark never change).
    finished: Mutex<BTreeMap<TopicPartition, Arc<AtomicI64>>>,
    /// Workers stopped by a membership loss that may still be finishing their record in hand:
    /// a new worker of the same partition waits for them before it starts.
    stopping: Mutex<BTreeMap<TopicPartition, Vec<tokio::task::JoinHandle<()>>>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Assignment {
    pub(crate) fn new(
        shared: Arc<Shared>,
        kinds: BTreeMap<String, Kind>,
        tracker: Arc<OffsetTracker>,
    ) -> Arc<Assignment> {
        Arc::new(Assignment {
            shared,
            kinds,
            tracker,
            workers: Mutex::default(),
            lost: Mutex::default(),
            consumer: OnceLock::new(),
            lost_count: OnceLock::new(),
            finished: Mutex::default(),
            stopping: Mutex::default(),
        })
    }

    /// The group consumer, while it exists.
    fn member(&self) -> Option<Arc<GroupConsumer>> {
        self.consumer.get().and_then(Weak::upgrade)
    }

    /// The group consumer, once built (revocation commits through it).
    pub(crate) fn set_consumer(&self, c: Arc<GroupConsumer>) {
        let _ = self.lost_count.set(c.membership_lost());
        let _ = self.consumer.set(Arc::downgrade(&c));
    }

    fn epoch(&self) -> u64 {
        self.lost_count.get().map_or(0, |rx| *rx.borrow())
    }

    /// Stops, without a commit, every partition started before membership loss number
    /// `count`: the coordinator may already have given them to another member. Called the
    /// moment the loss is known, not at the next poll.
    pub(crate) fn lose_before(&self, count: u64) {
        let gone: Vec<(TopicPartition, Worker)> = {
            let mut workers = lock(&self.workers);
            let tps: Vec<TopicPartition> = workers
                .iter()
                .filter(|(_, w)| w.epoch < count)
                .map(|(tp, _)| tp.clone())
                .collect();
            tps.into_iter()
                .filter_map(|tp| workers.remove(&tp).map(|w| (tp, w)))
                .collect()
        };
        if gone.is_empty() {
            return;
        }
        self.shared.health.holding.store(false, Ordering::Relaxed);
        let tps: Vec<TopicPartition> = gone.iter().map(|(tp, _)| tp.clone()).collect();
        tracing::warn!(partitions = ?tps, "group membership lost; stopping the partitions without a commit");
        lock(&self.lost).extend(tps.iter().cloned());
        let mut stopping = lock(&self.stopping);
        for (tp, w) in gone {
            let _ = w.stop.send(true);
            let waiting = stopping.entry(tp).or_default();
            waiting.retain(|t| !t.is_finished());
            waiting.push(w.task);
        }
        drop(stopping);
        self.tracker.forget(&tps);
    }

    fn spawn(&self, tp: &TopicPartition) -> Option<Worker> {
        let kind = *self.kinds.get(&tp.0)?;
        self.tracker.track(tp);
        let (tx, rx) = mpsc::unbounded_channel();
        let (stop_tx, stop_rx) = watch::channel(false);
        let queued = Arc::new(AtomicUsize::new(0));
        let finished = lock(&self.finished).entry(tp.clone()).or_default().clone();
        let previous = lock(&self.stopping).remove(tp).unwrap_or_default();
        let task = tokio::spawn(
            PartitionWorker {
                shared: self.shared.clone(),
                tp: tp.clone(),
                kind,
                records: rx,
                queued: queued.clone(),
                stop: stop_rx,
                tracker: self.tracker.clone(),
                finished,
                warmup: self.warmup_for(kind),
                member: self.member(),
                previous,
                redelivery_logged: false,
                counters: PartitionCounters::new(&self.shared.metrics, &tp.0),
            }
            .run(),
        );
        Some(Worker {
            epoch: self.epoch(),
            records: tx,
            queued,
            paused: false,
            stop: stop_tx,
            task,
        })
    }

    /// What an `ai.*` partition's worker needs to read it back into the replay guard before
    /// handling (SPEC 3e); `None` for other kinds, or with the read-back turned off.
    fn warmup_for(&self, kind: Kind) -> Option<(Arc<GroupConsumer>, Warming)> {
        if !kind.is_ai() {
            return None;
        }
        if self.shared.config.consumer.warmup.max_records == 0 {
            tracing::warn!("KAFKA_REPLAY_WARMUP_MAX_RECORDS is 0: no read-back; replays of records handled before this assignment are not refused");
            return None;
        }
        let consumer = self.member()?;
        Some((consumer, Warming::start(&self.shared)))
    }

    /// Hands each record of one poll to its partition's worker (one lock per poll). Returns
    /// the partitions to pause because their queues are long (records already fetched still
    /// arrive, so a queue stays bounded by a fetch).
    pub(crate) fn dispatch(&self, records: Vec<InRecord>) -> Vec<TopicPartition> {
        let mut pause = Vec::new();
        let lost = lock(&self.lost).clone();
        let mut workers = lock(&self.workers);
        for r in records {
            let tp = (r.topic.clone(), r.partition);
            if lost.contains(&tp) {
                continue;
            }
            if !workers.contains_key(&tp) {
                let Some(w) = self.spawn(&tp) else { continue };
                workers.insert(tp.clone(), w);
            }
            let Some(w) = workers.get_mut(&tp) else {
                continue;
            };
            w.queued.fetch_add(1, Ordering::Relaxed);
            if w.records.send(r).is_err() {
                w.queued.fetch_sub(1, Ordering::Relaxed);
            }
            if !w.paused && w.queued.load(Ordering::Relaxed) > PAUSE_ABOVE {
                w.paused = true;
                pause.push(tp);
            }
        }
        pause
    }

    /// A partition whose worker ended while still assigned (it panicked: a bug), if any.
    /// Workers end only when stopped, so the consumer fails loudly instead of holding a
    /// partition nobody works on while its heartbeats go on.
    pub(crate) fn crashed(&self) -> Option<TopicPartition> {
        lock(&self.workers)
            .iter()
            .find(|(_, w)| w.task.is_finished())
            .map(|(tp, _)| tp.clone())
    }

    /// Paused partitions whose queues have drained, now marked resumed.
    pub(crate) fn drained(&self) -> Vec<TopicPartition> {
        let mut out = Vec::new();
        for (tp, w) in lock(&self.workers).iter_mut() {
            if w.paused && w.queued.load(Ordering::Relaxed) < RESUME_BELOW {
                w.paused = false;
                out.push(tp.clone());
            }
        }
        out
    }

    /// Stops the workers of `tps` after the record in hand and waits for them.
    async fn stop(&self, tps: &[TopicPartition]) {
        let stopped: Vec<Worker> = {
            let mut workers = lock(&self.workers);
            tps.iter().filter_map(|tp| workers.remove(tp)).collect()
        };
        for w in &stopped {
            let _ = w.stop.send(true);
        }
        for w in stopped {
            if let Err(e) = w.task.await {
                if e.is_panic() {
                    tracing::error!(error = %e, "a partition worker panicked");
                }
            }
        }
    }

    /// Every partition held now.
    pub(crate) fn held(&self) -> Vec<TopicPartition> {
        lock(&self.workers).keys().cloned().collect()
    }

    /// Stops every worker and commits what they handled (shutdown without a group leave).
    pub(crate) async fn stop_all_and_commit(&self) {
        let held = self.held();
        self.revoke(held).await;
    }

    async fn revoke(&self, tps: Vec<TopicPartition>) {
        self.shared
            .stats
            .revoked_partitions
            .fetch_add(tps.len() as u64, Ordering::Relaxed);
        self.stop(&tps).await;
        if let Some(c) = self.member() {
            self.tracker
                .commit(&c, Some(&tps), &self.shared.stats)
                .await;
        }
        self.tracker.forget(&tps);
        tracing::info!(partitions = ?tps, "partitions revoked after their handled offsets were committed (or the commit was logged as failed)");
    }
}

impl Drop for Assignment {
    fn drop(&mut self) {
        // A dropped consumer must not leave workers handling records without a member.
        for w in lock(&self.workers).values() {
            w.task.abort();
        }
        for t in lock(&self.stopping).values().flatten() {
            t.abort();
        }
    }
}

impl RebalanceEvents for Assignment {
    fn assigned(self: Arc<Self>, partitions: Vec<TopicPartition>) -> EventFuture {
        let me = self;
        Box::pin(async move {
            tracing::info!(partitions = ?partitions, "partitions assigned");
            me.shared.health.joined.store(true, Ordering::Relaxed);
            me.shared.stats.assignments.fetch_add(1, Ordering::Relaxed);
            me.shared.health.holding.store(true, Ordering::Relaxed);
            {
                let mut lost = lock(&me.lost);
                for tp in &partitions {
                    lost.remove(tp);
                }
            }
            let mut workers = lock(&me.workers);
            for tp in partitions {
                if let std::collections::btree_map::Entry::Vacant(slot) = workers.entry(tp) {
                    if let Some(w) = me.spawn(slot.key()) {
                        slot.insert(w);
                    }
                }
            }
        })
    }

    fn revoked(self: Arc<Self>, partitions: Vec<TopicPartition>) -> EventFuture {
        let me = self;
        Box::pin(async move { me.revoke(partitions).await })
    }

    fn lost(self: Arc<Self>, partitions: Vec<TopicPartition>) -> EventFuture {
        let me = self;
        Box::pin(async move {
            tracing::warn!(partitions = ?partitions, "partitions lost; stopping them without a commit");
            me.shared.health.holding.store(false, Ordering::Relaxed);
            me.stop(&partitions).await;
            me.tracker.forget(&partitions);
        })
    }
}
