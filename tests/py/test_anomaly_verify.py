"""anomaly_verify (vbench's verifier) on the contract vectors and on protobuf-go/encoding/json
edge cases: python3 -m pytest tests/py/test_anomaly_verify.py

The vectors are $MESHBUS_VECTORS, else ../shared/vectors/contract_vectors.json beside the
repository (as the Rust tests find them).
"""
import hashlib
import json
import math
import os
import struct
import threading

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

import anomaly_verify as av

HERE = os.path.dirname(os.path.abspath(__file__))
VECTORS = os.environ.get("MESHBUS_VECTORS") or os.path.join(
    HERE, "..", "..", "..", "shared", "vectors", "contract_vectors.json")
NOW = 1_790_000_000


@pytest.fixture(scope="module")
def vectors():
    with open(VECTORS) as f:
        return json.load(f)


def verdict(result):
    reason, ok = result
    return "ok" if ok else reason


def test_contract_vectors_anomaly(vectors):
    cases = [v for v in vectors["vectors"] if v["kind"] == "anomaly"]
    assert cases, "no anomaly vectors in the file"
    wrong = []
    for v in cases:
        assert v["topic"] == "ai.anomalies.v1", v["name"]
        got = verdict(av.Verifier().verify(bytes.fromhex(v["record_hex"]), vectors["now"]))
        if got != v["expect"]:
            wrong.append(f'{v["name"]}: got {got}, want {v["expect"]}')
    assert not wrong, "\n".join(wrong)
    print(f"{len(cases)} anomaly vectors checked")


def test_contract_sequences_anomaly(vectors):
    seqs = [s for s in vectors["sequences"] if s["kind"] == "anomaly"]
    assert seqs, "no anomaly sequences in the file"
    for s in seqs:
        assert len(s["records_hex"]) == len(s["expect"]), s["name"]
        v = av.Verifier()
        got = [verdict(v.verify(bytes.fromhex(r), vectors["now"])) for r in s["records_hex"]]
        assert got == s["expect"], s["name"]


def tag(num, typ):
    return varint(num << 3 | typ)


def varint(v):
    out = bytearray()
    while True:
        if v < 0x80:
            out.append(v)
            return bytes(out)
        out.append(v & 0x7F | 0x80)
        v >>= 7


def anomaly(vectors, ts=NOW, severity=7, conf=0.9, payload=b'{"severity":7,"confidence":0.9}',
            nonce_byte=1, extra=b"", tamper_sig=False):
    """A signed anomaly (the vectors' AI producer key), its encoding plus `extra` bytes."""
    key = Ed25519PrivateKey.from_private_bytes(bytes.fromhex(vectors["keys"]["ai_producer_seed_hex"]))
    pub = bytes.fromhex(vectors["keys"]["ai_producer_pubkey_hex"])
    nonce = bytes(15) + bytes([nonce_byte])
    h = hashlib.sha256(payload).digest()
    sig = bytearray(key.sign(av.DOMAIN + struct.pack(">qH", ts, 32) + pub + nonce + h))
    if tamper_sig:
        sig[0] ^= 1
    m = av.AnomalyEvent(id="6b1a0f4e-5b4c-4e0e-9a39-1c1d6c0f1f11", type="ddos", source="10.0.0.8",
                        severity=severity, confidence=conf, ts=ts, content_hash=h, payload=payload,
                        model_version="ddos-v1.2.0", producer_id=pub, nonce=nonce,
                        signature=bytes(sig), pubkey=pub, alg="Ed25519")
    return m.SerializeToString() + extra


WIRE_CASES = [
    ("valid", b"", "ok"),
    # severity (4) as LEN, confidence (5) as varint, ts (6) as fixed32: unknown, skipped.
    ("known fields with other wire types", bytes([0x22, 0x01, 0x09, 0x28, 0x03, 0x35, 1, 2, 3, 4]), "ok"),
    ("unknown group", bytes([0xFB, 0x07, 0x08, 0x01, 0xFC, 0x07]), "ok"),
    # upb refuses groups nested over 100 deep; protobuf-go takes them (up to 10,001).
    ("nested unknown groups", b"\x0b" * 200 + b"\x08\x01" + b"\x0c" * 200, "ok"),
    ("unknown groups nested 10001 deep", b"\x0b" * 10001 + b"\x0c" * 10001, "ok"),
    ("unknown groups nested 10002 deep", b"\x0b" * 10002 + b"\x0c" * 10002, "malformed"),
    ("end group without a start", b"\x0c", "malformed"),
    ("group closed by another field number", b"\x0b\x14", "malformed"),
    ("wire type 6", b"\x0e", "malformed"),
    ("field number 0", b"\x00\x01", "malformed"),
    ("field number 2^29", tag(1 << 29, 0), "malformed"),
    # upb drops the bits past 64; protobuf-go refuses the varint.
    ("varint overflowing 64 bits", b"\xf8\x07" + b"\xff" * 9 + b"\x02", "malformed"),
    ("varint overflowing 64 bits in a group", b"\x0b\x08" + b"\xff" * 9 + b"\x7f\x0c", "malformed"),
    ("ten-byte varint", b"\xf8\x07" + b"\xff" * 9 + b"\x01", "ok"),
    ("truncated length", b"\x12\x05a", "malformed"),
    ("severity repeated", b"\x20\x0b", "invalid_field"),  # the last value wins
    ("string with invalid UTF-8", b"\x12\x02\xc3\x28", "malformed"),
    ("severity 2^32+7 truncates to 7", b"\x20" + varint((1 << 32) + 7), "ok"),
]


@pytest.mark.parametrize("name,extra,want", WIRE_CASES, ids=[c[0] for c in WIRE_CASES])
def test_wire_semantics(vectors, name, extra, want):
    assert verdict(av.Verifier().verify(anomaly(vectors, extra=extra), NOW)) == want


def test_go_decoder_agrees_with_upb_on_plain_records(vectors):
    """The protobuf-go reader decodes what upb decodes, field for field."""
    for extra in [b"", bytes([0x22, 0x01, 0x09, 0x28, 0x03]), b"\x20\x0b", b"\x0b\x08\x01\x0c"]:
        rec = anomaly(vectors, extra=extra)
        upb = av.AnomalyEvent()
        upb.ParseFromString(rec)
        go = av._go_decode(rec)
        for _, name, _ in av.FIELDS:
            assert getattr(go, name) == getattr(upb, name), name


ORDER_CASES = [
    ("skew edge past", dict(ts=NOW - 300), "ok"),
    ("skew edge future", dict(ts=NOW + 300), "ok"),
    ("skew past", dict(ts=NOW - 301), "timestamp_skew"),
    ("ts min int64", dict(ts=-(1 << 63)), "timestamp_skew"),
    ("ts max int64", dict(ts=(1 << 63) - 1), "timestamp_skew"),
    ("bad signature", dict(tamper_sig=True), "bad_signature"),
    ("confidence -0", dict(conf=-0.0, payload=b'{"severity":7,"confidence":0}'), "ok"),
    ("payload over 512 KiB", dict(payload=bytes((512 << 10) + 1)), "payload_too_large"),
    ("payload of 512 KiB is not JSON", dict(payload=bytes(512 << 10)), "payload_metadata_mismatch"),
]


@pytest.mark.parametrize("name,kw,want", ORDER_CASES, ids=[c[0] for c in ORDER_CASES])
def test_checks_in_order(vectors, name, kw, want):
    assert verdict(av.Verifier().verify(anomaly(vectors, **kw), NOW)) == want


def test_signature_s_not_reduced(vectors):
    """S + L verifies in the group but is refused (S < L, as Go's crypto/ed25519)."""
    rec = anomaly(vectors)
    m = av.AnomalyEvent()
    m.ParseFromString(rec)
    s = int.from_bytes(m.signature[32:], "little") + av.ED25519_L
    assert s < 1 << 256
    m.signature = m.signature[:32] + s.to_bytes(32, "little")
    assert verdict(av.Verifier().verify(m.SerializeToString(), NOW)) == "bad_signature"


def nested(depth, objects):
    o, c = ('{"a":', "}") if objects else ("[", "]")
    return '{"severity":7,"confidence":0.9,"x":' + o * (depth - 1) + "1" + c * (depth - 1) + "}"


PAYLOAD_CASES = [
    ('{"severity":7,"confidence":0.9}', True),
    (' {"severity":7.0,"confidence":0.9000001} ', True),
    ('{"severity":7e0,"confidence":9e-1}', True),
    ('{"severity":0.7e1,"confidence":0.9}', True),
    ('{"severity":3,"severity":7,"confidence":0.9}', True),
    ('{"sev\\u0065rity":7,"confidence":0.9}', True),
    ('{"severity":7,"confidence":0.9,"s":"\\ud800"}', True),
    (b'{"severity":7,"confidence":0.9,"s":"\xff\xfe"}', True),  # invalid UTF-8 in a string: Go takes it
    # Out of a float64's range anywhere: refused, as by Go into a map[string]any and meshbus.
    ('{"severity":7,"confidence":0.9,"x":[1e400]}', False),
    ('{"severity":7,"confidence":0.9,"x":' + "9" * 5000 + "}", False),
    ('{"severity":7,"confidence":0.9,"x":' + "9" * 299 + "}", True),
    (nested(499, False), True),
    (nested(500, True), True),
    (nested(10000, False), True),
    (nested(10000, True), True),
    (nested(10001, False), False),
    (nested(10001, True), False),
    ('{"s":"' + "[" * 20000 + '","severity":7,"confidence":0.9}', True),  # brackets in a string
    ('{"severity":7.5,"confidence":0.9}', False),
    ('{"severity":"7","confidence":0.9}', False),
    ('{"severity":7,"severity":"7","confidence":0.9}', False),
    ('{"Severity":7,"confidence":0.9}', False),
    ('{"severity":true,"confidence":0.9}', False),
    ('{"severity":7,"confidence":0.91}', False),
    ('{"severity":7,"confidence":"0.9"}', False),
    ('{"severity":7,"confidence":null}', False),
    ('{"severity":-7,"confidence":0.9}', False),
    ('{"severity":1e400,"confidence":0.9}', False),
    ('{"severity":18446744073709551623,"confidence":0.9}', False),
    ('{"confidence":0.9}', False),
    ('{"x":{"severity":7},"confidence":0.9}', False),
    ("[7,0.9]", False),
    ("null", False),
    ('{"severity":7,"confidence":0.9} x', False),
    ('{"severity":7,"confidence":NaN}', False),
    ('{"severity":7,"confidence":0.9,"x":Infinity}', False),
    ('{"severity":07,"confidence":0.9}', False),
    ('{"severity":\u0667,"confidence":0.9}', False),  # an Arabic-Indic digit is not JSON
    ('{"severity":7,"confidence":0.9,"x":' + "[" * 600 + "\u0661" + "]" * 600 + "}", False),
    (b'\xef\xbb\xbf{"severity":7,"confidence":0.9}', False),  # a BOM is not JSON
]


@pytest.mark.parametrize("doc,want", PAYLOAD_CASES, ids=[str(i) for i in range(len(PAYLOAD_CASES))])
def test_payload_metadata(doc, want):
    raw = doc if isinstance(doc, bytes) else doc.encode("utf-8", "surrogatepass")
    assert av.payload_matches(raw, 7, 0.9) is want


def test_payload_numbers_round_as_go_parses_them():
    assert av.payload_matches(b'{"severity":7,"confidence":1e-400}', 7, 0.0)  # underflows to 0
    assert av.payload_matches(b'{"severity":7.000000000000000001,"confidence":0.9}', 7, 0.9)


def test_payload_deep_on_a_worker_thread():
    """10,000 levels on a thread with a small stack: the scanner does not recurse in C."""
    import sys
    out = {}
    threading.stack_size(1 << 20)
    try:
        t = threading.Thread(target=lambda: out.update(
            ok=[av.payload_matches(nested(d, o).encode(), 7, 0.9) for d in (10000, 10001) for o in (False, True)]))
        t.start()
        t.join()
    finally:
        threading.stack_size(0)
    assert out["ok"] == [True, True, False, False]
    assert sys.getrecursionlimit() < 4 * 10000  # restored


def test_replay_guard_concurrent(vectors):
    v = av.Verifier()
    rec = anomaly(vectors, nonce_byte=9)
    got, lock = [], threading.Lock()

    def run():
        r = verdict(v.verify(rec, NOW))
        with lock:
            got.append(r)
    threads = [threading.Thread(target=run) for _ in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(got) == ["ok"] + ["replayed"] * 15
    assert verdict(v.verify(anomaly(vectors, nonce_byte=10), NOW)) == "ok"


def test_replay_guard_sweeps():
    v = av.Verifier()
    v._next_sweep = 4
    for i in range(4):
        assert v._remember(bytes([i]) * 48, NOW)
    assert v._remember(b"\x64" * 48, NOW + 601)  # all four have expired: swept
    assert len(v._seen) == 1
    assert not v._remember(b"\x64" * 48, NOW + 601)
