package handlers_test

import (
	"testing"

	"github.com/nats-io/nats.go"

	"github.com/breakwater/breakwater/internal/testkit"
)

// startNATS starts an embedded core NATS server (max_payload 8 MiB, so a
// 1 MiB body plus headers fits) and returns a connection to it; both end
// with the test.
func startNATS(t testing.TB) (*testkit.Server, *nats.Conn) {
	t.Helper()
	s := testkit.StartServer(t, testkit.NoJetStream(), testkit.MaxPayload(8<<20))
	return s, s.Connect(t)
}
