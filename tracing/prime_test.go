package tracing_test

import (
	"strings"
	"testing"
	"time"

	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/breakwater/breakwater/internal/testkit"
	"github.com/breakwater/breakwater/tracing"
)

// families parses a scrape (from scraper) as a Prometheus server would,
// failing on anything it would refuse, and returns the series per family.
func families(t *testing.T, body string) map[string]int {
	t.Helper()
	p := expfmt.NewTextParser(model.UTF8Validation)
	mfs, err := p.TextToMetricFamilies(strings.NewReader(body))
	if err != nil {
		t.Fatalf("scrape does not parse: %v\n%s", err, body)
	}
	series := map[string]int{}
	for name, mf := range mfs {
		series[name] = len(mf.GetMetric())
	}
	return series
}

func TestPrimeExportsBeforeFirstUse(t *testing.T) {
	m, err := tracing.NewMetrics(tracing.MetricsOptions{ServiceName: "breakwater-test"})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = m.Shutdown(t.Context()) }()
	in, err := tracing.NewInstruments(m.Meter(), tracing.InstrumentsOptions{})
	if err != nil {
		t.Fatal(err)
	}
	scrape := scraper(t, m)
	if body := scrape(); strings.Contains(body, "breakwater_task_duration_seconds") {
		t.Fatalf("task duration exported before Prime and before any task:\n%s", testkit.Lines(body, "breakwater"))
	}

	m.Prime(in, tracing.Known{
		Types: []string{"echo"}, TaskOutcomes: []string{"done", "dead_lettered"},
		Backends: []string{"flow"}, CallOutcomes: []string{"ok", "transient"},
		Reasons: []string{"poison", "exhausted"},
	})
	body := scrape()
	series := families(t, body)
	for _, want := range []string{
		`breakwater_task_duration_seconds_count{outcome="done",type="echo"} 0`,
		`breakwater_task_duration_seconds_count{outcome="dead_lettered",type="echo"} 0`,
		`breakwater_backend_call_duration_seconds_count{backend="flow",outcome="transient"} 0`,
		`breakwater_backend_wait_duration_seconds_count{backend="flow"} 0`,
		`breakwater_backend_retries_total{backend="flow"} 0`,
		`breakwater_dlq_entries_total{reason="poison"} 0`,
		`breakwater_dlq_entries_total{reason="exhausted"} 0`,
	} {
		if !strings.Contains(body, want) {
			t.Errorf("primed scrape lacks %q:\n%s", want, testkit.Lines(body, "breakwater"))
		}
	}
	if got := series["breakwater_task_duration_seconds"]; got != 2 {
		t.Errorf("task duration has %d series, want 2 (type echo × 2 outcomes)", got)
	}

	// The first recording replaces its primed series (same name, one
	// series per label set); the other primed series take its buckets.
	in.TaskDone(t.Context(), "echo", "done", 30*time.Millisecond)
	in.DLQEntry(t.Context(), "poison")
	body = scrape()
	series = families(t, body)
	for _, want := range []string{
		`breakwater_task_duration_seconds_count{outcome="done",type="echo"} 1`,
		`breakwater_task_duration_seconds_count{outcome="dead_lettered",type="echo"} 0`,
		`breakwater_task_duration_seconds_bucket{outcome="dead_lettered",type="echo",le="0.05"} 0`,
		`breakwater_dlq_entries_total{reason="poison"} 1`,
	} {
		if !strings.Contains(body, want) {
			t.Errorf("scrape after a task lacks %q:\n%s", want, testkit.Lines(body, "breakwater_task_duration_seconds_count"))
		}
	}
	if got := series["breakwater_task_duration_seconds"]; got != 2 {
		t.Errorf("task duration has %d series after a task, want 2 (the primed one replaced)", got)
	}
}
