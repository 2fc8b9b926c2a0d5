// The `ai.anomalies.v1` verifier of vbench: SPEC 4 steps 1-9 for AnomalyEvent, written as a
// deployed Go validator would write it (crypto/ed25519, crypto/sha256, encoding/json and
// protobuf-go's wire semantics through protowire), so that the benchmark compares meshbus's
// verifying consumer with a verifying Sarama consumer. verify_test.go runs it on the contract
// vectors.
package main

import (
	"bytes"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/binary"
	"encoding/json"
	"math"
	"sync"
	"unicode/utf8"

	"google.golang.org/protobuf/encoding/protowire"
)

// SPEC 4 limits (and the default ai.* skew of KAFKA_MAX_TIMESTAMP_SKEW).
const (
	maxRecordBytes  = 1 << 20
	maxPayloadBytes = 512 << 10
	maxIDBytes      = 128
	maxStringBytes  = 256
	defaultAISkew   = 300
)

// anomalyEvent is cybermesh.ai.v1.AnomalyEvent (SPEC 2).
type anomalyEvent struct {
	ID           string  // 1
	Type         string  // 2
	Source       string  // 3
	Severity     uint32  // 4
	Confidence   float64 // 5
	Ts           int64   // 6
	ContentHash  []byte  // 7
	Payload      []byte  // 8
	ModelVersion string  // 9
	ProducerID   []byte  // 10
	Nonce        []byte  // 11
	Signature    []byte  // 12
	Pubkey       []byte  // 13
	Alg          string  // 14
}

// decodeAnomaly decodes a proto3 AnomalyEvent with protobuf-go's semantics: a known field
// whose wire type does not match the schema is skipped as an unknown field, unknown fields
// (groups included) are skipped, the last value of a field wins, a string must be valid
// UTF-8, and field numbers outside 1..2^29-1 or bytes that cannot be parsed are errors.
// The returned byte slices alias b.
func decodeAnomaly(b []byte) (m anomalyEvent, ok bool) {
	for len(b) > 0 {
		tag, n := protowire.ConsumeVarint(b)
		if n < 0 {
			return m, false
		}
		b = b[n:]
		if f := tag >> 3; f < uint64(protowire.MinValidNumber) || f > uint64(protowire.MaxValidNumber) {
			return m, false
		}
		num, typ := protowire.Number(tag>>3), protowire.Type(tag&7)
		if typ == protowire.EndGroupType {
			return m, false // an end group with no group open
		}
		n = -1 // not consumed: skip as unknown
		switch num {
		case 1, 2, 3, 9, 14:
			if typ != protowire.BytesType {
				break
			}
			var v []byte
			if v, n = protowire.ConsumeBytes(b); n < 0 {
				return m, false
			}
			if !utf8.Valid(v) {
				return m, false
			}
			s := string(v)
			switch num {
			case 1:
				m.ID = s
			case 2:
				m.Type = s
			case 3:
				m.Source = s
			case 9:
				m.ModelVersion = s
			case 14:
				m.Alg = s
			}
		case 4, 6:
			if typ != protowire.VarintType {
				break
			}
			var v uint64
			if v, n = protowire.ConsumeVarint(b); n < 0 {
				return m, false
			}
			if num == 4 {
				m.Severity = uint32(v) // protobuf-go truncates a uint32 varint
			} else {
				m.Ts = int64(v)
			}
		case 5:
			if typ != protowire.Fixed64Type {
				break
			}
			var v uint64
			if v, n = protowire.ConsumeFixed64(b); n < 0 {
				return m, false
			}
			m.Confidence = math.Float64frombits(v)
		case 7, 8, 10, 11, 12, 13:
			if typ != protowire.BytesType {
				break
			}
			var v []byte
			if v, n = protowire.ConsumeBytes(b); n < 0 {
				return m, false
			}
			switch num {
			case 7:
				m.ContentHash = v
			case 8:
				m.Payload = v
			case 10:
				m.ProducerID = v
			case 11:
				m.Nonce = v
			case 12:
				m.Signature = v
			case 13:
				m.Pubkey = v
			}
		}
		if n < 0 {
			if n = protowire.ConsumeFieldValue(num, typ, b); n < 0 {
				return m, false
			}
		}
		b = b[n:]
	}
	return m, true
}

// anomalySignBytes is SPEC 3a's anomaly envelope: "ai.anomaly.v1" || ts (8 bytes BE) ||
// pid_len (2 bytes BE) || producer_id || nonce || content_hash.
func anomalySignBytes(m *anomalyEvent) []byte {
	const domain = "ai.anomaly.v1"
	out := make([]byte, 0, len(domain)+8+2+len(m.ProducerID)+len(m.Nonce)+len(m.ContentHash))
	out = append(out, domain...)
	out = binary.BigEndian.AppendUint64(out, uint64(m.Ts))
	out = binary.BigEndian.AppendUint16(out, uint16(len(m.ProducerID)))
	out = append(out, m.ProducerID...)
	out = append(out, m.Nonce...)
	return append(out, m.ContentHash...)
}

// payloadMatches is SPEC 4 step 8 as the deployed validators do it: the payload unmarshalled
// by encoding/json into a map[string]any (a JSON object, nested at most 10,000 deep, every
// number anywhere within a float64's range, as meshbus also requires) whose top-level
// `severity` is a number equal to the field (so integer-valued) and whose `confidence` is a
// number within 1e-6 of the field. A repeated key is decided by its last value.
func payloadMatches(payload []byte, severity uint32, confidence float64) bool {
	var top map[string]any
	if err := json.Unmarshal(payload, &top); err != nil || top == nil { // top == nil: `null`
		return false
	}
	sev, ok := top["severity"].(float64)
	if !ok || sev != float64(severity) {
		return false
	}
	conf, ok := top["confidence"].(float64)
	return ok && math.Abs(conf-confidence) <= 1e-6 // false for NaN too
}

// replayKey is (producer_id, nonce), both of fixed size once step 2 passed.
type replayKey [32 + 16]byte

// Verifier checks AnomalyEvent records (SPEC 4 steps 1-9). Safe for concurrent use: Sarama
// runs ConsumeClaim on one goroutine per partition, and all of them share the replay guard,
// as in the deployed validators.
type Verifier struct {
	Skew int64 // seconds

	mu        sync.Mutex
	seen      map[replayKey]int64 // -> unix second after which the entry may be forgotten
	nextSweep int
}

// NewVerifier returns a verifier with the default ai.* skew (300 s).
func NewVerifier() *Verifier {
	return &Verifier{Skew: defaultAISkew, seen: make(map[replayKey]int64), nextSweep: 1 << 16}
}

// Verify checks one record value at the clock `now` (unix seconds): ("", true) when it is
// accepted (and its (producer_id, nonce) remembered), else the SPEC 4 reason code of the
// first failing check and false.
func (v *Verifier) Verify(value []byte, now int64) (reason string, ok bool) {
	// 1. size and decoding
	if len(value) > maxRecordBytes {
		return "too_large", false
	}
	m, ok := decodeAnomaly(value)
	if !ok {
		return "malformed", false
	}
	// 2. structure
	strOK := func(s string, max int) bool { return len(s) >= 1 && len(s) <= max }
	switch {
	case !strOK(m.ID, maxIDBytes), !strOK(m.Type, maxStringBytes), !strOK(m.Source, maxStringBytes),
		!strOK(m.ModelVersion, maxStringBytes),
		m.Severity < 1 || m.Severity > 10,
		!(m.Confidence >= 0 && m.Confidence <= 1), // NaN fails
		len(m.Payload) == 0,
		len(m.ContentHash) != 32, len(m.ProducerID) != 32, len(m.Nonce) != 16,
		len(m.Signature) != 64, len(m.Pubkey) != 32,
		m.Ts == 0:
		return "invalid_field", false
	case len(m.Payload) > maxPayloadBytes:
		return "payload_too_large", false
	case m.Alg != "Ed25519":
		return "unsupported_alg", false
	}
	// 3. clock (compared without overflow for any int64 ts)
	if m.Ts > now+v.Skew || m.Ts < now-v.Skew {
		return "timestamp_skew", false
	}
	// 4. content hash
	if sum := sha256.Sum256(m.Payload); !bytes.Equal(sum[:], m.ContentHash) {
		return "content_hash_mismatch", false
	}
	// 5. signature (crypto/ed25519: cofactorless, S < L)
	if !ed25519.Verify(ed25519.PublicKey(m.Pubkey), anomalySignBytes(&m), m.Signature) {
		return "bad_signature", false
	}
	// 6. producer
	if !bytes.Equal(m.ProducerID, m.Pubkey) {
		return "producer_mismatch", false
	}
	// 8. payload metadata (7, the policy allowlist, does not apply to anomalies)
	if !payloadMatches(m.Payload, m.Severity, m.Confidence) {
		return "payload_metadata_mismatch", false
	}
	// 9. replay guard
	var k replayKey
	copy(k[:32], m.ProducerID)
	copy(k[32:], m.Nonce)
	if !v.remember(k, now) {
		return "replayed", false
	}
	return "", true
}

// remember records k unless it was seen before (false then). Entries are kept for twice the
// skew window (SPEC 3e: after that a repeat fails the clock check anyway); expired ones are
// swept whenever the map doubles, so memory follows the accepted rate, not the history.
func (v *Verifier) remember(k replayKey, now int64) bool {
	v.mu.Lock()
	defer v.mu.Unlock()
	if _, dup := v.seen[k]; dup {
		return false
	}
	if len(v.seen) >= v.nextSweep {
		for key, until := range v.seen {
			if until < now {
				delete(v.seen, key)
			}
		}
		v.nextSweep = max(2*len(v.seen), 1<<16)
	}
	v.seen[k] = now + 2*v.Skew
	return true
}
