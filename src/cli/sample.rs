//! Example messages of every kind with a payload of a chosen size, for `meshbus produce
//! --sample`, the demo, the benchmarks and the tests (which include this file; it is not
//! library API). Unsigned: pass them through a `Signer`. The messages themselves are the
//! `sample` entries of the per-kind table (`contract/kinds.rs`): this module expands them into
//! one function per kind (`anomaly(n, size)`, `commit(n, size)`, ...) and [`message`], and the
//! rows' `summary` entries into [`summary`], the line `meshbus consume` prints.
#![allow(dead_code)]

pub use meshbus::contract::sha256;
use meshbus::contract::*;

macro_rules! samples {
    ( $(
        $(#[$doc:meta])*
        $variant:ident($ty:ident) $snake:ident {
            sample: |$n:ident, $size:ident| $body:block,
            summary: |$m:ident| $summary:expr,
            $($rest:tt)*
        }
    ),* $(,)? ) => {
        $(
            #[doc = concat!("A sample `", stringify!($ty), "` numbered `n`, about `size` bytes.")]
            pub fn $snake($n: u64, $size: usize) -> $ty $body
        )*

        /// The one-line view of a verified message that `meshbus consume` prints: its kind's
        /// name and the fields the table's `summary` names.
        pub fn summary(message: &Message) -> String {
            match message {
                $( Message::$variant($m) => format!("{} {}", stringify!($snake), $summary), )*
            }
        }

        /// A sample message of `kind`.
        pub fn message(kind: Kind, n: u64, size: usize) -> Message {
            match kind {
                $( Kind::$variant => Message::$variant($snake(n, size)), )*
            }
        }
    };
}

meshbus::kind_rows!(samples);

/// A deterministic lowercase UUIDv4 built from `n`.
pub fn uuid_v4(n: u64) -> String {
    let mut b = [0u8; 16];
    b[..8].copy_from_slice(&n.to_be_bytes());
    b[8..].copy_from_slice(&n.wrapping_mul(0x9e37_79b9_7f4a_7c15).to_le_bytes());
    uuid::Builder::from_random_bytes(b).into_uuid().to_string()
}

/// A JSON anomaly payload of about `size` bytes whose metadata matches `severity`/`confidence`.
pub fn anomaly_payload(severity: u32, confidence: f64, size: usize) -> Vec<u8> {
    let head = format!(r#"{{"severity":{severity},"confidence":{confidence},"detail":""#);
    let fill = size.saturating_sub(head.len() + 2);
    let mut out = head.into_bytes();
    out.extend(std::iter::repeat_n(b'x', fill));
    out.extend_from_slice(b"\"}");
    out
}

/// A JSON object of about `size` bytes.
pub fn json_blob(size: usize) -> Vec<u8> {
    let mut out = br#"{"cidr":"10.0.0.0/8","pad":""#.to_vec();
    out.extend(std::iter::repeat_n(
        b'p',
        size.saturating_sub(out.len() + 2),
    ));
    out.extend_from_slice(b"\"}");
    out
}
