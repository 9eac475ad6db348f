package health_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync/atomic"
	"testing"
	"time"

	"github.com/breakwater/breakwater/health"
	"github.com/breakwater/breakwater/internal/testkit"
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
	testkit.Eventually(t, 10*time.Second, "a failing backend added by Reconfigure probed twice and unusable", func() (bool, string) {
		return !m.Usable("new") && probed.Load() >= 2, fmt.Sprintf("%d probes, usable %v", probed.Load(), m.Usable("new"))
	})
	if err := m.Reconfigure(health.Settings{SLATarget: 101}); !errors.Is(err, health.ErrInvalidOption) {
		t.Errorf("SLATarget 101: got %v, want ErrInvalidOption", err)
	}
}
