package tracing

import (
	"context"
	"slices"
	"strings"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
	"google.golang.org/protobuf/proto"
)

// Known are the label values a worker knows at start, for Prime.
type Known struct {
	// Types are the task types the worker routes (its config's routes).
	Types []string
	// TaskOutcomes are the outcomes of breakwater_task_duration_seconds.
	TaskOutcomes []string
	// Backends are the configured backends.
	Backends []string
	// CallOutcomes are the outcomes of a backend call (ok, transient,
	// permanent, invalid).
	CallOutcomes []string
	// Reasons are the DLQ reasons.
	Reasons []string
}

// zeroSeries is a histogram series served empty until its first recording.
type zeroSeries struct {
	name, help string
	labels     []*dto.LabelPair
}

// Prime makes the instruments of in visible from the first scrape, with the
// known label values, so that dashboards and alerts see zeros instead of no
// data, and rate() has a starting point when the first task comes: the
// counters (retries per backend, DLQ entries per reason) start at 0 through
// the SDK; the histograms, which OpenTelemetry exports only once recorded,
// are served by Handler as empty series (count 0) for each known label set
// until the first recording of that set replaces them. Call it once, after
// NewInstruments; it is safe to call while Handler serves.
func (m *Metrics) Prime(in *Instruments, k Known) {
	ctx := context.Background()
	for _, b := range k.Backends {
		in.retries.Add(ctx, 0, in.attrs.get(backendKey, b, "", ""))
	}
	for _, r := range k.Reasons {
		in.dlqEntries.Add(ctx, 0, metric.WithAttributes(reasonKey.String(r)))
	}
	var zs []zeroSeries
	for _, t := range k.Types {
		for _, o := range k.TaskOutcomes {
			zs = append(zs, zeroSeries{"breakwater_task_duration_seconds", taskDurationHelp, labels(typeKey, t, outcomeKey, o)})
		}
	}
	for _, b := range k.Backends {
		for _, o := range k.CallOutcomes {
			zs = append(zs, zeroSeries{"breakwater_backend_call_duration_seconds", callDurationHelp, labels(backendKey, b, outcomeKey, o)})
		}
		zs = append(zs, zeroSeries{"breakwater_backend_wait_duration_seconds", waitDurationHelp, labels(backendKey, b, "", "")})
	}
	m.primed.Store(&zs)
}

// The histograms' help, as NewInstruments describes them.
const (
	taskDurationHelp = "Time from a delivery's start to its outcome, by task type and outcome."
	callDurationHelp = "Backend calls, by backend and outcome (ok, transient, permanent, invalid)."
	waitDurationHelp = "Time calls waited for a backend's rate limiter and bulkhead."
)

// labels is the sorted label pairs of up to two attributes (k2 "" for one).
func labels(k1 attribute.Key, v1 string, k2 attribute.Key, v2 string) []*dto.LabelPair {
	ls := []*dto.LabelPair{{Name: proto.String(string(k1)), Value: proto.String(v1)}}
	if k2 != "" {
		ls = append(ls, &dto.LabelPair{Name: proto.String(string(k2)), Value: proto.String(v2)})
	}
	slices.SortFunc(ls, func(a, b *dto.LabelPair) int { return strings.Compare(a.GetName(), b.GetName()) })
	return ls
}

// primedGatherer adds the primed histogram series the registry does not
// have (yet) to what it gathers.
type primedGatherer struct{ m *Metrics }

var _ prometheus.Gatherer = primedGatherer{}

// Gather gathers the registry (which builds new families on every call, so
// they may be extended here) and adds every primed series it lacks.
func (g primedGatherer) Gather() ([]*dto.MetricFamily, error) {
	mfs, err := g.m.reg.Gather()
	zs := g.m.primed.Load()
	if zs == nil || len(*zs) == 0 {
		return mfs, err
	}
	byName := make(map[string]*dto.MetricFamily, len(mfs))
	for _, mf := range mfs {
		byName[mf.GetName()] = mf
	}
	added := false
	for _, z := range *zs {
		mf := byName[z.name]
		if mf == nil {
			mf = &dto.MetricFamily{Name: proto.String(z.name), Help: proto.String(z.help), Type: dto.MetricType_HISTOGRAM.Enum()}
			byName[z.name] = mf
			mfs = append(mfs, mf)
			added = true
		}
		if mf.GetType() != dto.MetricType_HISTOGRAM || hasSeries(mf, z.labels) {
			continue
		}
		mf.Metric = append(mf.Metric, &dto.Metric{Label: z.labels, Histogram: emptyHistogram(mf)})
	}
	if added {
		slices.SortFunc(mfs, func(a, b *dto.MetricFamily) int { return strings.Compare(a.GetName(), b.GetName()) })
	}
	return mfs, err
}

// hasSeries reports whether mf has a series with exactly labels.
func hasSeries(mf *dto.MetricFamily, labels []*dto.LabelPair) bool {
	return slices.ContainsFunc(mf.Metric, func(m *dto.Metric) bool {
		return slices.EqualFunc(m.Label, labels, func(a, b *dto.LabelPair) bool {
			return a.GetName() == b.GetName() && a.GetValue() == b.GetValue()
		})
	})
}

// emptyHistogram is a histogram with no observation, with the buckets of
// the family's recorded series when it has one (only +Inf before that:
// the bounds live with the instruments, not here).
func emptyHistogram(mf *dto.MetricFamily) *dto.Histogram {
	h := &dto.Histogram{SampleCount: proto.Uint64(0), SampleSum: proto.Float64(0)}
	for _, m := range mf.Metric {
		if m.Histogram != nil && len(m.Histogram.Bucket) > 0 {
			for _, b := range m.Histogram.Bucket {
				h.Bucket = append(h.Bucket, &dto.Bucket{UpperBound: proto.Float64(b.GetUpperBound()), CumulativeCount: proto.Uint64(0)})
			}
			break
		}
	}
	return h
}
