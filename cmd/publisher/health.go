package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/spf13/cobra"

	"github.com/breakwater/breakwater/bus"
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

// healthState is the current state, as health --json prints it.
type healthState struct {
	Backends []health.BackendEvent `json:"backends"`
	Workers  []health.WorkerEvent  `json:"workers"`
	Alerts   []health.AlertEvent   `json:"alerts"` // firing only
	// backendMore and workerMore hold, index for index, the fields of
	// Backends and Workers that only newer workers send (--json prints
	// the events as decoded).
	backendMore []backendMore
	workerMore  []workerMore
}

// backendMore are the fields of a backend event beyond health.BackendEvent
// that the table needs to read the success rate right. A nil field was not
// sent (a worker of an older version): the table then shows what the event
// has rather than zeros that would read as facts.
type backendMore struct {
	Calls    *int `json:"calls"`    // in the window the success rate is over
	Rejected *int `json:"rejected"` // of those, refused as the task's fault
}

// workerMore are the fields of a worker heartbeat beyond
// health.WorkerEvent: its paused routes (nil: not reported).
type workerMore struct {
	PausedRoutes *[]string `json:"paused_routes"`
}

// decodeMore reads the optional fields of an event's body into v; a body
// without them leaves v zero.
func decodeMore[T any](data []byte) T {
	var v T
	_ = json.Unmarshal(data, &v) // the event itself decoded: only absent fields can remain
	return v
}

func (a *app) showHealth(ctx context.Context, asJSON bool) error {
	topo, err := a.topology()
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, a.requestTimeout())
	defer cancel()
	nc, js, err := a.connectJS(ctx, "health")
	if err != nil {
		return err
	}
	defer nc.Close()
	s, err := js.Stream(ctx, topo.HealthStream())
	if err != nil {
		return streamHint(err, topo.HealthStream())
	}
	info, err := s.Info(ctx, jetstream.WithSubjectFilter(topo.HealthFilter()))
	if err != nil {
		return fmt.Errorf("stream %s: %w", topo.HealthStream(), err)
	}
	// Empty lists, not nulls: scripts index them.
	st := healthState{Backends: []health.BackendEvent{}, Workers: []health.WorkerEvent{}, Alerts: []health.AlertEvent{}}
	for _, subj := range slices.Sorted(maps.Keys(info.State.Subjects)) {
		m, err := s.GetLastMsgForSubject(ctx, subj)
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			continue // aged out meanwhile
		}
		if err != nil {
			return fmt.Errorf("read %s: %w", subj, err)
		}
		switch ev := decodeHealth(topo, subj, m.Data).(type) {
		case health.BackendEvent:
			st.Backends, st.backendMore = append(st.Backends, ev), append(st.backendMore, decodeMore[backendMore](m.Data))
		case health.WorkerEvent:
			st.Workers, st.workerMore = append(st.Workers, ev), append(st.workerMore, decodeMore[workerMore](m.Data))
		case health.AlertEvent:
			if ev.Status == health.Firing {
				st.Alerts = append(st.Alerts, ev)
			}
		}
	}
	if asJSON {
		b, err := json.MarshalIndent(st, "", "  ")
		if err != nil {
			return err
		}
		_, err = fmt.Fprintf(a.stdout, "%s\n", b)
		return err
	}
	return a.printHealth(st, time.Now())
}

// printHealth prints the tables, each column as docs/health.md explains
// it, with footnotes saying what the figures are over: the success rate
// and the availability differ in their windows, and a worker's counts are
// as of its last heartbeat.
func (a *app) printHealth(st healthState, now time.Time) error {
	ago := func(t time.Time) string {
		if t.IsZero() {
			return "-"
		}
		return now.Sub(t).Round(time.Second).String() + " ago"
	}
	tw := tabwriter.NewWriter(a.stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "BACKEND\tSTATE\tBREAKER\tSUCCESS\tREJECTED\tP50\tP95\tP99\tAVAILABILITY\tIN-FLIGHT\tREASON\tREPORTED")
	for i, b := range st.Backends {
		var more backendMore
		if i < len(st.backendMore) {
			more = st.backendMore[i]
		}
		success, rejected := successCells(b, more)
		p50, p95, p99 := latencyCell(b.LatencyMS.P50), latencyCell(b.LatencyMS.P95), latencyCell(b.LatencyMS.P99)
		if more.Calls != nil && *more.Calls == 0 {
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
	for i, w := range st.Workers {
		status := w.Status
		if status == health.WorkerRunning && w.Interval > 0 && now.Sub(w.At) > time.Duration(3*w.Interval*float64(time.Second)) {
			status = "silent"
		}
		if status == health.WorkerRunning && firstHeartbeat(w) {
			// Only the heartbeat sent at start: its zeros are not counts
			// yet, and the next comes an interval later.
			fmt.Fprintf(tw, "%s\tstarting\t-\t-\t-\t-\t-\t-\t%s\t%s\n", w.Worker, w.Version, ago(w.At))
		} else {
			fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%d\t%d\t%d\t%.0f%%\t%s\t%s\n", w.Worker, status,
				(time.Duration(w.UptimeSeconds) * time.Second).String(), w.Tasks.Done, w.Tasks.Failed, w.Tasks.DeadLettered,
				w.InFlight, 100*w.CacheHitRatio, w.Version, ago(w.At))
		}
		if i < len(st.workerMore) && st.workerMore[i].PausedRoutes != nil && w.Status == health.WorkerRunning {
			for _, r := range *st.workerMore[i].PausedRoutes {
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

// firstHeartbeat reports whether w is the heartbeat a worker sends as it
// starts, before it has counted anything: its uptime is under one interval
// (the next heartbeat comes an interval after it), or under a second when
// the interval is unknown.
func firstHeartbeat(w health.WorkerEvent) bool {
	young := w.UptimeSeconds < 1 || (w.Interval > 0 && w.UptimeSeconds < w.Interval)
	return young && w.Tasks == (health.Tasks{}) && w.InFlight == 0
}

// successCells are the SUCCESS and REJECTED cells of a backend: "n/a (N
// calls)" while the calls are too few to judge by, and the rejections as a
// count and a share of the calls. An event without the call counts (an
// older worker) shows its success rate as it is and no rejections.
func successCells(b health.BackendEvent, more backendMore) (success, rejected string) {
	success, rejected = fmt.Sprintf("%.1f%%", 100*b.SuccessRate), "-"
	if more.Calls == nil {
		return success, rejected
	}
	calls := *more.Calls
	if calls < health.MinCalls {
		success = fmt.Sprintf("n/a (%d calls)", calls)
	}
	if more.Rejected != nil {
		rejected = strconv.Itoa(*more.Rejected)
		if *more.Rejected > 0 && calls > 0 {
			rejected += fmt.Sprintf(" (%.0f%%)", 100*float64(*more.Rejected)/float64(calls))
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

// decodeHealth decodes a health event by its subject's kind; nil when it
// is none of ours (health.DecodeEvent refuses it: oversized, malformed,
// lacking a field or naming another subject's backend, worker or alert).
func decodeHealth(topo bus.Topology, subject string, data []byte) any {
	ev, err := health.DecodeEvent(topo, subject, data)
	if err != nil {
		return nil
	}
	return ev
}

// healthLine is one watched event for people: its time, what and state;
// "" for an event decodeHealth drops.
func healthLine(topo bus.Topology, subject string, data []byte) string {
	stamp := func(t time.Time) string { return t.UTC().Format(time.RFC3339) }
	switch ev := decodeHealth(topo, subject, data).(type) {
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
			stamp(ev.At), ev.Alert, strings.ToUpper(ev.Status), ev.Rule, ev.Value, ev.Threshold, ev.Worker, suffix(ev.Message))
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
	topo, err := a.topology()
	if err != nil {
		return err
	}
	cctx, cancel := context.WithTimeout(ctx, a.requestTimeout())
	defer cancel()
	nc, js, err := a.connectJS(cctx, "health")
	if err != nil {
		return err
	}
	defer nc.Close()
	cons, err := js.OrderedConsumer(cctx, topo.HealthStream(), jetstream.OrderedConsumerConfig{
		FilterSubjects: []string{topo.HealthFilter()}, DeliverPolicy: jetstream.DeliverNewPolicy,
	})
	if err != nil {
		return fmt.Errorf("watch health: %w", streamHint(err, topo.HealthStream()))
	}
	werr := make(chan error, 1)
	cc, err := cons.Consume(func(m jetstream.Msg) {
		line := healthLine(topo, m.Subject(), m.Data())
		if line == "" {
			return // not one of ours: dropped, in --json too
		}
		line += "\n"
		if asJSON {
			line = string(m.Data()) + "\n"
		}
		if _, err := a.stdout.Write([]byte(line)); err != nil {
			select {
			case werr <- err:
			default:
			}
		}
	})
	if err != nil {
		return fmt.Errorf("watch health: %w", err)
	}
	defer cc.Stop()
	select {
	case <-ctx.Done():
		return nil
	case err := <-werr:
		return err
	}
}
