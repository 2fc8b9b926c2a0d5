//! The metrics address: `GET /metrics` (the registry in the Prometheus text format, encoded by
//! prometheus-client), `GET /healthz` (the process is alive and serving) and `GET /readyz`
//! (the role is connected, its groups joined and its breaker closed; see [`Readiness`]).
//!
//! A deliberately small HTTP/1.1 responder (one request per connection, `Connection: close`),
//! hardened for a port anyone on the network may reach: the request head is capped at 4 KiB and
//! must arrive within 5 s, the answer must be taken within it too, and at most
//! 64 connections are served at once (beyond that: `503` and close).

use super::Metrics;
use std::net::SocketAddr;
use std::sync::{Arc, RwLock};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Connections served at once.
pub(crate) const MAX_CONNECTIONS: usize = 64;
/// Time a client has to send its request head, and to take the answer.
pub(crate) const IO_TIMEOUT: Duration = Duration::from_secs(5);
/// Largest request head read.
const MAX_HEAD: usize = 4096;

/// One readiness check: its name and whether it passes.
pub type Check = (&'static str, bool);

/// What `/readyz` reports: ready when every check passes.
pub trait Readiness: Send + Sync + 'static {
    /// The checks, evaluated now.
    fn checks(&self) -> Vec<Check>;
}

impl<F: Fn() -> Vec<Check> + Send + Sync + 'static> Readiness for F {
    fn checks(&self) -> Vec<Check> {
        self()
    }
}

/// Where the role puts its readiness once it exists (the server starts before the role is
/// connected; until then `/readyz` answers 503 `starting`).
#[derive(Default)]
pub struct ReadySlot(RwLock<Option<Arc<dyn Readiness>>>);

impl std::fmt::Debug for ReadySlot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ReadySlot")
    }
}

impl ReadySlot {
    /// Installs the role's readiness.
    pub fn set(&self, r: Arc<dyn Readiness>) {
        *self.0.write().unwrap_or_else(|p| p.into_inner()) = Some(r);
    }

    /// The checks now (`starting` fails until a readiness is set).
    pub fn checks(&self) -> Vec<Check> {
        match &*self.0.read().unwrap_or_else(|p| p.into_inner()) {
            Some(r) => r.checks(),
            None => vec![("starting", false)],
        }
    }
}

/// Binds `addr` and serves in the background; returns the bound address.
pub async fn serve(
    addr: SocketAddr,
    metrics: Arc<Metrics>,
    ready: Arc<ReadySlot>,
) -> std::io::Result<SocketAddr> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let bound = listener.local_addr()?;
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    tokio::spawn(async move {
        loop {
            let Ok((mut sock, _)) = listener.accept().await else {
                // Out of descriptors and the like: do not spin.
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            };
            let Ok(permit) = slots.clone().try_acquire_owned() else {
                tokio::spawn(async move {
                    let busy = response("503 Service Unavailable", "text/plain", "busy\n");
                    let _ = tokio::time::timeout(Duration::from_millis(500), async {
                        let _ = sock.write_all(&busy).await;
                        let _ = sock.shutdown().await;
                        // Take the request off the wire so closing does not reset the answer.
                        let mut sink = [0u8; 512];
                        while matches!(sock.read(&mut sink).await, Ok(n) if n > 0) {}
                    })
                    .await;
                });
                continue;
            };
            let (metrics, ready) = (metrics.clone(), ready.clone());
            tokio::spawn(async move {
                let _permit = permit;
                let _ =
                    tokio::time::timeout(IO_TIMEOUT * 2, answer(&mut sock, &metrics, &ready)).await;
            });
        }
    });
    Ok(bound)
}

async fn read_head(sock: &mut TcpStream) -> Option<String> {
    let mut buf = vec![0u8; MAX_HEAD];
    let mut n = 0;
    let read = async {
        while n < buf.len() {
            match sock.read(&mut buf[n..]).await {
                Ok(0) | Err(_) => return false,
                Ok(m) => n += m,
            }
            if buf[..n].windows(4).any(|w| w == b"\r\n\r\n") {
                return true;
            }
        }
        true
    };
    match tokio::time::timeout(IO_TIMEOUT, read).await {
        Ok(true) => Some(String::from_utf8_lossy(&buf[..n]).into_owned()),
        _ => None,
    }
}

async fn answer(sock: &mut TcpStream, metrics: &Metrics, ready: &ReadySlot) {
    let Some(head) = read_head(sock).await else {
        return;
    };
    let path = head.split_whitespace().nth(1).unwrap_or("");
    let bytes = if !head.starts_with("GET ") {
        response("405 Method Not Allowed", "text/plain", "")
    } else {
        match path {
            "/metrics" => response(
                "200 OK",
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
                &metrics.encode(),
            ),
            "/healthz" => response("200 OK", "text/plain", "ok\n"),
            "/readyz" => {
                let checks = ready.checks();
                let ok = checks.iter().all(|(_, pass)| *pass);
                let body: String = checks
                    .iter()
                    .map(|(name, pass)| {
                        format!("{name} {}\n", if *pass { "ok" } else { "failing" })
                    })
                    .collect();
                let status = if ok {
                    "200 OK"
                } else {
                    "503 Service Unavailable"
                };
                response(status, "text/plain", &body)
            }
            _ => response("404 Not Found", "text/plain", ""),
        }
    };
    let _ = tokio::time::timeout(IO_TIMEOUT, async {
        let _ = sock.write_all(&bytes).await;
        let _ = sock.shutdown().await;
    })
    .await;
}

fn response(status: &str, content_type: &str, body: &str) -> Vec<u8> {
    format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

/// `GET path` on `addr`: the status code and the body (for the demo and tests).
pub async fn get(addr: SocketAddr, path: &str) -> std::io::Result<(u16, String)> {
    let mut s = TcpStream::connect(addr).await?;
    s.write_all(
        format!("GET {path} HTTP/1.1\r\nHost: meshbus\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .await?;
    let mut out = String::new();
    s.read_to_string(&mut out).await?;
    let code = out
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    Ok((
        code,
        out.split_once("\r\n\r\n")
            .map(|(_, b)| b.to_string())
            .unwrap_or_default(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn endpoints_answer_and_readiness_follows_its_checks() {
        let slot = Arc::new(ReadySlot::default());
        let addr = serve("127.0.0.1:0".parse().unwrap(), Metrics::new(), slot.clone())
            .await
            .unwrap();
        let (code, body) = get(addr, "/metrics").await.unwrap();
        assert_eq!(code, 200);
        assert!(body.contains("kafka_circuit_breaker_state"), "{body}");
        assert_eq!(get(addr, "/healthz").await.unwrap(), (200, "ok\n".into()));
        assert_eq!(
            get(addr, "/readyz").await.unwrap(),
            (503, "starting failing\n".into())
        );
        let flag = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let f = flag.clone();
        slot.set(Arc::new(move || {
            vec![
                ("connected", true),
                (
                    "breaker_closed",
                    f.load(std::sync::atomic::Ordering::SeqCst),
                ),
            ]
        }));
        let (code, body) = get(addr, "/readyz").await.unwrap();
        assert_eq!(
            (code, body.as_str()),
            (503, "connected ok\nbreaker_closed failing\n")
        );
        flag.store(true, std::sync::atomic::Ordering::SeqCst);
        assert_eq!(get(addr, "/readyz").await.unwrap().0, 200);
        assert_eq!(get(addr, "/nope").await.unwrap().0, 404);
    }

    #[tokio::test]
    async fn silent_clients_are_cut_off_and_cannot_take_every_slot_for_long() {
        let addr = serve(
            "127.0.0.1:0".parse().unwrap(),
            Metrics::new(),
            Arc::default(),
        )
        .await
        .unwrap();
        // Fill every slot with connections that never send a request.
        let mut idle = Vec::new();
        for _ in 0..MAX_CONNECTIONS {
            idle.push(TcpStream::connect(addr).await.unwrap());
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
        // One more is turned away at once instead of queueing.
        let (code, _) = get(addr, "/metrics").await.unwrap();
        assert_eq!(code, 503);
        // The silent ones are closed after the read timeout, freeing the slots.
        let started = std::time::Instant::now();
        let mut buf = [0u8; 1];
        let n = tokio::time::timeout(IO_TIMEOUT * 2, idle[0].read(&mut buf))
            .await
            .expect("closed by the server")
            .unwrap_or(0);
        assert_eq!(n, 0);
        assert!(started.elapsed() <= IO_TIMEOUT + Duration::from_secs(1));
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert_eq!(get(addr, "/metrics").await.unwrap().0, 200);
        // A request head larger than the cap is not read without bound.
        let mut big = TcpStream::connect(addr).await.unwrap();
        let _ = big.write_all(&vec![b'a'; 64 * 1024]).await;
        let mut out = Vec::new();
        let _ = tokio::time::timeout(IO_TIMEOUT * 2, big.read_to_end(&mut out)).await;
        assert!(
            out.starts_with(b"HTTP/1.1 405") || out.is_empty(),
            "{}",
            String::from_utf8_lossy(&out)
        );
    }
}
