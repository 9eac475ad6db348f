package e2e

import (
	"bytes"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"sync"
	"testing"

	"github.com/nats-io/nats.go/micro"
)

// TestHTTPBackend routes tasks to an HTTP service: its answers become
// results, and a 400 dead-letters the task as rejected.
func TestHTTPBackend(t *testing.T) {
	t.Parallel()
	var (
		mu      sync.Mutex
		seenIDs = map[string]string{} // Task-Id -> Task-Type
	)
	srv := httptest.NewServer(http.HandlerFunc(func(rw http.ResponseWriter, r *http.Request) {
		body, err := io.ReadAll(r.Body)
		if err != nil {
			http.Error(rw, err.Error(), http.StatusInternalServerError)
			return
		}
		mu.Lock()
		seenIDs[r.Header.Get("Task-Id")] = r.Header.Get("Task-Type")
		mu.Unlock()
		if string(body) == "reject-me" {
			http.Error(rw, "cannot do that", http.StatusBadRequest)
			return
		}
		_, _ = rw.Write(bytes.ToUpper(body))
	}))
	t.Cleanup(srv.Close)

	s := startNATS(t)
	cfg := writeFile(t, "worker.yaml", fmt.Sprintf(`backends:
  svc:
    http: {url: %q}
    timeout: 5s
routes:
  work: {backends: [svc]}
`, srv.URL+"/run"))
	startWorker(t, s, "--config", cfg)
	c := connect(t, s)

	const n = 20
	for i := range n {
		c.publishTask("work", "w"+strconv.Itoa(i), []byte("task "+strconv.Itoa(i)))
	}
	got := c.waitSubjects("RESULTS", "results.work.*", n, resultTimeout)
	if len(got) != n {
		t.Errorf("got %d results, want %d: %v", len(got), n, got)
	}
	for i := range n {
		id := "w" + strconv.Itoa(i)
		msg := c.lastMsg("RESULTS", "results.work."+id, resultTimeout)
		if want := "TASK " + strconv.Itoa(i); string(msg.Data) != want {
			t.Errorf("result of %s = %q, want %q", id, msg.Data, want)
		}
		wantHeader(t, msg.Header, "Task-Backend", "svc")
		wantHeader(t, msg.Header, "Task-Status", "ok")
		mu.Lock()
		typ, ok := seenIDs[id]
		mu.Unlock()
		if !ok || typ != "work" {
			t.Errorf("backend saw Task-Id %s: %v with Task-Type %q, want true with \"work\"", id, ok, typ)
		}
	}

	c.publishTask("work", "bad-1", []byte("reject-me"))
	d := c.lastMsg("DLQ", "dlq.work", resultTimeout)
	if string(d.Data) != "reject-me" {
		t.Errorf("DLQ body %q, want %q", d.Data, "reject-me")
	}
	wantHeader(t, d.Header, "Dlq-Reason", "rejected")
	wantHeader(t, d.Header, "Task-Id", "bad-1")
	wantHeader(t, d.Header, "Dlq-Backends", "svc")
	wantHeader(t, d.Header, "Dlq-Original-Subject", "tasks.work")
	c.noMsg("RESULTS", "results.work.bad-1")
	if got := c.msgs("DLQ"); got != 1 {
		t.Errorf("DLQ holds %d messages, want 1", got)
	}
}

// TestNATSBackend routes tasks to a NATS micro service by request-reply.
func TestNATSBackend(t *testing.T) {
	t.Parallel()
	s := startNATS(t)
	c := connect(t, s)

	var (
		mu      sync.Mutex
		seenIDs = map[string]bool{}
	)
	svc, err := micro.AddService(c.nc, micro.Config{
		Name:    "coder",
		Version: "1.0.0",
		Endpoint: &micro.EndpointConfig{
			Subject: "svc.coder.run",
			Handler: micro.HandlerFunc(func(req micro.Request) {
				mu.Lock()
				seenIDs[req.Headers().Get("Task-Id")] = true
				mu.Unlock()
				_ = req.Respond(append([]byte("coded:"), req.Data()...))
			}),
		},
	})
	if err != nil {
		t.Fatalf("micro service: %v", err)
	}
	t.Cleanup(func() { _ = svc.Stop() })

	cfg := writeFile(t, "worker.yaml", `backends:
  coder:
    nats: {subject: svc.coder.run}
    timeout: 5s
routes:
  code.generate: {backends: [coder]}
`)
	startWorker(t, s, "--config", cfg)

	const n = 10
	for i := range n {
		c.publishTask("code.generate", "c"+strconv.Itoa(i), []byte("spec "+strconv.Itoa(i)))
	}
	c.waitSubjects("RESULTS", "results.code.generate.*", n, resultTimeout)
	for i := range n {
		id := "c" + strconv.Itoa(i)
		msg := c.lastMsg("RESULTS", "results.code.generate."+id, resultTimeout)
		if want := "coded:spec " + strconv.Itoa(i); string(msg.Data) != want {
			t.Errorf("result of %s = %q, want %q", id, msg.Data, want)
		}
		wantHeader(t, msg.Header, "Task-Backend", "coder")
		wantHeader(t, msg.Header, "Task-Status", "ok")
		mu.Lock()
		ok := seenIDs[id]
		mu.Unlock()
		if !ok {
			t.Errorf("service did not see Task-Id %s", id)
		}
	}
	if st := svc.Stats(); len(st.Endpoints) != 1 || st.Endpoints[0].NumRequests < n {
		t.Errorf("service stats %+v, want >= %d requests on one endpoint", st.Endpoints, n)
	}
}
