package health

import (
	"fmt"
	"slices"
	"time"
)

// Settings are the parts of a Monitor's Options that a config reload
// changes while it runs (the interval needs a restart: heartbeat readers
// judge staleness by it).
type Settings struct {
	// Backends to track; backends no longer named (nor probed) stop
	// being tracked and reported.
	Backends []string
	Probes   map[string]ProbeFunc
	// SLATarget in percent, in (0, 100]; 0: the default 99.9.
	SLATarget float64
	// BreakerOpenAlertAfter; 0: the default 1m.
	BreakerOpenAlertAfter time.Duration
}

// Reconfigure applies s from the next probe round and alert check on. Safe
// for concurrent use. Errors wrap ErrInvalidOption.
func (m *Monitor) Reconfigure(s Settings) error {
	if s.SLATarget < 0 || s.SLATarget > 100 {
		return fmt.Errorf("%w: SLATarget %v is not a percentage", ErrInvalidOption, s.SLATarget)
	}
	if s.SLATarget == 0 {
		s.SLATarget = 99.9
	}
	if s.BreakerOpenAlertAfter <= 0 {
		s.BreakerOpenAlertAfter = time.Minute
	}
	m.live.Store(&s)
	for _, b := range s.Backends {
		m.tracker(b)
	}
	for b := range s.Probes {
		m.tracker(b)
	}
	m.mu.Lock()
	for name := range m.trackers {
		if _, probed := s.Probes[name]; !probed && !slices.Contains(s.Backends, name) {
			delete(m.trackers, name)
		}
	}
	m.mu.Unlock()
	return nil
}
