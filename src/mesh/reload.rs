//! Reloading the control trust store while running (key rotation without a restart): the
//! sources (`--trust` items: directories with an optional `validator_registry.json`, key
//! files, hex keys) are loaded again when their files change (checked every
//! [`CHECK_EVERY`]) and whenever the trigger fires (SIGHUP in the command). A source that does
//! not load keeps the last good store in force, logs the file at fault and counts it in
//! `meshbus_trust_reload_failures_total{file}`.

use crate::contract::{TrustStore, Verifier};
use crate::metrics::{FileLabel, Metrics};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};
use tokio::sync::watch;

/// How often the sources' files are checked for changes.
pub const CHECK_EVERY: Duration = Duration::from_secs(1);

/// What identifies the sources' current content: each file with its modification time and
/// size (a directory contributes its entries).
type Fingerprint = Vec<(PathBuf, Option<(SystemTime, u64)>)>;

fn stamp(p: &std::path::Path) -> Option<(SystemTime, u64)> {
    let m = std::fs::metadata(p).ok()?;
    Some((m.modified().ok()?, m.len()))
}

fn fingerprint(sources: &[String]) -> Fingerprint {
    let mut out = Vec::new();
    for s in sources {
        let p = PathBuf::from(s);
        if p.is_dir() {
            let mut entries: Vec<PathBuf> = std::fs::read_dir(&p)
                .map(|d| d.filter_map(|e| e.ok().map(|e| e.path())).collect())
                .unwrap_or_default();
            entries.sort();
            out.push((p.clone(), None));
            out.extend(entries.into_iter().map(|e| {
                let st = stamp(&e);
                (e, st)
            }));
        } else {
            let st = stamp(&p);
            out.push((p, st));
        }
    }
    out
}

/// Loads the sources into the verifier now; false (and the last good store kept) on failure.
pub(crate) fn reload(verifier: &Verifier, sources: &[String], metrics: &Metrics) -> bool {
    match TrustStore::load(sources) {
        Ok(store) => {
            let n = store.len();
            verifier.replace_trust(store);
            metrics.trust_keys.set(n as i64);
            tracing::info!(keys = n, "trust store loaded");
            true
        }
        Err(e) => {
            let file = e.culprit();
            metrics
                .trust_reload_failures
                .get_or_create(&FileLabel { file: file.clone() })
                .inc();
            tracing::error!(%file, error = %e, "trust store reload refused; the last good store stays in force");
            false
        }
    }
}

/// Watches `sources` and reloads them into `verifier` on change or on `trigger`.
pub(crate) fn spawn(
    verifier: Arc<Verifier>,
    sources: Vec<String>,
    metrics: Arc<Metrics>,
    mut trigger: Option<watch::Receiver<u64>>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut last = fingerprint(&sources);
        loop {
            let forced = tokio::select! {
                _ = tokio::time::sleep(CHECK_EVERY) => false,
                changed = async {
                    match trigger.as_mut() {
                        Some(t) => t.changed().await.is_ok(),
                        None => std::future::pending().await,
                    }
                } => {
                    if !changed {
                        trigger = None;
                    }
                    changed
                }
            };
            let now = fingerprint(&sources);
            if !forced && now == last {
                continue;
            }
            last = now;
            reload(&verifier, &sources, &metrics);
        }
    })
}
