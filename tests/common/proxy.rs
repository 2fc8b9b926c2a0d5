//! A fault-injecting TCP proxy for the plaintext test listener: it forwards Kafka frames both
//! ways and, when armed, swallows the answer to one Produce request and cuts the connection,
//! the way a lost acknowledgement looks to a client; or, while `stall` is set, holds every
//! answer back with the connections open, the way a stalled broker looks.
#![allow(dead_code)]

use std::collections::HashSet;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// Counters and the fault switch, shared with the proxy's tasks.
#[derive(Default)]
pub struct ProxyState {
    /// Produce requests forwarded so far.
    pub produce_requests: AtomicUsize,
    /// Drop the answer to the Produce request with this 1-based number (0: never).
    pub drop_produce_answer: AtomicUsize,
    /// Answers dropped.
    pub dropped: AtomicUsize,
    /// While set, answers are held back (in order) and connections stay open.
    pub stall: std::sync::atomic::AtomicBool,
}

/// Runs the proxy on `listen` (the port the broker advertises) towards `upstream`.
pub async fn start(listen: u16, upstream: u16) -> Arc<ProxyState> {
    let state = Arc::new(ProxyState::default());
    let listener = TcpListener::bind(("127.0.0.1", listen)).await.unwrap();
    let s = state.clone();
    tokio::spawn(async move {
        while let Ok((client, _)) = listener.accept().await {
            let s = s.clone();
            tokio::spawn(async move {
                if let Ok(up) = TcpStream::connect(("127.0.0.1", upstream)).await {
                    relay(client, up, s).await;
                }
            });
        }
    });
    state
}

async fn read_frame(r: &mut (impl AsyncReadExt + Unpin)) -> Option<Vec<u8>> {
    let mut len = [0u8; 4];
    r.read_exact(&mut len).await.ok()?;
    let n = i32::from_be_bytes(len);
    if !(0..=64 * 1024 * 1024).contains(&n) {
        return None;
    }
    let mut body = vec![0u8; n as usize];
    r.read_exact(&mut body).await.ok()?;
    Some(body)
}

async fn write_frame(w: &mut (impl AsyncWriteExt + Unpin), body: &[u8]) -> bool {
    w.write_all(&(body.len() as i32).to_be_bytes())
        .await
        .is_ok()
        && w.write_all(body).await.is_ok()
}

async fn relay(client: TcpStream, upstream: TcpStream, state: Arc<ProxyState>) {
    let (mut cr, mut cw) = client.into_split();
    let (mut ur, mut uw) = upstream.into_split();
    // Correlation ids of Produce requests on this connection -> their 1-based number.
    let produce: Arc<Mutex<HashSet<(i32, usize)>>> = Arc::default();
    let p = produce.clone();
    let s = state.clone();
    let up = tokio::spawn(async move {
        while let Some(body) = read_frame(&mut cr).await {
            if body.len() >= 8 {
                let api_key = i16::from_be_bytes([body[0], body[1]]);
                let correlation = i32::from_be_bytes([body[4], body[5], body[6], body[7]]);
                if api_key == 0 {
                    let n = s.produce_requests.fetch_add(1, Ordering::SeqCst) + 1;
                    p.lock().unwrap().insert((correlation, n));
                }
            }
            if !write_frame(&mut uw, &body).await {
                break;
            }
        }
    });
    while let Some(body) = read_frame(&mut ur).await {
        while state.stall.load(Ordering::SeqCst) {
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        if body.len() >= 4 {
            let correlation = i32::from_be_bytes([body[0], body[1], body[2], body[3]]);
            let number = produce
                .lock()
                .unwrap()
                .iter()
                .find(|(c, _)| *c == correlation)
                .map(|(_, n)| *n);
            if let Some(n) = number {
                if n == state.drop_produce_answer.load(Ordering::SeqCst) {
                    // The broker stored the batch; the client never hears so. Cut the line.
                    state.dropped.fetch_add(1, Ordering::SeqCst);
                    up.abort();
                    return;
                }
            }
        }
        if !write_frame(&mut cw, &body).await {
            break;
        }
    }
    up.abort();
}
