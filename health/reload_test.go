package health_test

import (
	"context"
	"errors"
	"slices"
	"sync/atomic"
	"testing"
	"time"

	"github.com/breakwater/breakwater/health"
)

// Reconfigure on a running monitor starts probes it did not have, stops
// tracking backends no longer named, and refuses an impossible SLA.
func TestReconfigure(t *testing.T) {
	e := newEnv(t)
	m := newMonitor(t, health.Options{JS: e.js, WorkerID: "w1", Interval: 20 * time.Millisecond, Backends: []string{"old", "kept"}})
	run(t, m)
	var probed atomic.Int64
	if err := m.Reconfigure(health.Settings{Backends: []string{"kept", "new"}, Probes: map[string]health.ProbeFunc{
		"new": func(context.Context) error { probed.Add(1); return errors.New("down") },
	}}); err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, ev := range m.Snapshot() {
		names = append(names, ev.Backend)
	}
	if want := []string{"kept", "new"}; !slices.Equal(names, want) {
		t.Errorf("tracked %q, want %q", names, want)
	}
	deadline := time.Now().Add(10 * time.Second)
	for m.Usable("new") && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if m.Usable("new") || probed.Load() < 2 {
		t.Errorf("after %d probes of a failing backend added by Reconfigure: usable %v, want false", probed.Load(), m.Usable("new"))
	}
	if err := m.Reconfigure(health.Settings{SLATarget: 101}); !errors.Is(err, health.ErrInvalidOptions) {
		t.Errorf("SLATarget 101: got %v, want ErrInvalidOptions", err)
	}
}
