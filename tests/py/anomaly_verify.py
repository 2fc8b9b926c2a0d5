"""The `ai.anomalies.v1` verifier of kafka_tool.py's vbench: SPEC 4 steps 1-9 for
cybermesh.ai.v1.AnomalyEvent, written with the Python stack (the `protobuf` package's decoder,
`cryptography`'s Ed25519, hashlib, json.loads), so that the benchmark compares meshbus's
verifying consumer with a verifying confluent-kafka consumer. test_anomaly_verify.py runs it
on the contract vectors.

    v = Verifier()                       # default ai.* skew, 300 s
    reason, ok = v.verify(value, now)    # ("", True), or (SPEC 4 reason code, False)

Where the Python libraries and the deployed Go validators (protobuf-go, encoding/json,
crypto/ed25519) part ways, this module follows Go, as SPEC 4 says:
- protobuf: upb refuses unknown groups nested more than 100 deep, which protobuf-go accepts
  (up to 10,001), and accepts a 10-byte varint whose last byte is over 1 (past 64 bits), which
  protobuf-go refuses. A record upb refuses, and one that holds the byte pattern of such a
  varint, is decoded again by `_go_decode`, a protobuf-go-semantics reader, whose verdict
  stands.
- JSON: Go takes documents nested up to 10,000 deep (Python's C scanner recurses), invalid
  UTF-8 inside strings, and integers of any length (Python's int() refuses over 4300 digits);
  Go refuses NaN and Infinity, which json.loads takes. See `_payload_json`.
- Ed25519: OpenSSL (under `cryptography`) checks S < L, as Go does; the check is also made
  here, so the rule does not rest on the library version.
"""
import hashlib
import json
import json.scanner
import math
import re
import struct
import sys
import threading

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
from google.protobuf.message import DecodeError

# SPEC 4 limits (and the default ai.* skew of KAFKA_MAX_TIMESTAMP_SKEW).
MAX_RECORD_BYTES = 1 << 20
MAX_PAYLOAD_BYTES = 512 << 10
MAX_ID_BYTES = 128
MAX_STRING_BYTES = 256
DEFAULT_AI_SKEW = 300
MAX_JSON_NESTING = 10_000  # Go's encoding/json maxNestingDepth
ED25519_L = 2**252 + 27742317777372353535851937790883648493
DOMAIN = b"ai.anomaly.v1"

# cybermesh.ai.v1.AnomalyEvent (SPEC 2): number, name, type.
_F = descriptor_pb2.FieldDescriptorProto
FIELDS = [
    (1, "id", _F.TYPE_STRING), (2, "type", _F.TYPE_STRING), (3, "source", _F.TYPE_STRING),
    (4, "severity", _F.TYPE_UINT32), (5, "confidence", _F.TYPE_DOUBLE), (6, "ts", _F.TYPE_INT64),
    (7, "content_hash", _F.TYPE_BYTES), (8, "payload", _F.TYPE_BYTES),
    (9, "model_version", _F.TYPE_STRING), (10, "producer_id", _F.TYPE_BYTES),
    (11, "nonce", _F.TYPE_BYTES), (12, "signature", _F.TYPE_BYTES), (13, "pubkey", _F.TYPE_BYTES),
    (14, "alg", _F.TYPE_STRING),
]


def _message_class():
    """AnomalyEvent built from its descriptor (no protoc), in a pool of its own."""
    f = descriptor_pb2.FileDescriptorProto(name="meshbus/tests/cybermesh_ai_v1_anomaly.proto",
                                           package="cybermesh.ai.v1", syntax="proto3")
    m = f.message_type.add(name="AnomalyEvent")
    for number, name, typ in FIELDS:
        m.field.add(name=name, number=number, type=typ, label=_F.LABEL_OPTIONAL)
    pool = descriptor_pool.DescriptorPool()
    pool.Add(f)
    return message_factory.GetMessageClass(pool.FindMessageTypeByName("cybermesh.ai.v1.AnomalyEvent"))


AnomalyEvent = _message_class()

# ---- protobuf-go's wire semantics, for the records where upb and protobuf-go differ ----

_GO_MAX_NUMBER = (1 << 29) - 1
_GO_GROUP_DEPTH = 10_001  # protowire.DefaultRecursionLimit: groups nested 10,001 deep parse
# Nine continuation bytes and a last byte of 2..127: a varint past 64 bits, which upb takes.
_OVERFLOWING_VARINT = re.compile(rb"[\x80-\xff]{9}[\x02-\x7f]")
_KINDS = {number: (name, typ) for number, name, typ in FIELDS}
_WIRE = {_F.TYPE_STRING: 2, _F.TYPE_BYTES: 2, _F.TYPE_UINT32: 0, _F.TYPE_INT64: 0, _F.TYPE_DOUBLE: 1}


def _varint(b, i):
    """protowire.ConsumeVarint: (value, next index), or (None, -1)."""
    x = 0
    for k in range(10):
        if i >= len(b):
            return None, -1
        c = b[i]
        i += 1
        if k == 9 and c > 1:
            return None, -1  # overflows 64 bits
        x |= (c & 0x7F) << (7 * k)
        if c < 0x80:
            return x, i
    return None, -1


def _skip(b, i, num, typ):
    """protowire.ConsumeFieldValue (groups iteratively): the next index, or -1."""
    groups = []
    while True:
        if typ == 0:
            _, i = _varint(b, i)
        elif typ == 1:
            i = i + 8 if i + 8 <= len(b) else -1
        elif typ == 5:
            i = i + 4 if i + 4 <= len(b) else -1
        elif typ == 2:
            n, i = _varint(b, i)
            i = i + n if i >= 0 and n <= len(b) - i else -1
        elif typ == 3:
            groups.append(num)
            if len(groups) > _GO_GROUP_DEPTH:
                return -1
        else:  # an end group with none open, or wire type 6 or 7
            return -1
        if i < 0:
            return -1
        # Inside groups: read the next tag; an end group closes the innermost one.
        while groups:
            tag, i = _varint(b, i)
            if tag is None or tag >> 3 < 1 or tag >> 3 > 0x7FFFFFFF:
                return -1
            num, typ = tag >> 3, tag & 7
            if typ != 4:
                break
            if groups.pop() != num:
                return -1
        else:
            return i


def _go_decode(b):
    """Decodes AnomalyEvent as protobuf-go does (a known field of another wire type is an
    unknown field, skipped; the last value wins; strings are valid UTF-8): a message, or None."""
    m = AnomalyEvent()
    i = 0
    while i < len(b):
        tag, i = _varint(b, i)
        if tag is None or tag >> 3 < 1 or tag >> 3 > _GO_MAX_NUMBER or tag & 7 == 4:
            return None
        num, typ = tag >> 3, tag & 7
        kind = _KINDS.get(num)
        if kind is None or _WIRE[kind[1]] != typ:
            i = _skip(b, i, num, typ)
            if i < 0:
                return None
            continue
        name, ftype = kind
        if typ == 0:
            v, i = _varint(b, i)
            if v is None:
                return None
            setattr(m, name, v & 0xFFFFFFFF if ftype == _F.TYPE_UINT32 else v - (1 << 64) if v >> 63 else v)
        elif typ == 1:
            if i + 8 > len(b):
                return None
            setattr(m, name, struct.unpack_from("<d", b, i)[0])
            i += 8
        else:
            n, i = _varint(b, i)
            if n is None or n > len(b) - i:
                return None
            v = bytes(b[i:i + n])
            i += n
            if ftype == _F.TYPE_STRING:
                try:
                    v = v.decode("utf-8")
                except UnicodeDecodeError:
                    return None
            setattr(m, name, v)
    return m


def decode(value):
    """AnomalyEvent as protobuf-go decodes it, or None (`malformed`)."""
    m = AnomalyEvent()
    try:
        m.ParseFromString(value)
    except DecodeError:
        return _go_decode(value)
    if _OVERFLOWING_VARINT.search(value) and _go_decode(value) is None:
        return None
    return m


# ---- step 8: the payload's JSON, as Go's encoding/json reads it ----

_JSON_STRING = re.compile(r'"(?:[^"\\]|\\.)*"', re.S)
_SHALLOW = 500  # containers: below this the C scanner's recursion is safe


def _not_json(name):
    raise ValueError(f"{name} is not JSON")


def _float64(token):
    """A JSON number as Go's encoding/json reads it into an `any`: a float64, and a number out
    of its range (1e400, or 400 nines) refuses the whole payload, wherever it is."""
    f = float(token)
    if math.isinf(f):
        raise ValueError(f"number {token[:20]} is out of range")
    return f


_C_DECODER = json.JSONDecoder(parse_int=_float64, parse_float=_float64, parse_constant=_not_json)
# The pure-Python scanner recurses in Python frames, not on the C stack, so a raised
# recursion limit lets it take Go's 10,000 levels.
_PY_DECODER = json.JSONDecoder(parse_int=_float64, parse_float=_float64, parse_constant=_not_json)
_PY_DECODER.scan_once = json.scanner.py_make_scanner(_PY_DECODER)
_recursion_lock = threading.Lock()


def _payload_json(payload):
    """The payload as Go's encoding/json unmarshals it into a map[string]any, or raises
    ValueError. Numbers come back as floats (Go's float64s; Python's int() refuses over 4300
    digits), and one out of a float64's range anywhere refuses the payload. Invalid UTF-8
    inside strings is taken, as Go takes it; outside strings Go takes ASCII only."""
    text = payload.decode("utf-8", "surrogateescape")
    if text.count("[") + text.count("{") < _SHALLOW:
        return _C_DECODER.decode(text)
    bare = _JSON_STRING.sub('""', text)
    if not bare.isascii():
        raise ValueError("non-ASCII byte outside a string")
    depth = deepest = 0
    for c in re.findall(r"[\[\]{}]", bare):
        depth += 1 if c in "[{" else -1
        deepest = max(deepest, depth)
    if deepest > MAX_JSON_NESTING:
        raise ValueError(f"nested deeper than {MAX_JSON_NESTING}")
    if deepest < _SHALLOW:
        return _C_DECODER.decode(text)
    with _recursion_lock:
        limit = sys.getrecursionlimit()
        sys.setrecursionlimit(max(limit, 4 * deepest + 1000))
        try:
            return _PY_DECODER.decode(text)
        finally:
            sys.setrecursionlimit(limit)


def payload_matches(payload, severity, confidence):
    """SPEC 4 step 8: a JSON object whose top-level `severity` is a number equal to the field
    (so integer-valued) and whose `confidence` is a number within 1e-6 of the field."""
    try:
        top = _payload_json(payload)
    except (ValueError, RecursionError):
        return False
    if not isinstance(top, dict):
        return False
    sev, conf = top.get("severity"), top.get("confidence")
    return (type(sev) is float and sev == float(severity)
            and type(conf) is float and abs(conf - confidence) <= 1e-6)  # False for NaN too


# ---- the verifier ----

class Verifier:
    """Checks AnomalyEvent records (SPEC 4 steps 1-9), remembering accepted
    (producer_id, nonce) pairs for twice the skew window (SPEC 3e). Thread-safe."""

    def __init__(self, skew=DEFAULT_AI_SKEW):
        self.skew = skew
        self._seen = {}  # producer_id + nonce -> unix second after which it may be forgotten
        self._next_sweep = 1 << 16
        self._lock = threading.Lock()
        self._keys = {}  # pubkey bytes -> Ed25519PublicKey, bounded

    def _key(self, pubkey):
        k = self._keys.get(pubkey)
        if k is None:
            if len(self._keys) >= 4096:
                self._keys.clear()
            k = self._keys[pubkey] = Ed25519PublicKey.from_public_bytes(pubkey)
        return k

    def verify(self, value, now):
        """("", True) when `value` is accepted at clock `now` (unix seconds), else the reason
        code of the first failing check and False."""
        # 1. size and decoding
        if len(value) > MAX_RECORD_BYTES:
            return "too_large", False
        m = decode(value)
        if m is None:
            return "malformed", False
        # 2. structure
        payload = m.payload
        if not (1 <= len(m.id.encode()) <= MAX_ID_BYTES
                and all(1 <= len(s.encode()) <= MAX_STRING_BYTES for s in (m.type, m.source, m.model_version))
                and 1 <= m.severity <= 10
                and 0.0 <= m.confidence <= 1.0  # False for NaN
                and payload
                and len(m.content_hash) == 32 and len(m.producer_id) == 32 and len(m.nonce) == 16
                and len(m.signature) == 64 and len(m.pubkey) == 32
                and m.ts != 0):
            return "invalid_field", False
        if len(payload) > MAX_PAYLOAD_BYTES:
            return "payload_too_large", False
        if m.alg != "Ed25519":
            return "unsupported_alg", False
        # 3. clock
        if abs(m.ts - now) > self.skew:
            return "timestamp_skew", False
        # 4. content hash
        if hashlib.sha256(payload).digest() != m.content_hash:
            return "content_hash_mismatch", False
        # 5. signature: pure Ed25519 over SPEC 3a's envelope, S < L as in Go
        sig = m.signature
        signed = (DOMAIN + struct.pack(">qH", m.ts, len(m.producer_id))
                  + m.producer_id + m.nonce + m.content_hash)
        if int.from_bytes(sig[32:], "little") >= ED25519_L:
            return "bad_signature", False
        try:
            self._key(m.pubkey).verify(sig, signed)
        except (InvalidSignature, ValueError):  # ValueError: a key OpenSSL will not load
            return "bad_signature", False
        # 6. producer
        if m.producer_id != m.pubkey:
            return "producer_mismatch", False
        # 8. payload metadata (7, the policy allowlist, does not apply to anomalies)
        if not payload_matches(payload, m.severity, m.confidence):
            return "payload_metadata_mismatch", False
        # 9. replay guard
        if not self._remember(m.producer_id + m.nonce, now):
            return "replayed", False
        return "", True

    def _remember(self, key, now):
        """Records key unless seen before (False then); expired entries are swept whenever
        the map doubles."""
        with self._lock:
            if key in self._seen:
                return False
            if len(self._seen) >= self._next_sweep:
                self._seen = {k: until for k, until in self._seen.items() if until >= now}
                self._next_sweep = max(2 * len(self._seen), 1 << 16)
            self._seen[key] = now + 2 * self.skew
            return True
