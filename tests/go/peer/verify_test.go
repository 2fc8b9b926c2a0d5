package main

import (
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"google.golang.org/protobuf/encoding/protowire"
)

// vectorsPath is $MESHBUS_VECTORS, else ../shared/vectors/contract_vectors.json beside the
// repository (as the Rust tests find it).
func vectorsPath() string {
	if p := os.Getenv("MESHBUS_VECTORS"); p != "" {
		return p
	}
	return filepath.Join("..", "..", "..", "..", "shared", "vectors", "contract_vectors.json")
}

type vectorFile struct {
	Now  int64 `json:"now"`
	Keys struct {
		AIProducerSeedHex string `json:"ai_producer_seed_hex"`
	} `json:"keys"`
	Vectors []struct {
		Name      string `json:"name"`
		Kind      string `json:"kind"`
		Topic     string `json:"topic"`
		RecordHex string `json:"record_hex"`
		Expect    string `json:"expect"`
	} `json:"vectors"`
	Sequences []struct {
		Name       string   `json:"name"`
		Kind       string   `json:"kind"`
		Topic      string   `json:"topic"`
		RecordsHex []string `json:"records_hex"`
		Expect     []string `json:"expect"`
	} `json:"sequences"`
}

func loadVectors(t *testing.T) vectorFile {
	t.Helper()
	data, err := os.ReadFile(vectorsPath())
	if err != nil {
		t.Fatalf("contract vectors not readable: %v", err)
	}
	var f vectorFile
	if err := json.Unmarshal(data, &f); err != nil {
		t.Fatalf("contract vectors do not parse: %v", err)
	}
	return f
}

func verdict(reason string, ok bool) string {
	if ok {
		return "ok"
	}
	return reason
}

func mustHex(t *testing.T, s string) []byte {
	t.Helper()
	b, err := hex.DecodeString(s)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// Every anomaly vector, each with a fresh verifier at the file's clock.
func TestContractVectorsAnomaly(t *testing.T) {
	f := loadVectors(t)
	n := 0
	for _, vec := range f.Vectors {
		if vec.Kind != "anomaly" {
			continue
		}
		if vec.Topic != "ai.anomalies.v1" {
			t.Fatalf("%s: anomaly vector on topic %s", vec.Name, vec.Topic)
		}
		n++
		got := verdict(NewVerifier().Verify(mustHex(t, vec.RecordHex), f.Now))
		if got != vec.Expect {
			t.Errorf("%s: got %s, want %s", vec.Name, got, vec.Expect)
		}
	}
	if n == 0 {
		t.Fatal("no anomaly vectors in the file")
	}
	t.Logf("%d anomaly vectors checked", n)
}

// Every anomaly sequence through one fresh verifier, in order (the replay guard).
func TestContractSequencesAnomaly(t *testing.T) {
	f := loadVectors(t)
	n := 0
	for _, seq := range f.Sequences {
		if seq.Kind != "anomaly" {
			continue
		}
		if len(seq.RecordsHex) != len(seq.Expect) {
			t.Fatalf("%s: %d records, %d verdicts", seq.Name, len(seq.RecordsHex), len(seq.Expect))
		}
		n++
		v := NewVerifier()
		for i, rec := range seq.RecordsHex {
			got := verdict(v.Verify(mustHex(t, rec), f.Now))
			if got != seq.Expect[i] {
				t.Errorf("%s record %d: got %s, want %s", seq.Name, i, got, seq.Expect[i])
			}
		}
	}
	if n == 0 {
		t.Fatal("no anomaly sequences in the file")
	}
	t.Logf("%d anomaly sequences checked", n)
}

// testAnomaly is a valid anomaly at `now`, signed with the vectors' AI producer key.
type testAnomaly struct {
	key       ed25519.PrivateKey
	ts        int64
	severity  uint32
	conf      float64
	payload   []byte
	nonce     []byte
	extra     []byte // raw bytes appended to the encoding
	tamperSig bool
}

func newTestAnomaly(t *testing.T, now int64, nonceByte byte) *testAnomaly {
	f := loadVectors(t)
	seed := mustHex(t, f.Keys.AIProducerSeedHex)
	nonce := make([]byte, 16)
	nonce[15] = nonceByte
	return &testAnomaly{
		key: ed25519.NewKeyFromSeed(seed), ts: now, severity: 7, conf: 0.9,
		payload: []byte(`{"severity":7,"confidence":0.9}`), nonce: nonce,
	}
}

func (a *testAnomaly) encode() []byte {
	pub := a.key.Public().(ed25519.PublicKey)
	hash := sha256.Sum256(a.payload)
	m := anomalyEvent{Ts: a.ts, ProducerID: pub, Nonce: a.nonce, ContentHash: hash[:]}
	sig := ed25519.Sign(a.key, anomalySignBytes(&m))
	if a.tamperSig {
		sig[0] ^= 1
	}
	var b []byte
	str := func(num protowire.Number, v []byte) {
		b = protowire.AppendTag(b, num, protowire.BytesType)
		b = protowire.AppendBytes(b, v)
	}
	str(1, []byte("6b1a0f4e-5b4c-4e0e-9a39-1c1d6c0f1f11"))
	str(2, []byte("ddos"))
	str(3, []byte("10.0.0.8"))
	b = protowire.AppendTag(b, 4, protowire.VarintType)
	b = protowire.AppendVarint(b, uint64(a.severity))
	b = protowire.AppendTag(b, 5, protowire.Fixed64Type)
	b = protowire.AppendFixed64(b, math.Float64bits(a.conf))
	b = protowire.AppendTag(b, 6, protowire.VarintType)
	b = protowire.AppendVarint(b, uint64(a.ts))
	str(7, hash[:])
	str(8, a.payload)
	str(9, []byte("ddos-v1.2.0"))
	str(10, pub)
	str(11, a.nonce)
	str(12, sig)
	str(13, pub)
	str(14, []byte("Ed25519"))
	return append(b, a.extra...)
}

const testNow = 1_790_000_000

func TestWireSemantics(t *testing.T) {
	cases := []struct {
		name  string
		extra []byte
		want  string
	}{
		{"valid", nil, "ok"},
		// severity (4) as LEN, confidence (5) as varint, ts (6) as fixed32: unknown, skipped.
		{"known fields with other wire types", []byte{0x22, 0x01, 0x09, 0x28, 0x03, 0x35, 1, 2, 3, 4}, "ok"},
		{"unknown group", []byte{0xfb, 0x07, 0x08, 0x01, 0xfc, 0x07}, "ok"},
		{"nested unknown groups", append(append(bytesRepeat(0x0b, 200), 0x08, 0x01), bytesRepeat(0x0c, 200)...), "ok"},
		{"unknown groups nested 10001 deep", append(bytesRepeat(0x0b, 10001), bytesRepeat(0x0c, 10001)...), "ok"},
		{"unknown groups nested 10002 deep", append(bytesRepeat(0x0b, 10002), bytesRepeat(0x0c, 10002)...), "malformed"},
		{"end group without a start", []byte{0x0c}, "malformed"},
		{"group closed by another field number", []byte{0x0b, 0x14}, "malformed"},
		{"wire type 6", []byte{0x0e}, "malformed"},
		{"field number 0", []byte{0x00, 0x01}, "malformed"},
		{"field number 2^29", protowire.AppendTag(nil, 1<<29, protowire.VarintType), "malformed"},
		{"varint overflowing 64 bits", []byte{0xf8, 0x07, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02}, "malformed"},
		{"varint overflowing 64 bits in a group", append(append([]byte{0x0b, 0x08}, bytesRepeat(0xff, 9)...), 0x7f, 0x0c), "malformed"},
		{"ten-byte varint", []byte{0xf8, 0x07, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01}, "ok"},
		{"truncated length", []byte{0x12, 0x05, 'a'}, "malformed"},
		// last value wins: an 11 after the 7, then the type replaced by invalid UTF-8.
		{"severity repeated", []byte{0x20, 0x0b}, "invalid_field"},
		{"string with invalid UTF-8", []byte{0x12, 0x02, 0xc3, 0x28}, "malformed"},
		{"severity 2^32+7 truncates to 7", append([]byte{0x20}, protowire.AppendVarint(nil, 1<<32+7)...), "ok"},
	}
	for _, c := range cases {
		a := newTestAnomaly(t, testNow, 1)
		a.extra = c.extra
		if got := verdict(NewVerifier().Verify(a.encode(), testNow)); got != c.want {
			t.Errorf("%s: got %s, want %s", c.name, got, c.want)
		}
	}
}

func bytesRepeat(b byte, n int) []byte { return []byte(strings.Repeat(string([]byte{b}), n)) }

func TestChecksInOrder(t *testing.T) {
	type tweak func(a *testAnomaly)
	cases := []struct {
		name string
		f    tweak
		want string
	}{
		{"skew edge past", func(a *testAnomaly) { a.ts = testNow - 300 }, "ok"},
		{"skew edge future", func(a *testAnomaly) { a.ts = testNow + 300 }, "ok"},
		{"skew past", func(a *testAnomaly) { a.ts = testNow - 301 }, "timestamp_skew"},
		{"ts min int64", func(a *testAnomaly) { a.ts = math.MinInt64 }, "timestamp_skew"},
		{"ts max int64", func(a *testAnomaly) { a.ts = math.MaxInt64 }, "timestamp_skew"},
		{"bad signature", func(a *testAnomaly) { a.tamperSig = true }, "bad_signature"},
		{"confidence -0", func(a *testAnomaly) {
			a.conf = math.Copysign(0, -1)
			a.payload = []byte(`{"severity":7,"confidence":0}`)
		}, "ok"},
		{"payload over 512 KiB", func(a *testAnomaly) { a.payload = make([]byte, 512<<10+1) }, "payload_too_large"},
		{"payload of 512 KiB is not JSON", func(a *testAnomaly) { a.payload = make([]byte, 512<<10) }, "payload_metadata_mismatch"},
	}
	for _, c := range cases {
		a := newTestAnomaly(t, testNow, 1)
		c.f(a)
		if got := verdict(NewVerifier().Verify(a.encode(), testNow)); got != c.want {
			t.Errorf("%s: got %s, want %s", c.name, got, c.want)
		}
	}
}

func TestPayloadMetadata(t *testing.T) {
	nested := func(depth int, objects bool) string {
		open, close := "[", "]"
		if objects {
			open, close = `{"a":`, "}"
		}
		return `{"severity":7,"confidence":0.9,"x":` + strings.Repeat(open, depth-1) + "1" + strings.Repeat(close, depth-1) + "}"
	}
	cases := []struct {
		json string
		want bool
	}{
		{`{"severity":7,"confidence":0.9}`, true},
		{` {"severity":7.0,"confidence":0.9000001} `, true},
		{`{"severity":7e0,"confidence":9e-1}`, true},
		{`{"severity":0.7e1,"confidence":0.9}`, true},
		{`{"severity":3,"severity":7,"confidence":0.9}`, true},
		{`{"sev\u0065rity":7,"confidence":0.9}`, true},
		{`{"severity":7,"confidence":0.9,"s":"\ud800"}`, true},
		{"{\"severity\":7,\"confidence\":0.9,\"s\":\"\xff\xfe\"}", true}, // invalid UTF-8 in a string: Go accepts
		// Out of a float64's range anywhere: refused, as into a map[string]any and by meshbus.
		{`{"severity":7,"confidence":0.9,"x":[1e400]}`, false},
		{`{"severity":7,"confidence":0.9,"x":` + strings.Repeat("9", 5000) + `}`, false},
		{`{"severity":7,"confidence":0.9,"x":` + strings.Repeat("9", 299) + `}`, true},
		{nested(10000, false), true},
		{nested(10000, true), true},
		{nested(10001, false), false},
		{nested(10001, true), false},
		{nested(499, false), true},
		{nested(500, true), true},
		{`{"s":"` + strings.Repeat("[", 20000) + `","severity":7,"confidence":0.9}`, true},
		{`{"severity":7.000000000000000001,"confidence":0.9}`, true},
		{`{"severity":7.5,"confidence":0.9}`, false},
		{`{"severity":true,"confidence":0.9}`, false},
		{`{"severity":7,"confidence":0.9,"x":Infinity}`, false},
		{"{\"severity\":\u0667,\"confidence\":0.9}", false}, // an Arabic-Indic digit is not JSON
		{`{"severity":"7","confidence":0.9}`, false},
		{`{"severity":7,"severity":"7","confidence":0.9}`, false},
		{`{"Severity":7,"confidence":0.9}`, false},
		{`{"severity":7,"confidence":0.91}`, false},
		{`{"severity":7,"confidence":"0.9"}`, false},
		{`{"severity":7,"confidence":null}`, false},
		{`{"severity":-7,"confidence":0.9}`, false},
		{`{"severity":1e400,"confidence":0.9}`, false},
		{`{"severity":18446744073709551623,"confidence":0.9}`, false},
		{`{"confidence":0.9}`, false},
		{`{"x":{"severity":7},"confidence":0.9}`, false},
		{`[7,0.9]`, false},
		{`null`, false},
		{`{"severity":7,"confidence":0.9} x`, false},
		{`{"severity":7,"confidence":NaN}`, false},
		{`{"severity":07,"confidence":0.9}`, false},
		{"\xef\xbb\xbf{\"severity\":7,\"confidence\":0.9}", false}, // a BOM is not JSON
	}
	if !payloadMatches([]byte(`{"severity":7,"confidence":1e-400}`), 7, 0) { // underflows to 0
		t.Error("1e-400 is not 0")
	}
	for i, c := range cases {
		if got := payloadMatches([]byte(c.json), 7, 0.9); got != c.want {
			name := c.json
			if len(name) > 60 {
				name = name[:60] + fmt.Sprintf("...(%d bytes)", len(c.json))
			}
			t.Errorf("case %d %q: got %v, want %v", i, name, got, c.want)
		}
	}
}

// The replay guard under parallel verification (one goroutine per partition in vbench):
// of many verifications of one record, exactly one is accepted.
func TestReplayGuardConcurrent(t *testing.T) {
	v := NewVerifier()
	rec := newTestAnomaly(t, testNow, 9).encode()
	var wg sync.WaitGroup
	var mu sync.Mutex
	verdicts := map[string]int{}
	for i := 0; i < 16; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			got := verdict(v.Verify(rec, testNow))
			mu.Lock()
			verdicts[got]++
			mu.Unlock()
		}()
	}
	wg.Wait()
	if verdicts["ok"] != 1 || verdicts["replayed"] != 15 {
		t.Fatalf("verdicts %v, want 1 ok and 15 replayed", verdicts)
	}
	// A different nonce is a different message.
	if got := verdict(v.Verify(newTestAnomaly(t, testNow, 10).encode(), testNow)); got != "ok" {
		t.Fatalf("second nonce: %s", got)
	}
}

// Expired entries are swept once the map grows, and a sweep keeps live ones.
func TestReplayGuardSweeps(t *testing.T) {
	v := NewVerifier()
	v.nextSweep = 4
	var k replayKey
	for i := 0; i < 4; i++ {
		k[0] = byte(i)
		if !v.remember(k, testNow) {
			t.Fatal("fresh key refused")
		}
	}
	k[0] = 100
	if !v.remember(k, testNow+601) { // all four have expired: swept
		t.Fatal("fresh key refused")
	}
	if len(v.seen) != 1 {
		t.Fatalf("%d entries after the sweep, want 1", len(v.seen))
	}
	if v.remember(k, testNow+601) {
		t.Fatal("repeat accepted")
	}
}
