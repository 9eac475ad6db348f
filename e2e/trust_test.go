package e2e

import (
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/breakwater/breakwater/internal/testkit"
)

// Issue 12's three lines: a task whose Task-Reply-To names the JetStream
// API or the admin plane changes nothing (the DLQ and RESULTS are still
// there with their messages, the route still serves) and ends in the DLQ
// as poison; an _INBOX reply still arrives.
func TestReplyToCannotBorrowWorkerRights(t *testing.T) {
	t.Parallel()
	s := startNATS(t)
	startWorker(t, s)
	c := connect(t, s)
	c.publishTask("echo", "before", []byte("kept"))
	c.lastMsg("RESULTS", "results.echo.before", 30*time.Second)

	for i, to := range []string{"$JS.API.STREAM.DELETE.DLQ", "$JS.API.STREAM.PURGE.RESULTS", "breakwater.all.route.pause"} {
		c.publishTask("upper", "", []byte(`{"route":"upper"}`), "Task-Id", "evil"+itoa(uint64(i)), "Task-Reply-To", to)
	}
	testkit.Eventually(t, 30*time.Second, "three poison entries", func() (bool, string) {
		n := c.msgs("DLQ")
		return n == 3, "DLQ holds " + itoa(n)
	})
	dlqStream, err := c.js.Stream(ctxTimeout(t, 5*time.Second), "DLQ")
	if err != nil {
		t.Fatalf("the DLQ stream is gone: %v", err)
	}
	for seq := uint64(1); seq <= 3; seq++ {
		m, err := dlqStream.GetMsg(ctxTimeout(t, 5*time.Second), seq)
		if err != nil {
			t.Fatal(err)
		}
		wantHeader(t, m.Header, "Dlq-Reason", "poison")
	}
	if _, err := c.streamInfo("RESULTS", ""); err != nil {
		t.Fatalf("RESULTS: %v", err)
	}
	c.lastMsg("RESULTS", "results.echo.before", 5*time.Second) // not purged
	c.noMsg("RESULTS", "results.upper.evil2")

	// The route still serves, and an inbox still gets its reply.
	inbox := nats.NewInbox()
	sub, err := c.nc.SubscribeSync(inbox)
	if err != nil {
		t.Fatal(err)
	}
	c.publishTask("upper", "after", []byte("hi"), "Task-Reply-To", inbox)
	m, err := sub.NextMsg(30 * time.Second)
	if err != nil {
		t.Fatalf("no reply on the inbox: %v", err)
	}
	if string(m.Data) != "HI" {
		t.Errorf("reply %q, want HI", m.Data)
	}
}
