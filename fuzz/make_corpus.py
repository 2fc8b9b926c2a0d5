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
print(f"seed corpus: {n} records from {src}")
