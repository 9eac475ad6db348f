package console_test

import (
	"encoding/json"
	"net/http"
	"strconv"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/breakwater/breakwater/console"
)

// fillDLQ stores n DLQ entries as fast as the server takes them: every
// tenth of type "other", every thousandth with reason poison (the rest
// exhausted), each with a worker's headers and a 128-byte payload.
func (e *env) fillDLQ(n int) {
	e.t.Helper()
	payload := make([]byte, 128)
	failedAt := time.Now().UTC().Format(time.RFC3339)
	var last jetstream.PubAckFuture
	for i := range n {
		typ, reason := "bench", "exhausted"
		if i%10 == 9 {
			typ = "other"
		}
		if i%1000 == 999 {
			reason = "poison"
		}
		m := nats.NewMsg("dlq." + typ)
		m.Data = payload
		m.Header = nats.Header{"Task-Id": {"t" + strconv.Itoa(i)}, "Dlq-Reason": {reason}, "Dlq-Error": {"boom"},
			"Dlq-Attempts": {"3"}, "Dlq-Backends": {"flow,coder"}, "Dlq-Original-Subject": {"tasks." + typ},
			"Dlq-Failed-At": {failedAt}, "Dlq-Worker": {"w1"}}
		f, err := e.js.PublishMsgAsync(m)
		if err != nil {
			e.t.Fatal(err)
		}
		last = f
		if i%2000 == 1999 {
			// A window of acks: the client's pending limit is backpressure.
			select {
			case <-e.js.PublishAsyncComplete():
			case <-time.After(time.Minute):
				e.t.Fatal("DLQ fill stalled")
			}
		}
	}
	select {
	case <-e.js.PublishAsyncComplete():
	case <-time.After(time.Minute):
		e.t.Fatal("DLQ fill did not complete")
	}
	select {
	case <-last.Ok():
	case err := <-last.Err():
		e.t.Fatal(err)
	}
}

// BenchmarkDLQPage100k times one page of GET /api/dlq (50 entries, or
// what a filter finds within dlq.MaxPageScan) over a DLQ of 100,000
// entries, at its start, middle and end and with filters: each op is one
// page served through the console's handler.
func BenchmarkDLQPage100k(b *testing.B) {
	const n = 100_000
	e := newEnv(b)
	start := time.Now()
	e.fillDLQ(n)
	b.Logf("filled %d DLQ entries in %s", n, time.Since(start).Round(time.Millisecond))
	srv := e.console(console.Options{})
	// The anchor: the least a page can cost, an ordered consumer from
	// the middle of the stream and one fetch of 51 entries' headers,
	// without HTTP, filters or rendering.
	b.Run("anchor_fetch", func(b *testing.B) {
		start := uint64(50_000)
		for b.Loop() {
			cons, err := e.js.OrderedConsumer(ctx(b), "DLQ", jetstream.OrderedConsumerConfig{
				DeliverPolicy: jetstream.DeliverByStartSequencePolicy, OptStartSeq: start, HeadersOnly: true})
			if err != nil {
				b.Fatal(err)
			}
			batch, err := cons.FetchNoWait(51)
			if err != nil {
				b.Fatal(err)
			}
			n := 0
			for range batch.Messages() {
				n++
			}
			if n != 51 {
				b.Fatalf("fetched %d, want 51", n)
			}
		}
	})
	for _, bc := range []struct{ name, query string }{
		{"first", "limit=50"},
		{"middle", "limit=50&after=50000"},
		{"last", "limit=50&after=99975"},
		{"type", "limit=50&type=other&after=50000"},
		{"reason_rare", "limit=50&reason=poison"},
		{"limit500", "limit=500&after=25000"},
	} {
		b.Run(bc.name, func(b *testing.B) {
			client := &http.Client{Timeout: time.Minute}
			var worst time.Duration
			for b.Loop() {
				t0 := time.Now()
				code, body, _ := get(b, client, srv.URL+"/api/dlq?"+bc.query)
				worst = max(worst, time.Since(t0))
				if code != http.StatusOK {
					b.Fatalf("%d %s", code, body)
				}
				var p console.DLQPage
				if err := json.Unmarshal([]byte(body), &p); err != nil || len(p.Entries) == 0 {
					b.Fatalf("page %v: %.200s", err, body)
				}
			}
			b.ReportMetric(float64(worst.Microseconds())/1000, "worst-ms")
		})
	}
}
