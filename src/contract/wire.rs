//! Protobuf decoding as protobuf-go does it (SPEC 4 step 1), the deployed validators' runtime.
//!
//! prost refuses a record whose known field arrives under a wire type the schema does not give
//! it (a `uint32` sent length-delimited, say); protobuf-go, and Python's upb, read such a field
//! as an unknown field and skip it. So every decode goes through this module: a pre-pass walks
//! the record against its message's table, and if some field's wire type does not match, hands
//! prost a copy without those fields (nested messages rewritten with their new length). A
//! record with nothing to skip, the case of every honest producer, is handed over as it is,
//! borrowed: the pass reads it once and allocates nothing. Bytes the pass cannot parse at all
//! go to prost unchanged, so that prost reports them `malformed` as protobuf-go would.
//!
//! Groups (wire types 3 and 4) are removed by the pass too, known field or not: a proto3
//! schema has none, so to protobuf-go every group is an unknown field, which it skips up to
//! 10,001 levels deep (`protowire`'s recursion limit) where prost's own skipping stops at 100.
//! The pass skips them with an explicit stack, never recursing on the input.
//!
//! # The tables
//!
//! `build.rs` writes one static table per message from the descriptor set that protox
//! compiles from `proto/` (the one prost's code is generated from, so the two cannot
//! disagree), rows as data sorted by field number: generating them at build time costs
//! nothing at run time, needs no lock or lazy initialisation on the verifier's hot path, and a
//! schema the pass cannot describe (a group field) fails the build instead of a record.

use bytes::Bytes;
use std::borrow::Cow;

/// The generated tables, one `static` per message (`cybermesh.ai.v1.AnomalyEvent` is
/// `CYBERMESH_AI_V1_ANOMALYEVENT`).
pub(crate) mod schema {
    use super::{FieldRule, MessageSchema, WireTypes};
    include!(concat!(env!("OUT_DIR"), "/wire_schema.rs"));
}

/// A CyberMesh message decoded the way protobuf-go decodes it: a known field under the wrong
/// wire type is skipped as unknown; only bytes that cannot be parsed are an error. Implemented
/// by `build.rs` for every top-level message of `proto/`.
pub trait GoDecode: prost::Message + Default {
    /// Decodes `bytes`: a field under the wrong wire type is skipped (nested messages
    /// rewritten), a record with nothing to skip is decoded as it is, its `bytes` fields
    /// sharing `bytes` when they are shared ([`RecordBytes`]).
    fn go_decode(bytes: impl RecordBytes) -> Result<Self, prost::DecodeError>;
}

/// A record's bytes, as decoding and verification take them. Shared bytes ([`Bytes`], or a
/// `Vec<u8>` given up) are read without a copy: the decoded message's `bytes` fields are
/// slices of them, so a 64 KiB payload is never copied. Borrowed bytes are copied once.
///
/// A slice keeps its whole buffer alive: a message the consumer handed over shares the
/// fetched record batch, so a handler that keeps messages long after handling them should
/// keep copies of the fields it needs (`Bytes::copy_from_slice`).
pub trait RecordBytes {
    /// The bytes as one shared buffer.
    fn into_bytes(self) -> Bytes;
}

impl RecordBytes for Bytes {
    fn into_bytes(self) -> Bytes {
        self
    }
}

impl RecordBytes for &Bytes {
    fn into_bytes(self) -> Bytes {
        self.clone()
    }
}

impl RecordBytes for Vec<u8> {
    fn into_bytes(self) -> Bytes {
        Bytes::from(self)
    }
}

impl RecordBytes for &Vec<u8> {
    fn into_bytes(self) -> Bytes {
        Bytes::copy_from_slice(self)
    }
}

impl RecordBytes for &[u8] {
    fn into_bytes(self) -> Bytes {
        Bytes::copy_from_slice(self)
    }
}

impl<const N: usize> RecordBytes for &[u8; N] {
    fn into_bytes(self) -> Bytes {
        Bytes::copy_from_slice(self)
    }
}

const VARINT: u8 = 0;
const I64: u8 = 1;
const LEN: u8 = 2;
const START_GROUP: u8 = 3;
const END_GROUP: u8 = 4;
const I32: u8 = 5;

/// How deep messages may nest before the pass gives up and leaves the record to prost
/// (prost's own recursion limit, so a record the pass gives up on is one prost refuses too).
/// The CyberMesh schema nests two levels deep; the limit only bounds recursion.
const MAX_MESSAGE_DEPTH: usize = 100;

/// How deep groups may nest: protobuf-go's `protowire.ConsumeFieldValue` starts at a depth
/// of 10,000 and refuses a group once it is below zero, so it accepts 10,001 levels.
const MAX_GROUP_DEPTH: usize = 10_001;

/// A set of wire types, as a bit per wire type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct WireTypes(u8);

impl WireTypes {
    /// Varint (wire type 0).
    pub(crate) const VARINT: WireTypes = WireTypes(1 << VARINT);
    /// 64-bit (wire type 1).
    pub(crate) const I64: WireTypes = WireTypes(1 << I64);
    /// Length-delimited (wire type 2).
    pub(crate) const LEN: WireTypes = WireTypes(1 << LEN);
    /// 32-bit (wire type 5).
    // The CyberMesh schema has no 32-bit or repeated number; the generator's vocabulary does.
    #[allow(dead_code)]
    pub(crate) const I32: WireTypes = WireTypes(1 << I32);

    /// Both sets.
    #[allow(dead_code)]
    pub(crate) const fn or(self, other: WireTypes) -> WireTypes {
        WireTypes(self.0 | other.0)
    }

    fn allows(self, wire_type: u8) -> bool {
        self.0 & (1 << wire_type) != 0
    }
}

/// One known field of a message: its number, the wire types it may arrive under, and its
/// message's table when it holds a message.
#[derive(Debug)]
pub(crate) struct FieldRule {
    /// The field number.
    pub(crate) number: u32,
    /// The wire types protobuf-go reads it under.
    pub(crate) wire: WireTypes,
    /// The nested message's table, for a message field.
    pub(crate) message: Option<&'static MessageSchema>,
}

/// The known fields of one message, sorted by number.
#[derive(Debug)]
pub(crate) struct MessageSchema {
    /// Its fields, ascending by number.
    pub(crate) fields: &'static [FieldRule],
}

impl MessageSchema {
    fn field(&self, number: u32) -> Option<&FieldRule> {
        // Field numbers are usually 1, 2, 3...: try the dense position before searching.
        let dense = (number as usize).wrapping_sub(1);
        match self.fields.get(dense) {
            Some(f) if f.number == number => Some(f),
            _ => self
                .fields
                .binary_search_by_key(&number, |f| f.number)
                .ok()
                .map(|i| &self.fields[i]),
        }
    }
}

/// Decodes `bytes` as the message `schema` describes, as protobuf-go does. With nothing to
/// skip (every honest record) the message's `bytes` fields are slices of `bytes`.
pub(crate) fn decode<M: prost::Message + Default>(
    schema: &'static MessageSchema,
    bytes: Bytes,
) -> Result<M, prost::DecodeError> {
    let kept = match skip_mismatched(schema, &bytes) {
        Cow::Borrowed(_) => None,
        Cow::Owned(kept) => Some(kept),
    };
    match kept {
        None => M::decode(bytes),
        Some(kept) => M::decode(kept.as_slice()),
    }
}

/// `bytes` without the fields protobuf-go would skip as unknown although prost would not:
/// known fields under a wire type the schema does not allow, and groups. Borrowed when there
/// is nothing to remove, or when the bytes cannot be parsed (prost then reports why).
pub(crate) fn skip_mismatched<'a>(schema: &MessageSchema, bytes: &'a [u8]) -> Cow<'a, [u8]> {
    if !matches!(has_mismatch(schema, bytes, 0), Ok(true)) {
        return Cow::Borrowed(bytes);
    }
    let mut out = Vec::with_capacity(bytes.len());
    match rewrite(schema, bytes, &mut out, 0) {
        Ok(()) => Cow::Owned(out),
        Err(Unparseable) => Cow::Borrowed(bytes),
    }
}

/// The bytes are not protobuf: a truncated or overlong value, a reserved wire type, field
/// number 0, an unmatched end of group, or nesting past the limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Unparseable;

/// What the pass does with one field.
enum Verdict {
    /// Copy it as it is (a matching scalar, or an unknown field, which prost skips itself).
    Keep,
    /// Leave it out (a mismatched wire type, or a group).
    Skip,
    /// A message field: its content is checked against this table.
    Nested(&'static MessageSchema),
}

fn verdict(schema: &MessageSchema, field: &Field) -> Verdict {
    if field.wire_type == START_GROUP {
        return Verdict::Skip;
    }
    match schema.field(field.number) {
        None => Verdict::Keep,
        Some(rule) if !rule.wire.allows(field.wire_type) => Verdict::Skip,
        Some(rule) => rule.message.map_or(Verdict::Keep, Verdict::Nested),
    }
}

/// Whether anything in `bytes` is to be skipped; stops at the first such field.
fn has_mismatch(schema: &MessageSchema, bytes: &[u8], depth: usize) -> Result<bool, Unparseable> {
    if depth > MAX_MESSAGE_DEPTH {
        return Err(Unparseable);
    }
    let mut fields = Fields::new(bytes);
    while let Some(f) = fields.next_field()? {
        match verdict(schema, &f) {
            Verdict::Keep => {}
            Verdict::Skip => return Ok(true),
            Verdict::Nested(m) => {
                if has_mismatch(m, &bytes[f.value..f.end], depth + 1)? {
                    return Ok(true);
                }
            }
        }
    }
    Ok(false)
}

/// Appends `bytes` to `out` without the fields to skip.
fn rewrite(
    schema: &MessageSchema,
    bytes: &[u8],
    out: &mut Vec<u8>,
    depth: usize,
) -> Result<(), Unparseable> {
    if depth > MAX_MESSAGE_DEPTH {
        return Err(Unparseable);
    }
    let mut fields = Fields::new(bytes);
    while let Some(f) = fields.next_field()? {
        match verdict(schema, &f) {
            Verdict::Keep => out.extend_from_slice(&bytes[f.start..f.end]),
            Verdict::Skip => {}
            Verdict::Nested(m) => {
                let content = &bytes[f.value..f.end];
                let mut inner = Vec::with_capacity(content.len());
                rewrite(m, content, &mut inner, depth + 1)?;
                if inner.len() == content.len() {
                    // Nothing removed: keep the field byte for byte.
                    out.extend_from_slice(&bytes[f.start..f.end]);
                } else {
                    out.extend_from_slice(&bytes[f.start..f.tag_end]);
                    prost::encoding::encode_varint(inner.len() as u64, out);
                    out.extend_from_slice(&inner);
                }
            }
        }
    }
    Ok(())
}

/// One field as it lies in the buffer: `start..tag_end` is its tag, `value..end` its value
/// (for a length-delimited field, the content after the length).
#[derive(Debug)]
struct Field {
    number: u32,
    wire_type: u8,
    start: usize,
    tag_end: usize,
    value: usize,
    end: usize,
}

/// Reads the fields of one message, as protobuf-go's decoder reads them.
struct Fields<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Fields<'a> {
    fn new(buf: &'a [u8]) -> Self {
        Fields { buf, pos: 0 }
    }

    fn next_field(&mut self) -> Result<Option<Field>, Unparseable> {
        if self.pos == self.buf.len() {
            return Ok(None);
        }
        let start = self.pos;
        let key = self.varint()?;
        // A message's field number is 1..2^29-1: a key of at most 32 bits, as prost and
        // protobuf-go both require.
        if key > u64::from(u32::MAX) || key >> 3 == 0 {
            return Err(Unparseable);
        }
        let (number, wire_type) = ((key >> 3) as u32, (key & 7) as u8);
        let tag_end = self.pos;
        let mut value = tag_end;
        match wire_type {
            LEN => {
                let len = self.varint()?;
                value = self.pos;
                self.advance(len)?;
            }
            START_GROUP => self.skip_group(number)?,
            // An end of group with no group open; wire types 6 and 7 do not exist.
            END_GROUP | 6 | 7 => return Err(Unparseable),
            scalar => self.skip_scalar(scalar)?,
        }
        Ok(Some(Field {
            number,
            wire_type,
            start,
            tag_end,
            value,
            end: self.pos,
        }))
    }

    /// Skips a varint, 64-bit or 32-bit value.
    fn skip_scalar(&mut self, wire_type: u8) -> Result<(), Unparseable> {
        match wire_type {
            VARINT => self.varint().map(drop),
            I64 => self.advance(8),
            I32 => self.advance(4),
            LEN => {
                let len = self.varint()?;
                self.advance(len)
            }
            _ => Err(Unparseable),
        }
    }

    /// Skips the rest of a group opened by field `number`, through its matching end, with an
    /// explicit stack of the groups open (protobuf-go's `consumeFieldValueD`, iteratively).
    fn skip_group(&mut self, number: u32) -> Result<(), Unparseable> {
        let mut open = vec![number];
        while let Some(&innermost) = open.last() {
            let key = self.varint()?;
            // Inside a group protobuf-go takes any field number from 1 to 2^31-1.
            let number = key >> 3;
            if number == 0 || number > i32::MAX as u64 {
                return Err(Unparseable);
            }
            let number = number as u32;
            match (key & 7) as u8 {
                END_GROUP if number == innermost => {
                    open.pop();
                }
                END_GROUP => return Err(Unparseable),
                START_GROUP if open.len() < MAX_GROUP_DEPTH => open.push(number),
                START_GROUP => return Err(Unparseable),
                wire_type => self.skip_scalar(wire_type)?,
            }
        }
        Ok(())
    }

    /// Advances past `len` bytes, if there are that many.
    fn advance(&mut self, len: u64) -> Result<(), Unparseable> {
        let left = (self.buf.len() - self.pos) as u64;
        if len > left {
            return Err(Unparseable);
        }
        self.pos += len as usize;
        Ok(())
    }

    /// A varint of at most 10 bytes whose value fits 64 bits (the tenth byte at most 1).
    fn varint(&mut self) -> Result<u64, Unparseable> {
        let mut value = 0u64;
        for i in 0..10 {
            let byte = *self.buf.get(self.pos + i).ok_or(Unparseable)?;
            if i == 9 && byte > 1 {
                return Err(Unparseable);
            }
            value |= u64::from(byte & 0x7f) << (7 * i);
            if byte < 0x80 {
                self.pos += i + 1;
                return Ok(value);
            }
        }
        Err(Unparseable)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::contract::messages::*;
    use crate::contract::{FixedClock, Reason, Signer, TrustStore, Verifier, VerifierConfig};
    use prost::encoding::{encode_key, encode_varint, WireType};
    use prost::Message as _;
    use std::sync::Arc;

    const NOW: i64 = 1_790_000_000;
    static ANOMALY: &MessageSchema = &schema::CYBERMESH_AI_V1_ANOMALYEVENT;

    fn signer() -> Signer {
        let key = ed25519_dalek::SigningKey::from_bytes(&[7; 32]);
        Signer::with_clock(
            key,
            0,
            Default::default(),
            Arc::new(FixedClock::at_secs(NOW)),
        )
    }

    fn verify(
        kind: Kind,
        record: impl RecordBytes,
    ) -> Result<Message, crate::contract::VerifyError> {
        let clock = Arc::new(FixedClock::at_secs(NOW));
        Verifier::with_clock(VerifierConfig::default(), TrustStore::from_keys([]), clock)
            .verify(kind, record)
    }

    fn anomaly() -> AnomalyEvent {
        signer().sign_ai(crate::cli::sample::anomaly(1, 64))
    }

    /// Appends field `field` under `wire` with the raw value `value` (a LEN value gets its
    /// length prefix here).
    fn push(out: &mut Vec<u8>, field: u32, wire: WireType, value: &[u8]) {
        encode_key(field, wire, out);
        if wire == WireType::LengthDelimited {
            encode_varint(value.len() as u64, out);
        }
        out.extend_from_slice(value);
    }

    fn varint(v: u64) -> Vec<u8> {
        let mut out = Vec::new();
        encode_varint(v, &mut out);
        out
    }

    #[test]
    fn a_known_field_under_another_wire_type_is_skipped_as_go_does() {
        let m = anomaly();
        let mut record = m.encode_to_vec();
        push(&mut record, 4, WireType::LengthDelimited, &[9]); // severity, LEN
        push(&mut record, 5, WireType::Varint, &varint(3)); // confidence, varint
        push(&mut record, 1, WireType::SixtyFourBit, &[0xff; 8]); // id, not UTF-8 either
                                                                  // prost alone refuses the record; protobuf-go reads it.
        assert!(AnomalyEvent::decode(record.as_slice()).is_err());
        assert_eq!(verify(Kind::Anomaly, &record), Ok(Message::Anomaly(m)));
    }

    #[test]
    fn the_last_correctly_typed_occurrence_wins() {
        let mut record = AnomalyEvent {
            severity: 3,
            ..Default::default()
        }
        .encode_to_vec();
        push(&mut record, 4, WireType::SixtyFourBit, &[1; 8]);
        push(&mut record, 4, WireType::Varint, &varint(9));
        push(&mut record, 4, WireType::LengthDelimited, &varint(5));
        push(&mut record, 4, WireType::ThirtyTwoBit, &[2; 4]);
        let Message::Anomaly(a) = Message::decode(Kind::Anomaly, &record).unwrap() else {
            unreachable!()
        };
        assert_eq!(a.severity, 9);
    }

    #[test]
    fn a_lone_wrongly_typed_required_field_leaves_it_empty() {
        let mut m = anomaly();
        m.id.clear();
        let mut record = varint(1 << 3); // field 1 (id), varint
        record.extend(varint(42));
        record.extend(m.encode_to_vec());
        let e = verify(Kind::Anomaly, &record).unwrap_err();
        assert_eq!(e.reason, Reason::InvalidField, "{e}");
        assert!(e.detail.starts_with("id "), "{e}");
    }

    #[test]
    fn bytes_that_do_not_parse_stay_malformed() {
        let mut record = anomaly().encode_to_vec();
        push(&mut record, 4, WireType::LengthDelimited, &[1, 2, 3]);
        assert!(verify(Kind::Anomaly, &record).is_ok());
        let cases: Vec<Vec<u8>> = vec![
            // Truncated inside the mismatched field, and inside a matching one after it.
            record[..record.len() - 1].to_vec(),
            [&record[..], &[0x0a, 0x05, b'a']].concat(),
            // A mismatch followed by a varint that never ends, or by field number 0.
            [&record[..], &[0x08, 0xff, 0xff]].concat(),
            [&record[..], &[0x00, 0x01]].concat(),
            // Reserved wire types; an end of group with none open.
            [&record[..], &[0x0e]].concat(),
            [&record[..], &[0x0c]].concat(),
            // Invalid UTF-8 in a correctly typed string.
            [&record[..], &[0x12, 0x01, 0xff]].concat(),
        ];
        for (i, bad) in cases.iter().enumerate() {
            let e = verify(Kind::Anomaly, bad).unwrap_err();
            assert_eq!(e.reason, Reason::Malformed, "case {i}: {e}");
        }
    }

    fn coc_entry() -> ChainOfCustodyEntry {
        ChainOfCustodyEntry {
            ref_hash: vec![1; 32].into(),
            actor_id: vec![2; 32].into(),
            ts: 5,
            signature: vec![3; 64].into(),
        }
    }

    /// An evidence record whose first field is one chain-of-custody entry of raw bytes `entry`.
    fn evidence_with_entry(entry: &[u8]) -> (EvidenceEvent, Vec<u8>) {
        let m = signer().sign_ai(crate::cli::sample::evidence(2, 64));
        let mut record = Vec::new();
        push(&mut record, 5, WireType::LengthDelimited, entry);
        record.extend(m.encode_to_vec());
        (m, record)
    }

    #[test]
    fn mismatches_inside_nested_messages_are_skipped() {
        let mut entry = coc_entry().encode_to_vec();
        push(&mut entry, 1, WireType::Varint, &varint(9)); // ref_hash, varint
        push(&mut entry, 3, WireType::LengthDelimited, b"ts"); // ts, LEN
        let (mut m, record) = evidence_with_entry(&entry);
        assert!(EvidenceEvent::decode(record.as_slice()).is_err());
        m.coc = vec![coc_entry()];
        assert_eq!(verify(Kind::Evidence, &record), Ok(Message::Evidence(m)));

        // A lone wrongly typed ref_hash leaves the entry without one.
        let mut entry = ChainOfCustodyEntry {
            ref_hash: Default::default(),
            ..coc_entry()
        }
        .encode_to_vec();
        push(&mut entry, 1, WireType::ThirtyTwoBit, &[1; 4]);
        let e = verify(Kind::Evidence, &evidence_with_entry(&entry).1).unwrap_err();
        assert_eq!(e.reason, Reason::InvalidField, "{e}");
        assert!(e.detail.starts_with("coc.ref_hash"), "{e}");

        // The coc field itself under the wrong wire type is skipped whole.
        let m = signer().sign_ai(crate::cli::sample::evidence(3, 64));
        let mut record = m.encode_to_vec();
        push(&mut record, 5, WireType::Varint, &varint(1));
        assert_eq!(verify(Kind::Evidence, &record), Ok(Message::Evidence(m)));
    }

    #[test]
    fn a_clean_record_is_borrowed_not_copied() {
        let mut record = anomaly().encode_to_vec();
        push(&mut record, 127, WireType::Varint, &varint(1)); // unknown: prost skips it
        assert!(matches!(
            skip_mismatched(ANOMALY, &record),
            Cow::Borrowed(_)
        ));
        let truncated = &record[..record.len() - 1];
        assert!(matches!(
            skip_mismatched(ANOMALY, truncated),
            Cow::Borrowed(_)
        ));
        push(&mut record, 2, WireType::Varint, &varint(1));
        let Cow::Owned(fixed) = skip_mismatched(ANOMALY, &record) else {
            panic!("a mismatch is copied out");
        };
        assert_eq!(fixed.len(), record.len() - 2);
    }

    /// Where `field` lies: inside `record`'s buffer, or elsewhere (a copy).
    fn shares(record: &bytes::Bytes, field: &bytes::Bytes) -> bool {
        let (start, end) = (
            record.as_ptr() as usize,
            record.as_ptr() as usize + record.len(),
        );
        let at = field.as_ptr() as usize;
        !field.is_empty() && start <= at && at + field.len() <= end
    }

    #[test]
    fn shared_bytes_are_decoded_without_copying_the_payload() {
        let record = bytes::Bytes::from(anomaly().encode_to_vec());
        let Ok(Message::Anomaly(m)) = verify(Kind::Anomaly, &record) else {
            panic!("the sample verifies");
        };
        assert!(shares(&record, &m.payload) && shares(&record, &m.signature));
        // Borrowed bytes are copied once, not shared.
        let borrowed = record.to_vec();
        let Ok(Message::Anomaly(m)) = verify(Kind::Anomaly, borrowed.as_slice()) else {
            panic!("the sample verifies");
        };
        assert!(!shares(&record, &m.payload));
        // A record the pass rewrote is decoded from its copy, and still verifies.
        let mut rewritten = record.to_vec();
        push(&mut rewritten, 4, WireType::LengthDelimited, &[9]);
        let rewritten = bytes::Bytes::from(rewritten);
        let Ok(Message::Anomaly(m)) = verify(Kind::Anomaly, &rewritten) else {
            panic!("a mismatched severity is skipped");
        };
        assert!(!shares(&rewritten, &m.payload));
    }

    /// A test-only message with the repeated numbers CyberMesh's schema lacks.
    #[derive(Clone, PartialEq, prost::Message)]
    struct Numbers {
        #[prost(uint32, repeated, tag = "1")]
        varints: Vec<u32>,
        #[prost(fixed64, repeated, tag = "2")]
        fixed: Vec<u64>,
        #[prost(double, tag = "3")]
        single: f64,
    }

    static NUMBERS: MessageSchema = MessageSchema {
        fields: &[
            FieldRule {
                number: 1,
                wire: WireTypes::VARINT.or(WireTypes::LEN),
                message: None,
            },
            FieldRule {
                number: 2,
                wire: WireTypes::I64.or(WireTypes::LEN),
                message: None,
            },
            FieldRule {
                number: 3,
                wire: WireTypes::I64,
                message: None,
            },
        ],
    };

    #[test]
    fn repeated_numbers_decode_packed_and_unpacked() {
        let mut record = Vec::new();
        push(
            &mut record,
            1,
            WireType::LengthDelimited,
            &[1, 2, 0xac, 0x02],
        ); // packed
        push(&mut record, 1, WireType::Varint, &varint(4)); // unpacked
        push(&mut record, 2, WireType::SixtyFourBit, &7u64.to_le_bytes());
        push(
            &mut record,
            2,
            WireType::LengthDelimited,
            &8u64.to_le_bytes(),
        );
        push(
            &mut record,
            3,
            WireType::SixtyFourBit,
            &1.5f64.to_le_bytes(),
        );
        assert!(matches!(
            skip_mismatched(&NUMBERS, &record),
            Cow::Borrowed(_)
        ));
        let want = Numbers {
            varints: vec![1, 2, 300, 4],
            fixed: vec![7, 8],
            single: 1.5,
        };
        assert_eq!(
            decode::<Numbers>(&NUMBERS, record.clone().into()),
            Ok(want.clone())
        );
        // A repeated number's other wire types, and a packed singular one, are skipped.
        push(&mut record, 1, WireType::ThirtyTwoBit, &[0; 4]);
        push(&mut record, 2, WireType::Varint, &varint(5));
        push(
            &mut record,
            3,
            WireType::LengthDelimited,
            &2.5f64.to_le_bytes(),
        );
        assert_eq!(decode::<Numbers>(&NUMBERS, record.clone().into()), Ok(want));
    }

    /// Field `field` as `depth` nested groups around one varint.
    fn groups(field: u32, depth: usize) -> Vec<u8> {
        let mut out = Vec::new();
        for _ in 0..depth {
            encode_key(field, WireType::StartGroup, &mut out);
        }
        push(&mut out, 1, WireType::Varint, &varint(1));
        for _ in 0..depth {
            encode_key(field, WireType::EndGroup, &mut out);
        }
        out
    }

    #[test]
    fn groups_are_skipped_as_go_skips_them() {
        let m = anomaly();
        let record = m.encode_to_vec();
        let with = |g: Vec<u8>| [&record[..], &g[..]].concat();
        // On a known field (severity) and on an unknown one.
        let known = with(groups(4, 1));
        assert!(AnomalyEvent::decode(known.as_slice()).is_err());
        assert_eq!(
            verify(Kind::Anomaly, &known),
            Ok(Message::Anomaly(m.clone()))
        );
        // prost stops skipping unknown groups at 100 levels; protobuf-go goes on.
        let deep = with(groups(200, 150));
        assert!(AnomalyEvent::decode(deep.as_slice()).is_err());
        assert_eq!(verify(Kind::Anomaly, &deep), Ok(Message::Anomaly(m)));
        // An end of group that closes another group, or a group never closed.
        let mut crossed = groups(200, 2);
        let at = crossed.len() - 2;
        crossed[at] = 0xcc; // field 201, end group
        let crossed = with(crossed);
        let open = with(groups(200, 3)[..4].to_vec());
        for bad in [crossed, open] {
            let e = verify(Kind::Anomaly, &bad).unwrap_err();
            assert_eq!(e.reason, Reason::Malformed, "{e}");
        }
    }

    #[test]
    fn groups_nest_as_deep_as_go_allows_without_recursion() {
        let record = anomaly().encode_to_vec();
        let with = |depth| [&record[..], &groups(200, depth)[..]].concat();
        let (deepest, deeper) = (with(MAX_GROUP_DEPTH), with(MAX_GROUP_DEPTH + 1));
        let small_stack = std::thread::Builder::new().stack_size(64 * 1024);
        let (deepest, deeper) = small_stack
            .spawn(move || {
                let skipped = matches!(skip_mismatched(ANOMALY, &deepest), Cow::Owned(_));
                let refused = matches!(skip_mismatched(ANOMALY, &deeper), Cow::Borrowed(_));
                assert!(skipped && refused);
                (deepest, deeper)
            })
            .unwrap()
            .join()
            .unwrap();
        assert!(verify(Kind::Anomaly, &deepest).is_ok());
        // Too deep for protobuf-go: prost gets the bytes as they are and refuses them (it
        // gives up on groups at 100 levels).
        let e = verify(Kind::Anomaly, &deeper).unwrap_err();
        assert_eq!(e.reason, Reason::Malformed, "{e}");
    }

    /// The generated tables say what the descriptors say: every field, under exactly the
    /// wire types protobuf-go reads it with, nested tables for message fields.
    #[test]
    fn the_tables_match_the_descriptors() {
        use prost_reflect::{DescriptorPool, Kind as K};
        let bin = include_bytes!(concat!(env!("OUT_DIR"), "/cybermesh_descriptor.bin"));
        let pool = DescriptorPool::decode(&bin[..]).unwrap();
        let table = |name: &str| {
            schema::ALL
                .iter()
                .find(|(n, _)| *n == name)
                .unwrap_or_else(|| panic!("no table for {name}"))
                .1
        };
        assert_eq!(schema::ALL.len(), pool.all_messages().len());
        for m in pool.all_messages() {
            let t = table(m.full_name());
            assert_eq!(t.fields.len(), m.fields().len(), "{}", m.full_name());
            assert!(t.fields.windows(2).all(|w| w[0].number < w[1].number));
            for f in m.fields() {
                let rule = t.field(f.number()).expect("every field has a row");
                let one = match f.kind() {
                    K::Double | K::Fixed64 | K::Sfixed64 => WireTypes::I64,
                    K::Float | K::Fixed32 | K::Sfixed32 => WireTypes::I32,
                    K::String | K::Bytes | K::Message(_) => WireTypes::LEN,
                    _ => WireTypes::VARINT,
                };
                let packable = f.is_list() && one != WireTypes::LEN;
                let want = if packable {
                    one.or(WireTypes::LEN)
                } else {
                    one
                };
                assert_eq!(rule.wire, want, "{}", f.full_name());
                match f.kind() {
                    K::Message(n) => {
                        assert!(std::ptr::eq(rule.message.unwrap(), table(n.full_name())))
                    }
                    _ => assert!(rule.message.is_none()),
                }
            }
        }
        for kind in Kind::ALL {
            assert!(schema::ALL.iter().any(|(n, _)| *n == kind.proto_name()));
        }
    }
}
