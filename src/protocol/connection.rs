//! One broker connection speaking kafka-protocol messages: TCP, optional TLS, SASL, version
//! negotiation, and one request at a time with the request timeout around each exchange.

use super::sasl;
use crate::config::Config;
use crate::transport::TransportError;
use bytes::BytesMut;
use kafka_protocol::messages::{
    ApiVersionsRequest, ApiVersionsResponse, RequestHeader, ResponseHeader,
};
use kafka_protocol::protocol::{Decodable, Encodable, HeaderVersion, Request, StrBytes};
use std::collections::HashMap;
use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufStream};
use tokio::sync::Mutex;

/// The largest response meshbus accepts (a fetch is done by rskafka; these are small).
const MAX_RESPONSE_BYTES: usize = 64 * 1024 * 1024;

trait Stream: AsyncRead + AsyncWrite + Send + Unpin {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin> Stream for T {}

struct Io {
    stream: BufStream<Box<dyn Stream>>,
    /// Set while a request is on the wire; still set on entry means an earlier exchange was
    /// cancelled half way and the stream is out of step.
    in_flight: bool,
}

/// A connection to one broker. Requests are serialised; clone the `Arc` to share it.
pub struct Connection {
    io: Mutex<Io>,
    versions: HashMap<i16, (i16, i16)>,
    correlation: AtomicI32,
    client_id: StrBytes,
    timeout: Duration,
    addr: String,
}

impl std::fmt::Debug for Connection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connection")
            .field("addr", &self.addr)
            .finish_non_exhaustive()
    }
}

fn protocol_error(op: &str, e: impl std::fmt::Display) -> TransportError {
    TransportError::Broker {
        detail: format!("{op}: {e}"),
        retriable: true,
    }
}

impl Connection {
    /// Connects to `addr` with the TLS and SASL settings of `config`, and learns the broker's
    /// API versions. `tls` is the rustls configuration built once by the caller.
    pub async fn connect(
        addr: &str,
        config: &Config,
        tls: Option<Arc<rustls::ClientConfig>>,
    ) -> Result<Arc<Connection>, TransportError> {
        let timeout = config.request_timeout;
        let tcp = tokio::time::timeout(timeout, tokio::net::TcpStream::connect(addr))
            .await
            .map_err(|_| TransportError::Timeout {
                op: "connect",
                after: timeout,
            })?
            .map_err(|e| protocol_error(&format!("connect {addr}"), e))?;
        tcp.set_nodelay(true).ok();
        let stream: Box<dyn Stream> = match tls {
            Some(tls) => {
                let name = crate::transport::server_name(addr)?;
                let connect = tokio_rustls::TlsConnector::from(tls).connect(name, tcp);
                let s = tokio::time::timeout(timeout, connect)
                    .await
                    .map_err(|_| TransportError::Timeout {
                        op: "tls handshake",
                        after: timeout,
                    })?
                    .map_err(|e| match crate::transport::tls_cause(&e) {
                        Some(t) => TransportError::Tls(format!("handshake with {addr}: {t}")),
                        None => protocol_error(&format!("tls {addr}"), e),
                    })?;
                Box::new(s)
            }
            None => Box::new(tcp),
        };
        let mut conn = Connection {
            io: Mutex::new(Io {
                stream: BufStream::new(stream),
                in_flight: false,
            }),
            versions: HashMap::new(),
            correlation: AtomicI32::new(1),
            client_id: StrBytes::from_string(format!("meshbus-node-{}", config.node_id)),
            timeout,
            addr: addr.to_string(),
        };
        let versions: ApiVersionsResponse =
            conn.exchange(&ApiVersionsRequest::default(), 0).await?;
        if versions.error_code != 0 {
            return Err(protocol_error("api versions", versions.error_code));
        }
        conn.versions = versions
            .api_keys
            .iter()
            .map(|k| (k.api_key, (k.min_version, k.max_version)))
            .collect();
        if let Some(s) = &config.sasl {
            sasl::authenticate(&conn, s).await?;
        }
        Ok(Arc::new(conn))
    }

    /// The broker address.
    pub fn addr(&self) -> &str {
        &self.addr
    }

    /// Sends `req` at `version` (which the broker must support) and returns its response.
    pub async fn request<R: Request>(
        &self,
        req: &R,
        version: i16,
    ) -> Result<R::Response, TransportError> {
        match self.versions.get(&R::KEY) {
            Some((min, max)) if (*min..=*max).contains(&version) => {}
            other => {
                return Err(TransportError::Broker {
                    detail: format!(
                        "broker {} does not support API {} version {version} (it offers {other:?})",
                        self.addr,
                        R::KEY
                    ),
                    retriable: false,
                })
            }
        }
        self.exchange(req, version).await
    }

    async fn exchange<R: Request>(
        &self,
        req: &R,
        version: i16,
    ) -> Result<R::Response, TransportError> {
        let correlation = self.correlation.fetch_add(1, Ordering::Relaxed);
        let mut body = BytesMut::with_capacity(256);
        let header = RequestHeader::default()
            .with_request_api_key(R::KEY)
            .with_request_api_version(version)
            .with_correlation_id(correlation)
            .with_client_id(Some(self.client_id.clone()));
        header
            .encode(&mut body, R::header_version(version))
            .and_then(|_| req.encode(&mut body, version))
            .map_err(|e| TransportError::Broker {
                detail: format!("encoding API {} v{version}: {e}", R::KEY),
                retriable: false,
            })?;
        let mut io = self.io.lock().await;
        if io.in_flight {
            return Err(protocol_error(
                "connection",
                "an earlier request was cancelled mid-exchange; reconnect",
            ));
        }
        io.in_flight = true;
        let exchange = async {
            io.stream.write_i32(body.len() as i32).await?;
            io.stream.write_all(&body).await?;
            io.stream.flush().await?;
            let len = io.stream.read_i32().await?;
            if len < 0 || len as usize > MAX_RESPONSE_BYTES {
                return Err(std::io::Error::other(format!("bad response length {len}")));
            }
            let mut buf = vec![0u8; len as usize];
            io.stream.read_exact(&mut buf).await?;
            Ok(buf)
        };
        let buf = tokio::time::timeout(self.timeout, exchange)
            .await
            .map_err(|_| TransportError::Timeout {
                op: "request",
                after: self.timeout,
            })?
            .map_err(|e| protocol_error(&format!("request to {}", self.addr), e))?;
        io.in_flight = false;
        drop(io);
        let mut buf = bytes::Bytes::from(buf);
        let header_version = R::Response::header_version(version);
        let got = ResponseHeader::decode(&mut buf, header_version)
            .map_err(|e| protocol_error("response header", e))?
            .correlation_id;
        if got != correlation {
            return Err(protocol_error(
                "response",
                format!("correlation id {got}, expected {correlation}"),
            ));
        }
        R::Response::decode(&mut buf, version)
            .map_err(|e| protocol_error(&format!("decoding API {} v{version}", R::KEY), e))
    }
}
