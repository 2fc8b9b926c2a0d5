//! A client for toxiproxy (v2.5.0, started per cluster by `scripts/kafka toxiproxy DIR`): proxies
//! listen -> upstream on loopback, and toxics on them (latency, bandwidth, a blackhole, TCP
//! resets, slicing), added and removed while traffic flows. Its HTTP API is spoken with
//! HTTP/1.1 over a `std::net::TcpStream`, one request per connection.
#![allow(dead_code)]

use super::broker::{run_ok, script, Broker};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

/// A toxiproxy server for one cluster, killed by pid when dropped (and by its watchdog when the
/// test binary ends first).
pub struct Toxiproxy {
    dir: String,
    /// The API's loopback port.
    pub api: u16,
    /// The server's pid.
    pub pid: u32,
}

/// Which way a toxic acts: on what the client sends (`Upstream`) or on what it receives.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stream {
    /// Client -> broker.
    Upstream,
    /// Broker -> client.
    Downstream,
}

impl Stream {
    fn name(self) -> &'static str {
        match self {
            Stream::Upstream => "upstream",
            Stream::Downstream => "downstream",
        }
    }
}

/// A toxic and its attributes (toxiproxy's units).
#[derive(Clone, Copy, Debug)]
pub enum Toxic {
    /// Every chunk delayed by `ms` (+- `jitter_ms`).
    Latency { ms: u64, jitter_ms: u64 },
    /// At most `kb_per_s` kilobytes (of 1000 bytes) per second.
    Bandwidth { kb_per_s: u64 },
    /// Nothing passes; the connection is closed after `ms` (0: never, a blackhole).
    Timeout { ms: u64 },
    /// The connection is reset (RST) after `ms` (0: at once).
    ResetPeer { ms: u64 },
    /// Data cut into pieces of `average` (+- `variation`) bytes, `delay_us` apart.
    Slicer {
        average: u64,
        variation: u64,
        delay_us: u64,
    },
}

impl Toxic {
    fn kind(&self) -> &'static str {
        match self {
            Toxic::Latency { .. } => "latency",
            Toxic::Bandwidth { .. } => "bandwidth",
            Toxic::Timeout { .. } => "timeout",
            Toxic::ResetPeer { .. } => "reset_peer",
            Toxic::Slicer { .. } => "slicer",
        }
    }

    fn attributes(&self) -> serde_json::Value {
        use serde_json::json;
        match *self {
            Toxic::Latency { ms, jitter_ms } => json!({"latency": ms, "jitter": jitter_ms}),
            Toxic::Bandwidth { kb_per_s } => json!({"rate": kb_per_s}),
            Toxic::Timeout { ms } => json!({"timeout": ms}),
            Toxic::ResetPeer { ms } => json!({"timeout": ms}),
            Toxic::Slicer {
                average,
                variation,
                delay_us,
            } => json!({"average_size": average, "size_variation": variation, "delay": delay_us}),
        }
    }
}

/// One HTTP/1.1 request to the API at `port`; the status and the body.
fn http(port: u16, method: &str, path: &str, body: Option<&serde_json::Value>) -> (u16, String) {
    let body = body.map(|b| b.to_string()).unwrap_or_default();
    let mut s = TcpStream::connect(("127.0.0.1", port))
        .unwrap_or_else(|e| panic!("toxiproxy API on {port}: {e}"));
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out)
        .unwrap_or_else(|e| panic!("toxiproxy {method} {path}: {e}"));
    let status = out
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("toxiproxy {method} {path}: no status in {out:?}"));
    let body = out
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (status, body)
}

fn ok(port: u16, method: &str, path: &str, body: Option<&serde_json::Value>) -> String {
    let (status, text) = http(port, method, path, body);
    assert!(
        (200..300).contains(&status),
        "toxiproxy {method} {path}: {status} {text}"
    );
    text
}

impl Toxiproxy {
    /// Starts a server for `broker`'s cluster (`scripts/kafka toxiproxy DIR --owner PID`).
    pub fn start(broker: &Broker) -> Toxiproxy {
        let dir = broker.dir.path().to_str().unwrap().to_string();
        let owner = std::process::id().to_string();
        run_ok(
            script(&["toxiproxy", &dir, "--owner", &owner]),
            "scripts/kafka toxiproxy",
        );
        let info: serde_json::Value = serde_json::from_str(
            &std::fs::read_to_string(broker.dir.path().join("toxiproxy.json")).unwrap(),
        )
        .unwrap();
        Toxiproxy {
            dir,
            api: info["api"].as_u64().unwrap() as u16,
            pid: info["pid"].as_u64().unwrap() as u32,
        }
    }

    /// Creates proxy `name` listening on loopback port `listen` towards loopback `upstream`.
    pub fn proxy(&self, name: &str, listen: u16, upstream: u16) -> Proxy {
        let spec = serde_json::json!({
            "name": name,
            "listen": format!("127.0.0.1:{listen}"),
            "upstream": format!("127.0.0.1:{upstream}"),
            "enabled": true,
        });
        ok(self.api, "POST", "/proxies", Some(&spec));
        Proxy {
            api: self.api,
            name: name.to_string(),
        }
    }
}

impl Drop for Toxiproxy {
    fn drop(&mut self) {
        // No panic here: this also runs while a failing test unwinds.
        let _ = script(&["toxiproxy-stop", &self.dir]).status();
    }
}

/// A proxy of a [`Toxiproxy`] server.
#[derive(Clone, Debug)]
pub struct Proxy {
    api: u16,
    /// The proxy's name.
    pub name: String,
}

impl Proxy {
    /// Adds `toxic` on `stream` (every connection, open and new, until removed); its name.
    pub fn add(&self, stream: Stream, toxic: Toxic) -> String {
        let name = format!("{}_{}", toxic.kind(), stream.name());
        let spec = serde_json::json!({
            "name": name,
            "type": toxic.kind(),
            "stream": stream.name(),
            "toxicity": 1.0,
            "attributes": toxic.attributes(),
        });
        ok(
            self.api,
            "POST",
            &format!("/proxies/{}/toxics", self.name),
            Some(&spec),
        );
        name
    }

    /// Adds `toxic` both ways; its names.
    pub fn add_both(&self, toxic: Toxic) -> Vec<String> {
        vec![
            self.add(Stream::Upstream, toxic),
            self.add(Stream::Downstream, toxic),
        ]
    }

    /// Removes the toxic called `name`.
    pub fn remove(&self, name: &str) {
        ok(
            self.api,
            "DELETE",
            &format!("/proxies/{}/toxics/{name}", self.name),
            None,
        );
    }

    /// Removes every toxic of the proxy.
    pub fn clear(&self) {
        let list: serde_json::Value = serde_json::from_str(&ok(
            self.api,
            "GET",
            &format!("/proxies/{}/toxics", self.name),
            None,
        ))
        .unwrap();
        for t in list.as_array().unwrap() {
            self.remove(t["name"].as_str().unwrap());
        }
    }

    /// Enables or disables the proxy: disabled, it closes every connection and accepts none.
    pub fn set_enabled(&self, enabled: bool) {
        ok(
            self.api,
            "POST",
            &format!("/proxies/{}", self.name),
            Some(&serde_json::json!({ "enabled": enabled })),
        );
    }
}
