package tracing_test

import (
	"context"
	"errors"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/breakwater/breakwater/internal/testkit"
	"github.com/breakwater/breakwater/tracing"
)

func TestScheduleInstrumentsScraped(t *testing.T) {
	m, err := tracing.NewMetrics(tracing.MetricsOptions{ServiceName: "breakwater-test"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = m.Shutdown(context.Background()) })
	clk := &clock{now: time.Unix(1_700_000_000, 0)}
	var asked atomic.Int32
	periodic := atomic.Uint64{}
	periodic.Store(3)
	in, err := tracing.NewScheduleInstruments(m.Meter(), tracing.ScheduleOptions{
		Periodic: func(context.Context) (uint64, error) { asked.Add(1); return periodic.Load(), nil },
		Delayed:  func(context.Context) (uint64, error) { return 0, errors.New("no server") },
		Every:    10 * time.Second, Now: clk.Now,
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	in.Fired(ctx, "report", true, 120*time.Millisecond)
	in.Fired(ctx, "report", true, 40*time.Millisecond)
	in.Fired(ctx, "mail", false, -time.Second) // a clock ahead of the server's: counted as on time
	scrape := scraper(t, m)
	body := scrape()
	wantLines(t, body,
		`breakwater_schedules{kind="periodic"} 3`,
		`breakwater_schedule_firings_total{kind="periodic",type="report"} 2`,
		`breakwater_schedule_firings_total{kind="delayed",type="mail"} 1`,
		`breakwater_schedule_lateness_seconds_count{kind="periodic"} 2`,
		`breakwater_schedule_lateness_seconds_bucket{kind="periodic",le="0.05"} 1`,
		`breakwater_schedule_lateness_seconds_bucket{kind="delayed",le="0.01"} 1`,
	)
	if strings.Contains(body, `breakwater_schedules{kind="delayed"`) {
		t.Errorf("a count that failed is exported:\n%s", testkit.Lines(body, "breakwater_schedules"))
	}
	// Within Every the server is not asked again.
	periodic.Store(4)
	clk.Add(5 * time.Second)
	scrape()
	if n := asked.Load(); n != 1 {
		t.Errorf("periodic count asked %d times in one interval, want 1", n)
	}
	clk.Add(6 * time.Second)
	wantLines(t, scrape(), `breakwater_schedules{kind="periodic"} 4`)
}
