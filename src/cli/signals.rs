//! SIGTERM (what Kubernetes sends) and SIGINT (Ctrl-C) turned into a graceful stop, and SIGHUP
//! into a trust store reload. The
//! handlers are installed before any command runs, so a signal that arrives early is not lost
//! and never kills the process outright.

use std::sync::OnceLock;
use tokio::sync::watch;

static STOP: OnceLock<watch::Receiver<bool>> = OnceLock::new();
static RELOAD: OnceLock<watch::Receiver<u64>> = OnceLock::new();

/// Installs the handlers (once per process; needs the tokio runtime).
pub(crate) fn install() -> Result<(), String> {
    if STOP.get().is_some() {
        return Ok(());
    }
    let (tx, rx) = watch::channel(false);
    #[cfg(unix)]
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .map_err(|e| format!("cannot install the SIGTERM handler: {e}"))?;
    tokio::spawn(async move {
        #[cfg(unix)]
        let name = tokio::select! {
            _ = term.recv() => "SIGTERM",
            _ = tokio::signal::ctrl_c() => "SIGINT",
        };
        #[cfg(not(unix))]
        let name = {
            let _ = tokio::signal::ctrl_c().await;
            "Ctrl-C"
        };
        eprintln!("meshbus: {name}: stopping gracefully");
        tx.send_replace(true);
        // Keep the handlers installed: a second signal must not kill the process mid-commit.
        std::future::pending::<()>().await;
    });
    let _ = STOP.set(rx);
    #[cfg(unix)]
    {
        let mut hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
            .map_err(|e| format!("cannot install the SIGHUP handler: {e}"))?;
        let (tx, rx) = watch::channel(0u64);
        tokio::spawn(async move {
            while hup.recv().await.is_some() {
                tracing::info!("SIGHUP: reloading the trust store");
                tx.send_modify(|n| *n += 1);
            }
        });
        let _ = RELOAD.set(rx);
    }
    Ok(())
}

/// A receiver that changes on every SIGHUP (the trust store reload trigger).
pub(crate) fn reload_requests() -> Option<watch::Receiver<u64>> {
    RELOAD.get().cloned()
}

/// Completes once SIGTERM or SIGINT arrived (never, if [`install`] was not called).
pub(crate) async fn stop_requested() {
    match STOP.get() {
        Some(rx) => {
            let mut rx = rx.clone();
            let _ = rx.wait_for(|s| *s).await;
        }
        None => std::future::pending().await,
    }
}

/// True once SIGTERM or SIGINT arrived.
pub(crate) fn is_stop_requested() -> bool {
    STOP.get().is_some_and(|rx| *rx.borrow())
}
