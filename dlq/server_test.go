package dlq_test

import (
	"context"
	"strconv"
	"strings"
	"testing"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/breakwater/breakwater/bus"
	"github.com/breakwater/breakwater/internal/testkit"
)

// env is a real embedded server with Breakwater's streams.
type env struct {
	nc   *nats.Conn
	js   jetstream.JetStream
	topo bus.Topology
}

func newEnv(t testing.TB) *env {
	t.Helper()
	return streams(t, testkit.StartServer(t))
}

// streams connects to srv and creates Breakwater's streams there.
func streams(t testing.TB, srv *testkit.Server) *env {
	t.Helper()
	nc, js := srv.JetStream(t)
	if err := bus.EnsureStreams(context.Background(), js, bus.Topology{}); err != nil {
		t.Fatal(err)
	}
	return &env{nc: nc, js: js}
}

func (e *env) count(t testing.TB, stream string) uint64 { return testkit.Msgs(t, e.js, stream) }

type errString string

func (e errString) Error() string { return string(e) }

func atoi(t testing.TB, s string) int {
	t.Helper()
	n, err := strconv.Atoi(s)
	if err != nil {
		t.Fatal(err)
	}
	return n
}

func contains(s, sub string) bool { return strings.Contains(s, sub) }
