// Package health computes the health of a worker's backends from their
// real calls, breakers and active probes, and publishes it as events on
// the HEALTH stream (health.backend.<name>, health.worker.<id>,
// health.alert.<name>): on every change and as heartbeats, with alerts that
// fire and resolve. It also makes the worker a NATS micro service for
// status and control (see Admin).
package health

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/breakwater/breakwater/bus"
	"github.com/breakwater/breakwater/handlers"
)

// ProbeFunc checks a backend actively; nil error means it answered.
type ProbeFunc func(ctx context.Context) error

// Options configure a Monitor.
type Options struct {
	JS       jetstream.Publisher
	Conn     *nats.Conn // to hear other workers' heartbeats
	Topology bus.Topology
	WorkerID string
	Version  string
	// Backends are the names to track from the start (heartbeats cover
	// them even before their first call).
	Backends []string
	// Interval between heartbeats, probes and alert checks. Default 10s.
	Interval time.Duration
	// SLATarget is the availability target in percent. Default 99.9.
	SLATarget float64
	// BreakerOpenAlertAfter fires the breaker alert. Default 1m.
	BreakerOpenAlertAfter time.Duration
	// Probes are the active checks per backend; they run every Interval,
	// all at once but at most ProbeConcurrency together (default 8).
	Probes           map[string]ProbeFunc
	ProbeConcurrency int
	// WorkerStats feeds the worker heartbeat; nil reports zeros.
	WorkerStats func() WorkerStats
	// DLQUsage feeds the DLQ size alert; nil disables it.
	DLQUsage func(ctx context.Context) (used, limit int64, err error)
	Now      func() time.Time
	Logger   *slog.Logger
}

// Monitor tracks backends and publishes their health. Record calls with
// AttemptStarted/AttemptDone and breaker changes with BreakerChanged; Run
// publishes.
type Monitor struct {
	o     Options
	start time.Time
	log   *slog.Logger

	mu       sync.Mutex
	trackers map[string]*tracker
	states   map[string]string // last published state per backend
	breakers map[string]string // last published breaker per backend
	alerts   map[string]bool   // firing, by alert name
	seen     map[string]peer   // other workers' last heartbeat

	changed chan struct{} // a backend may have changed state
}

type peer struct {
	at       time.Time
	interval time.Duration
	stopped  bool
}

// New checks o; it starts nothing.
func New(o Options) (*Monitor, error) {
	if o.JS == nil || o.WorkerID == "" {
		return nil, errors.New("health: JS and WorkerID are required")
	}
	if o.Interval <= 0 {
		o.Interval = 10 * time.Second
	}
	if o.SLATarget <= 0 {
		o.SLATarget = 99.9
	}
	if o.BreakerOpenAlertAfter <= 0 {
		o.BreakerOpenAlertAfter = time.Minute
	}
	if o.ProbeConcurrency <= 0 {
		o.ProbeConcurrency = 8
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	m := &Monitor{
		o: o, start: o.Now(), log: o.Logger,
		trackers: map[string]*tracker{}, states: map[string]string{}, breakers: map[string]string{},
		alerts: map[string]bool{}, seen: map[string]peer{}, changed: make(chan struct{}, 1),
	}
	for _, b := range o.Backends {
		m.tracker(b)
	}
	for b := range o.Probes {
		m.tracker(b)
	}
	return m, nil
}

func (m *Monitor) tracker(backend string) *tracker {
	m.mu.Lock()
	defer m.mu.Unlock()
	t := m.trackers[backend]
	if t == nil {
		t = newTracker(m.o.Now())
		m.trackers[backend] = t
	}
	return t
}

// AttemptStarted records a call going out to backend.
func (m *Monitor) AttemptStarted(backend string) { m.tracker(backend).started() }

// AttemptDone records a finished call. A permanent error is the task's
// fault (a 4xx): the backend did its job, so it counts as a success here.
func (m *Monitor) AttemptDone(backend string, d time.Duration, err error) {
	m.tracker(backend).done(m.o.Now(), d, err == nil || handlers.IsPermanent(err))
	// Run works out whether the state changed; a success can only change
	// it when it is not healthy already.
	if err != nil || m.published(backend) != Healthy {
		m.poke()
	}
}

// BreakerChanged records the backend's breaker entering state (closed,
// open, half-open).
func (m *Monitor) BreakerChanged(backend, state string) {
	if m.tracker(backend).setBreaker(m.o.Now(), state) {
		m.poke()
	}
}

// Down reports whether active probes found the backend down (twice in a
// row), and how soon they look again: routing skips such a backend. Calls
// alone never mark a backend down here; its breaker does that.
func (m *Monitor) Down(backend string) (bool, time.Duration) {
	t := m.tracker(backend)
	t.mu.Lock()
	down := t.probed && t.probeFailed >= 2
	t.mu.Unlock()
	return down, m.o.Interval
}

func (t *tracker) snapshotState(now time.Time) string { return t.snapshot(now, false).state }

func (m *Monitor) published(backend string) string {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.states[backend]
}

func (m *Monitor) poke() {
	select {
	case m.changed <- struct{}{}:
	default:
	}
}

// Snapshot returns every backend's health now, sorted by name.
func (m *Monitor) Snapshot() []BackendEvent {
	m.mu.Lock()
	names := slices.Sorted(maps.Keys(m.trackers))
	m.mu.Unlock()
	out := make([]BackendEvent, 0, len(names))
	for _, n := range names {
		out = append(out, m.event(n, m.tracker(n).snapshot(m.o.Now(), true), "snapshot"))
	}
	return out
}

func (m *Monitor) event(backend string, v view, kind string) BackendEvent {
	ms := func(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }
	since := v.breakerSince
	if v.state == Healthy && v.breaker == BreakerClosed {
		since = m.start
	}
	return BackendEvent{
		Backend: backend, State: v.state, Breaker: v.breaker, SuccessRate: v.successRate,
		LatencyMS: Latency{P50: ms(v.p50), P95: ms(v.p95), P99: ms(v.p99)}, InFlight: v.inFlight,
		Availability: v.availability, Since: since.UTC(), Reason: v.reason, Worker: m.o.WorkerID,
		Kind: kind, At: m.o.Now().UTC(),
	}
}

// Run publishes until ctx ends: an event on every change of a backend's
// state or breaker, heartbeats and alert checks every Interval, probes
// every Interval. It publishes a last "stopped" heartbeat on the way out.
func (m *Monitor) Run(ctx context.Context) error {
	if m.o.Conn != nil {
		sub, err := m.o.Conn.Subscribe(m.o.Topology.HealthWorkerSubject("*"), m.heard)
		if err != nil {
			return fmt.Errorf("health: subscribe to heartbeats: %w", err)
		}
		defer func() { _ = sub.Unsubscribe() }()
	}
	var wg sync.WaitGroup
	defer wg.Wait()
	if len(m.o.Probes) > 0 {
		wg.Go(func() { m.probeLoop(ctx) })
	}
	m.heartbeat(ctx, WorkerRunning)
	tick := time.NewTicker(m.o.Interval)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Second)
			m.heartbeat(sctx, WorkerStopped)
			cancel()
			return nil
		case <-m.changed:
			m.publishChanges(ctx)
		case <-tick.C:
			m.publishChanges(ctx)
			m.heartbeat(ctx, WorkerRunning)
			m.checkAlerts(ctx)
		}
	}
}

// publishChanges sends one event per backend whose state or breaker
// differs from the last one sent.
func (m *Monitor) publishChanges(ctx context.Context) {
	m.mu.Lock()
	names := slices.Sorted(maps.Keys(m.trackers))
	m.mu.Unlock()
	for _, n := range names {
		v := m.tracker(n).snapshot(m.o.Now(), true)
		m.mu.Lock()
		same := m.states[n] == v.state && m.breakers[n] == v.breaker
		m.states[n], m.breakers[n] = v.state, v.breaker
		m.mu.Unlock()
		if !same {
			m.publish(ctx, m.o.Topology.HealthBackendSubject(Token(n)), m.event(n, v, "change"))
		}
	}
}

// heartbeat sends every backend's current health and the worker's.
func (m *Monitor) heartbeat(ctx context.Context, status string) {
	if status == WorkerRunning {
		m.mu.Lock()
		names := slices.Sorted(maps.Keys(m.trackers))
		m.mu.Unlock()
		for _, n := range names {
			v := m.tracker(n).snapshot(m.o.Now(), true)
			m.mu.Lock()
			m.states[n], m.breakers[n] = v.state, v.breaker
			m.mu.Unlock()
			m.publish(ctx, m.o.Topology.HealthBackendSubject(Token(n)), m.event(n, v, "heartbeat"))
		}
	}
	var st WorkerStats
	if m.o.WorkerStats != nil {
		st = m.o.WorkerStats()
	}
	ratio := 0.0
	if lookups := st.CacheHits + st.CacheMisses; lookups > 0 {
		ratio = float64(st.CacheHits) / float64(lookups)
	}
	now := m.o.Now()
	m.publish(ctx, m.o.Topology.HealthWorkerSubject(Token(m.o.WorkerID)), WorkerEvent{
		Worker: m.o.WorkerID, Status: status, Version: m.o.Version, UptimeSeconds: now.Sub(m.start).Seconds(),
		Tasks:         Tasks{Done: st.Done, Failed: st.Failed, DeadLettered: st.DeadLettered},
		CacheHitRatio: ratio, InFlight: st.InFlight, Interval: m.o.Interval.Seconds(), At: now.UTC(),
	})
}

// heard notes another worker's heartbeat.
func (m *Monitor) heard(msg *nats.Msg) {
	var ev WorkerEvent
	if err := json.Unmarshal(msg.Data, &ev); err != nil || ev.Worker == "" || ev.Worker == m.o.WorkerID {
		return
	}
	m.mu.Lock()
	m.seen[ev.Worker] = peer{at: m.o.Now(), interval: time.Duration(ev.Interval * float64(time.Second)), stopped: ev.Status == WorkerStopped}
	m.mu.Unlock()
}

// checkAlerts fires and resolves every alert rule once.
func (m *Monitor) checkAlerts(ctx context.Context) {
	now := m.o.Now()
	m.mu.Lock()
	names := slices.Sorted(maps.Keys(m.trackers))
	m.mu.Unlock()
	for _, n := range names {
		v := m.tracker(n).snapshot(now, false)
		openFor := 0.0
		if v.breaker == BreakerOpen {
			openFor = now.Sub(v.breakerSince).Seconds()
		}
		limit := m.o.BreakerOpenAlertAfter.Seconds()
		m.alert(ctx, "breaker_open."+Token(n), n, RuleBreakerOpen, openFor, limit, openFor > limit, openFor == 0,
			fmt.Sprintf("breaker of %s open for %.0fs", n, openFor))
		judged := v.availabilityCalls >= minCalls
		m.alert(ctx, "availability."+Token(n), n, RuleAvailability, v.availability, m.o.SLATarget,
			judged && v.availability < m.o.SLATarget, !judged || v.availability >= m.o.SLATarget,
			fmt.Sprintf("availability of %s %.2f%% over the last hour, target %.2f%%", n, v.availability, m.o.SLATarget))
	}
	if m.o.DLQUsage != nil {
		uctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		used, limit, err := m.o.DLQUsage(uctx)
		cancel()
		if err == nil && limit > 0 {
			pct := 100 * float64(used) / float64(limit)
			m.alert(ctx, "dlq", "", RuleDLQSize, pct, 80, pct >= 80, pct < 70,
				fmt.Sprintf("DLQ at %.0f%% of its %d-byte limit: replay or purge before anything is discarded", pct, limit))
		}
	}
	m.mu.Lock()
	peers := maps.Clone(m.seen)
	m.mu.Unlock()
	for id, p := range peers {
		silent := now.Sub(p.at).Seconds()
		limit := 3 * max(p.interval, time.Second).Seconds()
		m.alert(ctx, "worker_stale."+Token(id), "", RuleWorkerStale, silent, limit, !p.stopped && silent > limit, p.stopped || silent <= limit,
			fmt.Sprintf("no heartbeat from worker %s for %.0fs", id, silent))
	}
}

// alert publishes a firing event when fire and it is not firing yet, and a
// resolved one when resolve and it is firing.
func (m *Monitor) alert(ctx context.Context, name, backend, rule string, value, threshold float64, fire, resolve bool, msg string) {
	m.mu.Lock()
	firing := m.alerts[name]
	status := ""
	switch {
	case fire && !firing:
		status, m.alerts[name] = Firing, true
	case resolve && firing:
		status, m.alerts[name] = Resolved, false
	}
	m.mu.Unlock()
	if status == "" {
		return
	}
	if status == Firing {
		m.log.Warn("alert firing", "alert", name, "rule", rule, "value", value, "threshold", threshold)
	} else {
		m.log.Info("alert resolved", "alert", name, "rule", rule)
	}
	m.publish(ctx, m.o.Topology.HealthAlertSubject(name), AlertEvent{
		Alert: name, Status: status, Backend: backend, Rule: rule, Value: value, Threshold: threshold,
		Message: msg, Worker: m.o.WorkerID, At: m.o.Now().UTC(),
	})
}

func (m *Monitor) publish(ctx context.Context, subject string, body any) {
	b, err := json.Marshal(body)
	if err != nil {
		m.log.Error("health event", "subject", subject, "err", err)
		return
	}
	pctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if _, err := m.o.JS.Publish(pctx, subject, b); err != nil && ctx.Err() == nil {
		m.log.Warn("health event not stored", "subject", subject, "err", err)
	}
}

// probeLoop probes every backend every Interval, all in parallel up to
// ProbeConcurrency at once; a probe gets at most one Interval.
func (m *Monitor) probeLoop(ctx context.Context) {
	tick := time.NewTicker(m.o.Interval)
	defer tick.Stop()
	sem := make(chan struct{}, m.o.ProbeConcurrency)
	for {
		m.probeAll(ctx, sem)
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
	}
}

// probeAll runs one round of probes and returns when all are done.
func (m *Monitor) probeAll(ctx context.Context, sem chan struct{}) {
	var wg sync.WaitGroup
	for name, probe := range m.o.Probes {
		select {
		case sem <- struct{}{}:
		case <-ctx.Done():
			wg.Wait()
			return
		}
		wg.Go(func() {
			defer func() { <-sem }()
			pctx, cancel := context.WithTimeout(ctx, m.o.Interval)
			err := probe(pctx)
			cancel()
			if ctx.Err() != nil {
				return
			}
			t := m.tracker(name)
			before := t.snapshotState(m.o.Now())
			t.probe(m.o.Now(), err)
			if t.snapshotState(m.o.Now()) != before {
				m.poke()
			}
		})
	}
	wg.Wait()
}

// Token makes a name usable as one subject token: characters outside
// A-Z a-z 0-9 _ - become _ (a host name's dots, say).
func Token(s string) string {
	return strings.Map(func(r rune) rune {
		switch {
		case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z', r >= '0' && r <= '9', r == '_', r == '-':
			return r
		}
		return '_'
	}, s)
}
