package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/breakwater/breakwater/client"
	"github.com/breakwater/breakwater/health"
)

func (a *app) healthCmd() *cobra.Command {
	var watch, asJSON bool
	cmd := &cobra.Command{
		Use:   "health",
		Short: "Show the current state of backends, workers and alerts",
		Long: `Print the current state of every backend and worker, and the firing alerts, from
the last event of each subject in the HEALTH stream (so it works whenever it is
run). --watch streams events as they come instead, one a line; --json prints
JSON (one object; with --watch, one event a line).`,
		Example: `  publisher health
  publisher health --watch --json | jq 'select(.state == "unhealthy")'`,
		Args: argsRange(0, 0, ""),
		RunE: runE(func(cmd *cobra.Command, _ []string) error {
			if watch {
				return a.watchHealth(cmd.Context(), asJSON)
			}
			return a.showHealth(cmd.Context(), asJSON)
		}),
	}
	cmd.Flags().BoolVar(&watch, "watch", false, "stream events as they come")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON for scripts")
	return cmd
}

func (a *app) showHealth(ctx context.Context, asJSON bool) error {
	ctx, cancel := context.WithTimeout(ctx, a.requestTimeout())
	defer cancel()
	c, closeConn, err := a.client(ctx, "health", nil)
	if err != nil {
		return err
	}
	defer closeConn()
	snap, err := c.Health(ctx)
	if err != nil {
		return err
	}
	if asJSON {
		// The events as decoded; empty lists, not nulls: scripts index them.
		b, err := json.MarshalIndent(snap, "", "  ")
		if err != nil {
			return err
		}
		_, err = fmt.Fprintf(a.stdout, "%s\n", b)
		return err
	}
	return a.printHealth(snap, time.Now())
}

// printHealth prints the tables, each column as docs/health.md explains
// it, with footnotes saying what the figures are over: the success rate
// and the availability differ in their windows, and a worker's counts are
// as of its last heartbeat.
func (a *app) printHealth(st *client.HealthSnapshot, now time.Time) error {
	ago := func(t time.Time) string {
		if t.IsZero() {
			return "-"
		}
		return now.Sub(t).Round(time.Second).String() + " ago"
	}
	tw := tabwriter.NewWriter(a.stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "BACKEND\tSTATE\tBREAKER\tSUCCESS\tREJECTED\tP50\tP95\tP99\tAVAILABILITY\tIN-FLIGHT\tREASON\tREPORTED")
	for _, b := range st.Backends {
		success, rejected := successCells(b)
		p50, p95, p99 := latencyCell(b.LatencyMS.P50), latencyCell(b.LatencyMS.P95), latencyCell(b.LatencyMS.P99)
		if b.HasCalls && b.Calls == 0 {
			p50, p95, p99 = "-", "-", "-"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%.3f%%\t%d\t%s\t%s by %s\n",
			b.Backend, b.State, b.Breaker, success, rejected, p50, p95, p99,
			b.Availability, b.InFlight, orDash(b.Reason), ago(b.At), b.Worker)
	}
	if len(st.Backends) == 0 {
		fmt.Fprintln(tw, "(no backend events)")
	} else {
		if err := tw.Flush(); err != nil {
			return err
		}
		fmt.Fprintf(a.stdout, `SUCCESS: of the backend's last %d calls (or fewer), those that did not fail through its fault;
  n/a under %d calls. P50-P99 are over the same calls.
REJECTED: of those, tasks the backend refused as their own fault (a permanent error, e.g. a 4xx): such
  tasks are dead-lettered as "rejected", yet the backend did its job and stays healthy.
AVAILABILITY: successful calls and probes over the last hour (the SLA window), so it moves slower than SUCCESS.
`, health.WindowCalls, health.MinCalls)
	}
	fmt.Fprintln(tw)
	fmt.Fprintln(tw, "WORKER\tSTATUS\tUPTIME\tDONE\tFAILED\tDEAD-LETTERED\tIN-FLIGHT\tCACHE-HITS\tVERSION\tLAST-HEARTBEAT")
	var paused [][2]string // route, worker
	for _, w := range st.Workers {
		status := w.Liveness(now)
		if status == client.WorkerStarting {
			// Only the heartbeat sent at start: its zeros are not counts
			// yet, and the next comes an interval later.
			fmt.Fprintf(tw, "%s\tstarting\t-\t-\t-\t-\t-\t-\t%s\t%s\n", w.Worker, w.Version, ago(w.At))
		} else {
			fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%d\t%d\t%d\t%.0f%%\t%s\t%s\n", w.Worker, status,
				(time.Duration(w.UptimeSeconds) * time.Second).String(), w.Tasks.Done, w.Tasks.Failed, w.Tasks.DeadLettered,
				w.InFlight, 100*w.CacheHitRatio, w.Version, ago(w.At))
		}
		if w.HasPausedRoutes && w.Status == health.WorkerRunning {
			for _, r := range w.PausedRoutes {
				paused = append(paused, [2]string{r, w.Worker})
			}
		}
	}
	if len(st.Workers) == 0 {
		fmt.Fprintln(tw, "(no worker heartbeats)")
	} else {
		if err := tw.Flush(); err != nil {
			return err
		}
		fmt.Fprintln(a.stdout, `Worker figures are as of its LAST-HEARTBEAT (one every health.interval, default 10s); "starting":
  only the heartbeat sent at start so far.`)
	}
	if len(paused) > 0 {
		slices.SortFunc(paused, func(x, y [2]string) int { return strings.Compare(x[0]+"\x00"+x[1], y[0]+"\x00"+y[1]) })
		fmt.Fprintln(tw)
		fmt.Fprintln(tw, "PAUSED ROUTE\tWORKER")
		for _, p := range paused {
			fmt.Fprintf(tw, "%s\t%s\n", p[0], p[1])
		}
	}
	if len(st.Alerts) > 0 {
		fmt.Fprintln(tw)
		fmt.Fprintln(tw, "ALERT\tRULE\tVALUE\tTHRESHOLD\tSINCE\tMESSAGE")
		for _, al := range st.Alerts {
			fmt.Fprintf(tw, "%s\t%s\t%.2f\t%.2f\t%s\t%s\n", al.Alert, al.Rule, al.Value, al.Threshold, ago(al.At), al.Message)
		}
	}
	return tw.Flush()
}

// successCells are the SUCCESS and REJECTED cells of a backend: "n/a (N
// calls)" while the calls are too few to judge by, and the rejections as a
// count and a share of the calls. An event without the call counts (an
// older worker) shows its success rate as it is and no rejections.
func successCells(b client.Backend) (success, rejected string) {
	success, rejected = fmt.Sprintf("%.1f%%", 100*b.SuccessRate), "-"
	if !b.HasCalls {
		return success, rejected
	}
	if b.Calls < health.MinCalls {
		success = fmt.Sprintf("n/a (%d calls)", b.Calls)
	}
	if b.HasRejected {
		rejected = strconv.Itoa(b.Rejected)
		if b.Rejected > 0 && b.Calls > 0 {
			rejected += fmt.Sprintf(" (%.0f%%)", 100*float64(b.Rejected)/float64(b.Calls))
		}
	}
	return success, rejected
}

func latencyCell(ms float64) string { return fmt.Sprintf("%.1fms", ms) }

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// healthLine is one watched event for people: its time, what and state.
func healthLine(ev any) string {
	stamp := func(t time.Time) string { return t.UTC().Format(time.RFC3339) }
	switch ev := ev.(type) {
	case health.BackendEvent:
		return fmt.Sprintf("%s backend %s %s breaker=%s success=%.1f%% p50=%.1fms p95=%.1fms p99=%.1fms availability=%.3f%% in_flight=%d %s by %s%s",
			stamp(ev.At), ev.Backend, ev.State, ev.Breaker, 100*ev.SuccessRate, ev.LatencyMS.P50, ev.LatencyMS.P95,
			ev.LatencyMS.P99, ev.Availability, ev.InFlight, ev.Kind, ev.Worker, suffix(ev.Reason))
	case health.WorkerEvent:
		return fmt.Sprintf("%s worker %s %s uptime=%s done=%d failed=%d dead_lettered=%d in_flight=%d cache_hits=%.0f%% version=%s",
			stamp(ev.At), ev.Worker, ev.Status, (time.Duration(ev.UptimeSeconds) * time.Second).String(), ev.Tasks.Done,
			ev.Tasks.Failed, ev.Tasks.DeadLettered, ev.InFlight, 100*ev.CacheHitRatio, ev.Version)
	case health.AlertEvent:
		return fmt.Sprintf("%s alert %s %s rule=%s value=%.2f threshold=%.2f by %s%s",
			stamp(ev.At), ev.Alert, strings.ToUpper(string(ev.Status)), ev.Rule, ev.Value, ev.Threshold, ev.Worker, suffix(ev.Message))
	}
	return ""
}

func suffix(s string) string {
	if s == "" {
		return ""
	}
	return ": " + s
}

// watchHealth prints events as they are stored until ctx ends.
func (a *app) watchHealth(ctx context.Context, asJSON bool) error {
	cctx, cancel := context.WithTimeout(ctx, a.requestTimeout())
	defer cancel()
	c, closeConn, err := a.client(cctx, "health", nil)
	if err != nil {
		return err
	}
	defer closeConn()
	var pending error
	for ev, err := range c.WatchHealth(ctx) {
		if ctx.Err() != nil {
			return nil
		}
		a.reportFollowError(pending)
		if pending = err; err != nil {
			continue
		}
		line := healthLine(ev.Event) + "\n"
		if asJSON {
			line = string(ev.Data) + "\n"
		}
		if _, err := io.WriteString(a.stdout, line); err != nil {
			return err
		}
	}
	return pending
}
