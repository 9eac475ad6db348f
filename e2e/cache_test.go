package e2e

import "testing"

// The result cache through the built worker: an identical task is a hit
// with Task-Backend: cache; Cache-Control: no-cache calls again.
func TestResultCache(t *testing.T) {
	t.Parallel()
	s := startNATS(t)
	cfg := writeFile(t, "worker.yaml", `backends:
  up: {builtin: upper}
routes:
  shout: {backends: [up], cache: {ttl: 1m, shared: true}}
`)
	startWorker(t, s, "--config", cfg)
	c := connect(t, s)
	for _, tc := range []struct {
		id, cache, backend string
		kv                 []string
	}{
		{"k1", "miss", "up", nil},
		{"k2", "hit", "cache", nil},
		{"k3", "miss", "up", []string{"Cache-Control", "no-cache"}},
	} {
		c.publishTask("shout", tc.id, []byte("hello"), tc.kv...)
		m := c.lastMsg("RESULTS", "results.shout."+tc.id, resultTimeout)
		wantHeader(t, m.Header, "Task-Cache", tc.cache)
		wantHeader(t, m.Header, "Task-Backend", tc.backend)
		if string(m.Data) != "HELLO" {
			t.Errorf("%s: body %q", tc.id, m.Data)
		}
	}
}
