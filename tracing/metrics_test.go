package tracing_test

import (
	"io"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/breakwater/breakwater/internal/testkit"
	"github.com/breakwater/breakwater/tracing"
)

func TestWorkerMetricsScraped(t *testing.T) {
	m, err := tracing.NewMetrics(tracing.MetricsOptions{ServiceName: "breakwater-test", Version: "v9"})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = m.Shutdown(t.Context()) }()
	stats := tracing.WorkerStats{Done: 3, DeadLettered: 2, Redelivered: 1, InFlight: 4}
	if err := tracing.ObserveWorker(m.Meter(), func() tracing.WorkerStats { return stats }); err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(m.Handler())
	defer srv.Close()
	scrape := func() string {
		resp, err := srv.Client().Get(srv.URL)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return string(b)
	}
	body := scrape()
	for _, want := range []string{
		`breakwater_tasks_total{outcome="ok"} 3`,
		`breakwater_tasks_total{outcome="dead_lettered"} 2`,
		`breakwater_tasks_total{outcome="redelivered"} 1`,
		`breakwater_tasks_total{outcome="duplicate"} 0`,
		`breakwater_tasks_in_flight 4`,
		`go_goroutines`,
		`service_name="breakwater-test"`,
		`service_version="v9"`,
	} {
		if !strings.Contains(body, want) {
			t.Errorf("scrape lacks %q:\n%s", want, body)
		}
	}
	stats.Done = 10
	if body := scrape(); !strings.Contains(body, `breakwater_tasks_total{outcome="ok"} 10`) {
		t.Errorf("second scrape does not follow the stats:\n%s", testkit.Lines(body, "breakwater"))
	}
}
