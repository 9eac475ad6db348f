package health

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"math"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/breakwater/breakwater/bus"
	"github.com/breakwater/breakwater/handlers"
)

// ErrInvalidOption is wrapped by the errors of New and StartAdmin when
// their options cannot work.
var ErrInvalidOption = errors.New("invalid health option")

// ProbeFunc checks a backend actively; nil error means it answered.
type ProbeFunc func(ctx context.Context) error

// Options configure a Monitor. JS and WorkerID are required.
type Options struct {
	// JS publishes the events and reads the last alert of each subject
	// (so that several workers fire and resolve an alert once).
	JS jetstream.JetStream
	// Conn hears other workers' heartbeats for the worker_stale alert;
	// nil turns that alert off.
	Conn     *nats.Conn
	Topology bus.Topology
	WorkerID string
	Version  string
	// Backends are the names to track from the start (heartbeats cover
	// them even before their first call).
	Backends []string
	// Interval between heartbeats, probes and alert checks. Default 10s.
	Interval time.Duration
	// SLATarget is the availability target in percent, in (0, 100].
	// Default 99.9.
	SLATarget float64
	// BreakerOpenAlertAfter fires the breaker alert. Default 1m.
	BreakerOpenAlertAfter time.Duration
	// Probes are the active checks per backend; they run every Interval,
	// all at once but at most ProbeConcurrency together (default 8), each
	// for at most one Interval.
	Probes           map[string]ProbeFunc
	ProbeConcurrency int
	// WorkerStats feeds the worker heartbeat; nil reports zeros. It is
	// called from Run's goroutine once per Interval.
	WorkerStats func() WorkerStats
	// Limits reports a backend's concurrency limit (0: unbounded) and the
	// retries its budget allows now (negative: no budget), for its events;
	// nil leaves both out. It is called for every event and must be cheap
	// and safe for concurrent use.
	Limits func(backend string) (concurrency int, retryBudget float64)
	// DLQUsage feeds the DLQ size alert; nil disables it.
	DLQUsage func(ctx context.Context) (used, limit int64, err error)
	// Now is the clock; default time.Now.
	Now    func() time.Time
	Logger *slog.Logger
}

// Monitor tracks backends and publishes their health. Record calls with
// AttemptStarted/AttemptDone and breaker changes with BreakerChanged (safe
// for concurrent use, constant time); Run publishes. Call Run once.
type Monitor struct {
	o     Options
	start time.Time
	log   *slog.Logger

	mu       sync.RWMutex
	trackers map[string]*tracker
	seen     map[string]peer // other workers' last heartbeat

	changed chan struct{} // a backend changed state or breaker

	stream jetstream.Stream // HEALTH, looked up by Run's goroutine

	live atomic.Pointer[Settings] // what Reconfigure changes; see reload.go
}

type peer struct {
	at       time.Time
	interval time.Duration
	stopped  bool
}

// New checks o and applies the defaults; it starts nothing. Errors wrap
// ErrInvalidOption.
func New(o Options) (*Monitor, error) {
	switch {
	case o.JS == nil:
		return nil, fmt.Errorf("%w: JS is required", ErrInvalidOption)
	case o.WorkerID == "":
		return nil, fmt.Errorf("%w: WorkerID is required", ErrInvalidOption)
	case o.SLATarget < 0 || o.SLATarget > 100:
		return nil, fmt.Errorf("%w: SLATarget %v is not a percentage", ErrInvalidOption, o.SLATarget)
	}
	if o.Interval <= 0 {
		o.Interval = 10 * time.Second
	}
	if o.SLATarget == 0 {
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
		trackers: map[string]*tracker{}, seen: map[string]peer{}, changed: make(chan struct{}, 1),
	}
	m.live.Store(&Settings{Backends: o.Backends, Probes: o.Probes, SLATarget: o.SLATarget, BreakerOpenAlertAfter: o.BreakerOpenAlertAfter})
	for _, b := range o.Backends {
		m.tracker(b)
	}
	for b := range o.Probes {
		m.tracker(b)
	}
	return m, nil
}

func (m *Monitor) tracker(backend string) *tracker {
	m.mu.RLock()
	t := m.trackers[backend]
	m.mu.RUnlock()
	if t != nil {
		return t
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if t = m.trackers[backend]; t == nil {
		t = newTracker(m.o.Now())
		m.trackers[backend] = t
	}
	return t
}

func (m *Monitor) names() []string {
	m.mu.RLock()
	defer m.mu.RUnlock()
	return slices.Sorted(maps.Keys(m.trackers))
}

// AttemptStarted records a call going out to backend.
func (m *Monitor) AttemptStarted(backend string) { m.tracker(backend).started() }

// AttemptDone records a finished call that took d. A permanent error
// (handlers.IsPermanent, a 4xx) is the task's fault: the backend did its
// job, so it counts as a success here.
func (m *Monitor) AttemptDone(backend string, d time.Duration, err error) {
	if handlers.IsPermanent(err) {
		m.AttemptRejected(backend, d)
		return
	}
	if m.tracker(backend).done(m.o.Now(), d, err == nil) {
		m.poke()
	}
}

// BreakerChanged records the backend's breaker entering state
// (BreakerClosed, BreakerOpen or BreakerHalfOpen).
func (m *Monitor) BreakerChanged(backend string, state BreakerState) {
	if m.tracker(backend).setBreaker(m.o.Now(), state) {
		m.poke()
	}
}

// Usable reports whether routing may send work to backend: false while
// its active probe has failed twice in a row, until a probe passes. Calls
// alone never make a backend unusable here (without traffic nothing would
// tell it has recovered); its breaker does that. Unknown backends are
// usable.
func (m *Monitor) Usable(backend string) bool {
	m.mu.RLock()
	t := m.trackers[backend]
	m.mu.RUnlock()
	return t == nil || !t.down()
}

// Down is !Usable(backend), with how soon the probes look again.
func (m *Monitor) Down(backend string) (bool, time.Duration) {
	return !m.Usable(backend), m.o.Interval
}

func (m *Monitor) poke() {
	select {
	case m.changed <- struct{}{}:
	default:
	}
}

// Snapshot returns every backend's health now, sorted by name, with Kind
// KindSnapshot.
func (m *Monitor) Snapshot() []BackendEvent {
	names := m.names()
	now := m.o.Now()
	out := make([]BackendEvent, 0, len(names))
	for _, n := range names {
		out = append(out, m.event(n, m.tracker(n).snapshot(now, true), KindSnapshot, now))
	}
	return out
}

func (m *Monitor) event(backend string, v view, kind Kind, at time.Time) BackendEvent {
	ms := func(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }
	e := BackendEvent{
		Backend: backend, State: v.state, Breaker: v.breaker, SuccessRate: v.successRate,
		LatencyMS: Latency{P50: ms(v.p50), P95: ms(v.p95), P99: ms(v.p99)}, InFlight: v.inFlight,
		Calls: v.calls, Rejected: v.rejected, Availability: v.availability, Since: v.stateSince.UTC(), Reason: v.reason, Worker: m.o.WorkerID,
		Kind: kind, At: at.UTC(),
	}
	if m.o.Limits != nil {
		conc, budget := m.o.Limits(backend)
		if conc > 0 {
			e.ConcurrencyLimit = &conc
		}
		if budget >= 0 {
			budget = math.Round(budget*100) / 100
			e.RetryBudget = &budget
		}
	}
	return e
}

// Run publishes until ctx ends: an event for every change of a backend's
// state or breaker, and every Interval heartbeats, alert checks and a
// round of probes. It owns every goroutine it starts and returns when they
// are done, after the last transitions and a "stopped" heartbeat (given up
// to 2 s past ctx).
// Failed publishes are logged, not returned: health must not stop work.
// The error is for a subscription that cannot be made.
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
	// Always: a reload may add probes.
	wg.Go(func() { m.probeLoop(ctx) })
	// Events are published under pub, which outlives ctx by a grace
	// period: a transition taken for publishing as ctx ends is still
	// stored, and so is the last heartbeat.
	pub, cancelPub := context.WithCancel(context.WithoutCancel(ctx))
	defer cancelPub()
	m.heartbeat(pub, WorkerRunning)
	tick := time.NewTicker(m.o.Interval)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			grace := time.AfterFunc(stopGrace, cancelPub)
			defer grace.Stop()
			m.publishChanges(pub)
			m.heartbeat(pub, WorkerStopped)
			return nil
		case <-m.changed:
			m.publishChanges(pub)
		case <-tick.C:
			m.publishChanges(pub)
			m.heartbeat(pub, WorkerRunning)
			m.checkAlerts(ctx)
		}
	}
}

// stopGrace bounds the publishing Run does once its context ended.
const stopGrace = 2 * time.Second

// publishChanges sends one event per transition not yet published, in
// order, each with the state, breaker and success rate it had then.
func (m *Monitor) publishChanges(ctx context.Context) {
	for _, n := range m.names() {
		t := m.tracker(n)
		pending, dropped := t.takePending()
		if len(pending) == 0 {
			continue
		}
		if dropped > 0 {
			m.log.Warn("health transitions not published: backend flapping", "backend", n, "dropped", dropped)
		}
		v := t.snapshot(m.o.Now(), true)
		for _, tr := range pending {
			ev := m.event(n, v, KindChange, tr.at)
			ev.State, ev.Reason, ev.Breaker, ev.Since = tr.state, tr.reason, tr.breaker, tr.since.UTC()
			ev.SuccessRate, ev.InFlight = tr.successRate, tr.inFlight
			m.publish(ctx, m.o.Topology.HealthBackendSubject(Token(n)), ev)
		}
	}
}

// heartbeat sends every backend's current health (unless stopping) and
// the worker's.
func (m *Monitor) heartbeat(ctx context.Context, status WorkerStatus) {
	now := m.o.Now()
	if status == WorkerRunning {
		for _, n := range m.names() {
			v := m.tracker(n).snapshot(now, true)
			m.publish(ctx, m.o.Topology.HealthBackendSubject(Token(n)), m.event(n, v, KindHeartbeat, now))
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
	m.publish(ctx, m.o.Topology.HealthWorkerSubject(Token(m.o.WorkerID)), WorkerEvent{
		Worker: m.o.WorkerID, Status: status, Version: m.o.Version, UptimeSeconds: now.Sub(m.start).Seconds(),
		Tasks:         Tasks{Done: st.Done, Failed: st.Failed, DeadLettered: st.DeadLettered},
		CacheHitRatio: ratio, InFlight: st.InFlight, Interval: m.o.Interval.Seconds(),
		PausedRoutes: append([]string{}, st.PausedRoutes...), At: now.UTC(),
		ConfigHash: st.ConfigHash, ConfigLoadedAt: st.ConfigLoadedAt,
	})
}

// heard notes another worker's heartbeat. One DecodeEvent refuses is
// dropped, not tracked: it would make up a worker (and a stale alert about
// it) or hide a real one.
func (m *Monitor) heard(msg *nats.Msg) {
	v, err := DecodeEvent(m.o.Topology, msg.Subject, msg.Data)
	if err != nil {
		m.log.Debug("health event dropped", "err", err)
		return
	}
	ev, ok := v.(WorkerEvent)
	if !ok || ev.Worker == m.o.WorkerID {
		return
	}
	iv := time.Duration(ev.Interval * float64(time.Second))
	if iv <= 0 {
		iv = m.o.Interval
	}
	m.mu.Lock()
	m.seen[ev.Worker] = peer{at: m.o.Now(), interval: iv, stopped: ev.Status == WorkerStopped}
	m.mu.Unlock()
}

// alive reports whether another worker was heard running within three of
// its intervals.
func (m *Monitor) alive(worker string, now time.Time) bool {
	m.mu.RLock()
	p, ok := m.seen[worker]
	m.mu.RUnlock()
	return ok && !p.stopped && now.Sub(p.at) <= staleAfter*p.interval
}

// leads reports whether this worker judges the alerts every worker sees
// alike (DLQ, stale workers): the one with the smallest id among those
// alive. Conditional publishes already keep the stream free of duplicates;
// a single judge also spares core NATS subscribers the events the stream
// refused.
func (m *Monitor) leads(now time.Time) bool {
	m.mu.RLock()
	defer m.mu.RUnlock()
	for id, p := range m.seen {
		if id < m.o.WorkerID && !p.stopped && now.Sub(p.at) <= staleAfter*p.interval {
			return false
		}
	}
	return true
}

// staleAfter is how many heartbeat intervals of silence make a worker
// stale.
const staleAfter = 3

// check is one evaluation of an alert rule.
type check struct {
	name, backend    string
	rule             Rule
	value, threshold float64
	fire, resolve    bool // neither: between thresholds, leave as is
	// shared: every worker sees the same condition (the DLQ, another
	// worker), so any of them may resolve it; otherwise only the worker
	// that fired it, or anyone once that worker is gone.
	shared  bool
	message string
}

// checkAlerts evaluates every alert rule once.
func (m *Monitor) checkAlerts(ctx context.Context) {
	now := m.o.Now()
	set := m.live.Load()
	for _, n := range m.names() {
		v := m.tracker(n).snapshot(now, false)
		openFor := 0.0
		if v.breaker == BreakerOpen {
			openFor = now.Sub(v.breakerSince).Seconds()
		}
		limit := set.BreakerOpenAlertAfter.Seconds()
		m.settle(ctx, check{name: "breaker_open." + Token(n), backend: n, rule: RuleBreakerOpen,
			value: openFor, threshold: limit, fire: openFor > limit, resolve: v.breaker != BreakerOpen,
			message: fmt.Sprintf("breaker of %s open for %.0fs", n, openFor)})
		judged := v.availabilityCalls >= minCalls
		m.settle(ctx, check{name: "availability." + Token(n), backend: n, rule: RuleAvailability,
			value: v.availability, threshold: set.SLATarget,
			fire: judged && v.availability < set.SLATarget, resolve: !judged || v.availability >= set.SLATarget,
			message: fmt.Sprintf("availability of %s %.2f%% over the last hour, target %.2f%%", n, v.availability, set.SLATarget)})
	}
	lead := m.leads(now)
	if m.o.DLQUsage != nil && lead {
		uctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		used, limit, err := m.o.DLQUsage(uctx)
		cancel()
		switch {
		case err != nil:
			if ctx.Err() == nil {
				m.log.Warn("DLQ usage unknown", "err", err)
			}
		case limit > 0:
			pct := 100 * float64(used) / float64(limit)
			m.settle(ctx, check{name: "dlq", rule: RuleDLQSize, value: pct, threshold: dlqFire,
				fire: pct >= dlqFire, resolve: pct < dlqResolve, shared: true,
				message: fmt.Sprintf("DLQ at %.0f%% of its %d-byte limit: replay or purge before new entries are refused", pct, limit)})
		}
	}
	// A worker that comes back resolves its own stale alert: the judge
	// may be this worker now, and it has no heartbeat of its own to miss.
	if m.o.Conn != nil {
		m.settle(ctx, check{name: "worker_stale." + Token(m.o.WorkerID), rule: RuleWorkerStale,
			threshold: (staleAfter * m.o.Interval).Seconds(), resolve: true, shared: true,
			message: fmt.Sprintf("worker %s is back", m.o.WorkerID)})
	}
	m.mu.RLock()
	peers := maps.Clone(m.seen)
	m.mu.RUnlock()
	for _, id := range slices.Sorted(maps.Keys(peers)) {
		p := peers[id]
		silent := now.Sub(p.at)
		limit := staleAfter * p.interval
		forget := p.stopped || silent > bus.DefaultHealthMaxAge
		if lead {
			m.settle(ctx, check{name: "worker_stale." + Token(id), rule: RuleWorkerStale,
				value: silent.Seconds(), threshold: limit.Seconds(),
				fire: !forget && silent > limit, resolve: forget || silent <= limit, shared: true,
				message: fmt.Sprintf("no heartbeat from worker %s for %.0fs", id, silent.Seconds())})
		}
		if forget {
			m.mu.Lock()
			if m.seen[id] == p { // not heard again meanwhile
				delete(m.seen, id)
			}
			m.mu.Unlock()
		}
	}
}

// DLQ alert thresholds, in percent of the DLQ's limit: apart, so that a
// DLQ hovering near one does not flap.
const (
	dlqFire    = 80
	dlqResolve = 70
)

// settle publishes a firing event when c fires and the alert's last event
// is not firing, and a resolved one when c resolves, the last event is
// firing and this worker may resolve it. The last event is read from the
// stream and the publish expects it to still be the last, so that of
// several workers judging the same alert only one event is stored.
func (m *Monitor) settle(ctx context.Context, c check) {
	if !c.fire && !c.resolve {
		return
	}
	subject := m.o.Topology.HealthAlertSubject(c.name)
	last, seq, err := m.lastAlert(ctx, subject)
	if err != nil {
		if ctx.Err() == nil {
			m.log.Warn("alert state unknown", "alert", c.name, "err", err)
		}
		return
	}
	now := m.o.Now()
	firing := last.Status == Firing
	var status AlertStatus
	switch {
	case c.fire && !firing:
		status = Firing
	case c.resolve && firing && (c.shared || last.Worker == m.o.WorkerID || !m.alive(last.Worker, now)):
		status = Resolved
	default:
		return
	}
	body, err := json.Marshal(AlertEvent{Alert: c.name, Status: status, Backend: c.backend, Rule: c.rule,
		Value: c.value, Threshold: c.threshold, Message: c.message, Worker: m.o.WorkerID, At: now.UTC()})
	if err != nil {
		m.log.Error("alert event", "alert", c.name, "err", err)
		return
	}
	pctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	_, err = m.o.JS.Publish(pctx, subject, body, jetstream.WithExpectLastSequencePerSubject(seq))
	var apiErr *jetstream.APIError
	switch {
	case errors.As(err, &apiErr) && apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequence:
		// Another worker published first; the next check sees its event.
		m.log.Debug("alert published by another worker", "alert", c.name)
	case err != nil:
		if ctx.Err() == nil {
			m.log.Warn("alert not stored", "alert", c.name, "err", err)
		}
	case status == Firing:
		m.log.Warn("alert firing", "alert", c.name, "rule", c.rule, "value", c.value, "threshold", c.threshold)
	default:
		m.log.Info("alert resolved", "alert", c.name, "rule", c.rule)
	}
}

// lastAlert reads the last event of an alert subject and its sequence (a
// zero event and 0 when there is none).
func (m *Monitor) lastAlert(ctx context.Context, subject string) (AlertEvent, uint64, error) {
	var ev AlertEvent
	if m.stream == nil {
		s, err := m.o.JS.Stream(ctx, m.o.Topology.HealthStream())
		if err != nil {
			return ev, 0, fmt.Errorf("health stream: %w", err)
		}
		m.stream = s
	}
	msg, err := m.stream.GetLastMsgForSubject(ctx, subject)
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		return ev, 0, nil
	}
	if err != nil {
		return ev, 0, fmt.Errorf("last alert: %w", err)
	}
	if v, err := DecodeEvent(m.o.Topology, subject, msg.Data); err == nil {
		ev, _ = v.(AlertEvent)
	} else {
		// Not one of ours: treat it as no alert, and let a publish
		// (expecting its sequence) replace it.
		m.log.Debug("health event dropped", "err", err)
	}
	return ev, msg.Sequence, nil
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

// probeLoop probes every backend every Interval until ctx ends.
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

// probeAll runs one round of probes, all in parallel up to cap(sem) at
// once, each for at most one Interval, and returns when all are done.
func (m *Monitor) probeAll(ctx context.Context, sem chan struct{}) {
	var wg sync.WaitGroup
	defer wg.Wait()
	probes := m.live.Load().Probes
	for _, name := range slices.Sorted(maps.Keys(probes)) {
		probe := probes[name]
		select {
		case sem <- struct{}{}:
		case <-ctx.Done():
			return
		}
		wg.Go(func() {
			defer func() { <-sem }()
			pctx, cancel := context.WithTimeout(ctx, m.o.Interval)
			err := probe(pctx)
			cancel()
			if ctx.Err() != nil {
				return // cut short by shutdown: says nothing of the backend
			}
			if m.tracker(name).probe(m.o.Now(), err) {
				m.poke()
			}
		})
	}
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
