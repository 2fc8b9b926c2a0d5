#!/usr/bin/env python3
"""The independent client (librdkafka via confluent-kafka) used by the tests and benchmarks.

read:    read COUNT records of TOPIC from the beginning of every partition; print JSON lines
         {"partition", "offset", "key", "value", "headers"} (bytes as hex).
cbench:  consume COUNT records of TOPIC in a group without verification, timed (benchmark).
vbench:  cbench verifying each record as an ai.anomalies.v1 AnomalyEvent by SPEC 4
         (anomaly_verify.py), timed (benchmark).
group:   consume TOPIC as a member of a consumer group for a while (see group()).
produce: produce hex values given as JSON lines on stdin ({"key": hex|null, "value": hex}).
Connection settings come as a JSON object in --conf (librdkafka property names).
"""
import argparse, json, sys, time
import confluent_kafka as ck


def read(conf, topic, count, timeout):
    c = ck.Consumer(dict(conf, **{"group.id": "meshbus-test-reader", "enable.auto.commit": False}))
    md = c.list_topics(topic, timeout=10)
    parts = sorted(md.topics[topic].partitions)
    c.assign([ck.TopicPartition(topic, p, ck.OFFSET_BEGINNING) for p in parts])
    got, deadline = 0, time.time() + timeout
    while got < count and time.time() < deadline:
        m = c.poll(0.5)
        if m is None:
            continue
        if m.error():
            print(json.dumps({"error": str(m.error())}), file=sys.stderr)
            continue
        print(json.dumps({
            "partition": m.partition(), "offset": m.offset(),
            "key": m.key().hex() if m.key() is not None else None,
            "value": m.value().hex() if m.value() is not None else None,
            "headers": {k: v.hex() for k, v in (m.headers() or [])},
        }), flush=True)
        got += 1
    c.close()
    if got < count:
        sys.exit(f"read {got} of {count} records from {topic}")


def group(conf, topic, group_id, seconds, strategy="range,roundrobin"):
    """Consumes TOPIC as a member of GROUP_ID for SECONDS (assignors STRATEGY, librdkafka's
    default range then roundrobin), committing each record synchronously after "handling" it.
    Prints {"assigned": [...]} (the whole assignment) after each change and {"partition",
    "offset"} per record; under cooperative-sticky also {"revoked": [...]}."""
    c = ck.Consumer(dict(conf, **{"group.id": group_id, "enable.auto.commit": False,
                                  "auto.offset.reset": "earliest", "session.timeout.ms": 6000,
                                  "heartbeat.interval.ms": 500,
                                  "partition.assignment.strategy": strategy}))
    held = set()
    pending = {}  # partition -> next offset, handled but not yet committed
    def commit(consumer, parts):
        offs = [ck.TopicPartition(topic, p, pending.pop(p)) for p in parts if p in pending]
        if offs:
            consumer.commit(offsets=offs, asynchronous=False)
    def on_assign(consumer, parts):
        if strategy == "cooperative-sticky":
            consumer.incremental_assign(parts)
            held.update(p.partition for p in parts)
        else:
            held.clear()
            held.update(p.partition for p in parts)
        print(json.dumps({"assigned": sorted(held)}), flush=True)
    def on_revoke(consumer, parts):
        try:
            commit(consumer, [p.partition for p in parts])
        except ck.KafkaException:
            pass  # the partition's next owner starts at its last commit
        if strategy == "cooperative-sticky":
            consumer.incremental_unassign(parts)
            held.difference_update(p.partition for p in parts)
            print(json.dumps({"revoked": sorted(p.partition for p in parts)}), flush=True)
    c.subscribe([topic], on_assign=on_assign, on_revoke=on_revoke)
    deadline = time.time() + seconds
    while time.time() < deadline:
        m = c.poll(0.2)
        if m is None or m.error():
            continue
        print(json.dumps({"partition": m.partition(), "offset": m.offset()}), flush=True)
        pending[m.partition()] = m.offset() + 1
        try:
            commit(c, list(pending))
        except ck.KafkaException:
            pass  # refused during a rebalance: retried after the next poll, or on revocation
    c.close()


def cbench(conf, topic, group_id, count):
    """Consumes COUNT records of TOPIC in a fresh group as fast as librdkafka can, without
    verification, committing once at the end; prints {"records", "seconds", "cpu_seconds"}
    (timed from the subscribe call, so the group join is included as for meshbus)."""
    import resource
    c = ck.Consumer(dict(conf, **{"group.id": group_id, "enable.auto.commit": False,
                                  "auto.offset.reset": "earliest"}))
    r0, t0 = resource.getrusage(resource.RUSAGE_SELF), time.time()
    c.subscribe([topic])
    got = 0
    while got < count:
        msgs = c.consume(num_messages=1000, timeout=1.0)
        got += sum(1 for m in msgs if not m.error())
    c.commit(asynchronous=False)
    t1, r1 = time.time(), resource.getrusage(resource.RUSAGE_SELF)
    c.close()
    cpu = (r1.ru_utime - r0.ru_utime) + (r1.ru_stime - r0.ru_stime)
    print(json.dumps({"records": got, "seconds": t1 - t0, "cpu_seconds": cpu}))


def vbench(conf, topic, group_id, count):
    """cbench with verification: consumes COUNT records of TOPIC in a fresh group, verifying
    each as an ai.anomalies.v1 AnomalyEvent (SPEC 4 steps 1-9 with anomaly_verify.py, against
    the wall clock with the 300 s skew, so the records must have been signed within the last 5
    minutes; one replay guard for all partitions), committing once at the end; prints
    {"records", "seconds", "cpu_seconds", "verified", "refused", "reasons": {reason: count}}
    (timed from the subscribe call)."""
    import resource
    import anomaly_verify
    verifier = anomaly_verify.Verifier()
    c = ck.Consumer(dict(conf, **{"group.id": group_id, "enable.auto.commit": False,
                                  "auto.offset.reset": "earliest"}))
    r0, t0 = resource.getrusage(resource.RUSAGE_SELF), time.time()
    c.subscribe([topic])
    got = verified = 0
    reasons = {}
    while got < count:
        for m in c.consume(num_messages=min(1000, count - got), timeout=1.0):
            if m.error() or got == count:
                continue
            got += 1
            reason, ok = verifier.verify(m.value() or b"", int(time.time()))
            if ok:
                verified += 1
            else:
                reasons[reason] = reasons.get(reason, 0) + 1
    c.commit(asynchronous=False)
    t1, r1 = time.time(), resource.getrusage(resource.RUSAGE_SELF)
    c.close()
    cpu = (r1.ru_utime - r0.ru_utime) + (r1.ru_stime - r0.ru_stime)
    print(json.dumps({"records": got, "seconds": t1 - t0, "cpu_seconds": cpu,
                      "verified": verified, "refused": got - verified, "reasons": reasons}))


def produce(conf, topic):
    # Records up to 4 MiB, for topics that accept more than the 1 MiB default.
    p = ck.Producer(dict(conf, **{"acks": "all", "enable.idempotence": True,
                                  "message.max.bytes": 4194304}))
    n = 0
    for line in sys.stdin:
        r = json.loads(line)
        # An explicit "partition" places the record there (a raw replay onto a chosen partition).
        at = {"partition": r["partition"]} if r.get("partition") is not None else {}
        p.produce(topic, value=bytes.fromhex(r["value"]), key=bytes.fromhex(r["key"]) if r.get("key") else None, **at)
        n += 1
        p.poll(0)
    left = p.flush(30)
    if left:
        sys.exit(f"{left} records not delivered")
    print(n)


def bench(conf, topic, path):
    """Produces every record of PATH (hex values, one per line) as fast as librdkafka can, with
    the benchmark's shared settings (acks=all, idempotent, snappy, linger 2 ms, 1,000,000-byte batches,
    5 requests in flight per connection, 32 MiB of buffer); prints {"records", "seconds",
    "cpu_seconds"} (loading the file is not timed)."""
    import resource
    values = [bytes.fromhex(l.strip()) for l in open(path) if l.strip()]
    p = ck.Producer(dict(conf, **{"acks": "all", "enable.idempotence": True, "compression.type": "snappy",
                                  "linger.ms": 2, "batch.size": 1000000,
                                  "max.in.flight.requests.per.connection": 5,
                                  "queue.buffering.max.kbytes": 32768,
                                  "queue.buffering.max.messages": 1000000}))
    p.list_topics(topic, timeout=30)  # metadata and connections before the clock starts
    r0, t0 = resource.getrusage(resource.RUSAGE_SELF), time.time()
    for v in values:
        while True:
            try:
                p.produce(topic, value=v)
                break
            except BufferError:
                p.poll(0.01)
        p.poll(0)
    left = p.flush(120)
    t1, r1 = time.time(), resource.getrusage(resource.RUSAGE_SELF)
    if left:
        sys.exit(f"{left} records not delivered")
    cpu = (r1.ru_utime - r0.ru_utime) + (r1.ru_stime - r0.ru_stime)
    print(json.dumps({"records": len(values), "seconds": t1 - t0, "cpu_seconds": cpu}))


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("cmd", choices=["read", "produce", "bench", "group", "cbench", "vbench"])
    ap.add_argument("--group")
    ap.add_argument("--strategy", default="range,roundrobin",
                    help="partition.assignment.strategy of a group member (e.g. cooperative-sticky)")
    ap.add_argument("--seconds", type=float, default=20)
    ap.add_argument("--file")
    ap.add_argument("--conf", required=True)
    ap.add_argument("--topic", required=True)
    ap.add_argument("--count", type=int, default=1)
    ap.add_argument("--timeout", type=float, default=30)
    a = ap.parse_args()
    conf = json.loads(a.conf)
    if a.cmd == "read":
        read(conf, a.topic, a.count, a.timeout)
    elif a.cmd == "group":
        group(conf, a.topic, a.group, a.seconds, a.strategy)
    elif a.cmd == "cbench":
        cbench(conf, a.topic, a.group, a.count)
    elif a.cmd == "vbench":
        vbench(conf, a.topic, a.group, a.count)
    elif a.cmd == "bench":
        bench(conf, a.topic, a.file)
    else:
        produce(conf, a.topic)

