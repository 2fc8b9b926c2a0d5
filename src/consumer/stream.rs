//! Verified records as a [`Stream`]: each item carries its acknowledgement. The stream is a
//! handler like any other (it runs on the same partition workers, offset tracker and replay
//! guard), so "commit only after handled or dead-lettered" holds whichever API is used:
//! - [`Received::ack`]: handled; the offset may be committed;
//! - [`Received::nack`]: dead-lettered at once with reason `handler_failed` and the given
//!   error, then committed;
//! - dropping the item unanswered: not handled; it stays uncommitted and is offered again
//!   after the retry backoff (or left to the partition's next owner if the consumer stops).
//!
//! A partition's next record is offered only once its previous one was answered, so records
//! of one partition arrive in offset order; records of different partitions interleave.

use super::handler::{typed, HandlerFuture, Nack, Verified};
use super::{Consumed, Handler};
use crate::contract::KindOf;
use futures_core::Stream;
use std::pin::Pin;
use std::task::{Context, Poll};
use tokio::sync::{mpsc, oneshot};

/// Items waiting in the stream before the partitions wait for the reader.
const BUFFERED: usize = 64;

/// What the reader said of an item.
#[derive(Debug)]
enum Verdict {
    Ack,
    Nack(String),
}

/// The reader neither acknowledged nor refused an item (dropped it), or dropped the stream:
/// the record is offered again later and is not committed meanwhile.
#[derive(Debug, thiserror::Error)]
#[error("the stream's reader dropped the record unanswered")]
pub(crate) struct Unanswered;

/// A verified record from a [`VerifiedStream`], with its acknowledgement. Read the record
/// through `Deref` (`received.message`, `received.offset`) or borrow it with
/// [`Received::record`].
#[derive(Debug)]
#[must_use = "a record neither acked nor nacked is offered again and blocks its partition's commits"]
pub struct Received<T> {
    record: Verified<T>,
    answer: oneshot::Sender<Verdict>,
}

impl<T> Received<T> {
    /// The record was handled: its offset may be committed.
    pub fn ack(self) {
        let _ = self.answer.send(Verdict::Ack);
    }

    /// The record cannot be handled: it is dead-lettered at once (reason `handler_failed`,
    /// `error` = `reason`), then its offset may be committed.
    pub fn nack(self, reason: impl Into<String>) {
        let _ = self.answer.send(Verdict::Nack(reason.into()));
    }

    /// The record, read-only.
    pub fn record(&self) -> &Verified<T> {
        &self.record
    }
}

impl<T> std::ops::Deref for Received<T> {
    type Target = Verified<T>;

    fn deref(&self) -> &Verified<T> {
        &self.record
    }
}

/// Verified records of one message type, from [`Consumer::stream`](super::Consumer::stream).
/// It ends when the consumer stops.
#[derive(Debug)]
pub struct VerifiedStream<T> {
    items: mpsc::Receiver<Received<T>>,
}

impl<T> VerifiedStream<T> {
    /// The next item, or `None` once the consumer stopped (what `StreamExt::next` does, without
    /// the extension trait).
    pub async fn next(&mut self) -> Option<Received<T>> {
        self.items.recv().await
    }
}

impl<T> Stream for VerifiedStream<T> {
    type Item = Received<T>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Received<T>>> {
        self.items.poll_recv(cx)
    }
}

/// The handler that feeds a stream: offers each record and waits for its answer.
pub(crate) struct Feed<T> {
    items: mpsc::Sender<Received<T>>,
}

/// A stream and the handler feeding it.
pub(crate) fn channel<T>() -> (Feed<T>, VerifiedStream<T>) {
    let (tx, rx) = mpsc::channel(BUFFERED);
    (Feed { items: tx }, VerifiedStream { items: rx })
}

impl<T: KindOf> Handler for Feed<T> {
    fn handle(&self, record: Consumed) -> HandlerFuture {
        let items = self.items.clone();
        Box::pin(async move {
            let record = typed::<T>(record)?;
            let (answer, verdict) = oneshot::channel();
            if items.send(Received { record, answer }).await.is_err() {
                return Err(Unanswered.into());
            }
            match verdict.await {
                Ok(Verdict::Ack) => Ok(()),
                Ok(Verdict::Nack(reason)) => Err(Nack::new(reason).into()),
                Err(_) => Err(Unanswered.into()),
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::contract::messages::AnomalyEvent;
    use crate::contract::Message;
    use std::collections::BTreeMap;

    fn anomaly(offset: i64) -> Consumed {
        Consumed::new(
            "ai.anomalies.v1",
            0,
            offset,
            None,
            BTreeMap::new(),
            Message::Anomaly(AnomalyEvent::default()),
        )
    }

    #[tokio::test]
    async fn ack_nack_and_drop_become_handled_dead_letter_and_offered_again() {
        let (feed, mut stream) = channel::<AnomalyEvent>();
        let feed = std::sync::Arc::new(feed);
        let reader = tokio::spawn(async move {
            let d = stream.next().await.unwrap();
            assert_eq!(d.offset, 1);
            d.ack();
            let d = stream.next().await.unwrap();
            d.nack("policy conflicts with the running one");
            drop(stream.next().await.unwrap());
            stream
        });
        assert!(feed.handle(anomaly(1)).await.is_ok());
        let e = feed.handle(anomaly(2)).await.unwrap_err();
        assert_eq!(
            e.downcast_ref::<Nack>().map(Nack::reason),
            Some("policy conflicts with the running one")
        );
        let e = feed.handle(anomaly(3)).await.unwrap_err();
        assert!(e.is::<Unanswered>(), "{e}");
        drop(reader.await.unwrap());
        let e = feed.handle(anomaly(4)).await.unwrap_err();
        assert!(
            e.is::<Unanswered>(),
            "a dropped stream leaves records unanswered: {e}"
        );
    }
}
