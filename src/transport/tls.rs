//! rustls client configuration (ring provider) from PEM files, and a handshake pre-flight.

use super::TransportError;
use crate::config::Tls;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use std::sync::Arc;
use std::time::Duration;

fn read_certs(path: &std::path::Path) -> Result<Vec<CertificateDer<'static>>, TransportError> {
    let certs: Vec<_> = CertificateDer::pem_file_iter(path)
        .map_err(|e| TransportError::Tls(format!("cannot read {}: {e}", path.display())))?
        .collect::<Result<_, _>>()
        .map_err(|e| TransportError::Tls(format!("invalid PEM in {}: {e}", path.display())))?;
    if certs.is_empty() {
        return Err(TransportError::Tls(format!(
            "no certificate in {}",
            path.display()
        )));
    }
    Ok(certs)
}

/// Builds the rustls client configuration: trust exactly the CA file; present a client
/// certificate when one is configured (mTLS).
pub fn client_config(tls: &Tls) -> Result<rustls::ClientConfig, TransportError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    let ca = tls
        .ca_cert
        .as_ref()
        .ok_or_else(|| TransportError::Tls("KAFKA_CA_CERT is required with TLS".into()))?;
    for c in read_certs(ca)? {
        roots.add(c).map_err(|e| {
            TransportError::Tls(format!("bad CA certificate in {}: {e}", ca.display()))
        })?;
    }
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| TransportError::Tls(e.to_string()))?
        .with_root_certificates(roots);
    match (&tls.client_cert, &tls.client_key) {
        (Some(cert), Some(key)) => {
            let chain = read_certs(cert)?;
            let key = PrivateKeyDer::from_pem_file(key).map_err(|e| {
                TransportError::Tls(format!("cannot read client key {}: {e}", key.display()))
            })?;
            builder
                .with_client_auth_cert(chain, key)
                .map_err(|e| TransportError::Tls(format!("client certificate: {e}")))
        }
        _ => Ok(builder.with_no_client_auth()),
    }
}

/// The TLS server name of a `host:port` broker address (IPv6 brackets removed).
pub(crate) fn server_name(addr: &str) -> Result<ServerName<'static>, TransportError> {
    let host = addr
        .rsplit_once(':')
        .map(|(h, _)| h)
        .unwrap_or(addr)
        .trim_matches(['[', ']']);
    ServerName::try_from(host.to_string())
        .map_err(|e| TransportError::Tls(format!("bad broker host name {host}: {e}")))
}

/// Completes one TLS handshake with the first reachable bootstrap broker, so certificate
/// problems surface immediately and precisely.
pub(crate) async fn preflight(
    brokers: &[String],
    config: Arc<rustls::ClientConfig>,
    timeout: Duration,
) -> Result<(), TransportError> {
    let mut last = None;
    for b in brokers {
        let name = server_name(b)?;
        let attempt = async {
            let tcp = tokio::net::TcpStream::connect(b.as_str()).await?;
            tokio_rustls::TlsConnector::from(config.clone())
                .connect(name, tcp)
                .await
        };
        match tokio::time::timeout(timeout, attempt).await {
            Ok(Ok(_)) => return Ok(()),
            Ok(Err(e)) => {
                if let Some(t) = super::error::tls_cause(&e) {
                    return Err(TransportError::Tls(format!("handshake with {b}: {t}")));
                }
                last = Some(TransportError::Broker {
                    detail: format!("connect {b}: {e}"),
                    retriable: true,
                });
            }
            Err(_) => {
                last = Some(TransportError::Timeout {
                    op: "connect",
                    after: timeout,
                })
            }
        }
    }
    Err(last.unwrap_or_else(|| TransportError::Broker {
        detail: "no broker given".into(),
        retriable: false,
    }))
}
