//! SASL on a kafka-protocol connection: SaslHandshake (v1) then SaslAuthenticate (v1) steps
//! driven by rsasl (SCRAM-SHA-512/256, PLAIN). The password goes only to rsasl.

use super::connection::Connection;
use crate::config::Sasl;
use crate::transport::TransportError;
use kafka_protocol::messages::{SaslAuthenticateRequest, SaslHandshakeRequest};
use kafka_protocol::protocol::StrBytes;
use rsasl::prelude::{Mechname, SASLClient, SASLConfig};

/// Authenticates `conn` with the configured mechanism and credentials.
pub(super) async fn authenticate(conn: &Connection, sasl: &Sasl) -> Result<(), TransportError> {
    let mechanism = sasl.mechanism.name();
    let handshake = conn
        .request(
            &SaslHandshakeRequest::default().with_mechanism(StrBytes::from_static_str(mechanism)),
            1,
        )
        .await?;
    if handshake.error_code != 0 {
        let offered: Vec<&str> = handshake.mechanisms.iter().map(|m| m.as_str()).collect();
        return Err(TransportError::Auth(format!(
            "broker refused mechanism {mechanism} (offers {offered:?})"
        )));
    }
    let config = SASLConfig::with_credentials(
        None,
        sasl.username.clone(),
        sasl.password.expose().to_string(),
    )
    .map_err(|e| TransportError::Auth(format!("SASL set-up: {e}")))?;
    let name = Mechname::parse(mechanism.as_bytes())
        .map_err(|e| TransportError::Auth(format!("mechanism {mechanism}: {e}")))?;
    let mut session = SASLClient::new(config)
        .start_suggested(&[name])
        .map_err(|e| TransportError::Auth(format!("mechanism {mechanism}: {e}")))?;
    let mut received: Option<Vec<u8>> = None;
    loop {
        let mut out = Vec::new();
        let state = session
            .step(received.as_deref(), &mut out)
            .map_err(|e| TransportError::Auth(format!("{mechanism}: {e}")))?;
        if state.has_sent_message() {
            let resp = conn
                .request(
                    &SaslAuthenticateRequest::default().with_auth_bytes(out.into()),
                    1,
                )
                .await?;
            if resp.error_code != 0 {
                let msg = resp
                    .error_message
                    .as_ref()
                    .map(|m| m.to_string())
                    .unwrap_or_else(|| format!("error code {}", resp.error_code));
                return Err(TransportError::Auth(format!("{mechanism}: {msg}")));
            }
            received = Some(resp.auth_bytes.to_vec());
        }
        if state.is_finished() {
            return Ok(());
        }
    }
}
