//! Entry points for the fuzz targets (cargo feature `fuzzing`, never in a release build): the
//! record-batch path of a fetch exactly as meshbus receives it, through the client's decoder
//! with meshbus's decompression cap, plus an encoder to give the fuzzer valid batches of every
//! codec to mutate.

use super::{InRecord, KafkaError, MAX_DECOMPRESSED_BATCH_BYTES};
use krafka::__private::protocol::{Compression, RecordBatch, RecordBatchBuilder};

/// A record for [`encode_batch`]: key, value, headers (null values allowed).
pub type FuzzRecord = (
    Option<Vec<u8>>,
    Option<Vec<u8>>,
    Vec<(String, Option<Vec<u8>>)>,
);

/// The codecs a batch can be encoded with here (zstd encoding needs C; its decoding is
/// reached through raw inputs).
pub fn codec(n: u8) -> &'static str {
    ["none", "gzip", "snappy", "lz4"][n as usize % 4]
}

/// Encodes `records` as one v2 record batch compressed with `codec(n)`.
pub fn encode_batch(n: u8, records: &[FuzzRecord]) -> Vec<u8> {
    let compression = match n % 4 {
        0 => Compression::None,
        1 => Compression::Gzip,
        2 => Compression::Snappy,
        _ => Compression::Lz4,
    };
    let mut b = RecordBatchBuilder::new().compression(compression);
    for (k, v, h) in records {
        b = b.add_record_with_headers(
            k.clone(),
            v.clone(),
            h.iter()
                .map(|(k, v)| (k.clone().into_bytes(), v.clone()))
                .collect(),
        );
    }
    b.build().encode().map(|b| b.to_vec()).unwrap_or_default()
}

/// Decodes every batch in `data` (a fetch's records field) with meshbus's cap, as records of
/// partition 0 of topic `fuzz`.
pub fn decode_batches(data: &[u8]) -> Result<Vec<InRecord>, KafkaError> {
    let mut buf = bytes::Bytes::copy_from_slice(data);
    let mut out = Vec::new();
    while !buf.is_empty() {
        let batch = RecordBatch::decode_with_limit(&mut buf, MAX_DECOMPRESSED_BATCH_BYTES)?;
        for r in batch.records {
            out.push(InRecord {
                topic: "fuzz".into(),
                partition: 0,
                offset: batch.base_offset + i64::from(r.offset_delta),
                key: r.key.map(|b| b.to_vec()),
                value: r.value,
                headers: r
                    .headers
                    .into_iter()
                    .map(|h| {
                        (
                            String::from_utf8_lossy(&h.key).into_owned(),
                            h.value.map(|v| v.to_vec()).unwrap_or_default(),
                        )
                    })
                    .collect(),
                undecodable: None,
            });
        }
    }
    Ok(out)
}
