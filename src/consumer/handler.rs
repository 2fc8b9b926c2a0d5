//! What a handler receives ([`Verified`]), what it returns ([`HandlerResult`]), and the two
//! shapes of handler: untyped, for one [`Kind`] and the whole [`Message`], and typed, for one
//! message type whose kind follows from the type ([`KindOf`]).

use crate::contract::{Kind, KindOf, Message};
use std::collections::BTreeMap;
use std::future::Future;
use std::marker::PhantomData;
use std::pin::Pin;

/// A verified record: where it was read and the message it holds. Handlers and the stream
/// receive one; `M` is a message type of one kind ([`KindOf`]) or, for an untyped handler,
/// the whole [`Message`] ([`Consumed`]).
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct Verified<M = Message> {
    /// Topic.
    pub topic: String,
    /// Partition.
    pub partition: i32,
    /// Offset.
    pub offset: i64,
    /// Record key.
    pub key: Option<Vec<u8>>,
    /// Record headers.
    pub headers: BTreeMap<String, Vec<u8>>,
    /// The verified message.
    pub message: M,
}

/// A verified record of any kind, as an untyped handler receives it.
pub type Consumed = Verified<Message>;

impl<M> Verified<M> {
    /// The same record with its message changed by `f`, or `f`'s error.
    pub(crate) fn try_map<N, E>(self, f: impl FnOnce(M) -> Result<N, E>) -> Result<Verified<N>, E> {
        Ok(Verified {
            topic: self.topic,
            partition: self.partition,
            offset: self.offset,
            key: self.key,
            headers: self.headers,
            message: f(self.message)?,
        })
    }
}

impl Consumed {
    /// A record as the consumer hands it out (for tests of handlers, and the consumer).
    pub fn new(
        topic: impl Into<String>,
        partition: i32,
        offset: i64,
        key: Option<Vec<u8>>,
        headers: BTreeMap<String, Vec<u8>>,
        message: Message,
    ) -> Consumed {
        Verified {
            topic: topic.into(),
            partition,
            offset,
            key,
            headers,
            message,
        }
    }
}

/// Why a handler failed: any error. It is retried (`KAFKA_CONSUMER_RETRY_MAX`), then the record
/// is dead-lettered with reason `handler_failed` and this error, its sources joined by `: `,
/// in the `error` header and the logs. A [`Nack`] skips the retries.
pub type HandlerError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// What a handler returns.
pub type HandlerResult = Result<(), HandlerError>;

/// A boxed handler future.
pub type HandlerFuture = Pin<Box<dyn Future<Output = HandlerResult> + Send + 'static>>;

/// A handler error that is final: the record is dead-lettered at once (reason
/// `handler_failed`, this reason as its `error`), without the retries. What a stream item's
/// [`Received::nack`](super::Received::nack) sends.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{reason}")]
pub struct Nack {
    reason: String,
}

impl Nack {
    /// A final refusal for `reason`.
    pub fn new(reason: impl Into<String>) -> Nack {
        Nack {
            reason: reason.into(),
        }
    }

    /// Why the record was refused.
    pub fn reason(&self) -> &str {
        &self.reason
    }
}

/// An error and its sources, joined by `: ` (the DLQ `error` header and the logs).
pub(crate) fn describe(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let text = s.to_string();
        if !out.ends_with(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        source = s.source();
    }
    out
}

/// Something that handles verified records of one kind. Closures
/// `Fn(Consumed) -> impl Future<Output = HandlerResult>` are handlers; for one message type,
/// [`Consumer::on`](super::Consumer::on) takes `Fn(Verified<T>) -> ...`.
pub trait Handler: Send + Sync + 'static {
    /// Handles one record. Must tolerate redelivery (delivery is at least once).
    fn handle(&self, record: Consumed) -> HandlerFuture;
}

impl<F, Fut> Handler for F
where
    F: Fn(Consumed) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = HandlerResult> + Send + 'static,
{
    fn handle(&self, record: Consumed) -> HandlerFuture {
        Box::pin(self(record))
    }
}

/// Runs `handler` on `record` in the caller's task (no task per call), a panic in it, in the
/// call or in its future, (with panic = "unwind") turned into a handler error naming it.
pub(crate) async fn call(handler: &dyn Handler, record: Consumed) -> HandlerResult {
    use std::panic::{catch_unwind, AssertUnwindSafe};
    let future = match catch_unwind(AssertUnwindSafe(|| handler.handle(record))) {
        Ok(future) => future,
        Err(payload) => return Err(panicked(payload)),
    };
    CatchUnwind(future).await
}

/// A handler future whose panics become its error.
struct CatchUnwind(HandlerFuture);

impl Future for CatchUnwind {
    type Output = HandlerResult;

    fn poll(
        mut self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<HandlerResult> {
        let future = &mut self.0;
        match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| future.as_mut().poll(cx))) {
            Ok(poll) => poll,
            Err(payload) => std::task::Poll::Ready(Err(panicked(payload))),
        }
    }
}

/// The handler error of a panic, with its message where it has one.
fn panicked(payload: Box<dyn std::any::Any + Send>) -> HandlerError {
    let message = payload
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a non-string payload".into());
    format!("handler panicked: {message}").into()
}

/// A record of another kind reached a typed handler (the consumer routes by kind, so this is
/// a bug; it is a handler failure, never a panic).
#[derive(Debug, thiserror::Error)]
#[error("a {got} record reached the handler of {expected} records")]
pub(crate) struct WrongKind {
    expected: Kind,
    got: Kind,
}

/// The record as a `Verified<T>`, or why it is of another kind.
pub(crate) fn typed<T: KindOf>(record: Consumed) -> Result<Verified<T>, WrongKind> {
    record.try_map(T::from_message).map_err(|other| WrongKind {
        expected: T::KIND,
        got: other.kind(),
    })
}

/// A typed handler: `f` takes `Verified<T>`.
pub(crate) struct Typed<T, F> {
    f: F,
    _type: PhantomData<fn(T)>,
}

impl<T, F> Typed<T, F> {
    pub(crate) fn new(f: F) -> Self {
        Typed {
            f,
            _type: PhantomData,
        }
    }
}

impl<T, F, Fut> Handler for Typed<T, F>
where
    T: KindOf,
    F: Fn(Verified<T>) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = HandlerResult> + Send + 'static,
{
    fn handle(&self, record: Consumed) -> HandlerFuture {
        match typed::<T>(record) {
            Ok(typed) => Box::pin((self.f)(typed)),
            Err(e) => Box::pin(std::future::ready(Err(e.into()))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::contract::messages::{AnomalyEvent, CommitEvent};

    fn record(message: Message) -> Consumed {
        Consumed::new("t", 0, 7, None, BTreeMap::new(), message)
    }

    #[tokio::test]
    async fn a_typed_handler_gets_its_type_and_refuses_another_kind_without_panicking() {
        let h = Typed::new(|r: Verified<AnomalyEvent>| async move {
            assert_eq!(r.offset, 7);
            if r.message.id == "a-1" {
                Ok(())
            } else {
                Err(Nack::new("unexpected id").into())
            }
        });
        let a = AnomalyEvent {
            id: "a-1".into(),
            ..Default::default()
        };
        assert!(h.handle(record(Message::Anomaly(a))).await.is_ok());
        let e = h
            .handle(record(Message::Commit(CommitEvent::default())))
            .await
            .unwrap_err();
        assert_eq!(
            e.to_string(),
            "a commit record reached the handler of anomaly records"
        );
    }

    #[test]
    fn a_described_error_carries_its_sources_once() {
        #[derive(Debug, thiserror::Error)]
        #[error("applying the policy")]
        struct Outer(#[source] std::io::Error);
        let e = Outer(std::io::Error::other("disk full"));
        assert_eq!(describe(&e), "applying the policy: disk full");
        let plain = std::io::Error::other("x");
        assert_eq!(describe(&plain), "x");
    }
}
