package console

import (
	"cmp"
	"fmt"
	"maps"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/breakwater/breakwater/bus"
	"github.com/breakwater/breakwater/health"
)

// window is how far back the charts go.
const window = 15 * time.Minute

// bucket is the width of one chart point.
const bucket = 30 * time.Second

// maxSubscribers bounds the live pages served at once.
const maxSubscribers = 256

// Event is one message of /api/events: a row of a table (Kind names the
// table, Key the row) with its cells already formatted as the pages show
// them, and the event as stored (Data).
type Event struct {
	Kind  EventKind         `json:"kind"`
	Key   string            `json:"key"`
	Class string            `json:"class,omitempty"`
	Cells map[string]string `json:"cells"`
	Data  any               `json:"data,omitempty"`
}

// EventKind names the table an Event belongs to (its "kind" in
// /api/events, the data-kind of the page's table).
type EventKind string

// The tables of the pages.
const (
	KindBackend EventKind = "backend"
	KindWorker  EventKind = "worker"
	KindAlert   EventKind = "alert"
	KindStream  EventKind = "stream"
	KindStat    EventKind = "stat"
)

// point is one chart point.
type point struct {
	at     time.Time
	values []float64
}

// workerCount is what the throughput is derived from: a worker's counters
// as of a heartbeat.
type workerCount struct {
	at           time.Time
	done, failed uint64
}

// state is the current health, the chart history and the live pages'
// subscriptions. It is safe for concurrent use.
type state struct {
	now func() time.Time

	mu       sync.Mutex
	backends map[string]health.BackendEvent
	workers  map[string]health.WorkerEvent
	alerts   map[string]health.AlertEvent
	counts   map[string]workerCount
	// throughput: per bucket, per worker, the done and failed rates.
	throughput map[time.Time]map[string][2]float64
	// latency: per backend, p50/p95/p99 points.
	latency map[string][]point
	streams []StreamInfo
	subs    map[chan Event]struct{}
}

func newState(now func() time.Time) *state {
	return &state{
		now:      now,
		backends: map[string]health.BackendEvent{}, workers: map[string]health.WorkerEvent{},
		alerts: map[string]health.AlertEvent{}, counts: map[string]workerCount{},
		throughput: map[time.Time]map[string][2]float64{}, latency: map[string][]point{},
		subs: map[chan Event]struct{}{},
	}
}

// apply takes one HEALTH message: it becomes the current state of its
// subject unless an event at least as recent is known, it feeds the
// charts when history is set, and it goes to the live pages. Events
// health.DecodeEvent refuses are dropped.
func (s *state) apply(t bus.Topology, subject string, data []byte, stored time.Time, history bool) {
	ev, err := health.DecodeEvent(t, subject, data)
	if err != nil {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	var out Event
	switch ev := ev.(type) {
	case health.BackendEvent:
		if history {
			s.addLatency(ev)
		}
		if old, ok := s.backends[ev.Backend]; ok && old.At.After(ev.At) {
			return
		}
		s.backends[ev.Backend] = ev
		out = backendRow(ev)
	case health.WorkerEvent:
		if history {
			s.addThroughput(ev)
		}
		if old, ok := s.workers[ev.Worker]; ok && old.At.After(ev.At) {
			return
		}
		s.workers[ev.Worker] = ev
		out = workerRow(ev, s.now())
	case health.AlertEvent:
		if old, ok := s.alerts[ev.Alert]; ok && old.At.After(ev.At) {
			return
		}
		s.alerts[ev.Alert] = ev
		out = alertRow(ev)
	default:
		return
	}
	s.send(out)
	if _, ok := ev.(health.WorkerEvent); ok {
		s.sendStats()
	}
}

// send hands e to every live page without blocking: a page too slow to
// take it misses it (the next event of its row brings it up to date).
func (s *state) send(e Event) {
	for ch := range s.subs {
		select {
		case ch <- e:
		default:
		}
	}
}

// subscribe registers a live page; cancel removes it. It fails when too
// many pages are open.
func (s *state) subscribe() (<-chan Event, func(), error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.subs) >= maxSubscribers {
		return nil, nil, fmt.Errorf("too many live pages (%d)", maxSubscribers)
	}
	ch := make(chan Event, 64)
	s.subs[ch] = struct{}{}
	return ch, func() {
		s.mu.Lock()
		defer s.mu.Unlock()
		delete(s.subs, ch)
	}, nil
}

// watched reports whether any live page is open.
func (s *state) watched() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.subs) > 0
}

func (s *state) addLatency(ev health.BackendEvent) {
	pts := append(s.latency[ev.Backend], point{at: ev.At, values: []float64{ev.LatencyMS.P50, ev.LatencyMS.P95, ev.LatencyMS.P99}})
	cut := s.now().Add(-window)
	i := 0
	for i < len(pts) && pts[i].at.Before(cut) {
		i++
	}
	// Bounded however often a backend reports (many workers, changes).
	const maxPoints = 600
	if len(pts)-i > maxPoints {
		i = len(pts) - maxPoints
	}
	s.latency[ev.Backend] = slices.Clone(pts[i:])
}

func (s *state) addThroughput(ev health.WorkerEvent) {
	prev, ok := s.counts[ev.Worker]
	s.counts[ev.Worker] = workerCount{at: ev.At, done: ev.Tasks.Done, failed: ev.Tasks.Failed}
	if !ok || !ev.At.After(prev.at) || ev.Tasks.Done < prev.done || ev.Tasks.Failed < prev.failed {
		return // the first heartbeat, or a restarted worker: no rate yet
	}
	dt := ev.At.Sub(prev.at).Seconds()
	b := ev.At.Truncate(bucket)
	if s.throughput[b] == nil {
		s.throughput[b] = map[string][2]float64{}
	}
	s.throughput[b][ev.Worker] = [2]float64{float64(ev.Tasks.Done-prev.done) / dt, float64(ev.Tasks.Failed-prev.failed) / dt}
	cut := s.now().Add(-window)
	for k := range s.throughput {
		if k.Before(cut) {
			delete(s.throughput, k)
		}
	}
}

// rates are the chart's throughput points (done/s, failed/s summed over
// the workers), oldest first.
func (s *state) rates() []point {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.ratesLocked()
}

func (s *state) ratesLocked() []point {
	out := make([]point, 0, len(s.throughput))
	for _, b := range slices.SortedFunc(maps.Keys(s.throughput), func(a, b time.Time) int { return a.Compare(b) }) {
		var done, failed float64
		for _, r := range s.throughput[b] {
			done += r[0]
			failed += r[1]
		}
		out = append(out, point{at: b, values: []float64{done, failed}})
	}
	return out
}

// latencyPoints are a backend's p50/p95/p99 points; with backend "", the
// slowest backend's at each chart bucket.
func (s *state) latencyPoints(backend string) []point {
	s.mu.Lock()
	defer s.mu.Unlock()
	if backend != "" {
		return slices.Clone(s.latency[backend])
	}
	worst := map[time.Time][]float64{}
	for _, pts := range s.latency {
		for _, p := range pts {
			b := p.at.Truncate(bucket)
			w := worst[b]
			if w == nil {
				w = make([]float64, 3)
			}
			for i := range w {
				w[i] = max(w[i], p.values[i])
			}
			worst[b] = w
		}
	}
	out := make([]point, 0, len(worst))
	for _, b := range slices.SortedFunc(maps.Keys(worst), func(a, b time.Time) int { return a.Compare(b) }) {
		out = append(out, point{at: b, values: worst[b]})
	}
	return out
}

// snapshot is the current state, each list sorted by name.
type snapshot struct {
	Backends []health.BackendEvent
	Workers  []health.WorkerEvent
	Alerts   []health.AlertEvent
	Streams  []StreamInfo
	Done     float64 // tasks/s over the workers' last heartbeats
	Failed   float64
}

func (s *state) snapshot() snapshot {
	s.mu.Lock()
	defer s.mu.Unlock()
	sn := snapshot{
		Backends: slices.SortedFunc(maps.Values(s.backends), func(a, b health.BackendEvent) int { return strings.Compare(a.Backend, b.Backend) }),
		Workers:  slices.SortedFunc(maps.Values(s.workers), func(a, b health.WorkerEvent) int { return strings.Compare(a.Worker, b.Worker) }),
		Alerts: slices.SortedFunc(maps.Values(s.alerts), func(a, b health.AlertEvent) int {
			// Firing first, then the most recent.
			return cmp.Or(cmp.Compare(rank(a.Status), rank(b.Status)), b.At.Compare(a.At))
		}),
		Streams: slices.Clone(s.streams),
	}
	sn.Done, sn.Failed = s.currentRatesLocked()
	return sn
}

// currentRatesLocked is the last complete bucket's throughput (else the
// current one's).
func (s *state) currentRatesLocked() (done, failed float64) {
	pts := s.ratesLocked()
	if len(pts) == 0 {
		return 0, 0
	}
	p := pts[len(pts)-1]
	if len(pts) > 1 && p.at.Equal(s.now().Truncate(bucket)) {
		p = pts[len(pts)-2]
	}
	return p.values[0], p.values[1]
}

func (s *state) publishStreams(st []StreamInfo) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.streams = st
	for _, si := range st {
		s.send(streamRow(si))
	}
	s.sendStats()
}

// sendStats sends the overview's figures; s.mu is held.
func (s *state) sendStats() {
	done, failed := s.currentRatesLocked()
	firing := 0
	for _, a := range s.alerts {
		if a.Status == health.Firing {
			firing++
		}
	}
	var dlqSize uint64
	for _, si := range s.streams {
		if si.Role == "dlq" {
			dlqSize = si.Messages
		}
	}
	for _, e := range statRows(done, failed, dlqSize, firing) {
		s.send(e)
	}
}

// rank orders alert statuses: firing first.
func rank(status health.AlertStatus) int {
	if status == health.Firing {
		return 0
	}
	return 1
}
