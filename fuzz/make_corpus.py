#!/usr/bin/env python3
"""Writes the seed corpus of every fuzz target from ../shared/vectors/contract_vectors.json."""
import hashlib, json, os, sys

here = os.path.dirname(os.path.abspath(__file__))
src = sys.argv[1] if len(sys.argv) > 1 else os.path.join(here, "..", "..", "shared", "vectors", "contract_vectors.json")
vec = json.load(open(src))
corpus = os.path.join(here, "corpus")
control = ["commit", "policy_update", "reputation", "evidence_request"]

def put(target, data):
    d = os.path.join(corpus, target)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, hashlib.sha1(data).hexdigest()), "wb") as f:
        f.write(data)

records = [(v["kind"], bytes.fromhex(v["record_hex"])) for v in vec["vectors"]]
records += [(s["kind"], bytes.fromhex(r)) for s in vec["sequences"] for r in s["records_hex"]]
n = 0
for kind, data in records:
    if len(data) > 64 * 1024:  # keep seeds small; the size checks are covered by tests
        continue
    put("verify_" + kind, data)
    if kind in control:
        put("canonical_control", bytes([control.index(kind)]) + data)
    n += 1
put("verify_policy_ack", bytes.fromhex("0a0270311207617070"))
put("nonce_replay", bytes(range(64)))
# payload_json: severity 7, confidence 0.9, {"severity":7,"confidence":0.9, then a run of 9,999
# nested arrays (10,000 levels in all), 10,000 nested objects (one too many), or 8,160 elements.
flat = bytes([7, 0, 1, 0, 0, 0, 244])
for tail in [b"", bytes([9, 0x0f, 0x27, 0]), bytes([9, 0x10, 0x27, 0xff]), bytes([10, 255])]:
    put("payload_json", flat + tail)
print(f"seed corpus: {n} records from {src}")
