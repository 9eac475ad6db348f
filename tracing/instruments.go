package tracing

import (
	"context"
	"fmt"
	"sync"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
)

// Attribute keys of the metrics; values are low-cardinality (no task ids).
const (
	typeKey    = attribute.Key("type")
	backendKey = attribute.Key("backend")
	reasonKey  = attribute.Key("reason")
)

// CacheStats are the result cache's counters, read at each collection.
type CacheStats struct {
	Hits, Misses, Evictions uint64
	Bytes, Entries          int64
}

// InstrumentsOptions supply the values read at each collection (each
// scrape of /metrics); nil functions leave their instruments out. The
// functions are called from the collecting goroutine and must be safe for
// concurrent use with the code that changes what they read.
type InstrumentsOptions struct {
	// Breakers returns each backend's breaker state (closed, half-open,
	// open), exported as 0, 1, 2 (breakwater_breaker_state{backend}).
	Breakers func() map[string]string
	// InFlight returns the calls in flight per backend (bulkhead
	// occupancy, breakwater_backend_in_flight{backend}).
	InFlight func() map[string]int
	// Cache returns the result cache's counters.
	Cache func() CacheStats
	// Limits returns each backend's concurrency limit and retry budget
	// left (see BackendLimits).
	Limits func() map[string]BackendLimits
	// Pending returns the consumer's pending tasks (lag,
	// breakwater_consumer_pending). It is asked at most every PendingEvery
	// (default 5s), its last answer reused between, so that scrapes do not
	// become requests to the server; a failed call keeps the last answer.
	Pending      func(ctx context.Context) (uint64, error)
	PendingEvery time.Duration
	// Now is the clock of PendingEvery; default time.Now.
	Now func() time.Time
}

// Instruments are the worker's metrics beyond the task counters of
// ObserveWorker. Names follow OpenTelemetry conventions; the Prometheus
// exporter adds units and _total (breakwater.task.duration, unit s →
// breakwater_task_duration_seconds).
type Instruments struct {
	taskDuration, callDuration, waitDuration metric.Float64Histogram
	retries, dlqEntries                      metric.Int64Counter
	// attrs keeps the attribute sets of the hot path: building one per
	// call cost a tenth of a worker's CPU and 8 allocations per task.
	attrs attrCache
}

// attrCache holds the measurement option for each pair of attribute
// values, up to maxCachedAttrs pairs (task types come from subjects that
// anyone may publish on: past the cap, sets are built per call again).
type attrCache struct {
	m    sync.Map // attrPair → metric.MeasurementOption
	n    sync.Mutex
	size int
}

type attrPair struct {
	k1, k2 attribute.Key
	v1, v2 string
}

const maxCachedAttrs = 4096

func (c *attrCache) get(k1 attribute.Key, v1 string, k2 attribute.Key, v2 string) metric.MeasurementOption {
	key := attrPair{k1, k2, v1, v2}
	if o, ok := c.m.Load(key); ok {
		return o.(metric.MeasurementOption)
	}
	var o metric.MeasurementOption
	if k2 == "" {
		o = metric.WithAttributeSet(attribute.NewSet(k1.String(v1)))
	} else {
		o = metric.WithAttributeSet(attribute.NewSet(k1.String(v1), k2.String(v2)))
	}
	c.n.Lock()
	if c.size < maxCachedAttrs {
		if _, loaded := c.m.LoadOrStore(key, o); !loaded {
			c.size++
		}
	}
	c.n.Unlock()
	return o
}

// NewInstruments creates the instruments on m.
func NewInstruments(m metric.Meter, o InstrumentsOptions) (*Instruments, error) {
	var in Instruments
	var err error
	seconds := metric.WithExplicitBucketBoundaries(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
	if in.taskDuration, err = m.Float64Histogram("breakwater.task.duration", metric.WithUnit("s"), seconds,
		metric.WithDescription("Time from a delivery's start to its outcome, by task type and outcome.")); err != nil {
		return nil, fmt.Errorf("metrics: %w", err)
	}
	if in.callDuration, err = m.Float64Histogram("breakwater.backend.call.duration", metric.WithUnit("s"), seconds,
		metric.WithDescription("Backend calls, by backend and outcome (ok, transient, permanent, invalid).")); err != nil {
		return nil, fmt.Errorf("metrics: %w", err)
	}
	if in.waitDuration, err = m.Float64Histogram("breakwater.backend.wait.duration", metric.WithUnit("s"), seconds,
		metric.WithDescription("Time calls waited for a backend's rate limiter and bulkhead.")); err != nil {
		return nil, fmt.Errorf("metrics: %w", err)
	}
	if in.retries, err = m.Int64Counter("breakwater.backend.retries", metric.WithUnit("{retry}"),
		metric.WithDescription("Retries of failed backend calls, by backend.")); err != nil {
		return nil, fmt.Errorf("metrics: %w", err)
	}
	if in.dlqEntries, err = m.Int64Counter("breakwater.dlq.entries", metric.WithUnit("{task}"),
		metric.WithDescription("Tasks dead-lettered by this worker, by reason.")); err != nil {
		return nil, fmt.Errorf("metrics: %w", err)
	}
	if err := in.observe(m, o); err != nil {
		return nil, err
	}
	if o.Limits != nil {
		if err := observeLimits(m, o.Limits); err != nil {
			return nil, err
		}
	}
	return &in, nil
}

func (in *Instruments) observe(m metric.Meter, o InstrumentsOptions) error {
	var observables []metric.Observable
	// No unit: "1" would make the exporter append _ratio to the name.
	breaker, err := m.Int64ObservableGauge("breakwater.breaker.state",
		metric.WithDescription("Circuit breaker state per backend: 0 closed, 1 half-open, 2 open."))
	if err != nil {
		return fmt.Errorf("metrics: %w", err)
	}
	inFlight, err := m.Int64ObservableUpDownCounter("breakwater.backend.in_flight", metric.WithUnit("{call}"),
		metric.WithDescription("Backend calls in flight (bulkhead occupancy), by backend."))
	if err != nil {
		return fmt.Errorf("metrics: %w", err)
	}
	cacheHits, err1 := m.Int64ObservableCounter("breakwater.cache.hits", metric.WithUnit("{lookup}"))
	cacheMisses, err2 := m.Int64ObservableCounter("breakwater.cache.misses", metric.WithUnit("{lookup}"))
	cacheEvictions, err3 := m.Int64ObservableCounter("breakwater.cache.evictions", metric.WithUnit("{entry}"))
	cacheBytes, err4 := m.Int64ObservableUpDownCounter("breakwater.cache.size", metric.WithUnit("By"),
		metric.WithDescription("Bytes held by the in-memory result cache."))
	cacheEntries, err5 := m.Int64ObservableUpDownCounter("breakwater.cache.entries", metric.WithUnit("{entry}"))
	pending, err6 := m.Int64ObservableUpDownCounter("breakwater.consumer.pending", metric.WithUnit("{task}"),
		metric.WithDescription("Tasks in TASKS not yet delivered to any worker (lag)."))
	for _, e := range []error{err1, err2, err3, err4, err5, err6} {
		if e != nil {
			return fmt.Errorf("metrics: %w", e)
		}
	}
	if o.Breakers != nil {
		observables = append(observables, breaker)
	}
	if o.InFlight != nil {
		observables = append(observables, inFlight)
	}
	if o.Cache != nil {
		observables = append(observables, cacheHits, cacheMisses, cacheEvictions, cacheBytes, cacheEntries)
	}
	var lag pendingCache
	if o.Pending != nil {
		observables = append(observables, pending)
		lag.every, lag.now = o.PendingEvery, o.Now
		if lag.every <= 0 {
			lag.every = 5 * time.Second
		}
		if lag.now == nil {
			lag.now = time.Now
		}
	}
	if len(observables) == 0 {
		return nil
	}
	_, err = m.RegisterCallback(func(ctx context.Context, ob metric.Observer) error {
		if o.Breakers != nil {
			for b, st := range o.Breakers() {
				v := int64(0)
				switch st {
				case "half-open":
					v = 1
				case "open":
					v = 2
				}
				ob.ObserveInt64(breaker, v, metric.WithAttributes(backendKey.String(b)))
			}
		}
		if o.InFlight != nil {
			for b, n := range o.InFlight() {
				ob.ObserveInt64(inFlight, int64(n), metric.WithAttributes(backendKey.String(b)))
			}
		}
		if o.Cache != nil {
			c := o.Cache()
			ob.ObserveInt64(cacheHits, int64(c.Hits))
			ob.ObserveInt64(cacheMisses, int64(c.Misses))
			ob.ObserveInt64(cacheEvictions, int64(c.Evictions))
			ob.ObserveInt64(cacheBytes, c.Bytes)
			ob.ObserveInt64(cacheEntries, c.Entries)
		}
		if o.Pending != nil {
			if n, ok := lag.get(ctx, o.Pending); ok {
				ob.ObserveInt64(pending, int64(n))
			}
		}
		return nil
	}, observables...)
	if err != nil {
		return fmt.Errorf("metrics: %w", err)
	}
	return nil
}

// pendingCache keeps the consumer's lag between server requests.
type pendingCache struct {
	every time.Duration
	now   func() time.Time
	mu    sync.Mutex
	at    time.Time // of the last request; zero before the first
	n     uint64
	ok    bool
}

func (p *pendingCache) get(ctx context.Context, fetch func(context.Context) (uint64, error)) (uint64, bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if now := p.now(); p.at.IsZero() || now.Sub(p.at) >= p.every {
		p.at = now
		if n, err := fetch(ctx); err == nil {
			p.n, p.ok = n, true
		}
	}
	return p.n, p.ok
}

// TaskDone records how long a delivery took to its outcome
// (breakwater_task_duration_seconds{type,outcome}). Like every recording
// method it is safe for concurrent use.
func (in *Instruments) TaskDone(ctx context.Context, typ, outcome string, d time.Duration) {
	in.taskDuration.Record(ctx, d.Seconds(), in.attrs.get(typeKey, typ, outcomeKey, outcome))
}

// BackendCall records one call of d
// (breakwater_backend_call_duration_seconds{backend,outcome}) and, when
// waited > 0, how long it waited for the backend's rate limiter and
// bulkhead before it (as RateLimitWait).
func (in *Instruments) BackendCall(ctx context.Context, backend, outcome string, d, waited time.Duration) {
	in.callDuration.Record(ctx, d.Seconds(), in.attrs.get(backendKey, backend, outcomeKey, outcome))
	if waited > 0 {
		in.RateLimitWait(ctx, backend, waited)
	}
}

// RateLimitWait records a wait of d for backend's rate limiter or bulkhead
// (breakwater_backend_wait_duration_seconds{backend}).
func (in *Instruments) RateLimitWait(ctx context.Context, backend string, d time.Duration) {
	in.waitDuration.Record(ctx, d.Seconds(), in.attrs.get(backendKey, backend, "", ""))
}

// Retry counts a retry of a call to backend
// (breakwater_backend_retries_total{backend}).
func (in *Instruments) Retry(ctx context.Context, backend string) {
	in.retries.Add(ctx, 1, in.attrs.get(backendKey, backend, "", ""))
}

// DLQEntry counts a task dead-lettered for reason
// (breakwater_dlq_entries_total{reason}).
func (in *Instruments) DLQEntry(ctx context.Context, reason string) {
	in.dlqEntries.Add(ctx, 1, metric.WithAttributes(reasonKey.String(reason)))
}
