package bus_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/breakwater/breakwater/bus"
	"github.com/breakwater/breakwater/internal/testkit"
)

// startServer starts a server for one test (fsync on every write, as the
// worker's embedded server) and connects to it with bus.Connect.
func startServer(t *testing.T) jetstream.JetStream {
	t.Helper()
	srv := testkit.StartServer(t, testkit.SyncAlways())
	nc, err := bus.Connect(context.Background(), bus.ConnectOptions{URL: srv.URL()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	return testkit.JetStream(t, nc)
}

func TestTopologySubjects(t *testing.T) {
	tests := []struct {
		give                                       bus.Topology
		wantTasks, wantStream, wantResult, wantDLQ string
	}{
		{bus.Topology{}, "tasks.code.gen", "TASKS", "results.code.gen.t1", "dlq.code.gen"},
		{bus.Topology{Prefix: "acme"}, "acme.tasks.code.gen", "acme_TASKS", "acme.results.code.gen.t1", "acme.dlq.code.gen"},
	}
	for _, tt := range tests {
		if got := tt.give.TaskSubject("code.gen"); got != tt.wantTasks {
			t.Errorf("TaskSubject: got %q, want %q", got, tt.wantTasks)
		}
		if got := tt.give.TasksStream(); got != tt.wantStream {
			t.Errorf("TasksStream: got %q, want %q", got, tt.wantStream)
		}
		if got := tt.give.ResultSubject("code.gen", "t1"); got != tt.wantResult {
			t.Errorf("ResultSubject: got %q, want %q", got, tt.wantResult)
		}
		if got := tt.give.DLQSubject("code.gen"); got != tt.wantDLQ {
			t.Errorf("DLQSubject: got %q, want %q", got, tt.wantDLQ)
		}
		typ, ok := tt.give.TaskType(tt.wantTasks)
		if !ok || typ != "code.gen" {
			t.Errorf("TaskType(%q): got %q, %v", tt.wantTasks, typ, ok)
		}
		if _, ok := tt.give.TaskType(tt.give.ResultSubject("a", "b")); ok {
			t.Error("TaskType accepted a result subject")
		}
	}
}

func TestEnsureStreamsIdempotent(t *testing.T) {
	js := startServer(t)
	ctx := context.Background()
	topo := bus.Topology{ResultsMaxAge: 2 * time.Hour}
	for i := range 2 {
		if err := bus.EnsureStreams(ctx, js, topo); err != nil {
			t.Fatalf("run %d: %v", i, err)
		}
	}
	want := map[string]struct {
		retention jetstream.RetentionPolicy
		subject   string
		maxAge    time.Duration
		perSubj   int64
	}{
		"TASKS":   {jetstream.WorkQueuePolicy, "tasks.>", 0, -1},
		"RESULTS": {jetstream.LimitsPolicy, "results.>", 2 * time.Hour, 1},
		"DLQ":     {jetstream.LimitsPolicy, "dlq.>", 0, -1},
		"HEALTH":  {jetstream.LimitsPolicy, "health.>", 24 * time.Hour, 100},
		"ADVISORIES": {jetstream.LimitsPolicy, "$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES.TASKS.*",
			bus.DefaultAdvisoriesMaxAge, -1},
	}
	for name, w := range want {
		s, err := js.Stream(ctx, name)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		c := s.CachedInfo().Config
		if c.Retention != w.retention || c.Subjects[0] != w.subject || c.MaxAge != w.maxAge ||
			c.MaxMsgsPerSubject != w.perSubj || c.Storage != jetstream.FileStorage {
			t.Errorf("%s: got retention %v subjects %v max age %v per subject %d storage %v",
				name, c.Retention, c.Subjects, c.MaxAge, c.MaxMsgsPerSubject, c.Storage)
		}
	}
	// A changed setting is applied to the existing stream.
	if err := bus.EnsureStreams(ctx, js, bus.Topology{ResultsMaxAge: time.Hour}); err != nil {
		t.Fatal(err)
	}
	s, _ := js.Stream(ctx, "RESULTS")
	if got := s.CachedInfo().Config.MaxAge; got != time.Hour {
		t.Errorf("RESULTS max age after update: got %v, want 1h", got)
	}
}

// countingStreams counts the update calls EnsureStreams makes.
type countingStreams struct {
	bus.StreamManager
	updates []string
}

func (c *countingStreams) UpdateStream(ctx context.Context, cfg jetstream.StreamConfig) (jetstream.Stream, error) {
	c.updates = append(c.updates, cfg.Name)
	return c.StreamManager.UpdateStream(ctx, cfg)
}

// Workers start often: an installation already in shape is left alone, the
// ADVISORIES stream included, with a prefix too.
func TestEnsureStreamsNoUpdateWhenUnchanged(t *testing.T) {
	js := startServer(t)
	ctx := context.Background()
	topo := bus.Topology{Prefix: "acme"}
	if err := bus.EnsureStreams(ctx, js, topo); err != nil {
		t.Fatal(err)
	}
	s, err := js.Stream(ctx, "acme_ADVISORIES")
	if err != nil {
		t.Fatal(err)
	}
	if got := s.CachedInfo().Config.Subjects; len(got) != 1 || got[0] != "$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES.acme_TASKS.*" {
		t.Errorf("acme_ADVISORIES subjects %v", got)
	}
	c := &countingStreams{StreamManager: js}
	if err := bus.EnsureStreams(ctx, c, topo); err != nil {
		t.Fatal(err)
	}
	if len(c.updates) != 0 {
		t.Errorf("second EnsureStreams updated %v, want none", c.updates)
	}
}

func TestAdvisorySubjects(t *testing.T) {
	tests := []struct {
		give               bus.Topology
		consumer           string
		wantStream, wantSu string
	}{
		{bus.Topology{}, "workers", "ADVISORIES", "$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES.TASKS.workers"},
		{bus.Topology{Prefix: "acme"}, "*", "acme_ADVISORIES", "$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES.acme_TASKS.*"},
	}
	for _, tt := range tests {
		if got := tt.give.AdvisoriesStream(); got != tt.wantStream {
			t.Errorf("AdvisoriesStream: got %q, want %q", got, tt.wantStream)
		}
		if got := tt.give.MaxDeliveriesAdvisorySubject(tt.consumer); got != tt.wantSu {
			t.Errorf("MaxDeliveriesAdvisorySubject: got %q, want %q", got, tt.wantSu)
		}
	}
}

func TestEnsureStreamsMismatch(t *testing.T) {
	js := startServer(t)
	ctx := context.Background()
	if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "TASKS", Subjects: []string{"tasks.>"}}); err != nil {
		t.Fatal(err)
	}
	if err := bus.EnsureStreams(ctx, js, bus.Topology{}); !errors.Is(err, bus.ErrStreamMismatch) {
		t.Errorf("got %v, want ErrStreamMismatch", err)
	}
}

func TestEnsureConsumer(t *testing.T) {
	js := startServer(t)
	ctx := context.Background()
	if err := bus.EnsureStreams(ctx, js, bus.Topology{}); err != nil {
		t.Fatal(err)
	}
	for range 2 {
		c, err := bus.EnsureConsumer(ctx, js, bus.Topology{}, bus.ConsumerOptions{AckWait: 5 * time.Second, MaxDeliver: 3})
		if err != nil {
			t.Fatal(err)
		}
		cfg := c.CachedInfo().Config
		if cfg.Durable != "workers" || cfg.AckWait != 5*time.Second || cfg.MaxDeliver != 3 || cfg.AckPolicy != jetstream.AckExplicitPolicy {
			t.Errorf("consumer config: %+v", cfg)
		}
	}
}

func TestHostPort(t *testing.T) {
	tests := []struct {
		give     string
		wantHost string
		wantPort int
		wantErr  bool
	}{
		{"nats://127.0.0.1:4222", "127.0.0.1", 4222, false},
		{"localhost:4333", "localhost", 4333, false},
		{"nats://user:pw@0.0.0.0:5222,nats://b:4222", "0.0.0.0", 5222, false},
		{"nats://example.com", "example.com", 4222, false},
		{"nats://:4222", "", 0, true},
		{"nats://h:99999", "", 0, true},
	}
	for _, tt := range tests {
		host, port, err := bus.HostPort(tt.give)
		if (err != nil) != tt.wantErr || host != tt.wantHost || port != tt.wantPort {
			t.Errorf("HostPort(%q) = %q, %d, %v; want %q, %d, err %v", tt.give, host, port, err, tt.wantHost, tt.wantPort, tt.wantErr)
		}
	}
}

func TestConnectRejectsBadOptions(t *testing.T) {
	for _, o := range []bus.ConnectOptions{
		{TLSCert: "c.pem"},
		{Password: "pw"},
	} {
		if _, err := bus.Connect(context.Background(), o); !errors.Is(err, bus.ErrInvalidOption) {
			t.Errorf("Connect(%+v): got %v, want ErrInvalidOption", o, err)
		}
	}
}

func TestConnectWaitsForServer(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	_, err := bus.Connect(ctx, bus.ConnectOptions{URL: "nats://127.0.0.1:1", RetryOnFailedConnect: true})
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("got %v, want the context's deadline", err)
	}
	if _, err := bus.Connect(context.Background(), bus.ConnectOptions{URL: "nats://127.0.0.1:1"}); !errors.Is(err, nats.ErrNoServers) {
		t.Errorf("without retry: got %v, want ErrNoServers", err)
	}
}
