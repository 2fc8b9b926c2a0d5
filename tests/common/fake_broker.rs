//! A fake Kafka broker for tests that need a peer meshbus can reach but not a real cluster: a
//! TCP server that reads request frames and answers each as a behaviour says (a body, or
//! silence), with encoders for the few non-flexible replies the tests need (ApiVersions v0,
//! Metadata v1). The hostile-broker traps and the connect-timeout tests use it.
#![allow(dead_code)]

use std::sync::Arc;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// One request as the server sees it.
pub struct Request {
    pub api_key: i16,
    pub version: i16,
    pub correlation: i32,
    /// The body after the v1 request header (client id).
    pub body: Vec<u8>,
}

/// What the server answers to a request: a body (after the correlation id), or nothing.
pub enum Reply {
    Body(Vec<u8>),
    Silence,
}

pub type Behaviour = Arc<dyn Fn(&Request, u16) -> Reply + Send + Sync>;

/// Runs a hostile broker on a free port; returns the port.
pub async fn serve(behaviour: Behaviour) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((mut sock, _)) = listener.accept().await {
            let behaviour = behaviour.clone();
            tokio::spawn(async move {
                loop {
                    let mut len = [0u8; 4];
                    if sock.read_exact(&mut len).await.is_err() {
                        return;
                    }
                    let n = i32::from_be_bytes(len).clamp(0, 1 << 20) as usize;
                    let mut frame = vec![0u8; n];
                    if sock.read_exact(&mut frame).await.is_err() || n < 10 {
                        return;
                    }
                    let client_id_len = i16::from_be_bytes([frame[8], frame[9]]).max(0) as usize;
                    let req = Request {
                        api_key: i16::from_be_bytes([frame[0], frame[1]]),
                        version: i16::from_be_bytes([frame[2], frame[3]]),
                        correlation: i32::from_be_bytes([frame[4], frame[5], frame[6], frame[7]]),
                        body: frame.get(10 + client_id_len..).unwrap_or_default().to_vec(),
                    };
                    match behaviour(&req, port) {
                        Reply::Body(b) => {
                            let mut out = Vec::with_capacity(b.len() + 8);
                            out.extend(((b.len() + 4) as i32).to_be_bytes());
                            out.extend(req.correlation.to_be_bytes());
                            out.extend(b);
                            if sock.write_all(&out).await.is_err() {
                                return;
                            }
                        }
                        Reply::Silence => {}
                    }
                }
            });
        }
    });
    port
}

// ---- encoders (non-flexible versions) -----------------------------------------------------

pub fn s(out: &mut Vec<u8>, v: &str) {
    out.extend((v.len() as i16).to_be_bytes());
    out.extend(v.as_bytes());
}

pub const API_VERSIONS: i16 = 18;
pub const METADATA: i16 = 3;
pub const PRODUCE: i16 = 0;
pub const FETCH: i16 = 1;
pub const SASL_HANDSHAKE: i16 = 17;
pub const SASL_AUTHENTICATE: i16 = 36;

/// ApiVersions: anything above v0 is refused as UNSUPPORTED_VERSION (the client then asks v0),
/// and v0 lists the versions below.
pub fn api_versions(req: &Request) -> Vec<u8> {
    api_versions_with(req, &[])
}

/// [`api_versions`] listing `extra` `(api, min, max)` too.
pub fn api_versions_with(req: &Request, extra: &[(i16, i16, i16)]) -> Vec<u8> {
    let mut apis: Vec<(i16, i16, i16)> = vec![
        (PRODUCE, 3, 3),
        (FETCH, 4, 4),
        (METADATA, 1, 1),
        (SASL_HANDSHAKE, 1, 1),
        (API_VERSIONS, 0, 0),
        (SASL_AUTHENTICATE, 1, 1),
    ];
    apis.extend_from_slice(extra);
    let mut b = Vec::new();
    b.extend((if req.version > 0 { 35i16 } else { 0 }).to_be_bytes());
    b.extend((apis.len() as i32).to_be_bytes());
    for (k, lo, hi) in apis {
        b.extend(k.to_be_bytes());
        b.extend(lo.to_be_bytes());
        b.extend(hi.to_be_bytes());
    }
    b
}

/// Metadata v1: this server as node 0 and `topics` (name, partition count) led by it.
pub fn metadata(port: u16, topics: &[(&str, i32)]) -> Vec<u8> {
    let mut b = Vec::new();
    b.extend(1i32.to_be_bytes());
    b.extend(0i32.to_be_bytes());
    s(&mut b, "127.0.0.1");
    b.extend((port as i32).to_be_bytes());
    b.extend((-1i16).to_be_bytes()); // rack: null
    b.extend(0i32.to_be_bytes()); // controller
    b.extend((topics.len() as i32).to_be_bytes());
    for (name, partitions) in topics {
        b.extend(0i16.to_be_bytes());
        s(&mut b, name);
        b.push(0); // not internal
        b.extend(partitions.to_be_bytes());
        for p in 0..*partitions {
            b.extend(0i16.to_be_bytes());
            b.extend(p.to_be_bytes());
            b.extend(0i32.to_be_bytes()); // leader
            b.extend(1i32.to_be_bytes());
            b.extend(0i32.to_be_bytes()); // replicas [0]
            b.extend(1i32.to_be_bytes());
            b.extend(0i32.to_be_bytes()); // isr [0]
        }
    }
    b
}

/// ApiVersions and Metadata (this server as node 0 leading `topics`); `None` for the rest.
pub fn standard(req: &Request, port: u16, topics: &[(&str, i32)]) -> Option<Reply> {
    match req.api_key {
        API_VERSIONS => Some(Reply::Body(api_versions(req))),
        METADATA => Some(Reply::Body(metadata(port, topics))),
        _ => None,
    }
}
