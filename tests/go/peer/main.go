// The Sarama side of the interop tests (github.com/IBM/sarama, the client of the deployed
// CyberMesh backend), built by scripts/setup. Same commands and JSON-lines output as
// tests/py/kafka_tool.py and tests/java/Peer.java:
//
//	sarama-peer produce --conf JSON --topic T      stdin: {"key": hex|null, "value": hex}
//	sarama-peer group   --conf JSON --topic T --group G --seconds S
//	sarama-peer read    --conf JSON --topic T --count N
//	sarama-peer pbench  --conf JSON --topic T --file HEXLINES   (benchmark: produce, timed)
//	sarama-peer cbench  --conf JSON --topic T --group G --count N (benchmark: consume, timed)
//	sarama-peer vbench  --conf JSON --topic T --group G --count N (benchmark: consume and verify
//	                    ai.anomalies.v1 records by SPEC 4, timed; verify.go)
//
// --conf: {"brokers": "h:p,...", "ca": path, "mechanism": "SCRAM-SHA-512", "user", "password"}.
package main

import (
	"bufio"
	"context"
	"crypto/sha256"
	"crypto/sha512"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"flag"
	"fmt"
	"hash"
	"os"
	"sort"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/IBM/sarama"
	"github.com/xdg-go/scram"
)

type conf struct {
	Brokers   string `json:"brokers"`
	CA        string `json:"ca"`
	Mechanism string `json:"mechanism"`
	User      string `json:"user"`
	Password  string `json:"password"`
}

type scramClient struct {
	*scram.ClientConversation
	hash func() hash.Hash
}

func (s *scramClient) Begin(user, password, authzID string) error {
	c, err := scram.HashGeneratorFcn(s.hash).NewClient(user, password, authzID)
	if err != nil {
		return err
	}
	s.ClientConversation = c.NewConversation()
	return nil
}

func (s *scramClient) Step(challenge string) (string, error) {
	return s.ClientConversation.Step(challenge)
}
func (s *scramClient) Done() bool { return s.ClientConversation.Done() }

func config(c conf) *sarama.Config {
	cfg := sarama.NewConfig()
	cfg.Version = sarama.V3_6_0_0
	cfg.ClientID = "sarama-peer"
	if c.CA != "" {
		pem, err := os.ReadFile(c.CA)
		must(err)
		pool := x509.NewCertPool()
		pool.AppendCertsFromPEM(pem)
		cfg.Net.TLS.Enable = true
		cfg.Net.TLS.Config = &tls.Config{RootCAs: pool, ServerName: "localhost"}
	}
	if c.User != "" {
		cfg.Net.SASL.Enable = true
		cfg.Net.SASL.User = c.User
		cfg.Net.SASL.Password = c.Password
		cfg.Net.SASL.Handshake = true
		if c.Mechanism == "SCRAM-SHA-256" {
			cfg.Net.SASL.Mechanism = sarama.SASLTypeSCRAMSHA256
			cfg.Net.SASL.SCRAMClientGeneratorFunc = func() sarama.SCRAMClient { return &scramClient{hash: sha256.New} }
		} else {
			cfg.Net.SASL.Mechanism = sarama.SASLTypeSCRAMSHA512
			cfg.Net.SASL.SCRAMClientGeneratorFunc = func() sarama.SCRAMClient { return &scramClient{hash: sha512.New} }
		}
	}
	return cfg
}

func must(err error) {
	if err != nil {
		fmt.Fprintln(os.Stderr, "sarama-peer:", err)
		os.Exit(1)
	}
}

var outMu sync.Mutex

func out(v any) {
	b, err := json.Marshal(v)
	must(err)
	outMu.Lock()
	defer outMu.Unlock()
	os.Stdout.Write(append(b, '\n'))
}

func hexOrNil(b []byte) any {
	if b == nil {
		return nil
	}
	return hex.EncodeToString(b)
}

func record(m *sarama.ConsumerMessage) map[string]any {
	h := map[string]any{}
	for _, x := range m.Headers {
		h[string(x.Key)] = hexOrNil(x.Value)
	}
	return map[string]any{"partition": m.Partition, "offset": m.Offset, "key": hexOrNil(m.Key), "value": hexOrNil(m.Value), "headers": h}
}

func produce(c conf, topic string) {
	cfg := config(c)
	cfg.Producer.RequiredAcks = sarama.WaitForAll
	cfg.Producer.Idempotent = true
	cfg.Net.MaxOpenRequests = 1
	cfg.Producer.Return.Successes = true
	cfg.Producer.Partitioner = sarama.NewHashPartitioner
	p, err := sarama.NewSyncProducer(strings.Split(c.Brokers, ","), cfg)
	must(err)
	defer p.Close()
	in := bufio.NewScanner(os.Stdin)
	in.Buffer(make([]byte, 4<<20), 4<<20)
	n := 0
	for in.Scan() {
		line := strings.TrimSpace(in.Text())
		if line == "" {
			continue
		}
		var r struct {
			Key   *string `json:"key"`
			Value string  `json:"value"`
		}
		must(json.Unmarshal([]byte(line), &r))
		v, err := hex.DecodeString(r.Value)
		must(err)
		msg := &sarama.ProducerMessage{Topic: topic, Value: sarama.ByteEncoder(v)}
		if r.Key != nil {
			k, err := hex.DecodeString(*r.Key)
			must(err)
			msg.Key = sarama.ByteEncoder(k)
		}
		part, off, err := p.SendMessage(msg)
		must(err)
		out(map[string]any{"partition": part, "offset": off})
		n++
	}
	must(in.Err())
	fmt.Fprintln(os.Stderr, "produced", n)
}

// handler consumes claims; under a cooperative strategy a rebalance adds and ends claims inside
// one session (Setup runs once), so the claims held are tracked and printed as they change.
type handler struct{ cooperative bool }

var (
	heldMu sync.Mutex
	held   = map[int32]bool{}
)

// claims prints the partitions held now as {"assigned": [...]}, after `change` ran on them.
func claims(change func(map[int32]bool)) {
	heldMu.Lock()
	defer heldMu.Unlock()
	change(held)
	parts := []int32{}
	for p := range held {
		parts = append(parts, p)
	}
	sort.Slice(parts, func(i, j int) bool { return parts[i] < parts[j] })
	out(map[string]any{"assigned": parts})
}

func (h handler) Setup(s sarama.ConsumerGroupSession) error {
	if h.cooperative {
		return nil
	}
	var parts []int32
	for _, ps := range s.Claims() {
		parts = append(parts, ps...)
	}
	sort.Slice(parts, func(i, j int) bool { return parts[i] < parts[j] })
	if parts == nil {
		parts = []int32{}
	}
	out(map[string]any{"assigned": parts})
	return nil
}
func (handler) Cleanup(sarama.ConsumerGroupSession) error { return nil }
func (h handler) ConsumeClaim(s sarama.ConsumerGroupSession, claim sarama.ConsumerGroupClaim) error {
	if h.cooperative {
		p := claim.Partition()
		claims(func(m map[int32]bool) { m[p] = true })
		defer func() {
			out(map[string]any{"revoked": []int32{p}})
			claims(func(m map[int32]bool) { delete(m, p) })
		}()
	}
	for m := range claim.Messages() {
		out(record(m))
		s.MarkMessage(m, "")
		s.Commit()
	}
	return nil
}

func group(c conf, topic, id string, seconds float64, strategy string) {
	cfg := config(c)
	cfg.Consumer.Offsets.Initial = sarama.OffsetOldest
	cfg.Consumer.Offsets.AutoCommit.Enable = false
	cfg.Consumer.Group.Session.Timeout = 6 * time.Second
	cfg.Consumer.Group.Heartbeat.Interval = 500 * time.Millisecond
	cfg.Consumer.Group.Rebalance.GroupStrategies = []sarama.BalanceStrategy{sarama.NewBalanceStrategyRange()}
	if strategy == "cooperative-sticky" {
		cfg.Consumer.Group.Rebalance.GroupStrategies = []sarama.BalanceStrategy{sarama.NewBalanceStrategyCooperativeSticky()}
	}
	g, err := sarama.NewConsumerGroup(strings.Split(c.Brokers, ","), id, cfg)
	must(err)
	ctx, cancel := context.WithTimeout(context.Background(), time.Duration(seconds*float64(time.Second)))
	defer cancel()
	for ctx.Err() == nil {
		if err := g.Consume(ctx, []string{topic}, handler{cooperative: strategy == "cooperative-sticky"}); err != nil && ctx.Err() == nil {
			fmt.Fprintln(os.Stderr, "sarama-peer: consume:", err)
			time.Sleep(200 * time.Millisecond)
		}
	}
	must(g.Close())
}

func read(c conf, topic string, count int) {
	cl, err := sarama.NewClient(strings.Split(c.Brokers, ","), config(c))
	must(err)
	defer cl.Close()
	cons, err := sarama.NewConsumerFromClient(cl)
	must(err)
	parts, err := cl.Partitions(topic)
	must(err)
	msgs := make(chan *sarama.ConsumerMessage)
	for _, p := range parts {
		pc, err := cons.ConsumePartition(topic, p, sarama.OffsetOldest)
		must(err)
		go func() {
			for m := range pc.Messages() {
				msgs <- m
			}
		}()
	}
	got := 0
	deadline := time.After(60 * time.Second)
	for got < count {
		select {
		case m := <-msgs:
			out(record(m))
			got++
		case <-deadline:
			fmt.Fprintf(os.Stderr, "read %d of %d records from %s\n", got, count, topic)
			os.Exit(1)
		}
	}
}

func cpuSeconds() float64 {
	var ru syscall.Rusage
	must(syscall.Getrusage(syscall.RUSAGE_SELF, &ru))
	tv := func(t syscall.Timeval) float64 { return float64(t.Sec) + float64(t.Usec)/1e6 }
	return tv(ru.Utime) + tv(ru.Stime)
}

// pbench produces every record of FILE (hex values, one per line) as fast as Sarama can, with
// the benchmark's shared settings (acks=all, idempotent, snappy, 2 ms flush, 1,000,000-byte
// batches (a flush at that many bytes, and at most that many per partition per request);
// one request in flight per connection, Sarama's limit for an idempotent producer), timed
// after the client connected.
func pbench(c conf, topic, file string) {
	data, err := os.ReadFile(file)
	must(err)
	var values [][]byte
	for _, l := range strings.Split(string(data), "\n") {
		if l = strings.TrimSpace(l); l != "" {
			v, err := hex.DecodeString(l)
			must(err)
			values = append(values, v)
		}
	}
	cfg := config(c)
	cfg.Producer.RequiredAcks = sarama.WaitForAll
	cfg.Producer.Idempotent = true
	cfg.Net.MaxOpenRequests = 1
	cfg.Producer.Compression = sarama.CompressionSnappy
	cfg.Producer.Flush.Frequency = 2 * time.Millisecond
	cfg.Producer.Flush.Bytes = 1000000
	cfg.Producer.MaxMessageBytes = 1000000
	cfg.Producer.Return.Successes = true
	cfg.Producer.Partitioner = sarama.NewRoundRobinPartitioner
	client, err := sarama.NewClient(strings.Split(c.Brokers, ","), cfg)
	must(err)
	// Metadata and connections before the clock starts.
	_, err = client.Partitions(topic)
	must(err)
	p, err := sarama.NewAsyncProducerFromClient(client)
	must(err)
	c0, t0 := cpuSeconds(), time.Now()
	done := make(chan error)
	go func() {
		for i := 0; i < len(values); i++ {
			select {
			case <-p.Successes():
			case e := <-p.Errors():
				done <- e.Err
				return
			}
		}
		done <- nil
	}()
	for _, v := range values {
		p.Input() <- &sarama.ProducerMessage{Topic: topic, Value: sarama.ByteEncoder(v)}
	}
	must(<-done)
	secs := time.Since(t0).Seconds()
	cpu := cpuSeconds() - c0
	must(p.Close())
	must(client.Close())
	out(map[string]any{"records": len(values), "seconds": secs, "cpu_seconds": cpu})
}

type counter struct {
	want int
	got  int
	done chan struct{}
}

func (h *counter) Setup(sarama.ConsumerGroupSession) error   { return nil }
func (h *counter) Cleanup(sarama.ConsumerGroupSession) error { return nil }
func (h *counter) ConsumeClaim(s sarama.ConsumerGroupSession, claim sarama.ConsumerGroupClaim) error {
	for m := range claim.Messages() {
		s.MarkMessage(m, "")
		outMu.Lock()
		h.got++
		finished := h.got == h.want
		outMu.Unlock()
		if finished {
			close(h.done)
		}
	}
	return nil
}

// timedGroup consumes TOPIC in a fresh group GROUP from the oldest offset with handler h,
// without auto-commit (the group's offsets are committed when it closes), until done is
// closed; timed from joining (as for meshbus). Returns the seconds and CPU seconds spent.
func timedGroup(c conf, topic, group string, h sarama.ConsumerGroupHandler, done <-chan struct{}) (secs, cpu float64) {
	cfg := config(c)
	cfg.Consumer.Offsets.Initial = sarama.OffsetOldest
	cfg.Consumer.Offsets.AutoCommit.Enable = false
	g, err := sarama.NewConsumerGroup(strings.Split(c.Brokers, ","), group, cfg)
	must(err)
	ctx, cancel := context.WithCancel(context.Background())
	c0, t0 := cpuSeconds(), time.Now()
	go func() {
		for ctx.Err() == nil {
			if err := g.Consume(ctx, []string{topic}, h); err != nil && ctx.Err() == nil {
				fmt.Fprintln(os.Stderr, "sarama-peer: consume:", err)
			}
		}
	}()
	<-done
	secs, cpu = time.Since(t0).Seconds(), cpuSeconds()-c0
	cancel()
	must(g.Close())
	return secs, cpu
}

// cbench consumes COUNT records of TOPIC in a fresh group without verification, committing
// once at the end; timed from joining (as for meshbus).
func cbench(c conf, topic, id string, count int) {
	h := &counter{want: count, done: make(chan struct{})}
	secs, cpu := timedGroup(c, topic, id, h, h.done)
	out(map[string]any{"records": h.got, "seconds": secs, "cpu_seconds": cpu})
}

// vcounter verifies each record as an AnomalyEvent (verify.go) as it counts it: ConsumeClaim
// runs on one goroutine per claimed partition, so verification runs in parallel, all
// partitions sharing the verifier's replay guard, as in the deployed validators.
type vcounter struct {
	want     int
	v        *Verifier
	mu       sync.Mutex
	got      int
	verified int
	refused  int
	reasons  map[string]int
	done     chan struct{}
}

func (h *vcounter) Setup(sarama.ConsumerGroupSession) error   { return nil }
func (h *vcounter) Cleanup(sarama.ConsumerGroupSession) error { return nil }
func (h *vcounter) ConsumeClaim(s sarama.ConsumerGroupSession, claim sarama.ConsumerGroupClaim) error {
	for m := range claim.Messages() {
		reason, ok := h.v.Verify(m.Value, time.Now().Unix())
		s.MarkMessage(m, "")
		h.mu.Lock()
		if h.got == h.want { // past COUNT (other partitions still delivering): not counted
			h.mu.Unlock()
			continue
		}
		h.got++
		if ok {
			h.verified++
		} else {
			h.refused++
			h.reasons[reason]++
		}
		finished := h.got == h.want
		h.mu.Unlock()
		if finished {
			close(h.done)
		}
	}
	return nil
}

// vbench is cbench with verification: it consumes COUNT records of TOPIC in a fresh group,
// verifying each as an ai.anomalies.v1 AnomalyEvent (SPEC 4 steps 1-9 against the wall clock,
// skew 300 s, so the records must have been signed within the last 5 minutes), committing
// once at the end; timed from joining. Prints {"records", "seconds", "cpu_seconds",
// "verified", "refused", "reasons": {reason: count}}.
func vbench(c conf, topic, id string, count int) {
	h := &vcounter{want: count, v: NewVerifier(), reasons: map[string]int{}, done: make(chan struct{})}
	secs, cpu := timedGroup(c, topic, id, h, h.done)
	h.mu.Lock()
	defer h.mu.Unlock()
	out(map[string]any{"records": h.got, "seconds": secs, "cpu_seconds": cpu,
		"verified": h.verified, "refused": h.refused, "reasons": h.reasons})
}

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: sarama-peer produce|group|read --conf JSON ...")
		os.Exit(2)
	}
	fs := flag.NewFlagSet(os.Args[1], flag.ExitOnError)
	confJSON := fs.String("conf", "", "connection settings (JSON)")
	topic := fs.String("topic", "", "topic")
	groupID := fs.String("group", "", "consumer group")
	seconds := fs.Float64("seconds", 20, "how long a group member runs")
	count := fs.Int("count", 1, "records to read")
	file := fs.String("file", "", "hex values, one per line (pbench)")
	strategy := fs.String("strategy", "range", "a group member's balance strategy: range or cooperative-sticky")
	must(fs.Parse(os.Args[2:]))
	var c conf
	must(json.Unmarshal([]byte(*confJSON), &c))
	switch os.Args[1] {
	case "produce":
		produce(c, *topic)
	case "group":
		group(c, *topic, *groupID, *seconds, *strategy)
	case "read":
		read(c, *topic, *count)
	case "pbench":
		pbench(c, *topic, *file)
	case "cbench":
		cbench(c, *topic, *groupID, *count)
	case "vbench":
		vbench(c, *topic, *groupID, *count)
	default:
		os.Exit(2)
	}
}
