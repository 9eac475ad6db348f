package e2e

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/breakwater/breakwater/internal/testkit"
)

// The built worker publishes backend health (a failing health_url makes
// the backend unhealthy and it recovers), answers $SRV.PING as a micro
// service, obeys a breaker trip, and publisher health shows it all.
func TestHealthEventsAndAdmin(t *testing.T) {
	t.Parallel()
	var sick atomic.Bool
	srv := httptest.NewServer(http.HandlerFunc(func(rw http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/healthz" && sick.Load() {
			http.Error(rw, "sick", http.StatusServiceUnavailable)
			return
		}
		_, _ = rw.Write([]byte("ok"))
	}))
	t.Cleanup(srv.Close)
	s := startNATS(t)
	cfg := writeFile(t, "worker.yaml", fmt.Sprintf(`health: {interval: 200ms}
backends:
  svc:
    http: {url: %q, health_url: %q}
    breaker: {failure_threshold: 3, delay: 1m}
routes:
  work: {backends: [svc]}
`, srv.URL+"/run", srv.URL+"/healthz"))
	startWorker(t, s, "--config", cfg, "--id", "hw1")
	c := connect(t, s)

	state := func() string {
		m := c.lastMsg("HEALTH", "health.backend.svc", resultTimeout)
		var ev struct{ State, Breaker string }
		if err := json.Unmarshal(m.Data, &ev); err != nil {
			t.Fatal(err)
		}
		return ev.State + "/" + ev.Breaker
	}
	testkit.Eventually(t, 20*time.Second, "healthy", func() (bool, string) { s := state(); return s == "healthy/closed", s })
	sick.Store(true)
	testkit.Eventually(t, 20*time.Second, "unhealthy from the probe", func() (bool, string) { s := state(); return strings.HasPrefix(s, "unhealthy"), s })
	sick.Store(false)
	testkit.Eventually(t, 20*time.Second, "healthy again", func() (bool, string) { s := state(); return s == "healthy/closed", s })

	ping, err := c.nc.Request("$SRV.PING.breakwater", nil, 5*time.Second)
	if err != nil || !strings.Contains(string(ping.Data), `"worker":"hw1"`) {
		t.Fatalf("$SRV.PING.breakwater: %v %s", err, ping.Data)
	}
	reply, err := c.nc.Request("breakwater.hw1.breaker.trip", []byte(`{"backend":"svc"}`), 5*time.Second)
	if err != nil || !strings.Contains(string(reply.Data), `"ok":true`) {
		t.Fatalf("trip: %v %s", err, reply.Data)
	}
	testkit.Eventually(t, 10*time.Second, "breaker open", func() (bool, string) { s := state(); return s == "unhealthy/open", s })

	r := runPublisher(t, []string{"NATS_URL=" + s.URL()}, "health")
	if r.code != 0 || !strings.Contains(r.stdout, "svc") || !strings.Contains(r.stdout, "hw1") || !strings.Contains(r.stdout, "open") {
		t.Fatalf("publisher health: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
}
