package health_test

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/breakwater/breakwater/health"
)

// A backend's concurrency limit and retry budget are in its events, and
// absent for a backend that has neither.
func TestBackendEventLimits(t *testing.T) {
	e := newEnv(t)
	m := newMonitor(t, health.Options{JS: e.js, WorkerID: "w1", Interval: time.Hour, Backends: []string{"free", "model"},
		Limits: func(b string) (int, float64) {
			if b == "model" {
				return 12, 1.4999
			}
			return 0, -1
		}})
	got := map[string]string{}
	for _, ev := range m.Snapshot() {
		b, err := json.Marshal(ev)
		if err != nil {
			t.Fatal(err)
		}
		got[ev.Backend] = string(b)
	}
	if s := got["model"]; !strings.Contains(s, `"concurrency_limit":12`) || !strings.Contains(s, `"retry_budget":1.5`) {
		t.Errorf("model event: got %s, want concurrency_limit 12 and retry_budget 1.5", s)
	}
	if s := got["free"]; s == "" || strings.Contains(s, "concurrency_limit") || strings.Contains(s, "retry_budget") {
		t.Errorf("free event: got %s, want no limits", s)
	}
}
