// The Java side of the test harness, built by scripts/setup with javac against the Kafka
// distribution's jars (org.apache.kafka:kafka-clients 4.4.0). Two roles:
//
//   admin:  what the broker harness needs from an Admin client (scripts/kafka and the tests):
//             Peer admin --conf JSON wait-brokers N SECONDS
//             Peer admin --conf JSON create-topics PARTITIONS RF [k=v,k=v|-] TOPIC...
//             Peer admin --conf JSON leaders TOPIC            -> {"0": leader, ...}
//             Peer admin --conf JSON replicas TOPIC           -> {"0": [preferred, ...], ...}
//             Peer admin --conf JSON elect-preferred TOPIC
//             Peer admin --conf JSON coordinator GROUP        -> node id
//             Peer admin --conf JSON end-offsets TOPIC...     -> {"topic": {"0": end, ...}}
//             Peer admin --conf JSON committed GROUP          -> {"topic": {"0": offset, ...}}
//   peer:   the Java client as a CyberMesh peer in the interop tests:
//             Peer produce --conf JSON --topic T     stdin: JSON lines {"key": hex|null, "value": hex}
//             Peer group --conf JSON --topic T --group G --seconds S [--protocol classic|consumer]
//                        [--strategy range|cooperative-sticky]
//             Peer read --conf JSON --topic T --count N
//             Peer pbench --conf JSON --topic T --file HEXLINES   (benchmark: produce, timed)
//             Peer cbench --conf JSON --topic T --group G --count N (benchmark: consume, timed)
//           Output is JSON lines, the same shapes as tests/py/kafka_tool.py.
// Connection settings come as one JSON object of Java client property names (--conf).

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import com.fasterxml.jackson.databind.node.ObjectNode;
import java.io.BufferedReader;
import java.io.InputStreamReader;
import java.nio.charset.StandardCharsets;
import java.time.Duration;
import java.util.*;
import java.util.concurrent.TimeUnit;
import org.apache.kafka.clients.admin.*;
import org.apache.kafka.clients.consumer.*;
import org.apache.kafka.clients.producer.*;
import org.apache.kafka.common.*;
import org.apache.kafka.common.errors.RebalanceInProgressException;
import org.apache.kafka.common.header.Header;
import org.apache.kafka.common.serialization.ByteArrayDeserializer;
import org.apache.kafka.common.serialization.ByteArraySerializer;

public final class Peer {
    private static final ObjectMapper JSON = new ObjectMapper();

    public static void main(String[] args) throws Exception {
        if (args.length < 3 || !args[1].equals("--conf")) {
            usage();
        }
        Properties conf = new Properties();
        JsonNode c = JSON.readTree(args[2]);
        c.fields().forEachRemaining(e -> conf.put(e.getKey(), e.getValue().asText()));
        List<String> rest = Arrays.asList(args).subList(3, args.length);
        switch (args[0]) {
            case "admin" -> admin(conf, rest);
            case "produce" -> produce(conf, flag(rest, "--topic", null));
            case "group" -> group(conf, flag(rest, "--topic", null), flag(rest, "--group", null),
                    Double.parseDouble(flag(rest, "--seconds", "20")), flag(rest, "--protocol", "classic"),
                    flag(rest, "--strategy", "range"));
            case "read" -> read(conf, flag(rest, "--topic", null), Integer.parseInt(flag(rest, "--count", "1")));
            case "pbench" -> pbench(conf, flag(rest, "--topic", null), flag(rest, "--file", null));
            case "cbench" -> cbench(conf, flag(rest, "--topic", null), flag(rest, "--group", null),
                    Integer.parseInt(flag(rest, "--count", "1")));
            default -> usage();
        }
    }

    private static void usage() {
        System.err.println("usage: Peer admin|produce|group|read --conf JSON ...");
        System.exit(2);
    }

    private static String flag(List<String> a, String name, String dflt) {
        int i = a.indexOf(name);
        if (i >= 0 && i + 1 < a.size()) return a.get(i + 1);
        if (dflt == null) { System.err.println("missing " + name); System.exit(2); }
        return dflt;
    }

    private static void out(Object o) throws Exception {
        System.out.println(JSON.writeValueAsString(o));
        System.out.flush();
    }

    private static String hex(byte[] b) {
        if (b == null) return null;
        return HexFormat.of().formatHex(b);
    }

    // ---- admin ------------------------------------------------------------------------------

    private static void admin(Properties conf, List<String> a) throws Exception {
        conf.putIfAbsent("request.timeout.ms", "10000");
        conf.putIfAbsent("default.api.timeout.ms", "20000");
        try (Admin admin = Admin.create(conf)) {
            switch (a.get(0)) {
                case "wait-brokers" -> {
                    int want = Integer.parseInt(a.get(1));
                    long end = System.currentTimeMillis() + 1000L * Long.parseLong(a.get(2));
                    while (true) {
                        try {
                            int n = admin.describeCluster().nodes().get(5, TimeUnit.SECONDS).size();
                            if (n >= want) { out(Map.of("brokers", n)); return; }
                        } catch (Exception e) {
                            if (System.currentTimeMillis() > end) throw e;
                        }
                        if (System.currentTimeMillis() > end) {
                            System.err.println("fewer than " + want + " brokers registered");
                            System.exit(1);
                        }
                        Thread.sleep(200);
                    }
                }
                case "create-topics" -> {
                    int partitions = Integer.parseInt(a.get(1));
                    short rf = Short.parseShort(a.get(2));
                    Map<String, String> configs = new HashMap<>();
                    if (!a.get(3).equals("-")) {
                        for (String kv : a.get(3).split(",")) {
                            String[] p = kv.split("=", 2);
                            configs.put(p[0], p[1]);
                        }
                    }
                    List<NewTopic> topics = new ArrayList<>();
                    for (String t : a.subList(4, a.size())) {
                        topics.add(new NewTopic(t, partitions, rf).configs(configs));
                    }
                    admin.createTopics(topics).all().get();
                    // Wait until every partition has a leader, so a first produce does not race.
                    waitLeaders(admin, a.subList(4, a.size()));
                    out(Map.of("created", a.subList(4, a.size())));
                }
                case "leaders" -> {
                    TopicDescription d = admin.describeTopics(List.of(a.get(1))).allTopicNames().get().get(a.get(1));
                    Map<String, Integer> m = new TreeMap<>();
                    for (TopicPartitionInfo p : d.partitions()) {
                        m.put(Integer.toString(p.partition()), p.leader() == null ? -1 : p.leader().id());
                    }
                    out(m);
                }
                case "replicas" -> {
                    TopicDescription d = admin.describeTopics(List.of(a.get(1))).allTopicNames().get().get(a.get(1));
                    Map<String, List<Integer>> m = new TreeMap<>();
                    for (TopicPartitionInfo p : d.partitions()) {
                        List<Integer> r = new ArrayList<>();
                        for (Node n : p.replicas()) r.add(n.id());
                        m.put(Integer.toString(p.partition()), r);
                    }
                    out(m);
                }
                case "elect-preferred" -> {
                    TopicDescription d = admin.describeTopics(List.of(a.get(1))).allTopicNames().get().get(a.get(1));
                    Set<TopicPartition> tps = new HashSet<>();
                    for (TopicPartitionInfo p : d.partitions()) tps.add(new TopicPartition(a.get(1), p.partition()));
                    Map<TopicPartition, Optional<Throwable>> r = admin.electLeaders(ElectionType.PREFERRED, tps).partitions().get();
                    Map<String, String> m = new TreeMap<>();
                    r.forEach((tp, e) -> m.put(Integer.toString(tp.partition()), e.map(Throwable::toString).orElse("ok")));
                    out(m);
                }
                case "coordinator" -> {
                    ConsumerGroupDescription d = admin.describeConsumerGroups(List.of(a.get(1))).all().get().get(a.get(1));
                    out(Map.of("coordinator", d.coordinator().id()));
                }
                case "end-offsets" -> {
                    List<String> topics = a.subList(1, a.size());
                    Map<TopicPartition, OffsetSpec> q = new HashMap<>();
                    for (TopicDescription d : admin.describeTopics(topics).allTopicNames().get().values()) {
                        for (TopicPartitionInfo p : d.partitions()) q.put(new TopicPartition(d.name(), p.partition()), OffsetSpec.latest());
                    }
                    Map<String, Map<String, Long>> m = new TreeMap<>();
                    admin.listOffsets(q).all().get().forEach((tp, r) ->
                        m.computeIfAbsent(tp.topic(), k -> new TreeMap<>()).put(Integer.toString(tp.partition()), r.offset()));
                    out(m);
                }
                case "committed" -> {
                    Map<TopicPartition, OffsetAndMetadata> r = admin.listConsumerGroupOffsets(a.get(1)).partitionsToOffsetAndMetadata().get();
                    Map<String, Map<String, Long>> m = new TreeMap<>();
                    r.forEach((tp, o) -> { if (o != null) m.computeIfAbsent(tp.topic(), k -> new TreeMap<>()).put(Integer.toString(tp.partition()), o.offset()); });
                    out(m);
                }
                default -> usage();
            }
        }
    }

    private static void waitLeaders(Admin admin, List<String> topics) throws Exception {
        long end = System.currentTimeMillis() + 30_000;
        while (System.currentTimeMillis() < end) {
            try {
                boolean ok = true;
                for (TopicDescription d : admin.describeTopics(topics).allTopicNames().get().values()) {
                    for (TopicPartitionInfo p : d.partitions()) ok &= p.leader() != null;
                }
                if (ok) return;
            } catch (Exception e) {
                // metadata not propagated yet
            }
            Thread.sleep(100);
        }
        throw new IllegalStateException("topics have no leaders after 30 s: " + topics);
    }

    // ---- peer client ------------------------------------------------------------------------

    private static void produce(Properties conf, String topic) throws Exception {
        conf.put("acks", "all");
        conf.put("enable.idempotence", "true");
        conf.put("key.serializer", ByteArraySerializer.class.getName());
        conf.put("value.serializer", ByteArraySerializer.class.getName());
        int n = 0;
        try (Producer<byte[], byte[]> p = new KafkaProducer<>(conf);
             BufferedReader in = new BufferedReader(new InputStreamReader(System.in, StandardCharsets.UTF_8))) {
            List<java.util.concurrent.Future<RecordMetadata>> sent = new ArrayList<>();
            for (String line; (line = in.readLine()) != null; ) {
                if (line.isBlank()) continue;
                JsonNode r = JSON.readTree(line);
                byte[] key = r.hasNonNull("key") ? HexFormat.of().parseHex(r.get("key").asText()) : null;
                byte[] value = HexFormat.of().parseHex(r.get("value").asText());
                sent.add(p.send(new ProducerRecord<>(topic, key, value)));
                n++;
            }
            p.flush();
            for (var f : sent) {
                RecordMetadata m = f.get();
                out(Map.of("partition", m.partition(), "offset", m.offset()));
            }
        }
        System.err.println("produced " + n);
    }

    private static void group(Properties conf, String topic, String groupId, double seconds, String protocol,
                              String strategy) throws Exception {
        conf.put("group.id", groupId);
        conf.put("enable.auto.commit", "false");
        conf.put("auto.offset.reset", "earliest");
        conf.put("group.protocol", protocol);
        if (protocol.equals("classic")) {
            conf.putIfAbsent("session.timeout.ms", "6000");
            conf.putIfAbsent("heartbeat.interval.ms", "500");
            conf.putIfAbsent("partition.assignment.strategy", strategy.equals("cooperative-sticky")
                    ? "org.apache.kafka.clients.consumer.CooperativeStickyAssignor"
                    : "org.apache.kafka.clients.consumer.RangeAssignor");
        }
        conf.put("key.deserializer", ByteArrayDeserializer.class.getName());
        conf.put("value.deserializer", ByteArrayDeserializer.class.getName());
        long end = System.currentTimeMillis() + (long) (seconds * 1000);
        // Handled but not yet committed, per partition: a commit refused while a (cooperative)
        // rebalance runs is retried after the next poll, or made on revocation.
        Map<TopicPartition, OffsetAndMetadata> pending = new HashMap<>();
        try (KafkaConsumer<byte[], byte[]> c = new KafkaConsumer<>(conf)) {
            c.subscribe(List.of(topic), new ConsumerRebalanceListener() {
                public void onPartitionsRevoked(Collection<TopicPartition> parts) {
                    Map<TopicPartition, OffsetAndMetadata> last = new HashMap<>();
                    for (TopicPartition tp : parts) {
                        OffsetAndMetadata o = pending.remove(tp);
                        if (o != null) last.put(tp, o);
                    }
                    if (!last.isEmpty()) c.commitSync(last);
                    try { out(Map.of("revoked", sorted(parts))); } catch (Exception e) { throw new RuntimeException(e); }
                }
                public void onPartitionsAssigned(Collection<TopicPartition> parts) {
                    try { out(Map.of("assigned", sorted(c.assignment()))); } catch (Exception e) { throw new RuntimeException(e); }
                }
            });
            while (System.currentTimeMillis() < end) {
                ConsumerRecords<byte[], byte[]> recs = c.poll(Duration.ofMillis(200));
                for (ConsumerRecord<byte[], byte[]> r : recs) {
                    out(record(r));
                    pending.put(new TopicPartition(r.topic(), r.partition()), new OffsetAndMetadata(r.offset() + 1));
                }
                if (!pending.isEmpty()) {
                    try {
                        c.commitSync(pending);
                        pending.clear();
                    } catch (RebalanceInProgressException e) {
                        // retried after the next poll completes the rebalance
                    }
                }
            }
        }
    }

    private static void read(Properties conf, String topic, int count) throws Exception {
        conf.put("key.deserializer", ByteArrayDeserializer.class.getName());
        conf.put("value.deserializer", ByteArrayDeserializer.class.getName());
        conf.put("enable.auto.commit", "false");
        int got = 0;
        long end = System.currentTimeMillis() + 60_000;
        try (KafkaConsumer<byte[], byte[]> c = new KafkaConsumer<>(conf)) {
            List<TopicPartition> tps = new ArrayList<>();
            for (PartitionInfo p : c.partitionsFor(topic)) tps.add(new TopicPartition(topic, p.partition()));
            c.assign(tps);
            c.seekToBeginning(tps);
            while (got < count && System.currentTimeMillis() < end) {
                for (ConsumerRecord<byte[], byte[]> r : c.poll(Duration.ofMillis(200))) {
                    out(record(r));
                    got++;
                }
            }
        }
        if (got < count) {
            System.err.println("read " + got + " of " + count + " records from " + topic);
            System.exit(1);
        }
    }

    private static double cpuSeconds() {
        var os = (com.sun.management.OperatingSystemMXBean) java.lang.management.ManagementFactory.getOperatingSystemMXBean();
        return os.getProcessCpuTime() / 1e9;
    }

    /** Produces every record of FILE (hex values, one per line) as fast as the client can
     *  with the benchmark's shared settings (acks=all, idempotent, snappy, linger 2 ms, 1,000,000-byte
     *  batches, 5 requests in flight per connection, 32 MiB of buffer); prints records, seconds
     *  and CPU seconds. */
    private static void pbench(Properties conf, String topic, String file) throws Exception {
        List<byte[]> values = new ArrayList<>();
        // Line by line: the whole file as text would take twice the records' memory.
        try (var lines = java.nio.file.Files.lines(java.nio.file.Path.of(file))) {
            lines.filter(l -> !l.isBlank()).forEach(l -> values.add(HexFormat.of().parseHex(l.strip())));
        }
        conf.put("acks", "all");
        conf.put("enable.idempotence", "true");
        conf.put("compression.type", "snappy");
        conf.put("linger.ms", "2");
        conf.put("batch.size", "1000000");
        conf.put("max.in.flight.requests.per.connection", "5");
        conf.put("buffer.memory", "33554432");
        conf.put("key.serializer", ByteArraySerializer.class.getName());
        conf.put("value.serializer", ByteArraySerializer.class.getName());
        try (Producer<byte[], byte[]> p = new KafkaProducer<>(conf)) {
            p.partitionsFor(topic); // metadata and connections before the clock starts
            double c0 = cpuSeconds();
            long t0 = System.nanoTime();
            java.util.concurrent.atomic.AtomicReference<Exception> failed = new java.util.concurrent.atomic.AtomicReference<>();
            for (byte[] v : values) {
                p.send(new ProducerRecord<>(topic, v), (m, e) -> { if (e != null) failed.set(e); });
            }
            p.flush();
            double secs = (System.nanoTime() - t0) / 1e9;
            if (failed.get() != null) throw failed.get();
            out(Map.of("records", values.size(), "seconds", secs, "cpu_seconds", cpuSeconds() - c0));
        }
    }

    /** Consumes COUNT records of TOPIC in a fresh group without verification, committing once
     *  at the end; timed from subscribe (the join is included, as for meshbus). */
    private static void cbench(Properties conf, String topic, String group, int count) throws Exception {
        conf.put("group.id", group);
        conf.put("enable.auto.commit", "false");
        conf.put("auto.offset.reset", "earliest");
        conf.put("key.deserializer", ByteArrayDeserializer.class.getName());
        conf.put("value.deserializer", ByteArrayDeserializer.class.getName());
        try (KafkaConsumer<byte[], byte[]> c = new KafkaConsumer<>(conf)) {
            double c0 = cpuSeconds();
            long t0 = System.nanoTime();
            c.subscribe(List.of(topic));
            int got = 0;
            while (got < count) got += c.poll(Duration.ofMillis(500)).count();
            c.commitSync();
            double secs = (System.nanoTime() - t0) / 1e9;
            out(Map.of("records", got, "seconds", secs, "cpu_seconds", cpuSeconds() - c0));
        }
    }

    private static List<Integer> sorted(Collection<TopicPartition> parts) {
        List<Integer> l = new ArrayList<>();
        for (TopicPartition p : parts) l.add(p.partition());
        Collections.sort(l);
        return l;
    }

    private static ObjectNode record(ConsumerRecord<byte[], byte[]> r) {
        ObjectNode o = JSON.createObjectNode();
        o.put("partition", r.partition());
        o.put("offset", r.offset());
        o.put("key", hex(r.key()));
        o.put("value", hex(r.value()));
        ObjectNode h = o.putObject("headers");
        for (Header x : r.headers()) h.put(x.key(), hex(x.value()));
        return o;
    }
}
