//! Reloading trust material while running (key rotation without a restart): the control trust
//! store's sources (`--trust` items: directories with an optional `validator_registry.json`,
//! key files, hex keys) and the `ai.policy.v1` allowlist file (`AI_POLICY_ALLOWED_PUBKEYS_FILE`)
//! are loaded again when their files change (checked every [`CHECK_EVERY`]) and whenever the
//! trigger fires (SIGHUP in the command). A source that does not load keeps the last good
//! store or list in force, logs the file at fault and counts it in
//! `meshbus_trust_reload_failures_total{file}`.

use crate::contract::{TrustStore, Verifier};
use crate::metrics::{FileLabel, Metrics};
use std::path::PathBuf;
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

fn refused(metrics: &Metrics, file: String, error: &dyn std::fmt::Display, what: &str) {
    metrics
        .trust_reload_failures
        .get_or_create(&FileLabel { file: file.clone() })
        .inc();
    tracing::error!(%file, error = %error, "{what} reload refused; the last good one stays in force");
}

/// Loads the allowlist file into the verifier now; false (the last good list kept) on failure.
pub(crate) fn reload_allowlist(
    verifier: &Verifier,
    path: &std::path::Path,
    metrics: &Metrics,
) -> bool {
    match crate::contract::trust::load_allowlist(path) {
        Ok(keys) => {
            tracing::info!(keys = keys.len(), file = %path.display(), "policy allowlist loaded");
            metrics.policy_allowlist_keys.set(keys.len() as i64);
            verifier.replace_policy_allowlist(Some(keys));
            true
        }
        Err(e) => {
            refused(metrics, e.culprit(), &e, "policy allowlist");
            false
        }
    }
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
            refused(metrics, e.culprit(), &e, "trust store");
            false
        }
    }
}

/// Watches the files of `sources` and runs `reload` when they change or on `trigger`.
pub(crate) fn spawn(
    sources: Vec<String>,
    mut trigger: Option<watch::Receiver<u64>>,
    reload: impl Fn() + Send + 'static,
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
            reload();
        }
    })
}
