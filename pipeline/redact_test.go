package pipeline_test

import (
	"context"
	"errors"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/breakwater/breakwater/bus"
	"github.com/breakwater/breakwater/dlq"
	"github.com/breakwater/breakwater/handlers"
	"github.com/breakwater/breakwater/internal/testkit"
	"github.com/breakwater/breakwater/pipeline"
	"github.com/breakwater/breakwater/resilience"
)

// TestLogsRedactConfiguredHeaders: a backend error quoting a header on the
// configured deny-list (dlq.redact_headers) reaches neither the
// redelivery log line nor the dead-letter one with its value.
func TestLogsRedactConfiguredHeaders(t *testing.T) {
	e := newEnv(t, bus.ConsumerOptions{})
	var logs testkit.Buffer
	secret := errors.New("upstream refused X-Model-Key: s3cr3t-value for this call")
	route := &resilience.Route{Name: "work", Targets: []resilience.Target{fixed("model", handlers.Transient(secret))}}
	o := pipeline.Options{MaxDeliver: 2}
	o.JS, o.Conn, o.Consumer, o.Topology = e.js, e.nc, e.cons, e.topo
	o.Router = resilience.NewRouter([]*resilience.Route{route})
	o.DLQ = dlq.NewWriter(e.js, dlq.WriterOptions{Topology: e.topo, Worker: "w1", RedactHeaders: []string{"X-Model-*"}})
	o.Logger = slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelInfo}))
	w, err := pipeline.New(context.Background(), o)
	if err != nil {
		t.Fatal(err)
	}
	cancel, done := goRun(w)
	defer func() {
		cancel()
		<-done
	}()
	e.publish(t, "work", "r1", "{}")
	testkit.Eventually(t, 30*time.Second, "the task dead-lettered", func() (bool, string) {
		return strings.Contains(logs.String(), "task dead-lettered"), logs.String()
	})
	out := logs.String()
	if !strings.Contains(out, "task will be redelivered") {
		t.Fatalf("no redelivery logged:\n%s", out)
	}
	if strings.Contains(out, "s3cr3t-value") {
		t.Errorf("the configured header's value is in the log:\n%s", out)
	}
}
