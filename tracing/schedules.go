package tracing

import (
	"context"
	"fmt"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
)

// kindKey tells periodic schedules (interval or cron) from delayed tasks.
const kindKey = attribute.Key("kind")

// Values of the kind attribute.
const (
	KindPeriodic = "periodic"
	KindDelayed  = "delayed"
)

// ScheduleOptions supply the schedule counts read at collection.
type ScheduleOptions struct {
	// Periodic and Delayed count the schedules stored in TASKS
	// (breakwater_schedules{kind}); nil leaves that kind out. Each is asked
	// at most every Every (default 15s), its last answer reused between,
	// so that scrapes do not become requests to the server.
	Periodic, Delayed func(ctx context.Context) (uint64, error)
	Every             time.Duration
	// Now is the clock of Every; default time.Now.
	Now func() time.Time
}

// ScheduleInstruments are the metrics of scheduled tasks: how many
// schedules are defined, the firings workers see and how late those start.
type ScheduleInstruments struct {
	firings  metric.Int64Counter
	lateness metric.Float64Histogram
	attrs    attrCache
}

// NewScheduleInstruments creates the schedule instruments on m.
func NewScheduleInstruments(m metric.Meter, o ScheduleOptions) (*ScheduleInstruments, error) {
	var in ScheduleInstruments
	var err error
	if in.firings, err = m.Int64Counter("breakwater.schedule.firings", metric.WithUnit("{task}"),
		metric.WithDescription("Tasks fired by the server's scheduler that a worker started, by task type and kind (periodic, delayed).")); err != nil {
		return nil, fmt.Errorf("metrics: %w", err)
	}
	if in.lateness, err = m.Float64Histogram("breakwater.schedule.lateness", metric.WithUnit("s"),
		metric.WithExplicitBucketBoundaries(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300),
		metric.WithDescription(scheduleLatenessHelp)); err != nil {
		return nil, fmt.Errorf("metrics: %w", err)
	}
	count, err := m.Int64ObservableUpDownCounter("breakwater.schedules", metric.WithUnit("{schedule}"),
		metric.WithDescription("Schedules stored in TASKS: periodic ones and delayed tasks not yet fired."))
	if err != nil {
		return nil, fmt.Errorf("metrics: %w", err)
	}
	every, now := o.Every, o.Now
	if every <= 0 {
		every = 15 * time.Second
	}
	if now == nil {
		now = time.Now
	}
	type source struct {
		kind  string
		fetch func(context.Context) (uint64, error)
		last  *pendingCache
	}
	var sources []source
	for kind, fetch := range map[string]func(context.Context) (uint64, error){KindPeriodic: o.Periodic, KindDelayed: o.Delayed} {
		if fetch != nil {
			sources = append(sources, source{kind, fetch, &pendingCache{every: every, now: now}})
		}
	}
	if len(sources) > 0 {
		if _, err := m.RegisterCallback(func(ctx context.Context, ob metric.Observer) error {
			for _, s := range sources {
				if n, ok := s.last.get(ctx, s.fetch); ok {
					ob.ObserveInt64(count, int64(n), metric.WithAttributes(kindKey.String(s.kind)))
				}
			}
			return nil
		}, count); err != nil {
			return nil, fmt.Errorf("metrics: %w", err)
		}
	}
	return &in, nil
}

// Fired records a fired task of type typ that a worker started late after
// its due time (breakwater_schedule_firings_total{type,kind} and
// breakwater_schedule_lateness_seconds{kind}). Safe for concurrent use.
func (in *ScheduleInstruments) Fired(ctx context.Context, typ string, periodic bool, late time.Duration) {
	kind := KindDelayed
	if periodic {
		kind = KindPeriodic
	}
	in.firings.Add(ctx, 1, in.attrs.get(typeKey, typ, kindKey, kind))
	in.lateness.Record(ctx, max(late, 0).Seconds(), in.attrs.get(kindKey, kind, "", ""))
}

// scheduleLatenessHelp is the lateness histogram's description, for its
// primed series.
const scheduleLatenessHelp = "Time from a fired task's due time to the start of its processing, by kind."

// PrimeSchedules exports the schedule instruments from the first scrape,
// as Prime does the worker's: firings at 0 for each of types and kind, and
// an empty lateness histogram per kind until its first recording. Call it
// after Prime.
func (m *Metrics) PrimeSchedules(in *ScheduleInstruments, types []string) {
	ctx := context.Background()
	kinds := []string{KindPeriodic, KindDelayed}
	for _, t := range types {
		for _, k := range kinds {
			in.firings.Add(ctx, 0, in.attrs.get(typeKey, t, kindKey, k))
		}
	}
	var zs []zeroSeries
	if old := m.primed.Load(); old != nil {
		zs = append(zs, *old...)
	}
	for _, k := range kinds {
		zs = append(zs, zeroSeries{"breakwater_schedule_lateness_seconds", scheduleLatenessHelp, labels(kindKey, k, "", "")})
	}
	m.primed.Store(&zs)
}
